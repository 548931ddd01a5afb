//! `rkube runtime`: the node's container runtime alone, serving CRI v1 on a unix socket.
//!
//! State lives under `<data-dir>/agent`: images in `images/`, unpacked layers in `layers/`,
//! pod sandboxes and containers in `sandboxes/` and `containers/`; registry mirrors come from
//! `<data-dir>/registries.yaml`. Containers are owned by their shims, so stopping the runtime
//! leaves them running and a new one adopts them. Containers are created, and their shims
//! live, in the small `rkube-shim` executable that this binary carries and writes to
//! `<data-dir>/data/<sha256>/bin/` at start, which also holds each pod's namespaces (`pause`).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use rkube_runtime::cri::image::Images;
use rkube_runtime::cri::runtime::CriRuntime;
use rkube_runtime::cri::server::{CriServer, socket_path};
use rkube_runtime::cri::streaming::StreamingServer;
use rkube_runtime::image::archive::ImageStore;
use rkube_runtime::image::pull::{Puller, RegistriesConfig};
use rkube_runtime::image::{images_dir, registries_file};
use rkube_runtime::{LoopbackOnly, Runtime, RuntimeConfig};

/// `rkube runtime`
#[derive(Args)]
pub struct RuntimeArgs {
    /// The node's data directory.
    #[arg(long, default_value = "/var/lib/rkube", env = "RKUBE_DATA_DIR")]
    data_dir: PathBuf,

    /// Where to serve CRI.
    #[arg(long, default_value = "unix:///run/rkube/cri.sock")]
    address: String,

    #[command(flatten)]
    node: NodeRuntimeArgs,
}

/// The runtime's flags shared by `rkube runtime` and `rkube server` (which embeds it).
#[derive(Args, Clone)]
pub struct NodeRuntimeArgs {
    /// Where the streaming server (exec, attach, port-forward URLs) listens; port 0 picks one.
    #[arg(long, default_value = "127.0.0.1:0")]
    stream_address: std::net::SocketAddr,

    /// Where libcontainer keeps container state (a tmpfs: it must not outlive a reboot).
    #[arg(long, default_value = "/run/rkube/runtime", hide = true)]
    state_dir: PathBuf,

    /// The cgroup under which pod cgroups are made when the caller names no parent.
    #[arg(long, default_value = "/rkube", hide = true)]
    cgroup_root: String,
}

/// Runs the runtime until SIGINT or SIGTERM.
pub async fn run(args: RuntimeArgs) -> anyhow::Result<()> {
    let serving = start(&args.data_dir, &args.address, &args.node, shutdown_signal()).await?;
    serving.await
}

/// Opens the runtime's state and binds its sockets (so that a problem is reported before
/// anything else starts), then serves CRI and streams in the returned future until `shutdown`
/// completes; the socket is removed at the end.
pub async fn start<S>(
    data_dir: &std::path::Path,
    address: &str,
    node: &NodeRuntimeArgs,
    shutdown: S,
) -> anyhow::Result<impl std::future::Future<Output = anyhow::Result<()>> + use<S>>
where
    S: std::future::Future<Output = ()> + Send + 'static,
{
    let path = socket_path(address)?;
    let helper = std::env::current_exe().context("finding this binary (the runtime's helper)")?;
    let mut config = RuntimeConfig::new(&data_dir.join("agent"), &helper);
    config.lean_helper = super::shim::install_lean_helper(data_dir)
        .context("writing the runtime's helper executable")?;
    config.state_dir = node.state_dir.clone();
    config.cgroup_root = node.cgroup_root.clone();
    let images = images_dir(data_dir);
    let store = Arc::new(
        ImageStore::open(&images)
            .with_context(|| format!("opening the image store {}", images.display()))?,
    );
    let runtime = Runtime::with_images(config, store.clone(), Box::new(LoopbackOnly))
        .context("opening the container runtime")?;
    let registries = RegistriesConfig::load(&registries_file(data_dir))?;
    let puller = Puller::new(store, registries)?;
    let runtime = Arc::new(runtime);
    let streaming = StreamingServer::bind(node.stream_address).await?;
    let streams = streaming.streams();
    let server = CriServer::bind(&path)?;
    tracing::info!(socket = %path.display(), streams = streams.base_url(), images = %images.display(), cgroups = ?runtime.cgroups().layout(), "serving CRI");
    Ok(async move {
        let streaming = tokio::spawn(streaming.serve(runtime.clone()));
        let served = server
            .serve(
                Images::new(puller),
                CriRuntime::new(runtime).with_streaming(streams),
                shutdown,
            )
            .await;
        streaming.abort();
        served?;
        Ok(())
    })
}

/// Completes at SIGINT or SIGTERM.
async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(err) => {
            tracing::warn!(error = %err, "cannot watch SIGTERM; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
