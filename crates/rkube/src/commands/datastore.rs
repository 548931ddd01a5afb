//! `rkube datastore`: stats, compaction, snapshot save and restore of the embedded store.
//!
//! Each command takes `--data-dir` and works on `<data-dir>/server/db/state.redb`, creating an
//! empty store where there is none. `stats`, `compact` and `snapshot save` also work while a
//! server has the store open (the server does them, asked over the store's admin socket);
//! `snapshot restore` needs the store to itself. With `--datastore-endpoint`, `stats` and `compact` work on an etcd
//! datastore instead; etcd's own snapshots are taken with `etcdctl snapshot save`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use rkube_store::embedded::{self, EmbeddedStore, snapshot};
use rkube_store::{Error as StoreError, Store};

/// `rkube datastore ...`
#[derive(Args)]
pub struct DatastoreArgs {
    /// The data directory of the server.
    #[arg(
        long,
        global = true,
        default_value = "/var/lib/rkube",
        env = "RKUBE_DATA_DIR"
    )]
    data_dir: PathBuf,

    /// Work on an etcd datastore instead (`http://host:2379,...`), as `rkube server` takes it.
    #[arg(long, global = true, env = "RKUBE_DATASTORE_ENDPOINT")]
    datastore_endpoint: Option<String>,

    #[command(subcommand)]
    command: DatastoreCommand,
}

#[derive(Subcommand)]
enum DatastoreCommand {
    /// Print key count, revision, compacted revision and file size.
    Stats {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Drop history up to a revision (default: the current one). Live keys are kept.
    Compact {
        /// Compact up to this revision instead of the current one.
        #[arg(long)]
        revision: Option<i64>,
    },
    /// Save or restore snapshots.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
}

#[derive(Subcommand)]
enum SnapshotCommand {
    /// Write a consistent snapshot of the store to FILE (works while a server runs).
    Save {
        /// The snapshot file to write.
        file: PathBuf,
    },
    /// Replace the store with the snapshot in FILE (the server must be stopped).
    Restore {
        /// The snapshot file to read.
        file: PathBuf,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Output {
    Text,
    Json,
}

/// Runs a `datastore` subcommand.
pub async fn run(args: DatastoreArgs) -> anyhow::Result<()> {
    if let Some(endpoints) = args.datastore_endpoint.as_deref().filter(|e| !e.is_empty()) {
        return run_etcd(endpoints, args.command).await;
    }
    let db_path = embedded::db_path(&args.data_dir);
    match args.command {
        DatastoreCommand::Stats { output } => {
            let path = db_path.clone();
            let stats = tokio::task::spawn_blocking(move || snapshot::stats(&path)).await??;
            print_stats(&db_path.display().to_string(), &stats, output)?;
        }
        DatastoreCommand::Compact { revision } => {
            let target = match EmbeddedStore::open(&db_path) {
                Ok(store) => {
                    let target = match revision {
                        Some(revision) => revision,
                        None => store.current_revision().await?,
                    };
                    store.compact(target).await.map(|()| target)
                }
                // A running server holds the store: it compacts on our behalf.
                Err(StoreError::Locked { .. }) => {
                    let path = db_path.clone();
                    tokio::task::spawn_blocking(move || {
                        rkube_store::embedded::admin::remote_compact(&path, revision)
                    })
                    .await?
                }
                Err(err) => Err(err),
            }
            .with_context(|| format!("compacting {}", db_path.display()))?;
            println!("compacted {} to revision {target}", db_path.display());
        }
        DatastoreCommand::Snapshot(SnapshotCommand::Save { file }) => {
            let path = db_path.clone();
            let info = tokio::task::spawn_blocking(move || snapshot::save(&path, &file)).await??;
            println!(
                "saved snapshot {} at revision {} ({} keys, {} bytes)",
                info.path.display(),
                info.revision,
                info.keys,
                info.size_bytes
            );
        }
        DatastoreCommand::Snapshot(SnapshotCommand::Restore { file }) => {
            let path = db_path.clone();
            let info = tokio::task::spawn_blocking(move || snapshot::restore(&file, &path))
                .await?
                .map_err(|err| match err {
                    StoreError::Locked { .. } => anyhow::Error::new(err)
                        .context("stop the server before restoring a snapshot"),
                    other => other.into(),
                })?;
            println!(
                "restored {} to revision {} ({} keys)",
                info.path.display(),
                info.revision,
                info.keys
            );
        }
    }
    Ok(())
}

fn print_stats(location: &str, stats: &rkube_store::Stats, output: Output) -> anyhow::Result<()> {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(stats)?),
        Output::Text => {
            println!("datastore:          {location}");
            println!("keys:               {}", stats.keys);
            println!("revision:           {}", stats.revision);
            println!("compacted revision: {}", stats.compacted_revision);
            println!("size bytes:         {}", stats.size_bytes);
        }
    }
    Ok(())
}

/// Parses `http://host:2379,https://...` into endpoints, refusing other schemes by name.
pub(crate) fn parse_endpoints(endpoints: &str) -> anyhow::Result<Vec<String>> {
    let list: Vec<String> = endpoints
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
        .collect();
    for endpoint in &list {
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            anyhow::bail!(
                "unsupported datastore endpoint {endpoint:?}: expected http://host:port or https://host:port of etcd"
            );
        }
    }
    if list.is_empty() {
        anyhow::bail!("--datastore-endpoint names no endpoint");
    }
    Ok(list)
}

/// The `datastore` commands on an etcd datastore.
async fn run_etcd(endpoints: &str, command: DatastoreCommand) -> anyhow::Result<()> {
    let list = parse_endpoints(endpoints)?;
    let connect = || rkube_store::etcd::EtcdStore::connect(&list);
    match command {
        DatastoreCommand::Snapshot(_) => anyhow::bail!(
            "snapshots of an etcd datastore are etcd's own: use `etcdctl --endpoints {endpoints} snapshot save FILE`"
        ),
        DatastoreCommand::Stats { output } => {
            let stats = connect().await?.stats().await?;
            print_stats(endpoints, &stats, output)?;
        }
        DatastoreCommand::Compact { revision } => {
            let store = connect().await?;
            let target = match revision {
                Some(revision) => revision,
                None => store.current_revision().await?,
            };
            store
                .compact(target)
                .await
                .with_context(|| format!("compacting etcd at {endpoints} to revision {target}"))?;
            println!("compacted etcd at {endpoints} to revision {target}");
        }
    }
    Ok(())
}
