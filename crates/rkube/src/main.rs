//! `rkube`: Kubernetes in one binary. Each subcommand lives in its own file under `commands/`;
//! this file parses the command line, sets up logging and turns errors into one clear line and a
//! non-zero exit.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

mod commands;

/// Kubernetes, written in Rust, in one binary.
#[derive(Parser)]
#[command(name = "rkube", version, about, propagate_version = true)]
struct Cli {
    /// More log output (-v debug, -vv trace). RUST_LOG, when set, takes precedence.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane (and, once it exists, a node) on this machine.
    Server(commands::server::ServerArgs),
    /// Run the Kubernetes API server alone.
    Apiserver(commands::apiserver::ApiserverArgs),
    /// Run the controllers alone, against a running apiserver.
    ControllerManager(commands::controller_manager::ControllerManagerArgs),
    /// Inspect, back up and restore the embedded datastore.
    Datastore(commands::datastore::DatastoreArgs),
    /// Import, list, pull and remove the node's images.
    Images(commands::images::ImagesArgs),
    /// Run the node's container runtime alone, serving CRI on a unix socket.
    Runtime(commands::runtime::RuntimeArgs),
    /// A crictl-like client of any CRI runtime.
    Crictl(commands::crictl::CrictlArgs),
}

fn main() -> ExitCode {
    // The runtime's helper processes (shim, sandbox holder, exec) are this binary too; they
    // must stay single-threaded and small, so they run before clap, logging or tokio.
    if let Some(code) = commands::shim::dispatch() {
        return code;
    }
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Server(args) => commands::server::run(args).await,
            Command::Apiserver(args) => commands::apiserver::run(args).await,
            Command::ControllerManager(args) => commands::controller_manager::run(args).await,
            Command::Datastore(args) => commands::datastore::run(args).await,
            Command::Images(args) => commands::images::run(args).await,
            Command::Runtime(args) => commands::runtime::run(args).await,
            Command::Crictl(args) => commands::crictl::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line a person can act on: the error and its causes, outermost first, each
            // cause once (many messages already quote their cause).
            eprintln!("error: {}", rkube_runtime::error_chain(err.as_ref()));
            ExitCode::FAILURE
        }
    }
}

fn init_logging(verbose: u8, format: LogFormat) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // Colours only for a person at a terminal, never in files or CI logs.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
