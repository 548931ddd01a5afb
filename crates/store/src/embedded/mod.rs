//! The embedded backend: one `redb` file, no process to run. The default store of `rkube server`.
//!
//! Layout: three tables in one file. `kv` holds each live key's current value with its create and
//! mod revisions; `log` holds one record per revision (the write, with the value it replaced), so
//! lists at a past revision and watches from a past revision can be answered until compaction
//! trims it; `meta` holds the current and compacted revisions.
//!
//! Writes go through one writer thread (`writer.rs`) that takes every request queued while the
//! previous batch was syncing and handles them together (group commit): each write still gets its
//! own revision, and each caller is answered only after the batch is durable in the write-ahead
//! log (`wal.rs`), which redb catches up with at checkpoints and, after a crash, at open. Committed
//! events are handed to watchers from memory (`watch.rs`); a watcher that falls behind catches up
//! from `log`.
//!
//! The file is locked by the process that opens it: a second one (another `rkube server` on the
//! same data dir) is refused with [`Error::Locked`]. The store answers `rkube datastore stats` and
//! `snapshot save` from other processes over a unix socket beside its file ([`admin`]).

pub mod admin;
mod codec;
pub mod snapshot;
mod wal;
mod watch;
mod writer;

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redb::{
    Builder, Database, DatabaseError, ReadTransaction, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, StorageError, TableDefinition,
};
use tokio::sync::oneshot;

use crate::error::read_failed;
use crate::{
    Error, KeyValue, ListOptions, ListResult, Result, Revision, Stats, Store, WatchStream,
    key_after, prefix_range_end,
};

pub(crate) const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
pub(crate) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

pub(crate) const META_FORMAT: &str = "format";
pub(crate) const META_REVISION: &str = "revision";
pub(crate) const META_COMPACTED: &str = "compacted";
/// The revision the last checkpoint made durable (informational; the log is what replay trusts).
pub(crate) const META_CHECKPOINT: &str = "checkpoint";
/// A random id of this store file: its write-ahead log carries it, so a log left beside a file
/// that a snapshot restore replaced is never replayed onto it.
pub(crate) const META_STORE_ID: &str = "store_id";
/// Version of the layout; a file with another one is refused rather than misread. Version 2 added
/// the write-ahead log (a version-1 file, which has none, is upgraded when opened).
pub(crate) const FORMAT_VERSION: u64 = 2;
/// The layout before the write-ahead log, still read.
pub(crate) const FORMAT_VERSION_1: u64 = 1;

/// The data file's name inside `<data-dir>/server/db/`.
pub const DB_FILE_NAME: &str = "state.redb";

/// The data file of a data dir: `<data-dir>/server/db/state.redb`.
pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join("server").join("db").join(DB_FILE_NAME)
}

/// Tunables of the embedded store.
#[derive(Clone, Debug)]
pub struct Options {
    /// redb's page cache. Reads are served from it; the rest of the file stays on disk.
    pub cache_bytes: usize,
    /// How often idle watchers get a [`crate::WatchItem::Progress`].
    pub progress_interval: Duration,
    /// Size of a write-ahead log segment: redb is checkpointed each time one fills, and at most
    /// about one segment is replayed at open.
    pub wal_segment_bytes: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            cache_bytes: 64 << 20,
            progress_interval: Duration::from_secs(5),
            wal_segment_bytes: wal::SEGMENT_BYTES,
        }
    }
}

/// State shared by the store handle, its writer thread and its watchers.
pub(crate) struct Core {
    pub(crate) db: Database,
    pub(crate) path: PathBuf,
    /// The last revision committed and handed to watchers.
    pub(crate) revision: AtomicI64,
    /// History at or below this revision is gone.
    pub(crate) compacted: AtomicI64,
    pub(crate) hub: watch::Hub,
}

/// A fresh random store id (see [`META_STORE_ID`]).
pub(crate) fn new_store_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS's randomness; mixing in the time and pid only adds.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    hasher.write_u128(now.as_nanos());
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// The embedded store. Dropping it finishes queued writes and releases the file.
pub struct EmbeddedStore {
    core: Arc<Core>,
    /// `None` once dropping: the writer then finishes and exits.
    requests: Option<std::sync::mpsc::Sender<writer::Request>>,
    writer: Option<std::thread::JoinHandle<()>>,
    ticker: Option<tokio::task::JoinHandle<()>>,
    admin: Option<admin::Server>,
}

impl EmbeddedStore {
    /// Opens the store at `path` (a file), creating it and its directories when absent.
    pub fn open(path: impl AsRef<Path>) -> Result<EmbeddedStore> {
        Self::open_with(path, Options::default())
    }

    /// [`EmbeddedStore::open`] with explicit [`Options`].
    pub fn open_with(path: impl AsRef<Path>, options: Options) -> Result<EmbeddedStore> {
        let path = path.as_ref().to_path_buf();
        let db = open_database(&path, options.cache_bytes)?;
        let (revision, compacted, store_id) = initialize(&db, &path)?;
        // Redo what the log holds past redb's last checkpoint, make it durable, start a new log.
        let wal_dir = wal::dir_of(&path);
        let replay = wal::recover(&wal_dir, store_id, revision)?;
        let revision = replay_into(&db, &path, revision, replay)?;
        let wal = wal::Wal::start(&wal_dir, store_id, revision + 1, options.wal_segment_bytes)?;
        let core = Arc::new(Core {
            db,
            path,
            revision: AtomicI64::new(revision),
            compacted: AtomicI64::new(compacted),
            hub: watch::Hub::new(),
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let writer = {
            let core = core.clone();
            let path = core.path.clone();
            std::thread::Builder::new()
                .name("rkube-store-writer".into())
                .spawn(move || writer::run(core, wal, rx, revision))
                .map_err(|source| Error::DataPath { path, source })?
        };
        let ticker = tokio::runtime::Handle::try_current().ok().map(|handle| {
            handle.spawn(watch::progress_ticker(
                Arc::downgrade(&core),
                options.progress_interval,
            ))
        });
        let admin = admin::Server::start(Arc::downgrade(&core), tx.clone());
        Ok(EmbeddedStore {
            core,
            requests: Some(tx),
            writer: Some(writer),
            ticker,
            admin,
        })
    }

    /// The data file.
    pub fn path(&self) -> &Path {
        &self.core.path
    }

    /// Writes a consistent snapshot of the store, as of now, to `dest` (atomically: a crash leaves
    /// either no file or a complete one). Writes may continue meanwhile.
    pub async fn snapshot(&self, dest: &Path) -> Result<snapshot::SnapshotInfo> {
        let core = self.core.clone();
        let dest = dest.to_path_buf();
        run_blocking(move || snapshot::save_from(&core.db, &core.path, &dest)).await
    }

    /// Hands a request to the writer thread.
    fn send(&self, request: writer::Request) -> Result<()> {
        let tx = self.requests.as_ref().ok_or(Error::Closed)?;
        tx.send(request).map_err(|_| Error::Closed)
    }

    async fn submit(&self, op: writer::WriteOp) -> Result<writer::Outcome> {
        let (reply, rx) = oneshot::channel();
        self.send(writer::Request::Write { op, reply })?;
        rx.await.map_err(|_| Error::Closed)?
    }

    fn read_txn(&self) -> Result<ReadTransaction> {
        self.core.db.begin_read().map_err(read_failed)
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        // Other processes stop finding the store before it closes (and the admin thread's
        // handle on the writer goes, so the writer can see its queue closed).
        self.admin.take();
        self.requests.take();
        if let Some(writer) = self.writer.take() {
            // The writer finishes the batch it holds, then sees the channel closed.
            let _ = writer.join();
        }
        if let Some(ticker) = self.ticker.take() {
            ticker.abort();
        }
    }
}

/// Checks the store file at `path` page by page (opening it runs crash recovery first, as every
/// open does). `Ok(true)`: intact; `Ok(false)`: damage was found and repaired; an error: beyond
/// repair. The file must not be open elsewhere.
pub fn check_integrity(path: &Path) -> Result<bool> {
    let mut db = Builder::new()
        .open(path)
        .map_err(|err| map_open_error(path, err))?;
    db.check_integrity()
        .map_err(|err| map_open_error(path, err))
}

/// Opens (or creates) the redb file and maps redb's failures to errors that name the problem.
fn open_database(path: &Path, cache_bytes: usize) -> Result<Database> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| Error::DataPath {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    // redb's default exclusive-writer mode: the whole file is locked by this process, and only
    // this mode allows the unsynced commits the write-ahead log relies on.
    let mut builder = Builder::new();
    builder.set_cache_size(cache_bytes);
    builder
        .create(path)
        .map_err(|err| map_open_error(path, err))
}

pub(crate) fn map_open_error(path: &Path, err: DatabaseError) -> Error {
    match err {
        DatabaseError::DatabaseAlreadyOpen => Error::Locked {
            path: path.to_path_buf(),
        },
        DatabaseError::Storage(StorageError::Corrupted(detail)) => Error::Corrupt {
            path: path.to_path_buf(),
            detail,
        },
        DatabaseError::Storage(StorageError::Io(io))
            if io.kind() == std::io::ErrorKind::InvalidData
                || io.kind() == std::io::ErrorKind::UnexpectedEof =>
        {
            Error::Corrupt {
                path: path.to_path_buf(),
                detail: format!("not a store file ({io})"),
            }
        }
        DatabaseError::Storage(StorageError::Io(source)) => Error::DataPath {
            path: path.to_path_buf(),
            source,
        },
        other => Error::OpenFailed {
            path: path.to_path_buf(),
            source: Box::new(other.into()),
        },
    }
}

/// Creates the tables of a new file, or checks those of an existing one (upgrading a version-1
/// file); returns the current and compacted revisions and the store id.
fn initialize(db: &Database, path: &Path) -> Result<(Revision, Revision, u64)> {
    let corrupt = |detail: String| Error::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    let txn = db
        .begin_write()
        .map_err(|e| map_init_error(path, e.into()))?;
    let (revision, compacted, store_id) = {
        let mut meta = txn
            .open_table(META)
            .map_err(|e| map_init_error(path, e.into()))?;
        let format = meta
            .get(META_FORMAT)
            .map_err(|e| map_init_error(path, e.into()))?
            .map(|v| v.value());
        match format {
            None => {
                for (key, value) in [
                    (META_FORMAT, FORMAT_VERSION),
                    (META_REVISION, 1),
                    (META_COMPACTED, 0),
                    (META_STORE_ID, new_store_id()),
                ] {
                    meta.insert(key, value)
                        .map_err(|e| map_init_error(path, e.into()))?;
                }
            }
            Some(FORMAT_VERSION) => {}
            Some(FORMAT_VERSION_1) => {
                // No log exists for a version-1 file: give it an id and the current version.
                for (key, value) in [
                    (META_FORMAT, FORMAT_VERSION),
                    (META_STORE_ID, new_store_id()),
                ] {
                    meta.insert(key, value)
                        .map_err(|e| map_init_error(path, e.into()))?;
                }
            }
            Some(other) => {
                return Err(corrupt(format!(
                    "table layout version {other}, this rkube reads version {FORMAT_VERSION}"
                )));
            }
        }
        let get = |key: &str| -> Result<i64> {
            let value = meta
                .get(key)
                .map_err(|e| map_init_error(path, e.into()))?
                .map(|v| v.value())
                .ok_or_else(|| corrupt(format!("meta record {key} is missing")))?;
            i64::try_from(value).map_err(|_| corrupt(format!("meta record {key} is {value}")))
        };
        let store_id = meta
            .get(META_STORE_ID)
            .map_err(|e| map_init_error(path, e.into()))?
            .map(|v| v.value())
            .ok_or_else(|| corrupt(format!("meta record {META_STORE_ID} is missing")))?;
        (get(META_REVISION)?, get(META_COMPACTED)?, store_id)
    };
    // As in `read_revisions`: the newest history record holds the current revision.
    let newest = txn
        .open_table(LOG)
        .map_err(|e| map_init_error(path, e.into()))?
        .last()
        .map_err(|e| map_init_error(path, e.into()))?
        .map_or(0, |(revision, _)| revision.value() as Revision);
    let revision = revision.max(newest);
    txn.open_table(KV)
        .map_err(|e| map_init_error(path, e.into()))?;
    txn.open_table(LOG)
        .map_err(|e| map_init_error(path, e.into()))?;
    txn.commit().map_err(|e| map_init_error(path, e.into()))?;
    Ok((revision, compacted, store_id))
}

/// Applies the events the log holds past `revision` (what redb holds) in one durable commit;
/// returns the revision the store is at afterwards. The commit happens even with nothing to
/// replay: the state redb shows after a crash need not have been synced, and the old log is
/// deleted next.
fn replay_into(
    db: &Database,
    path: &Path,
    revision: Revision,
    events: Vec<crate::Event>,
) -> Result<Revision> {
    let last = events.last().map_or(revision, |e| e.revision());
    if !events.is_empty() {
        tracing::info!(
            from = revision + 1,
            to = last,
            "replaying the write-ahead log"
        );
    }
    let txn = db
        .begin_write()
        .map_err(|e| map_init_error(path, e.into()))?;
    {
        let mut kv = txn
            .open_table(KV)
            .map_err(|e| map_init_error(path, e.into()))?;
        let mut log = txn
            .open_table(LOG)
            .map_err(|e| map_init_error(path, e.into()))?;
        for mut event in events {
            // The log records the write, not what it replaced: that is the key's state now.
            let prev = writer::current_in(path, &mut kv, &event.kv.key)?;
            if event.kind == crate::EventType::Delete && prev.is_none() {
                return Err(Error::Corrupt {
                    path: wal::dir_of(path),
                    detail: format!(
                        "write-ahead log deletes {} at revision {}, which the store does not hold",
                        event.kv.key,
                        event.revision()
                    ),
                });
            }
            event.prev = prev;
            writer::write_event(&mut kv, &mut log, &event)?;
        }
        txn.open_table(META)
            .map_err(|e| map_init_error(path, e.into()))?
            .insert(META_CHECKPOINT, last as u64)
            .map_err(|e| map_init_error(path, e.into()))?;
    }
    txn.commit().map_err(|e| map_init_error(path, e.into()))?;
    Ok(last)
}

fn map_init_error(path: &Path, err: redb::Error) -> Error {
    match err {
        redb::Error::Corrupted(detail) => Error::Corrupt {
            path: path.to_path_buf(),
            detail,
        },
        redb::Error::TableTypeMismatch { .. } => Error::Corrupt {
            path: path.to_path_buf(),
            detail: "not an rkube store (unexpected table types)".into(),
        },
        other => Error::OpenFailed {
            path: path.to_path_buf(),
            source: Box::new(other),
        },
    }
}

/// Runs blocking redb work off the async runtime.
pub(crate) async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| Error::Closed)?
}

/// Reads the current and compacted revisions in a read transaction.
///
/// The current revision is the newest `log` record's: commits do not also write it to `meta`
/// (one B-tree fewer to update per commit). `meta` keeps it for when compaction empties `log`.
pub(crate) fn read_revisions(txn: &ReadTransaction) -> Result<(Revision, Revision)> {
    let meta = txn.open_table(META).map_err(read_failed)?;
    let get = |key: &str| -> Result<Revision> {
        Ok(meta
            .get(key)
            .map_err(read_failed)?
            .map_or(0, |v| v.value() as Revision))
    };
    let log = txn.open_table(LOG).map_err(read_failed)?;
    let newest = log
        .last()
        .map_err(read_failed)?
        .map_or(0, |(revision, _)| revision.value() as Revision);
    Ok((get(META_REVISION)?.max(newest), get(META_COMPACTED)?))
}

pub(crate) fn corrupt_record(path: &Path, err: codec::DecodeError) -> Error {
    Error::Corrupt {
        path: path.to_path_buf(),
        detail: err.to_string(),
    }
}

/// The key range `[start, end)` a list covers.
fn list_bounds(opts: &ListOptions) -> (Vec<u8>, Option<Vec<u8>>) {
    let prefix = opts.prefix.as_bytes();
    let start = match &opts.start_key {
        Some(start) if start.as_bytes() > prefix => start.as_bytes().to_vec(),
        _ => prefix.to_vec(),
    };
    (start, prefix_range_end(&opts.prefix))
}

/// Lists keys as of `revision` in one read transaction. At the current revision this is a range
/// over `kv`; at a past one, the values of keys written since are replaced by the values the log
/// recorded as replaced (the state before the first write after `revision`).
fn list_in(core: &Core, opts: &ListOptions) -> Result<ListResult> {
    let txn = core.db.begin_read().map_err(read_failed)?;
    let (current, compacted) = read_revisions(&txn)?;
    let revision = if opts.revision > 0 {
        opts.revision
    } else {
        current
    };
    if revision > current {
        return Err(Error::FutureRevision {
            requested: revision,
            current,
        });
    }
    if revision < compacted {
        return Err(Error::Compacted {
            requested: revision,
            compacted,
        });
    }
    let (start, end) = list_bounds(opts);
    if end.as_deref().is_some_and(|end| start.as_slice() >= end) {
        return Ok(ListResult {
            items: Vec::new(),
            revision,
            next_key: None,
        });
    }
    let in_range = |key: &[u8]| key >= start.as_slice() && end.as_deref().is_none_or(|e| key < e);

    // Keys written after `revision`: their state at `revision` is the `prev` of the first write.
    let mut overlay: std::collections::BTreeMap<Vec<u8>, Option<KeyValue>> = Default::default();
    if revision < current {
        let log = txn.open_table(LOG).map_err(read_failed)?;
        for entry in log
            .range((revision as u64 + 1)..=(current as u64))
            .map_err(read_failed)?
        {
            let (rev, raw) = entry.map_err(read_failed)?;
            let raw = raw.value();
            let key = codec::event_key(raw).map_err(|e| corrupt_record(&core.path, e))?;
            if in_range(key) && !overlay.contains_key(key) {
                let event = codec::decode_event(rev.value() as Revision, raw)
                    .map_err(|e| corrupt_record(&core.path, e))?;
                overlay.insert(key.to_vec(), event.prev);
            }
        }
    }

    let kv = txn.open_table(KV).map_err(read_failed)?;
    let upper = match &end {
        Some(end) => Bound::Excluded(end.as_slice()),
        None => Bound::Unbounded,
    };
    let mut current_iter = kv
        .range::<&[u8]>((Bound::Included(start.as_slice()), upper))
        .map_err(read_failed)?
        .map(|entry| {
            let (k, v) = entry.map_err(read_failed)?;
            codec::decode_kv(k.value(), v.value()).map_err(|e| corrupt_record(&core.path, e))
        });
    let mut overlay_iter = overlay.into_iter();
    let limit = if opts.limit == 0 {
        usize::MAX
    } else {
        opts.limit
    };
    // Merge the two key-ordered sources; for a key both hold, the overlay (its state at
    // `revision`) wins over the current value.
    let mut cur = current_iter.next().transpose()?;
    let mut ov = overlay_iter.next();
    let mut items: Vec<KeyValue> = Vec::new();
    let mut next_key = None;
    loop {
        let order = match (&cur, &ov) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(c), Some((k, _))) => c.key.as_bytes().cmp(k.as_slice()),
        };
        let item = match order {
            std::cmp::Ordering::Less => {
                std::mem::replace(&mut cur, current_iter.next().transpose()?)
            }
            std::cmp::Ordering::Equal => {
                cur = current_iter.next().transpose()?;
                std::mem::replace(&mut ov, overlay_iter.next()).and_then(|(_, v)| v)
            }
            std::cmp::Ordering::Greater => {
                std::mem::replace(&mut ov, overlay_iter.next()).and_then(|(_, v)| v)
            }
        };
        if let Some(item) = item {
            if items.len() == limit {
                next_key = items.last().map(|last| key_after(&last.key));
                break;
            }
            items.push(item);
        }
    }
    Ok(ListResult {
        items,
        revision,
        next_key,
    })
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        // Point reads are a few microseconds: cheaper inline than a hop to the blocking pool.
        let txn = self.read_txn()?;
        let kv = txn.open_table(KV).map_err(read_failed)?;
        let value = kv.get(key.as_bytes()).map_err(read_failed)?;
        value
            .map(|v| codec::decode_kv(key.as_bytes(), v.value()))
            .transpose()
            .map_err(|e| corrupt_record(&self.core.path, e))
    }

    async fn list(&self, opts: ListOptions) -> Result<ListResult> {
        let core = self.core.clone();
        run_blocking(move || list_in(&core, &opts)).await
    }

    async fn count(&self, prefix: &str) -> Result<u64> {
        let core = self.core.clone();
        let prefix = prefix.to_owned();
        run_blocking(move || {
            let txn = core.db.begin_read().map_err(read_failed)?;
            let kv = txn.open_table(KV).map_err(read_failed)?;
            if prefix.is_empty() {
                return kv.len().map_err(read_failed);
            }
            let upper = prefix_range_end(&prefix);
            let range = match &upper {
                Some(end) => kv.range::<&[u8]>(prefix.as_bytes()..end.as_slice()),
                None => kv.range::<&[u8]>(prefix.as_bytes()..),
            }
            .map_err(read_failed)?;
            let mut n = 0;
            for entry in range {
                entry.map_err(read_failed)?;
                n += 1;
            }
            Ok(n)
        })
        .await
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<Revision> {
        crate::check_key(key)?;
        let outcome = self
            .submit(writer::WriteOp::Create {
                key: key.to_owned(),
                value,
            })
            .await?;
        Ok(outcome.revision)
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<Revision> {
        crate::check_key(key)?;
        let outcome = self
            .submit(writer::WriteOp::Update {
                key: key.to_owned(),
                value,
                expected,
            })
            .await?;
        Ok(outcome.revision)
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(Revision, KeyValue)> {
        crate::check_key(key)?;
        let outcome = self
            .submit(writer::WriteOp::Delete {
                key: key.to_owned(),
                expected,
            })
            .await?;
        let prev = outcome.prev.ok_or(Error::NotFound { key: key.into() })?;
        Ok((outcome.revision, prev))
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        watch::start(&self.core, prefix, after)
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.send(writer::Request::Compact { revision, reply })?;
        rx.await.map_err(|_| Error::Closed)?
    }

    async fn current_revision(&self) -> Result<Revision> {
        Ok(self.core.revision.load(Ordering::Acquire))
    }

    async fn stats(&self) -> Result<Stats> {
        let core = self.core.clone();
        run_blocking(move || stats_of(&core.db, &core.path)).await
    }
}

/// Counters of the open store database.
pub(crate) fn stats_of(db: &dyn ReadableDatabase, path: &Path) -> Result<Stats> {
    let txn = db.begin_read().map_err(read_failed)?;
    let (revision, compacted_revision) = read_revisions(&txn)?;
    let keys = txn
        .open_table(KV)
        .map_err(read_failed)?
        .len()
        .map_err(read_failed)?;
    let size_bytes = std::fs::metadata(path)
        .map_err(|source| Error::DataPath {
            path: path.to_path_buf(),
            source,
        })?
        .len()
        + wal::Wal::disk_bytes(&wal::dir_of(path));
    Ok(Stats {
        keys,
        revision,
        compacted_revision,
        size_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_whose_directory_is_gone_still_drops() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path().join("db")).unwrap();
        assert!(admin::socket_path(&dir.path().join("db")).exists());
        // Its admin socket file goes with the directory: waking the admin thread by connecting
        // to it would fail, and the drop would wait for that thread forever.
        std::fs::remove_dir_all(dir.path()).unwrap();
        let (done, dropped) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(store);
            let _ = done.send(());
        });
        assert!(
            dropped
                .recv_timeout(std::time::Duration::from_secs(60))
                .is_ok(),
            "dropping the store hung"
        );
    }

    #[tokio::test]
    async fn the_revision_survives_a_reopen_after_compaction_empties_the_history() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let store = EmbeddedStore::open(&path).unwrap();
            for key in ["/a", "/b", "/c"] {
                store.create(key, Bytes::from_static(b"v")).await.unwrap();
            }
            store.delete("/b", None).await.unwrap();
            store.compact(5).await.unwrap();
        }
        let store = EmbeddedStore::open(&path).unwrap();
        assert_eq!(store.current_revision().await.unwrap(), 5);
        let stats = store.stats().await.unwrap();
        assert_eq!(
            (stats.revision, stats.compacted_revision, stats.keys),
            (5, 5, 2)
        );
        assert_eq!(store.create("/d", Bytes::new()).await.unwrap(), 6);
        drop(store);
        let store = EmbeddedStore::open(&path).unwrap();
        assert_eq!(store.current_revision().await.unwrap(), 6);
    }

    #[tokio::test]
    async fn a_restored_snapshot_never_gets_the_old_log_replayed_onto_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let snap = dir.path().join("snap");
        {
            let store = EmbeddedStore::open(&path).unwrap();
            for i in 0..5 {
                store
                    .create(&format!("/a/{i}"), Bytes::new())
                    .await
                    .unwrap();
            }
            store.snapshot(&snap).await.unwrap();
            // These live only in the log until a checkpoint.
            for i in 0..5 {
                store
                    .create(&format!("/b/{i}"), Bytes::new())
                    .await
                    .unwrap();
            }
        }
        for _ in 0..2 {
            snapshot::restore(&snap, &path).unwrap();
            let store = EmbeddedStore::open(&path).unwrap();
            let stats = store.stats().await.unwrap();
            assert_eq!((stats.keys, stats.revision), (5, 6));
            // Writes after the restore land in a log of the restored store's own.
            store.create("/c", Bytes::new()).await.unwrap();
        }
    }

    #[tokio::test]
    async fn writes_survive_reopens_across_many_log_segments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let options = Options {
            wal_segment_bytes: 8 << 10,
            ..Default::default()
        };
        for round in 0..3 {
            let store = EmbeddedStore::open_with(&path, options.clone()).unwrap();
            for i in 0..300 {
                let key = format!("/k/{round}/{i:04}");
                store
                    .create(&key, Bytes::from(vec![1u8; 100]))
                    .await
                    .unwrap();
            }
            let segments = std::fs::read_dir(wal::dir_of(&path)).unwrap().count();
            assert_eq!(segments, 1, "old segments are deleted at each roll");
        }
        let store = EmbeddedStore::open(&path).unwrap();
        assert_eq!(store.stats().await.unwrap().keys, 900);
        assert_eq!(store.current_revision().await.unwrap(), 901);
    }

    #[tokio::test]
    async fn another_process_can_ask_a_running_store_for_stats_and_a_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let store = EmbeddedStore::open(&path).unwrap();
        store.create("/x", Bytes::from_static(b"1")).await.unwrap();
        assert!(matches!(
            EmbeddedStore::open(&path).err(),
            Some(Error::Locked { .. })
        ));
        let (p, snap) = (path.clone(), dir.path().join("snap"));
        let (stats, info) = tokio::task::spawn_blocking(move || {
            (
                snapshot::stats(&p).unwrap(),
                snapshot::save(&p, &snap).unwrap(),
            )
        })
        .await
        .unwrap();
        assert_eq!((stats.keys, stats.revision), (1, 2));
        assert_eq!((info.keys, info.revision), (1, 2));
        drop(store);
        assert!(
            !admin::socket_path(&path).exists(),
            "the socket goes with the store"
        );
    }

    #[test]
    fn list_bounds_start_at_the_prefix_unless_the_start_key_is_past_it() {
        let opts = ListOptions {
            prefix: "/registry/pods/".into(),
            start_key: Some("/registry/a".into()),
            ..Default::default()
        };
        assert_eq!(list_bounds(&opts).0, b"/registry/pods/".to_vec());
        let opts = ListOptions {
            start_key: Some("/registry/pods/x".into()),
            ..opts
        };
        assert_eq!(list_bounds(&opts).0, b"/registry/pods/x".to_vec());
    }
}
