//! `rkube`: Kubernetes in one binary. Each subcommand lives in its own file under `commands/`;
//! this file parses the command line, sets up logging and turns errors into one clear line and a
//! non-zero exit.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, fmt};

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
        0 => LevelFilter::INFO,
        1 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    };
    // RUST_LOG's directives need EnvFilter; without them a level is enough, and EnvFilter would
    // compile regular expressions to parse "info" (code that then stays resident in every
    // long-running process).
    let (directives, level) = match EnvFilter::try_from_default_env() {
        Ok(filter) => (Some(filter), None),
        Err(_) => (None, Some(default)),
    };
    // Colours only for a person at a terminal, never in files or CI logs.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (text, json) = match format {
        LogFormat::Text => (
            Some(fmt::layer().with_ansi(ansi).with_writer(std::io::stderr)),
            None,
        ),
        LogFormat::Json => (
            None,
            Some(
                fmt::layer()
                    .json()
                    .with_ansi(ansi)
                    .with_writer(std::io::stderr),
            ),
        ),
    };
    tracing_subscriber::registry()
        .with(directives)
        .with(level)
        .with(text)
        .with(json)
        .init();
}
