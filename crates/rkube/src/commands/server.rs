//! `rkube server`: the control plane and (later) a node on this machine, as k3s's `server`.
//!
//! Of the node agent, the container runtime runs in-process today (CRI on
//! `/run/rkube/cri.sock`, state under `<data-dir>/agent`); the kubelet and networking are not
//! there yet, which it says at start. `--disable-agent` runs the control plane alone. The node
//! flags (`--node-name`, `--cluster-cidr`, `--cluster-dns`) are checked now, so a command line
//! that works today keeps working when the rest of the agent arrives.

use std::net::IpAddr;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use rkube_apiserver::allocator::Cidr;

use super::apiserver::{ApiserverArgs, run_control_plane};
use super::runtime::NodeRuntimeArgs;

/// `rkube server` flags (DESIGN.md §4).
#[derive(Args)]
pub struct ServerArgs {
    #[command(flatten)]
    control_plane: ApiserverArgs,
    /// This node's name (default: the host name).
    #[arg(long)]
    node_name: Option<String>,
    /// The IPv4 range pod addresses come from.
    #[arg(long, default_value = "10.42.0.0/16")]
    cluster_cidr: String,
    /// The cluster DNS service's address (inside --service-cidr).
    #[arg(long, default_value = "10.43.0.10")]
    cluster_dns: IpAddr,
    /// Run the control plane only, without a node on this machine.
    #[arg(long)]
    disable_agent: bool,
    /// Do not run the controllers (garbage collector, namespace controller, ...) in-process.
    #[arg(long)]
    disable_controller_manager: bool,

    /// Where the embedded container runtime serves CRI.
    #[arg(long, default_value = "unix:///run/rkube/cri.sock", hide = true)]
    cri_address: String,

    #[command(flatten)]
    runtime: NodeRuntimeArgs,
}

/// Runs `rkube server` until SIGINT or SIGTERM.
pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    Cidr::parse(&args.cluster_cidr).context("--cluster-cidr")?;
    if let Some(name) = &args.node_name {
        let problems = rkube_apiserver::registry::validation::dns1123_subdomain(name);
        anyhow::ensure!(
            problems.is_empty(),
            "--node-name {name:?} is not a valid node name: {}",
            problems.join("; ")
        );
    }
    if !args.cluster_dns.is_ipv4() {
        anyhow::bail!("--cluster-dns {} must be an IPv4 address", args.cluster_dns);
    }
    // The node's runtime starts first: a machine that cannot run containers (not root, no
    // cgroups) is told so at once, with the flag that runs the control plane alone.
    let stop_runtime = Arc::new(tokio::sync::Notify::new());
    let runtime = if args.disable_agent {
        None
    } else {
        let stop = stop_runtime.clone();
        let serving = super::runtime::start(
            &args.control_plane.data_dir,
            &args.cri_address,
            &args.runtime,
            async move { stop.notified().await },
        )
        .await
        .context(
            "starting the node's container runtime (--disable-agent runs the control plane alone)",
        )?;
        eprintln!(
            "rkube server: the container runtime serves CRI on {}; the kubelet and networking are not available yet",
            args.cri_address
        );
        Some(tokio::spawn(serving))
    };
    let control_plane = run_control_plane(
        args.control_plane,
        "rkube server",
        !args.disable_controller_manager,
    )
    .await;
    // The runtime stops with the control plane (at the signal, or when it failed to start);
    // its containers keep running in their shims.
    stop_runtime.notify_one();
    if let Some(runtime) = runtime {
        match runtime.await {
            Ok(result) => result.context("the container runtime")?,
            Err(e) => anyhow::bail!("the container runtime task failed: {e}"),
        }
    }
    control_plane
}
