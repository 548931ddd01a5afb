//! `rkube controller-manager`: the controllers alone, as an API client of a running apiserver
//! (`rkube server` runs them in-process over the same HTTPS road).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

/// `rkube controller-manager` flags.
#[derive(Args)]
pub struct ControllerManagerArgs {
    /// The kubeconfig to reach the apiserver with.
    #[arg(long, default_value = "/etc/rkube/rkube.yaml")]
    kubeconfig: PathBuf,
    /// Controllers to run, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    controllers: Vec<String>,
}

/// Runs the controllers until SIGINT or SIGTERM.
pub async fn run(args: ControllerManagerArgs) -> anyhow::Result<()> {
    check_names(&args.controllers)?;
    let text = std::fs::read_to_string(&args.kubeconfig)
        .with_context(|| format!("reading the kubeconfig {}", args.kubeconfig.display()))?;
    let client = client_from_kubeconfig(&text).await?;
    tokio::select! {
        _ = rkube_controller_manager::run(client, &args.controllers) => Ok(()),
        _ = super::apiserver::shutdown_signal() => Ok(()),
    }
}

/// Refuses unknown controller names, listing the known ones.
pub fn check_names(names: &[String]) -> anyhow::Result<()> {
    for name in names {
        anyhow::ensure!(
            rkube_controller_manager::CONTROLLERS.contains(&name.as_str()),
            "unknown controller {name:?}; known: {}",
            rkube_controller_manager::CONTROLLERS.join(", ")
        );
    }
    Ok(())
}

/// A kube client from kubeconfig text (its current context).
pub async fn client_from_kubeconfig(text: &str) -> anyhow::Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(text).context("parsing the kubeconfig")?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .context("loading the kubeconfig")?;
    kube::Client::try_from(config).context("building the API client")
}
