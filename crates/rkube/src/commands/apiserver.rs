//! `rkube apiserver`: the API server alone, on the embedded store (default) or etcd.
//!
//! At first start it mints the cluster CA and certificates under `<data-dir>/server/tls/` and
//! writes the admin kubeconfig; later starts reuse them. What the server answers today is in
//! `crates/apiserver/src/lib.rs`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use rkube_apiserver::allocator::Cidr;
use rkube_apiserver::server::{Apiserver, Options};
use rkube_apiserver::token::{ServerToken, token_path};
use rkube_apiserver::{kubeconfig, pki::Pki};
use rkube_store::{Store, compactor, embedded, etcd::EtcdStore};

/// `rkube apiserver` flags (DESIGN.md §4); `rkube server` takes them too.
#[derive(Args)]
pub struct ApiserverArgs {
    /// The data directory (store, certificates, token).
    #[arg(long, default_value = "/var/lib/rkube", env = "RKUBE_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    bind_address: IpAddr,
    /// HTTPS port.
    #[arg(long, default_value_t = 6443)]
    https_port: u16,
    /// Where to write the admin kubeconfig.
    #[arg(long, default_value = "/etc/rkube/rkube.yaml")]
    write_kubeconfig: PathBuf,
    /// etcd endpoints (`http://host:2379,...`); empty means the embedded store.
    #[arg(long, default_value = "", env = "RKUBE_DATASTORE_ENDPOINT")]
    datastore_endpoint: String,
    /// Extra names or addresses for the serving certificate.
    #[arg(long = "tls-san")]
    tls_san: Vec<String>,
    /// The IPv4 range Service cluster IPs come from; its first address is the `kubernetes`
    /// Service's.
    #[arg(long, default_value = "10.43.0.0/16")]
    service_cidr: String,
    /// The address other clients reach this apiserver at (the `kubernetes` Service's endpoint);
    /// default: the bind address, or this host's primary address when binding all.
    #[arg(long)]
    advertise_address: Option<IpAddr>,
    /// The cluster's join token secret (or a full `K10...` token of this cluster); default: the
    /// one in `<data-dir>/server/token`, created at first start. Also a bearer token for the API
    /// as a cluster administrator.
    #[arg(long, env = "RKUBE_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// Runs the apiserver until SIGINT or SIGTERM.
pub async fn run(args: ApiserverArgs) -> anyhow::Result<()> {
    run_control_plane(args, "rkube apiserver", false).await
}

/// Starts the control plane (the apiserver and, with `controllers`, the controller-manager as
/// an in-process API client) and serves until SIGINT or SIGTERM. `who` opens the line printed
/// once it is ready.
pub async fn run_control_plane(
    args: ApiserverArgs,
    who: &str,
    controllers: bool,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let service_cidr = Cidr::parse(&args.service_cidr).context("--service-cidr")?;
    let store: Arc<dyn Store> = if args.datastore_endpoint.is_empty() {
        let path = embedded::db_path(&args.data_dir);
        Arc::new(embedded::EmbeddedStore::open(&path)?)
    } else {
        let endpoints = super::datastore::parse_endpoints(&args.datastore_endpoint)?;
        Arc::new(EtcdStore::connect(&endpoints).await?)
    };
    let compactor = compactor::spawn(store.clone(), compactor::DEFAULT_INTERVAL);

    let mut sans = vec![
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
        "localhost".to_owned(),
        "kubernetes".to_owned(),
        "kubernetes.default".to_owned(),
        "kubernetes.default.svc".to_owned(),
        "kubernetes.default.svc.cluster.local".to_owned(),
    ];
    if !args.bind_address.is_unspecified() {
        sans.push(args.bind_address.to_string());
    }
    sans.extend(args.tls_san.iter().cloned());
    let data_dir = args.data_dir.clone();
    let pki = tokio::task::spawn_blocking(move || Pki::load_or_create(&data_dir, &sans))
        .await?
        .context("preparing the cluster certificates")?;

    let token = {
        let (dir, ca, given) = (
            args.data_dir.clone(),
            pki.ca.cert_pem.clone(),
            args.token.clone(),
        );
        tokio::task::spawn_blocking(move || {
            ServerToken::load_or_create(&dir, &ca, given.as_deref())
        })
        .await??
    };
    let advertise_ip = args
        .advertise_address
        .unwrap_or_else(|| advertise_address(args.bind_address));
    let options = Options {
        service_cidr,
        advertise_ip,
        token: Some(token),
    };
    let addr = SocketAddr::new(args.bind_address, args.https_port);
    let server = Apiserver::bind(addr, &pki, store, options).await?;
    let bound = server.local_addr()?;
    let host = if args.bind_address.is_unspecified() {
        "127.0.0.1".to_owned()
    } else if bound.ip().is_ipv6() {
        format!("[{}]", bound.ip())
    } else {
        bound.ip().to_string()
    };
    let url = format!("https://{host}:{}", bound.port());
    kubeconfig::write(
        &args.write_kubeconfig,
        &kubeconfig::admin_kubeconfig(&pki, &url),
    )
    .with_context(|| format!("writing the kubeconfig {}", args.write_kubeconfig.display()))?;
    // Said before serving starts (the socket is bound, connections wait in its backlog), so
    // whoever sees /readyz answer also finds these lines in the log.
    tracing::info!(%url, kubeconfig = %args.write_kubeconfig.display(), elapsed = ?started.elapsed(), "apiserver ready");
    eprintln!(
        "{who} listening on {url}; admin kubeconfig written to {}; join token in {}",
        args.write_kubeconfig.display(),
        token_path(&args.data_dir).display()
    );
    let serving = tokio::spawn(server.run());
    let controller_manager = if controllers {
        // Its own identity, over the same HTTPS road as any client (DESIGN.md: only the
        // apiserver touches the store).
        let cert = pki
            .mint_client("system:kube-controller-manager", &[])
            .context("minting the controller-manager's client certificate")?;
        let text = kubeconfig::kubeconfig_for(&pki, &url, &cert);
        let client = super::controller_manager::client_from_kubeconfig(&text).await?;
        Some(tokio::spawn(async move {
            rkube_controller_manager::run(client, &[]).await
        }))
    } else {
        None
    };

    shutdown_signal().await;
    if let Some(cm) = controller_manager {
        cm.abort();
    }
    serving.abort();
    compactor.abort();
    Ok(())
}

/// The bind address when it is one; otherwise the address this host would use to reach other
/// hosts (the source the kernel picks for a route to a documentation address: a UDP "connect"
/// sends nothing), or loopback on a host without routes.
fn advertise_address(bind: IpAddr) -> IpAddr {
    if !bind.is_unspecified() {
        return bind;
    }
    let probe = || -> std::io::Result<IpAddr> {
        let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
        socket.connect("192.0.2.1:9")?;
        Ok(socket.local_addr()?.ip())
    };
    probe()
        .ok()
        .filter(|ip| !ip.is_unspecified())
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
}

pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
