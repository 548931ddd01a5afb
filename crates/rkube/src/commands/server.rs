//! `rkube server`: the control plane and (later) a node on this machine, as k3s's `server`.
//!
//! Today the node agent (kubelet, container runtime, networking) is not part of it: `rkube
//! server` runs the control plane alone and says so at start; `--disable-agent` asks for exactly
//! that. The node flags (`--node-name`, `--cluster-cidr`, `--cluster-dns`) are checked now, so a
//! command line that works today keeps working when the agent arrives.

use std::net::IpAddr;

use anyhow::Context;
use clap::Args;
use rkube_apiserver::allocator::Cidr;

use super::apiserver::{ApiserverArgs, run_control_plane};

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
    if !args.disable_agent {
        eprintln!(
            "rkube server: the node agent (kubelet, container runtime, networking) is not available yet; \
             running the control plane only, as with --disable-agent"
        );
    }
    run_control_plane(
        args.control_plane,
        "rkube server",
        !args.disable_controller_manager,
    )
    .await
}
