//! `rkube images`: the node's image store from the command line, for air-gapped nodes (import
//! archives) and for looking at what a node holds. Works on `<data-dir>/agent/images`, the store
//! the node's runtime uses; pulls read `<data-dir>/registries.yaml`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};
use rkube_runtime::image::archive::ImageStore;
use rkube_runtime::image::pull::{Puller, RegistriesConfig};
use rkube_runtime::image::{images_dir, registries_file};

/// `rkube images ...`
#[derive(Args)]
pub struct ImagesArgs {
    /// The node's data directory.
    #[arg(
        long,
        global = true,
        default_value = "/var/lib/rkube",
        env = "RKUBE_DATA_DIR"
    )]
    data_dir: PathBuf,

    #[command(subcommand)]
    command: ImagesCommand,
}

#[derive(Subcommand)]
enum ImagesCommand {
    /// Import OCI image-layout or `docker save` archives (tar, optionally gzipped).
    Import {
        /// The archives.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// List images.
    #[command(alias = "list")]
    Ls {
        /// Only print image ids.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Pull an image from its registry (or the mirrors registries.yaml names).
    Pull {
        /// The image, e.g. `busybox` or `registry.example:5000/app:1.0`.
        image: String,
    },
    /// Remove images by name, then delete blobs no image uses any more.
    #[command(alias = "rmi")]
    Rm {
        /// The images.
        #[arg(required = true)]
        images: Vec<String>,
    },
}

/// Runs an `images` subcommand.
pub async fn run(args: ImagesArgs) -> anyhow::Result<()> {
    let root = images_dir(&args.data_dir);
    let store = Arc::new(
        ImageStore::open(&root)
            .with_context(|| format!("opening the image store {}", root.display()))?,
    );
    match args.command {
        ImagesCommand::Import { files } => {
            for file in files {
                let store = store.clone();
                let path = file.clone();
                let imported = tokio::task::spawn_blocking(move || {
                    let reader = std::fs::File::open(&path)
                        .with_context(|| format!("opening {}", path.display()))?;
                    store
                        .import(std::io::BufReader::new(reader))
                        .with_context(|| format!("importing {}", path.display()))
                })
                .await??;
                for image in imported {
                    let names = if image.names.is_empty() {
                        "<none>".to_owned()
                    } else {
                        image.names.join(", ")
                    };
                    println!("imported {names} ({})", image.manifest);
                }
            }
        }
        ImagesCommand::Ls { quiet } => {
            let images = store.images()?;
            if !quiet {
                println!(
                    "{:<50} {:<20} {:<15} {:>10}",
                    "IMAGE", "TAG", "IMAGE ID", "SIZE"
                );
            }
            for (name, manifest) in images {
                let parsed = store.manifest(&manifest)?;
                let id = parsed.config().digest().to_string();
                let short = id
                    .trim_start_matches("sha256:")
                    .get(..13)
                    .unwrap_or("")
                    .to_owned();
                if quiet {
                    println!("{id}");
                    continue;
                }
                let size: u64 =
                    parsed.config().size() + parsed.layers().iter().map(|l| l.size()).sum::<u64>();
                let (repo, tag) = split_tag(&name);
                println!("{repo:<50} {tag:<20} {short:<15} {:>10}", human(size));
            }
        }
        ImagesCommand::Pull { image } => {
            let config_path = registries_file(&args.data_dir);
            let config = RegistriesConfig::load(&config_path)?;
            let puller = Puller::new(store, config)?;
            let pulled = puller
                .pull(&image, None)
                .await
                .map_err(|err| anyhow::anyhow!("{}", rkube_runtime::error_chain(&*err)))?;
            println!("pulled {} ({})", pulled.name, pulled.manifest);
        }
        ImagesCommand::Rm { images } => {
            let mut missing = Vec::new();
            for image in &images {
                match store.remove_name(image)? {
                    Some(_) => println!("deleted {image}"),
                    None => missing.push(image.clone()),
                }
            }
            let gc_store = store.clone();
            let (blobs, bytes) = tokio::task::spawn_blocking(move || gc_store.gc()).await??;
            if blobs > 0 {
                println!("removed {blobs} unused blobs ({})", human(bytes));
            }
            if !missing.is_empty() {
                anyhow::bail!("no such image: {}", missing.join(", "));
            }
        }
    }
    Ok(())
}

/// `repo:tag` (or `repo@digest`) into its two columns.
fn split_tag(name: &str) -> (&str, &str) {
    if let Some((repo, digest)) = name.split_once('@') {
        return (repo, digest);
    }
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[last_slash..].rfind(':') {
        Some(i) => (&name[..last_slash + i], &name[last_slash + i + 1..]),
        None => (name, "<none>"),
    }
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "kB", "MB", "GB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.1}{}", UNITS[unit])
    }
}
