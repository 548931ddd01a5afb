//! `rkube runtime`: the node's container runtime alone, serving CRI v1 on a unix socket.
//!
//! Today it serves the image service (pull, list, status, remove, filesystem usage) over
//! `<data-dir>/agent/images`, with registry mirrors from `<data-dir>/registries.yaml`, and the
//! runtime service's version, status and config. Sandboxes and containers are not served yet:
//! those calls get gRPC `Unimplemented`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use rkube_runtime::cri::image::Images;
use rkube_runtime::cri::runtime::Runtime;
use rkube_runtime::cri::server::{CriServer, socket_path};
use rkube_runtime::image::archive::ImageStore;
use rkube_runtime::image::pull::{Puller, RegistriesConfig};
use rkube_runtime::image::{images_dir, registries_file};

/// `rkube runtime`
#[derive(Args)]
pub struct RuntimeArgs {
    /// The node's data directory.
    #[arg(long, default_value = "/var/lib/rkube", env = "RKUBE_DATA_DIR")]
    data_dir: PathBuf,

    /// Where to serve CRI.
    #[arg(long, default_value = "unix:///run/rkube/cri.sock")]
    address: String,
}

/// Runs the runtime until SIGINT or SIGTERM.
pub async fn run(args: RuntimeArgs) -> anyhow::Result<()> {
    let path = socket_path(&args.address)?;
    let root = images_dir(&args.data_dir);
    let store = Arc::new(
        ImageStore::open(&root)
            .with_context(|| format!("opening the image store {}", root.display()))?,
    );
    let config = RegistriesConfig::load(&registries_file(&args.data_dir))?;
    let puller = Puller::new(store, config)?;
    let server = CriServer::bind(&path)?;
    tracing::info!(socket = %path.display(), images = %root.display(), "serving CRI");
    server
        .serve(Images::new(puller), Runtime::default(), shutdown_signal())
        .await?;
    Ok(())
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
