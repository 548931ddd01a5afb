//! `rkube crictl`: a crictl-like debug client of any CRI runtime (rkube's or containerd), with
//! crictl's flags and output: images, pods and containers, config files in crictl's JSON/YAML
//! format. `exec` (unless `--sync` or `--timeout`) opens the runtime's streaming URL (a
//! WebSocket speaking the `v5`/`v4.channel.k8s.io` protocol), with stdin (`-i`) and a TTY (`-t`).

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

    /// Image endpoint (defaults to the runtime endpoint). Long form only: `-i` is `exec -i`.
    #[arg(long, global = true, env = "IMAGE_SERVICE_ENDPOINT")]
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
    /// List pod sandboxes.
    Pods {
        /// Only show IDs.
        #[arg(short, long)]
        quiet: bool,
        /// Only the sandbox with this ID (or ID prefix).
        #[arg(long)]
        id: Option<String>,
        /// Only sandboxes with this name.
        #[arg(long)]
        name: Option<String>,
        /// Only sandboxes in this namespace.
        #[arg(long)]
        namespace: Option<String>,
        /// Only sandboxes in this state (ready, notready).
        #[arg(short, long)]
        state: Option<String>,
        /// Only sandboxes with this label (`key=value`; repeatable).
        #[arg(long)]
        label: Vec<String>,
    },
    /// List containers (running ones unless `-a`).
    Ps {
        /// All containers, not only running ones.
        #[arg(short, long)]
        all: bool,
        /// Only show IDs.
        #[arg(short, long)]
        quiet: bool,
        /// Only the container with this ID (or ID prefix).
        #[arg(long)]
        id: Option<String>,
        /// Only containers of this pod sandbox.
        #[arg(short, long)]
        pod: Option<String>,
        /// Only containers with this name.
        #[arg(long)]
        name: Option<String>,
        /// Only containers in this state (created, running, exited, unknown).
        #[arg(short, long)]
        state: Option<String>,
        /// Only containers with this label (`key=value`; repeatable).
        #[arg(long)]
        label: Vec<String>,
    },
    /// Run a pod sandbox from a config file; prints its ID.
    Runp {
        /// The pod sandbox config (JSON or YAML).
        config: std::path::PathBuf,
    },
    /// Create a container in a pod sandbox; prints its ID.
    Create {
        /// The pod sandbox ID.
        pod: String,
        /// The container config (JSON or YAML).
        container_config: std::path::PathBuf,
        /// The pod sandbox config it was run with.
        pod_config: std::path::PathBuf,
    },
    /// Start created containers.
    Start {
        /// Container IDs.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Run a pod sandbox and a container in it; prints the container's ID.
    Run {
        /// The container config (JSON or YAML).
        container_config: std::path::PathBuf,
        /// The pod sandbox config (JSON or YAML).
        pod_config: std::path::PathBuf,
    },
    /// Stop running containers.
    Stop {
        /// Seconds to wait after SIGTERM before SIGKILL.
        #[arg(short, long, default_value_t = 0)]
        timeout: i64,
        /// Container IDs.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Stop pod sandboxes (and their containers).
    Stopp {
        /// Pod sandbox IDs.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Remove containers.
    Rm {
        /// Stop running ones first (rkube's runtime always does, as CRI asks).
        #[arg(short, long)]
        force: bool,
        /// Container IDs.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Remove pod sandboxes and their containers.
    Rmp {
        /// Stop running ones first (CRI removal always does).
        #[arg(short, long)]
        force: bool,
        /// Pod sandbox IDs.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Show a container's status as JSON.
    Inspect {
        /// Container ID.
        id: String,
    },
    /// Show a pod sandbox's status as JSON.
    Inspectp {
        /// Pod sandbox ID.
        id: String,
    },
    /// Print a container's logs.
    Logs {
        /// Keep printing until the container exits.
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines.
        #[arg(long)]
        tail: Option<usize>,
        /// Container ID.
        id: String,
    },
    /// Run a command in a running container.
    Exec {
        /// Keep stdin open.
        #[arg(short, long)]
        interactive: bool,
        /// Allocate a TTY.
        #[arg(short, long)]
        tty: bool,
        /// Run synchronously (ExecSync) instead of streaming.
        #[arg(short, long)]
        sync: bool,
        /// Seconds before the command is killed (0: none); implies --sync.
        #[arg(long, default_value_t = 0)]
        timeout: i64,
        /// Container ID.
        id: String,
        /// The command and its arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Show containers' resource use.
    Stats {
        /// All containers, not only running ones (stopped ones show what they use: nothing).
        #[arg(short, long)]
        all: bool,
        /// Only this container (ID or prefix).
        id: Option<String>,
    },
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
        other => pods_and_containers(&mut client, other).await?,
    }
    Ok(())
}

fn read_config<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> anyhow::Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    super::crictl_config::parse(&text).with_context(|| format!("reading {}", path.display()))
}

fn labels(pairs: &[String]) -> anyhow::Result<std::collections::HashMap<String, String>> {
    pairs
        .iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| anyhow::anyhow!("label {p:?} is not key=value"))
        })
        .collect()
}

/// The one sandbox whose ID starts with `prefix`.
async fn sandbox_id(client: &mut CriClient, prefix: &str) -> anyhow::Result<String> {
    let items = client
        .runtime
        .list_pod_sandbox(cri::ListPodSandboxRequest {
            filter: Some(cri::PodSandboxFilter {
                id: prefix.to_owned(),
                ..Default::default()
            }),
        })
        .await
        .context("listing pod sandboxes")?
        .into_inner()
        .items;
    unique(items.into_iter().map(|s| s.id), prefix, "pod sandbox")
}

/// The one container whose ID starts with `prefix`.
async fn container_id(client: &mut CriClient, prefix: &str) -> anyhow::Result<String> {
    let containers = client
        .runtime
        .list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                id: prefix.to_owned(),
                ..Default::default()
            }),
        })
        .await
        .context("listing containers")?
        .into_inner()
        .containers;
    unique(containers.into_iter().map(|c| c.id), prefix, "container")
}

fn unique(ids: impl Iterator<Item = String>, prefix: &str, what: &str) -> anyhow::Result<String> {
    let ids: Vec<String> = ids.filter(|id| id.starts_with(prefix)).collect();
    match ids.as_slice() {
        [one] => Ok(one.clone()),
        [] => anyhow::bail!("no {what} with ID {prefix:?}"),
        _ => anyhow::bail!("{what} ID {prefix:?} is ambiguous: {} match", ids.len()),
    }
}

fn sandbox_state(name: &str) -> anyhow::Result<i32> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "ready" | "sandbox_ready" => cri::PodSandboxState::SandboxReady as i32,
        "notready" | "sandbox_notready" => cri::PodSandboxState::SandboxNotready as i32,
        other => anyhow::bail!("unknown pod state {other:?} (ready, notready)"),
    })
}

fn container_state(name: &str) -> anyhow::Result<i32> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "created" => cri::ContainerState::ContainerCreated as i32,
        "running" => cri::ContainerState::ContainerRunning as i32,
        "exited" => cri::ContainerState::ContainerExited as i32,
        "unknown" => cri::ContainerState::ContainerUnknown as i32,
        other => {
            anyhow::bail!("unknown container state {other:?} (created, running, exited, unknown)")
        }
    })
}

fn state_name(state: i32) -> &'static str {
    match cri::ContainerState::try_from(state) {
        Ok(cri::ContainerState::ContainerCreated) => "Created",
        Ok(cri::ContainerState::ContainerRunning) => "Running",
        Ok(cri::ContainerState::ContainerExited) => "Exited",
        _ => "Unknown",
    }
}

/// "3 seconds ago", as crictl prints creation times.
fn ago(created_ns: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    let seconds = ((now - created_ns) / 1_000_000_000).max(0);
    let (n, unit) = match seconds {
        0..60 => (seconds, "second"),
        60..3600 => (seconds / 60, "minute"),
        3600..86400 => (seconds / 3600, "hour"),
        _ => (seconds / 86400, "day"),
    };
    if n == 1 {
        format!("1 {unit} ago")
    } else {
        format!("{n} {unit}s ago")
    }
}

/// Prints rows as crictl does: columns padded to their widest cell, three spaces apart.
fn print_table(rows: Vec<Vec<String>>) {
    let Some(first) = rows.first() else { return };
    let widths: Vec<usize> = (0..first.len())
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

fn with_info<T: serde::Serialize>(
    status: T,
    info: std::collections::HashMap<String, String>,
) -> anyhow::Result<String> {
    let mut out = serde_json::json!({ "status": status });
    for (key, value) in info {
        let value = serde_json::from_str(&value).unwrap_or(serde_json::Value::String(value));
        out[key] = value;
    }
    Ok(serde_json::to_string_pretty(&out)?)
}

async fn pods_and_containers(client: &mut CriClient, command: CrictlCommand) -> anyhow::Result<()> {
    match command {
        CrictlCommand::Pods {
            quiet,
            id,
            name,
            namespace,
            state,
            label,
        } => {
            let filter = cri::PodSandboxFilter {
                id: id.unwrap_or_default(),
                state: state
                    .map(|s| sandbox_state(&s))
                    .transpose()?
                    .map(|state| cri::PodSandboxStateValue { state }),
                label_selector: labels(&label)?,
            };
            let mut items = client
                .runtime
                .list_pod_sandbox(cri::ListPodSandboxRequest {
                    filter: Some(filter),
                })
                .await
                .context("listing pod sandboxes")?
                .into_inner()
                .items;
            items.retain(|s| {
                let m = s.metadata.clone().unwrap_or_default();
                name.as_ref().is_none_or(|n| *n == m.name)
                    && namespace.as_ref().is_none_or(|n| *n == m.namespace)
            });
            items.sort_by_key(|s| std::cmp::Reverse(s.created_at));
            if quiet {
                items.iter().for_each(|s| println!("{}", s.id));
                return Ok(());
            }
            let mut rows = vec![
                [
                    "POD ID",
                    "CREATED",
                    "STATE",
                    "NAME",
                    "NAMESPACE",
                    "ATTEMPT",
                    "RUNTIME",
                ]
                .map(String::from)
                .to_vec(),
            ];
            for s in items {
                let m = s.metadata.unwrap_or_default();
                let state = if s.state == cri::PodSandboxState::SandboxReady as i32 {
                    "Ready"
                } else {
                    "NotReady"
                };
                rows.push(vec![
                    short(&s.id),
                    ago(s.created_at),
                    state.into(),
                    m.name,
                    m.namespace,
                    m.attempt.to_string(),
                    if s.runtime_handler.is_empty() {
                        "(default)".into()
                    } else {
                        s.runtime_handler
                    },
                ]);
            }
            print_table(rows);
        }
        CrictlCommand::Ps {
            all,
            quiet,
            id,
            pod,
            name,
            state,
            label,
        } => {
            let state = match state {
                Some(s) => Some(container_state(&s)?),
                None if all => None,
                None => Some(cri::ContainerState::ContainerRunning as i32),
            };
            let pod_sandbox_id = match pod {
                Some(p) => sandbox_id(client, &p).await?,
                None => String::new(),
            };
            let filter = cri::ContainerFilter {
                id: id.unwrap_or_default(),
                state: state.map(|state| cri::ContainerStateValue { state }),
                pod_sandbox_id,
                label_selector: labels(&label)?,
            };
            let mut containers = client
                .runtime
                .list_containers(cri::ListContainersRequest {
                    filter: Some(filter),
                })
                .await
                .context("listing containers")?
                .into_inner()
                .containers;
            containers.retain(|c| {
                name.as_ref()
                    .is_none_or(|n| c.metadata.as_ref().is_some_and(|m| m.name == *n))
            });
            containers.sort_by_key(|c| std::cmp::Reverse(c.created_at));
            if quiet {
                containers.iter().for_each(|c| println!("{}", c.id));
                return Ok(());
            }
            let pods = client
                .runtime
                .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
                .await
                .context("listing pod sandboxes")?
                .into_inner()
                .items;
            let mut rows = vec![
                [
                    "CONTAINER",
                    "IMAGE",
                    "CREATED",
                    "STATE",
                    "NAME",
                    "ATTEMPT",
                    "POD ID",
                    "POD",
                ]
                .map(String::from)
                .to_vec(),
            ];
            for c in containers {
                let m = c.metadata.unwrap_or_default();
                let pod_name = pods
                    .iter()
                    .find(|p| p.id == c.pod_sandbox_id)
                    .and_then(|p| p.metadata.as_ref())
                    .map(|m| m.name.clone())
                    .unwrap_or_default();
                let image = c.image.map(|i| i.image).unwrap_or_default();
                let image = match image.strip_prefix("sha256:") {
                    Some(hex) => short(hex),
                    None => image,
                };
                rows.push(vec![
                    short(&c.id),
                    image,
                    ago(c.created_at),
                    state_name(c.state).into(),
                    m.name,
                    m.attempt.to_string(),
                    short(&c.pod_sandbox_id),
                    pod_name,
                ]);
            }
            print_table(rows);
        }
        CrictlCommand::Runp { config } => {
            let config: cri::PodSandboxConfig = read_config(&config)?;
            let id = run_pod(client, config).await?;
            println!("{id}");
        }
        CrictlCommand::Create {
            pod,
            container_config,
            pod_config,
        } => {
            let pod = sandbox_id(client, &pod).await?;
            let id = create(
                client,
                &pod,
                read_config(&container_config)?,
                read_config(&pod_config)?,
            )
            .await?;
            println!("{id}");
        }
        CrictlCommand::Run {
            container_config,
            pod_config,
        } => {
            let container: cri::ContainerConfig = read_config(&container_config)?;
            let pod_config: cri::PodSandboxConfig = read_config(&pod_config)?;
            let pod = run_pod(client, pod_config.clone()).await?;
            let id = create(client, &pod, container, pod_config).await?;
            client
                .runtime
                .start_container(cri::StartContainerRequest {
                    container_id: id.clone(),
                })
                .await
                .with_context(|| format!("starting container {id}"))?;
            println!("{id}");
        }
        CrictlCommand::Start { ids } => {
            each(client, ids, Of::Container, "", async |c, id| {
                c.runtime
                    .start_container(cri::StartContainerRequest { container_id: id })
                    .await?;
                Ok(())
            })
            .await?
        }
        CrictlCommand::Stop { timeout, ids } => {
            each(client, ids, Of::Container, "", async |c, id| {
                c.runtime
                    .stop_container(cri::StopContainerRequest {
                        container_id: id,
                        timeout,
                    })
                    .await?;
                Ok(())
            })
            .await?
        }
        CrictlCommand::Stopp { ids } => {
            each(
                client,
                ids,
                Of::Sandbox,
                "Stopped sandbox ",
                async |c, id| {
                    c.runtime
                        .stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: id })
                        .await?;
                    Ok(())
                },
            )
            .await?
        }
        CrictlCommand::Rm { force: _, ids } => {
            each(client, ids, Of::Container, "", async |c, id| {
                c.runtime
                    .remove_container(cri::RemoveContainerRequest { container_id: id })
                    .await?;
                Ok(())
            })
            .await?
        }
        CrictlCommand::Rmp { force: _, ids } => {
            each(
                client,
                ids,
                Of::Sandbox,
                "Removed sandbox ",
                async |c, id| {
                    c.runtime
                        .remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id })
                        .await?;
                    Ok(())
                },
            )
            .await?
        }
        CrictlCommand::Inspect { id } => {
            let id = container_id(client, &id).await?;
            let response = client
                .runtime
                .container_status(cri::ContainerStatusRequest {
                    container_id: id.clone(),
                    verbose: true,
                })
                .await
                .with_context(|| format!("inspecting container {id}"))?
                .into_inner();
            println!("{}", with_info(response.status, response.info)?);
        }
        CrictlCommand::Inspectp { id } => {
            let id = sandbox_id(client, &id).await?;
            let response = client
                .runtime
                .pod_sandbox_status(cri::PodSandboxStatusRequest {
                    pod_sandbox_id: id.clone(),
                    verbose: true,
                })
                .await
                .with_context(|| format!("inspecting pod sandbox {id}"))?
                .into_inner();
            println!("{}", with_info(response.status, response.info)?);
        }
        CrictlCommand::Logs { follow, tail, id } => logs(client, &id, follow, tail).await?,
        CrictlCommand::Exec {
            interactive,
            tty,
            sync,
            timeout,
            id,
            command,
        } => {
            let id = container_id(client, &id).await?;
            if (sync || timeout > 0) && !(interactive || tty) {
                let out = client
                    .runtime
                    .exec_sync(cri::ExecSyncRequest {
                        container_id: id.clone(),
                        cmd: command,
                        timeout,
                    })
                    .await
                    .with_context(|| format!("exec in container {id}"))?
                    .into_inner();
                use std::io::Write;
                std::io::stdout().write_all(&out.stdout)?;
                std::io::stderr().write_all(&out.stderr)?;
                if out.exit_code != 0 {
                    std::process::exit(out.exit_code);
                }
                return Ok(());
            }
            if sync || timeout > 0 {
                anyhow::bail!("--sync and --timeout cannot be combined with -i or -t");
            }
            let url = client
                .runtime
                .exec(cri::ExecRequest {
                    container_id: id.clone(),
                    cmd: command,
                    tty,
                    stdin: interactive,
                    stdout: true,
                    stderr: !tty,
                })
                .await
                .with_context(|| format!("exec in container {id}"))?
                .into_inner()
                .url;
            let code = stream(&url, interactive, tty).await?;
            // Stdin is read on a thread that only process exit ends.
            std::process::exit(code);
        }
        CrictlCommand::Stats { all, id } => stats(client, all, id).await?,
        _ => unreachable!("image commands are handled by run"),
    }
    Ok(())
}

/// What an ID names.
#[derive(Clone, Copy)]
enum Of {
    Container,
    Sandbox,
}

/// Resolves each ID (or prefix) and runs `call` on the full ID, printing `done` and the ID as
/// given after each, as crictl does; stops at the first failure, naming the ID.
async fn each(
    client: &mut CriClient,
    ids: Vec<String>,
    of: Of,
    done: &str,
    mut call: impl AsyncFnMut(&mut CriClient, String) -> Result<(), tonic::Status>,
) -> anyhow::Result<()> {
    for prefix in ids {
        let (id, what) = match of {
            Of::Container => (container_id(client, &prefix).await?, "container"),
            Of::Sandbox => (sandbox_id(client, &prefix).await?, "pod sandbox"),
        };
        call(client, id.clone())
            .await
            .with_context(|| format!("{what} {id}"))?;
        println!("{done}{prefix}");
    }
    Ok(())
}

async fn run_pod(client: &mut CriClient, config: cri::PodSandboxConfig) -> anyhow::Result<String> {
    Ok(client
        .runtime
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        })
        .await
        .context("running the pod sandbox")?
        .into_inner()
        .pod_sandbox_id)
}

async fn create(
    client: &mut CriClient,
    pod: &str,
    container: cri::ContainerConfig,
    pod_config: cri::PodSandboxConfig,
) -> anyhow::Result<String> {
    Ok(client
        .runtime
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.to_owned(),
            config: Some(container),
            sandbox_config: Some(pod_config),
        })
        .await
        .context("creating the container")?
        .into_inner()
        .container_id)
}

/// Prints the container's log lines (stdout to stdout, stderr to stderr), following it while
/// the container runs when asked.
async fn logs(
    client: &mut CriClient,
    prefix: &str,
    follow: bool,
    tail: Option<usize>,
) -> anyhow::Result<()> {
    use std::io::Write;
    let id = container_id(client, prefix).await?;
    let mut printed = 0usize;
    let mut first = true;
    loop {
        let status = client
            .runtime
            .container_status(cri::ContainerStatusRequest {
                container_id: id.clone(),
                verbose: false,
            })
            .await
            .with_context(|| format!("container {id}"))?
            .into_inner()
            .status
            .ok_or_else(|| anyhow::anyhow!("container {id} has no status"))?;
        let running = status.state == cri::ContainerState::ContainerRunning as i32;
        let bytes = std::fs::read(&status.log_path)
            .with_context(|| format!("reading the log {}", status.log_path))?;
        // Only whole lines: a follower waits for the rest of a line being written.
        let whole = bytes
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(&bytes[..0], |end| &bytes[..=end]);
        let records = rkube_runtime::logs::parse_records(whole)
            .ok_or_else(|| anyhow::anyhow!("{} is not a CRI log", status.log_path))?;
        let lines = rkube_runtime::logs::join_lines(&records);
        let start = if first {
            tail.map_or(0, |n| lines.len().saturating_sub(n))
        } else {
            printed.min(lines.len())
        };
        first = false;
        for (stream, line) in &lines[start..] {
            let mut line = line.clone();
            line.push(b'\n');
            if stream == "stderr" {
                std::io::stderr().write_all(&line)?;
            } else {
                std::io::stdout().write_all(&line)?;
            }
        }
        printed = lines.len();
        if !follow || !running {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// `crictl stats`: CPU % from two samples a second apart, memory working set, writable layer.
async fn stats(client: &mut CriClient, all: bool, id: Option<String>) -> anyhow::Result<()> {
    let filter = match &id {
        Some(prefix) => Some(cri::ContainerStatsFilter {
            id: container_id(client, prefix).await?,
            ..Default::default()
        }),
        None => None,
    };
    let sample = async |client: &mut CriClient| -> anyhow::Result<Vec<cri::ContainerStats>> {
        Ok(client
            .runtime
            .list_container_stats(cri::ListContainerStatsRequest {
                filter: filter.clone(),
            })
            .await
            .context("container stats")?
            .into_inner()
            .stats)
    };
    let before = sample(client).await?;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let mut after = sample(client).await?;
    if all {
        // Runtimes list stats of running containers only; ask for the others one by one.
        let containers = client
            .runtime
            .list_containers(cri::ListContainersRequest {
                filter: Some(cri::ContainerFilter {
                    id: filter.as_ref().map(|f| f.id.clone()).unwrap_or_default(),
                    ..Default::default()
                }),
            })
            .await
            .context("listing containers")?
            .into_inner()
            .containers;
        for c in containers {
            if after
                .iter()
                .any(|s| s.attributes.as_ref().is_some_and(|a| a.id == c.id))
            {
                continue;
            }
            let stats = client
                .runtime
                .container_stats(cri::ContainerStatsRequest {
                    container_id: c.id.clone(),
                })
                .await
                .with_context(|| format!("stats of container {}", c.id))?
                .into_inner()
                .stats;
            after.extend(stats);
        }
    }
    let cpu = |s: &cri::ContainerStats| {
        s.cpu.as_ref().map(|c| {
            (
                c.timestamp,
                c.usage_core_nano_seconds.as_ref().map_or(0, |v| v.value),
            )
        })
    };
    let mut rows = vec![
        ["CONTAINER", "NAME", "CPU %", "MEM", "DISK", "INODES"]
            .map(String::from)
            .to_vec(),
    ];
    for s in &after {
        let attributes = s.attributes.clone().unwrap_or_default();
        let earlier = before
            .iter()
            .find(|b| b.attributes.as_ref().map(|a| &a.id) == Some(&attributes.id));
        let percent = match (earlier.and_then(cpu), cpu(s)) {
            (Some((t0, u0)), Some((t1, u1))) if t1 > t0 => {
                format!(
                    "{:.2}",
                    (u1.saturating_sub(u0)) as f64 * 100.0 / (t1 - t0) as f64
                )
            }
            _ => "-".into(),
        };
        let memory = s
            .memory
            .as_ref()
            .and_then(|m| m.working_set_bytes.as_ref())
            .map_or(0, |v| v.value);
        let layer = s.writable_layer.clone().unwrap_or_default();
        rows.push(vec![
            short(&attributes.id),
            attributes.metadata.map(|m| m.name).unwrap_or_default(),
            percent,
            human(memory),
            human(layer.used_bytes.map_or(0, |v| v.value)),
            layer.inodes_used.map_or(0, |v| v.value).to_string(),
        ]);
    }
    print_table(rows);
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

/// Opens a streaming URL and connects it to this process's stdio; the remote exit code.
async fn stream(url: &str, stdin: bool, tty: bool) -> anyhow::Result<i32> {
    use rkube_runtime::cri::streaming::client::Session;
    use rkube_runtime::cri::streaming::protocol::{V4_PROTOCOL, V5_PROTOCOL};
    let session = Session::open(url, &[V5_PROTOCOL, V4_PROTOCOL]).await?;
    Ok(session.run_with_stdio(stdin, tty).await?)
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
