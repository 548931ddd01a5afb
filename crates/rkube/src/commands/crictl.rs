//! `rkube crictl`: a crictl-like debug client of any CRI runtime (rkube's or containerd), with
//! crictl's flags and output. So far the image commands; the pod and container ones come with the
//! runtime service.

use anyhow::Context;
use clap::{Args, Subcommand};
use k8s_cri::v1 as cri;
use rkube_runtime::cri::client::CriClient;
use rkube_runtime::cri::server::socket_path;

/// `rkube crictl ...`
#[derive(Args)]
pub struct CrictlArgs {
    /// The CRI endpoint.
    #[arg(
        short = 'r',
        long,
        global = true,
        env = "CONTAINER_RUNTIME_ENDPOINT",
        default_value = "unix:///run/rkube/cri.sock"
    )]
    runtime_endpoint: String,

    /// Image endpoint (defaults to the runtime endpoint).
    #[arg(short = 'i', long, global = true, env = "IMAGE_SERVICE_ENDPOINT")]
    image_endpoint: Option<String>,

    #[command(subcommand)]
    command: CrictlCommand,
}

#[derive(Subcommand)]
enum CrictlCommand {
    /// List images.
    #[command(alias = "image")]
    Images {
        /// Only show image ids.
        #[arg(short, long)]
        quiet: bool,
        /// Show digests.
        #[arg(long)]
        digests: bool,
        /// Only images matching this reference.
        image: Option<String>,
    },
    /// Pull an image.
    Pull {
        /// The image.
        image: String,
        /// `USERNAME[:PASSWORD]` for the registry.
        #[arg(long)]
        creds: Option<String>,
    },
    /// Remove images.
    Rmi {
        /// The images (names or ids).
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Show an image's status as JSON.
    Inspecti {
        /// The image.
        image: String,
    },
    /// Show the image filesystem usage as JSON.
    Imagefsinfo,
    /// Show the runtime's name and versions.
    Version,
    /// Show the runtime's status conditions and configuration as JSON.
    Info,
}

fn spec(image: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec {
        image: image.to_owned(),
        ..Default::default()
    })
}

/// Runs a `crictl` subcommand.
pub async fn run(args: CrictlArgs) -> anyhow::Result<()> {
    let endpoint = args
        .image_endpoint
        .as_deref()
        .unwrap_or(&args.runtime_endpoint);
    let path = socket_path(endpoint)?;
    let mut client = CriClient::connect(path).await?;
    match args.command {
        CrictlCommand::Images {
            quiet,
            digests,
            image,
        } => {
            let response = client
                .images
                .list_images(cri::ListImagesRequest {
                    filter: image.map(|i| cri::ImageFilter { image: spec(&i) }),
                })
                .await
                .context("listing images")?
                .into_inner();
            print_images(&response.images, quiet, digests);
        }
        CrictlCommand::Pull { image, creds } => {
            let auth = creds.map(|c| {
                let (username, password) = c.split_once(':').unwrap_or((&c, ""));
                cri::AuthConfig {
                    username: username.to_owned(),
                    password: password.to_owned(),
                    ..Default::default()
                }
            });
            let response = client
                .images
                .pull_image(cri::PullImageRequest {
                    image: spec(&image),
                    auth,
                    sandbox_config: None,
                })
                .await
                .with_context(|| format!("pulling image {image}"))?
                .into_inner();
            println!("Image is up to date for {}", response.image_ref);
        }
        CrictlCommand::Rmi { images } => {
            let mut missing = Vec::new();
            for image in images {
                let status = client
                    .images
                    .image_status(cri::ImageStatusRequest {
                        image: spec(&image),
                        verbose: false,
                    })
                    .await
                    .with_context(|| format!("looking up image {image}"))?
                    .into_inner();
                let Some(found) = status.image else {
                    missing.push(image);
                    continue;
                };
                client
                    .images
                    .remove_image(cri::RemoveImageRequest {
                        image: spec(&found.id),
                    })
                    .await
                    .with_context(|| format!("removing image {image}"))?;
                for tag in found.repo_tags.iter().chain(found.repo_digests.iter()) {
                    println!("Deleted: {tag}");
                }
            }
            if !missing.is_empty() {
                anyhow::bail!("no such image: {}", missing.join(", "));
            }
        }
        CrictlCommand::Inspecti { image } => {
            let status = client
                .images
                .image_status(cri::ImageStatusRequest {
                    image: spec(&image),
                    verbose: true,
                })
                .await
                .with_context(|| format!("inspecting image {image}"))?
                .into_inner();
            let Some(found) = status.image else {
                anyhow::bail!("no such image: {image}");
            };
            let mut out = serde_json::json!({"status": found});
            for (key, value) in status.info {
                let value =
                    serde_json::from_str(&value).unwrap_or(serde_json::Value::String(value));
                out[key] = value;
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        CrictlCommand::Version => {
            let version = client
                .runtime
                .version(cri::VersionRequest {
                    version: "v1".into(),
                })
                .await
                .context("asking the runtime's version")?
                .into_inner();
            println!("Version:  {}", version.version);
            println!("RuntimeName:  {}", version.runtime_name);
            println!("RuntimeVersion:  {}", version.runtime_version);
            println!("RuntimeApiVersion:  {}", version.runtime_api_version);
        }
        CrictlCommand::Info => {
            let status = client
                .runtime
                .status(cri::StatusRequest { verbose: true })
                .await
                .context("asking the runtime's status")?
                .into_inner();
            let mut out = serde_json::json!({"status": status.status});
            for (key, value) in status.info {
                let value =
                    serde_json::from_str(&value).unwrap_or(serde_json::Value::String(value));
                out[key] = value;
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        CrictlCommand::Imagefsinfo => {
            let info = client
                .images
                .image_fs_info(cri::ImageFsInfoRequest {})
                .await
                .context("image filesystem info")?
                .into_inner();
            println!("{}", serde_json::to_string_pretty(&info)?);
        }
    }
    Ok(())
}

fn print_images(images: &[cri::Image], quiet: bool, digests: bool) {
    if quiet {
        for image in images {
            println!("{}", image.id);
        }
        return;
    }
    let mut rows = vec![if digests {
        vec!["IMAGE", "TAG", "DIGEST", "IMAGE ID", "SIZE"]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>()
    } else {
        ["IMAGE", "TAG", "IMAGE ID", "SIZE"]
            .map(String::from)
            .to_vec()
    }];
    for image in images {
        let id = short(image.id.trim_start_matches("sha256:"));
        let size = human(image.size);
        let digest = image
            .repo_digests
            .first()
            .and_then(|d| d.split_once("@sha256:"))
            .map(|(_, hex)| short(hex))
            .unwrap_or_else(|| "<none>".into());
        let tags: Vec<(String, String)> = if image.repo_tags.is_empty() {
            vec![("<none>".into(), "<none>".into())]
        } else {
            image.repo_tags.iter().map(|t| split_tag(t)).collect()
        };
        for (repo, tag) in tags {
            let mut row = vec![repo, tag];
            if digests {
                row.push(digest.clone());
            }
            row.push(id.clone());
            row.push(size.clone());
            rows.push(row);
        }
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", line.join("   ").trim_end());
    }
}

fn short(hex: &str) -> String {
    hex.get(..13).unwrap_or(hex).to_owned()
}

fn split_tag(name: &str) -> (String, String) {
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[last_slash..].rfind(':') {
        Some(i) => (
            name[..last_slash + i].to_owned(),
            name[last_slash + i + 1..].to_owned(),
        ),
        None => (name.to_owned(), "<none>".into()),
    }
}

/// Sizes as crictl prints them: decimal units, three significant digits (`1.18MB`, `745kB`).
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    let integer_digits = if value < 10.0 {
        1
    } else if value < 100.0 {
        2
    } else {
        3
    };
    let text = format!("{value:.*}", 3 - integer_digits);
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        &text
    };
    format!("{text}{}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_crictls() {
        assert_eq!(human(1_176_821), "1.18MB");
        assert_eq!(human(745_200), "745kB");
        assert_eq!(human(12_340), "12.3kB");
        assert_eq!(human(999), "999B");
        assert_eq!(human(2_000_000), "2MB");
    }
}
