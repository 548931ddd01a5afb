//! The revisioned key-value store that only the apiserver touches.
//!
//! One contract ([`Store`]), two backends: [`embedded::EmbeddedStore`] on `redb` (the default, no
//! process to run) and [`etcd::EtcdStore`] on a real etcd v3 cluster (for HA). Keys are laid out as
//! Kubernetes lays them out (`/registry/<resource>/<namespace>/<name>`), and an object's
//! `resourceVersion` is the store revision at which it was last written.
//!
//! Start reading at [`Store`]: its doc comment is the contract both backends are tested against
//! (`tests/contract`). [`compactor`] runs the apiserver-style periodic compaction over either.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

pub mod compactor;
pub mod embedded;
pub mod error;
pub mod etcd;

pub use error::{Error, Result};

/// A revision of the store. Starts at 1 for an empty store; every successful write adds exactly one.
pub type Revision = i64;

/// One key as stored, with the revisions that Kubernetes turns into `resourceVersion`.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The full key, e.g. `/registry/pods/default/web-0`.
    pub key: String,
    /// The opaque value (the apiserver stores serialized objects).
    pub value: Bytes,
    /// Revision of the write that created this key (since its last deletion).
    pub create_revision: Revision,
    /// Revision of the last write to this key; for a delete event, the revision of the delete.
    pub mod_revision: Revision,
}

impl fmt::Debug for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Values can be megabytes: print their length, not their bytes.
        f.debug_struct("KeyValue")
            .field("key", &self.key)
            .field("value_len", &self.value.len())
            .field("create_revision", &self.create_revision)
            .field("mod_revision", &self.mod_revision)
            .finish()
    }
}

/// What a watch event did to its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// The key was created or updated.
    Put,
    /// The key was deleted.
    Delete,
}

/// One write seen by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventType,
    /// The key after the write. For a delete, `value` is empty and `mod_revision` is the revision
    /// of the delete.
    pub kv: KeyValue,
    /// The key before the write: `None` for a create. Always present for updates and deletes
    /// unless the backend lost it to compaction.
    pub prev: Option<KeyValue>,
}

impl Event {
    /// The revision at which this event happened.
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

/// What a watch stream yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchItem {
    /// One write, in revision order.
    Event(Event),
    /// Every event of this watch up to and including this revision has been delivered. Sent when
    /// idle and on [`WatchStream::request_progress`]; the apiserver turns it into bookmarks.
    Progress(Revision),
}

/// Options of a [`Store::list`] call.
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    /// Only keys starting with this prefix (usually ending in `/`).
    pub prefix: String,
    /// Start at this key (inclusive) instead of the prefix; pass the previous page's
    /// [`ListResult::next_key`] to continue.
    pub start_key: Option<String>,
    /// At most this many items; 0 means no limit.
    pub limit: usize,
    /// Read as of this revision; 0 means the current one. A page after the first passes the first
    /// page's [`ListResult::revision`] so the whole list is one consistent snapshot.
    pub revision: Revision,
}

/// The answer to a [`Store::list`] call.
#[derive(Clone, Debug, Default)]
pub struct ListResult {
    /// Matching keys in ascending key order.
    pub items: Vec<KeyValue>,
    /// The revision the list was read at.
    pub revision: Revision,
    /// Where the next page starts, when `limit` cut the list short.
    pub next_key: Option<String>,
}

/// Counters for `rkube datastore stats`.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    /// Live keys.
    pub keys: u64,
    /// Current revision.
    pub revision: Revision,
    /// Revisions at or below this one are compacted away.
    pub compacted_revision: Revision,
    /// Bytes the backend takes on disk (the data file and its write-ahead log for the embedded
    /// store).
    pub size_bytes: u64,
}

/// The store contract. Both backends run the same test suite against it (`tests/contract`).
///
/// * **Revisions.** One global revision, starting at 1. Every successful write (create, update,
///   delete) adds exactly one and stamps the key's `mod_revision` with it; failed writes change
///   nothing. `create_revision` is the revision that (re)created the key.
/// * **Durability.** A write returns only once it is durable: a crash after the call returns never
///   loses it; a crash before leaves no trace of it.
/// * **Conditional writes.** `create` fails with [`Error::KeyExists`]; `update` and a guarded
///   `delete` fail with [`Error::Conflict`] (carrying the current value, so the caller can retry
///   without a second read) when the key's `mod_revision` is not the expected one, and with
///   [`Error::NotFound`] when the key is absent.
/// * **Reads.** `list` reads one consistent snapshot, at the current revision or at any revision
///   not yet compacted; older ones fail with [`Error::Compacted`], newer than current with
///   [`Error::FutureRevision`].
/// * **Watches** deliver every event with a revision greater than `after` whose key starts with
///   the prefix, each exactly once, in revision order, with the previous value. A watch from a
///   compacted revision fails with [`Error::Compacted`] (at the call or as the stream's only item
///   if compaction races the call). A watch never ends on its own except after an error item.
/// * **Compaction** to `r` drops the history older than `r`: lists at `r` or later keep working,
///   lists before `r` and watches from well before `r` fail with [`Error::Compacted`] (a watch
///   from exactly `r - 1` is backend-specific). The current value of every key stays.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The current value of `key`, if any.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Keys under a prefix, paginated, at the current or a past revision.
    async fn list(&self, opts: ListOptions) -> Result<ListResult>;

    /// How many live keys start with `prefix`.
    async fn count(&self, prefix: &str) -> Result<u64>;

    /// Creates `key`; fails with [`Error::KeyExists`] if it exists. Returns the new revision.
    async fn create(&self, key: &str, value: Bytes) -> Result<Revision>;

    /// Replaces `key`'s value if its `mod_revision` is `expected`. Returns the new revision.
    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<Revision>;

    /// Deletes `key` (only if its `mod_revision` is `expected`, when given). Returns the revision
    /// of the delete and the value deleted.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(Revision, KeyValue)>;

    /// Streams events under `prefix` with revisions greater than `after`.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream>;

    /// Drops the history older than `revision` (the store as of `revision` stays readable).
    /// Compacting to an already compacted or older revision is a no-op; beyond the current
    /// revision is [`Error::FutureRevision`].
    async fn compact(&self, revision: Revision) -> Result<()>;

    /// The current revision.
    async fn current_revision(&self) -> Result<Revision>;

    /// Key count, revisions and size.
    async fn stats(&self) -> Result<Stats>;
}

/// Asks a watch's backend for a [`WatchItem::Progress`] on that watch.
pub trait ProgressRequester: Send + Sync {
    /// Requests a progress notification; it arrives after every event already due.
    fn request_progress(&self);
}

/// A stream of [`WatchItem`]s. Dropping it cancels the watch.
pub struct WatchStream {
    inner: Pin<Box<dyn Stream<Item = Result<WatchItem>> + Send>>,
    progress: Box<dyn ProgressRequester>,
}

impl WatchStream {
    /// Wraps a backend's stream.
    pub fn new(
        inner: impl Stream<Item = Result<WatchItem>> + Send + 'static,
        progress: impl ProgressRequester + 'static,
    ) -> Self {
        Self {
            inner: Box::pin(inner),
            progress: Box::new(progress),
        }
    }

    /// Requests a [`WatchItem::Progress`] once everything already due has been delivered.
    pub fn request_progress(&self) {
        self.progress.request_progress();
    }
}

impl Stream for WatchStream {
    type Item = Result<WatchItem>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// The end of the key range holding every key that starts with `prefix` (exclusive): the prefix
/// with its last byte below 0xff incremented, as etcd's `WithPrefix` computes it. `None` means
/// "to the end of the key space".
pub fn prefix_range_end(prefix: &str) -> Option<Vec<u8>> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Refuses keys the contract does not allow (the empty key), the same way in every backend.
pub(crate) fn check_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::InvalidKey {
            key: key.into(),
            reason: "keys must not be empty",
        });
    }
    Ok(())
}

/// The key right after `key` in byte order: where the next page of a list starts.
pub fn key_after(key: &str) -> String {
    format!("{key}\0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_range_end_increments_the_last_byte() {
        assert_eq!(
            prefix_range_end("/registry/pods/"),
            Some(b"/registry/pods0".to_vec())
        );
        assert_eq!(prefix_range_end(""), None);
    }

    #[test]
    fn key_after_sorts_right_after_the_key_and_before_its_children() {
        let k = "/registry/a";
        assert!(key_after(k).as_str() > k);
        assert!(key_after(k).as_str() < "/registry/a/b");
        assert!(key_after(k).as_str() < "/registry/aa");
    }
}
