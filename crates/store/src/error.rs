//! The store's errors: the outcomes a caller acts on (`KeyExists`, `Conflict`, `Compacted`, ...)
//! are their own variants, so the apiserver maps them to 409/410 without parsing strings; the
//! failures of the machinery name the step and the path or endpoint involved. Messages do not
//! repeat their `#[source]`: print the chain (`{:#}` with anyhow) to see the cause.

use std::path::PathBuf;

use crate::{KeyValue, Revision};

/// `Result` with the store's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a store call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `create` of a key that exists.
    #[error("key {key} already exists")]
    KeyExists {
        /// The key.
        key: String,
    },
    /// `update`/`delete` of a key that does not exist.
    #[error("key {key} not found")]
    NotFound {
        /// The key.
        key: String,
    },
    /// `update`/`delete` whose expected `mod_revision` is not the key's.
    #[error("key {key} was modified: expected revision {expected}, current is {}", .current.mod_revision)]
    Conflict {
        /// The key.
        key: String,
        /// The revision the caller expected.
        expected: Revision,
        /// The value it has now.
        current: Box<KeyValue>,
    },
    /// A list or watch from a revision whose history is gone.
    #[error("revision {requested} has been compacted (compacted revision is {compacted})")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The store's compacted revision.
        compacted: Revision,
    },
    /// A read or compaction at a revision the store has not reached.
    #[error("revision {requested} is newer than the current revision {current}")]
    FutureRevision {
        /// The revision asked for.
        requested: Revision,
        /// The store's current revision.
        current: Revision,
    },
    /// A key that is empty or not valid for the backend.
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey {
        /// The key.
        key: String,
        /// Why it is refused.
        reason: &'static str,
    },

    /// The data directory or file cannot be created or written.
    #[error("cannot use data path {}", .path.display())]
    DataPath {
        /// The path.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// Another process holds the data file.
    #[error("data file {} is locked by another process (is an rkube server already running on this data dir?)", .path.display())]
    Locked {
        /// The data file.
        path: PathBuf,
    },
    /// The data file is not a valid store (truncated, overwritten, or not an rkube store).
    #[error("data file {} is corrupt: {detail}; restore it from a snapshot (rkube datastore snapshot restore)", .path.display())]
    Corrupt {
        /// The data file.
        path: PathBuf,
        /// What was found.
        detail: String,
    },
    /// Opening the embedded database failed for another reason.
    #[error("cannot open data file {}", .path.display())]
    OpenFailed {
        /// The data file.
        path: PathBuf,
        /// redb's error.
        #[source]
        source: Box<redb::Error>,
    },
    /// Reading from the embedded database failed.
    #[error("reading the store failed")]
    ReadFailed(#[source] Box<redb::Error>),
    /// Committing a write to the embedded database failed; the write did not happen.
    #[error("committing to the store failed")]
    CommitFailed(#[source] std::sync::Arc<redb::Error>),
    /// Reading or writing the embedded store's write-ahead log failed. After a failed append the
    /// store refuses writes until it is reopened (what reached the disk is then unknown).
    #[error("write-ahead log {}", .path.display())]
    Log {
        /// The log segment or directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::sync::Arc<std::io::Error>,
    },
    /// The embedded store's writer has stopped (the store is closing or its thread died).
    #[error("the store is closed")]
    Closed,
    /// Another process holds the embedded store, and asking it over its admin socket failed.
    #[error("data file {} is locked by another process, and asking it over {} failed: {detail}", .path.display(), .socket.display())]
    InUse {
        /// The data file.
        path: PathBuf,
        /// The admin socket.
        socket: PathBuf,
        /// What failed.
        detail: String,
    },
    /// Writing or reading a snapshot file failed.
    #[error("snapshot {}: {detail}", .path.display())]
    Snapshot {
        /// The snapshot file.
        path: PathBuf,
        /// What failed.
        detail: String,
    },

    /// etcd could not be reached.
    #[error("etcd at {endpoints} is unreachable")]
    EtcdUnavailable {
        /// The endpoints tried.
        endpoints: String,
        /// The client's error.
        #[source]
        source: Box<etcd_client::Error>,
    },
    /// etcd answered a request with an error.
    #[error("etcd request {op} failed")]
    EtcdRequest {
        /// The operation (`range`, `txn`, `watch`, `compact`).
        op: &'static str,
        /// The client's error.
        #[source]
        source: Box<etcd_client::Error>,
    },
    /// An etcd value is not what this backend writes.
    #[error("etcd returned an invalid key: {0}")]
    EtcdInvalidKey(String),
    /// The etcd endpoints given are not usable URLs (a configuration mistake, not an outage).
    #[error("invalid etcd endpoints {endpoints:?}")]
    EtcdInvalidEndpoints {
        /// The endpoints given, comma-separated.
        endpoints: String,
        /// The client's error.
        #[source]
        source: Box<etcd_client::Error>,
    },
    /// etcd answered with a response that lacks a part every etcd sends (a protocol violation).
    #[error("etcd request {op} returned a malformed response: {detail}")]
    EtcdBadResponse {
        /// The operation (`range`, `txn`, `watch`, ...).
        op: &'static str,
        /// What was missing or wrong.
        detail: &'static str,
    },
}

impl Error {
    /// Whether retrying the same call later may succeed (the backend was unavailable), as opposed
    /// to an answer about the data.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::EtcdUnavailable { .. } | Error::EtcdRequest { .. }
        )
    }
}

/// Builds a [`Error::ReadFailed`] from any redb error type.
pub(crate) fn read_failed(err: impl Into<redb::Error>) -> Error {
    Error::ReadFailed(Box::new(err.into()))
}

/// Builds a [`Error::CommitFailed`] from any redb error type.
pub(crate) fn commit_failed(err: impl Into<redb::Error>) -> Error {
    Error::CommitFailed(std::sync::Arc::new(err.into()))
}
