//! The etcd v3 backend: the [`Store`] contract kept by a real etcd cluster, for high availability.
//!
//! etcd's revision *is* the store revision, so `resourceVersion`s are etcd's, exactly as with
//! kube-apiserver. Writes are single etcd txns guarded the way kube-apiserver's etcd3 storage
//! guards them: `create` compares `create_revision == 0`, `update` compares `mod_revision`.
//! When a guard fails, a plain read tells `NotFound` from `Conflict` and supplies the current
//! value; reading the txn's else-branch instead would go through `etcd-client`'s
//! `op_responses()`, which panics on a malformed answer.
//!
//! **Outages.** Every request runs under a deadline, so a dead or unreachable etcd turns into
//! [`Error::EtcdUnavailable`] instead of a hang. The client's gRPC channel reconnects on the next
//! call once etcd is back; nothing here has to be re-created. A write that fails with a transient
//! error may still have been applied (etcd got it, the answer was lost), exactly as with any etcd
//! client: retrying a `create` may then see `KeyExists`.
//!
//! **Watches** run in a task each, on their own gRPC stream, and resume by themselves from the
//! revision after the last one they delivered; see the `watch` module for how progress
//! notifications are kept truthful on etcd versions whose own are not.
//!
//! **The compacted revision.** etcd does not report it. A read at revision `r` fails as compacted
//! exactly when `r` is below it, so this backend derives it: it remembers the highest revision it
//! compacted to or learned of, checks that this is still readable, and only when it is not
//! (someone else compacted further) binary-searches between it and the current revision with
//! cheap count-only reads. [`Stats::compacted_revision`] and [`Error::Compacted`] carry it.

mod watch;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, GetResponse, KvClient,
    MaintenanceClient, ResponseHeader, Txn, TxnOp, TxnResponse, WatchClient,
};

use crate::{
    Error, KeyValue, ListOptions, ListResult, Result, Revision, Stats, Store, WatchStream,
    key_after, prefix_range_end,
};

/// How long establishing a TCP connection to an endpoint may take. Short: an endpoint that does
/// not accept within this is down, and callers should hear so.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long [`EtcdStore::connect`] waits for etcd's first answer before calling it unreachable.
const FIRST_ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// The deadline of one request. Generous enough for a large list on a loaded etcd, short enough
/// that a hung etcd surfaces as an error instead of a stuck apiserver request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// HTTP/2 pings on idle connections, so a silently dead peer (a partition, a frozen etcd) breaks
/// the watch streams and they resume elsewhere. Above etcd's default minimum ping interval (5 s).
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest gRPC message accepted. tonic's default (4 MiB) is below a single list page of big
/// objects; etcd itself sends up to 2 GiB.
const MAX_MESSAGE_BYTES: usize = i32::MAX as usize;
/// A key no one stores, read count-only to learn the current revision or whether a revision is
/// still readable: a point lookup in etcd's index, the cheapest request that carries a header.
const PROBE_KEY: &[u8] = b"\0";

/// A [`Store`] kept by an etcd v3 cluster. Cheap to clone: clones share one gRPC channel.
#[derive(Clone)]
pub struct EtcdStore {
    inner: Arc<Inner>,
}

/// What the store and its watch tasks share.
struct Inner {
    /// Kept for the channel's endpoint list (the other clients share its channel).
    _client: Client,
    kv: KvClient,
    watch: WatchClient,
    maintenance: MaintenanceClient,
    /// The endpoints, comma-separated, for error messages.
    endpoints: String,
    /// The highest revision known to be compacted: see the module docs.
    compacted: AtomicI64,
    /// Whether etcd answers a progress request only after every event already due (see
    /// [`orders_progress`]); when not, watches verify each answer before passing it on.
    progress_ordered: bool,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.inner.endpoints)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connects to etcd at `endpoints` (`http://127.0.0.1:2379`, ...) and waits for one answer,
    /// so a wrong or dead endpoint fails here, within seconds, with [`Error::EtcdUnavailable`]
    /// naming the endpoints, rather than on the first real request.
    pub async fn connect(endpoints: &[String]) -> Result<EtcdStore> {
        let joined = endpoints.join(",");
        let unavailable = |source: etcd_client::Error| Error::EtcdUnavailable {
            endpoints: joined.clone(),
            source: Box::new(source),
        };
        if endpoints.is_empty() {
            return Err(Error::EtcdInvalidEndpoints {
                endpoints: joined,
                source: Box::new(etcd_client::Error::InvalidArgs(
                    "no etcd endpoint given".into(),
                )),
            });
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT)
            .with_keep_alive_while_idle(true);
        let client = match tokio::time::timeout(
            FIRST_ANSWER_TIMEOUT,
            Client::connect(endpoints, Some(options)),
        )
        .await
        {
            Err(_) => return Err(unavailable(timed_out(FIRST_ANSWER_TIMEOUT))),
            Ok(Err(
                err @ (etcd_client::Error::InvalidUri(_) | etcd_client::Error::InvalidArgs(_)),
            )) => {
                return Err(Error::EtcdInvalidEndpoints {
                    endpoints: joined,
                    source: Box::new(err),
                });
            }
            Ok(Err(err)) => return Err(unavailable(err)),
            Ok(Ok(client)) => client,
        };
        // The channel connects lazily: one request now shows an unreachable etcd at once, and
        // its version decides how watch progress is handled.
        let mut maintenance = client.maintenance_client();
        let status = match tokio::time::timeout(FIRST_ANSWER_TIMEOUT, maintenance.status()).await {
            Err(_) => return Err(unavailable(timed_out(FIRST_ANSWER_TIMEOUT))),
            Ok(Err(err)) => return Err(unavailable(err)),
            Ok(Ok(status)) => status,
        };
        let progress_ordered = orders_progress(status.version());
        tracing::debug!(
            endpoints = %joined,
            version = status.version(),
            progress_ordered,
            "connected to etcd"
        );
        Ok(EtcdStore {
            inner: Arc::new(Inner {
                kv: client
                    .kv_client()
                    .max_decoding_message_size(MAX_MESSAGE_BYTES),
                watch: client
                    .watch_client()
                    .max_decoding_message_size(MAX_MESSAGE_BYTES),
                maintenance,
                _client: client,
                endpoints: joined,
                compacted: AtomicI64::new(0),
                progress_ordered,
            }),
        })
    }

    /// The endpoints this store talks to, comma-separated.
    pub fn endpoints(&self) -> &str {
        &self.inner.endpoints
    }
}

/// Whether etcd `version` answers a watch progress request only once every event already due on
/// the stream has been sent. Earlier versions answer at once with the current revision, ahead of
/// events still queued or being replayed (etcd-io/etcd#15220); the fix is complete in 3.4.31 and
/// 3.5.13, the versions kube-apiserver requires before it relies on progress requests.
fn orders_progress(version: &str) -> bool {
    let mut numbers = version
        .split(|c: char| !c.is_ascii_digit())
        .filter(|part| !part.is_empty())
        .map(|part| part.parse::<u64>().ok());
    let (Some(Some(major)), Some(Some(minor)), Some(Some(patch))) =
        (numbers.next(), numbers.next(), numbers.next())
    else {
        return false;
    };
    match (major, minor) {
        (3, 4) => patch >= 31,
        (3, 5) => patch >= 13,
        (3, minor) => minor >= 6,
        (major, _) => major > 3,
    }
}

/// How an etcd error bears on the contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    /// A read or watch below the compacted revision (or a compaction at or below it).
    Compacted,
    /// A read or compaction beyond the current revision.
    FutureRevision,
    /// etcd could not be reached or did not answer in time.
    Unavailable,
    /// Any other refusal.
    Other,
}

/// Sorts an etcd error. The revision errors are recognised by etcd's fixed messages
/// (`ErrCompacted`, `ErrFutureRev`), the only way the gRPC API tells them apart.
fn classify(err: &etcd_client::Error) -> Failure {
    match err {
        etcd_client::Error::GRpcStatus(status) => {
            let message = status.message();
            if message.contains("required revision has been compacted") {
                Failure::Compacted
            } else if message.contains("required revision is a future revision") {
                Failure::FutureRevision
            } else {
                match status.code() {
                    tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Cancelled
                    | tonic::Code::Unknown => Failure::Unavailable,
                    _ => Failure::Other,
                }
            }
        }
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => {
            Failure::Unavailable
        }
        _ => Failure::Other,
    }
}

/// The error a request that ran out of time reports.
fn timed_out(after: Duration) -> etcd_client::Error {
    etcd_client::Error::IoError(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("no answer from etcd within {after:?}"),
    ))
}

/// Runs one request under [`REQUEST_TIMEOUT`].
async fn call<T>(
    request: impl Future<Output = std::result::Result<T, etcd_client::Error>>,
) -> std::result::Result<T, etcd_client::Error> {
    match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Ok(result) => result,
        Err(_) => Err(timed_out(REQUEST_TIMEOUT)),
    }
}

impl Inner {
    /// Turns a client error into the store's: unreachable etcd or a refused request.
    fn error(&self, op: &'static str, err: etcd_client::Error) -> Error {
        match classify(&err) {
            Failure::Unavailable => Error::EtcdUnavailable {
                endpoints: self.endpoints.clone(),
                source: Box::new(err),
            },
            _ => Error::EtcdRequest {
                op,
                source: Box::new(err),
            },
        }
    }

    async fn range(
        &self,
        key: Vec<u8>,
        options: GetOptions,
    ) -> std::result::Result<GetResponse, etcd_client::Error> {
        let mut kv = self.kv.clone();
        call(kv.get(key, Some(options))).await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        let mut kv = self.kv.clone();
        call(kv.txn(txn)).await.map_err(|e| self.error("txn", e))
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        if key.is_empty() {
            // etcd refuses an empty key; no key can be empty, so it is simply absent.
            return Ok(None);
        }
        let mut response = self
            .range(key.as_bytes().to_vec(), GetOptions::new())
            .await
            .map_err(|e| self.error("range", e))?;
        response
            .take_kvs()
            .into_iter()
            .next()
            .map(owned_kv)
            .transpose()
    }

    async fn current_revision(&self) -> Result<Revision> {
        let response = self
            .range(PROBE_KEY.to_vec(), GetOptions::new().with_count_only())
            .await
            .map_err(|e| self.error("range", e))?;
        header_revision("range", response.header())
    }

    /// Whether etcd can still read at `revision`: false when it is compacted; true for a future
    /// revision (nothing is lost there).
    async fn readable(&self, revision: Revision) -> Result<bool> {
        let options = GetOptions::new().with_count_only().with_revision(revision);
        match self.range(PROBE_KEY.to_vec(), options).await {
            Ok(_) => Ok(true),
            Err(err) => match classify(&err) {
                Failure::Compacted => Ok(false),
                Failure::FutureRevision => Ok(true),
                _ => Err(self.error("range", err)),
            },
        }
    }

    /// etcd's compacted revision (0 if it never compacted): the oldest revision it can still
    /// read, found as the module docs describe.
    async fn compacted_revision(&self) -> Result<Revision> {
        let known = self.compacted.load(Ordering::Acquire);
        // Compaction only moves forward: if what we know of is still readable, it is current.
        let floor = known.max(1);
        if self.readable(floor).await? {
            return Ok(known);
        }
        // `low` is compacted, `high` (the current revision) is always readable.
        let mut low = floor;
        let mut high = self.current_revision().await?.max(low + 1);
        while high - low > 1 {
            let mid = low + (high - low) / 2;
            if self.readable(mid).await? {
                high = mid;
            } else {
                low = mid;
            }
        }
        self.compacted.fetch_max(high, Ordering::AcqRel);
        Ok(high)
    }

    /// The error for a read at `requested` that etcd refused as compacted.
    async fn compacted_error(&self, requested: Revision) -> Error {
        let compacted = match self.compacted_revision().await {
            Ok(compacted) if compacted > requested => compacted,
            // etcd is out of reach again, or compaction moved meanwhile: the best we know.
            _ => self
                .compacted
                .load(Ordering::Acquire)
                .max(requested.saturating_add(1)),
        };
        Error::Compacted {
            requested,
            compacted,
        }
    }

    /// The error for a read or compaction at `requested` that etcd refused as in the future.
    async fn future_error(&self, requested: Revision) -> Error {
        match self.current_revision().await {
            Ok(current) => Error::FutureRevision { requested, current },
            Err(err) => err,
        }
    }
}

/// The revision in a response's header; every etcd response has one.
fn header_revision(op: &'static str, header: Option<&ResponseHeader>) -> Result<Revision> {
    header
        .map(ResponseHeader::revision)
        .ok_or(Error::EtcdBadResponse {
            op,
            detail: "a response without a header",
        })
}

/// Where a range over `start..end-of-prefix` begins: etcd spells "from the first key" `\0`.
fn range_start(start: &str) -> Vec<u8> {
    if start.is_empty() {
        vec![0]
    } else {
        start.as_bytes().to_vec()
    }
}

/// The exclusive end of the keys under `prefix`: etcd spells "to the end of the key space" `\0`.
fn range_end(prefix: &str) -> Vec<u8> {
    prefix_range_end(prefix).unwrap_or_else(|| vec![0])
}

/// A key as the store has it: UTF-8, since every key this store writes came from a `&str`.
fn utf8_key(key: Vec<u8>) -> Result<String> {
    String::from_utf8(key).map_err(|e| {
        Error::EtcdInvalidKey(format!(
            "{:?} is not UTF-8",
            String::from_utf8_lossy(e.as_bytes())
        ))
    })
}

/// Converts a key-value etcd returned, moving its bytes.
fn owned_kv(kv: etcd_client::KeyValue) -> Result<KeyValue> {
    let (create_revision, mod_revision) = (kv.create_revision(), kv.mod_revision());
    let (key, value) = kv.into_key_value();
    Ok(KeyValue {
        key: utf8_key(key)?,
        value: Bytes::from(value),
        create_revision,
        mod_revision,
    })
}

/// Converts a key-value etcd returned inside a watch event (borrowed, so copied).
fn borrowed_kv(kv: &etcd_client::KeyValue) -> Result<KeyValue> {
    Ok(KeyValue {
        key: utf8_key(kv.key().to_vec())?,
        value: Bytes::copy_from_slice(kv.value()),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
    })
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.inner.get(key).await
    }

    async fn list(&self, opts: ListOptions) -> Result<ListResult> {
        let inner = &self.inner;
        // A start key before the prefix would leave the prefix: the prefix is the floor.
        let start = match &opts.start_key {
            Some(start) if start.as_str() > opts.prefix.as_str() => start.as_str(),
            _ => opts.prefix.as_str(),
        };
        let mut options = GetOptions::new().with_range(range_end(&opts.prefix));
        if opts.limit > 0 {
            options = options.with_limit(i64::try_from(opts.limit).unwrap_or(i64::MAX));
        }
        if opts.revision > 0 {
            options = options.with_revision(opts.revision);
        }
        let mut response = match inner.range(range_start(start), options).await {
            Ok(response) => response,
            Err(err) => {
                return Err(match classify(&err) {
                    Failure::Compacted => inner.compacted_error(opts.revision).await,
                    Failure::FutureRevision => inner.future_error(opts.revision).await,
                    _ => inner.error("range", err),
                });
            }
        };
        let header = header_revision("range", response.header())?;
        let more = response.more();
        let items = response
            .take_kvs()
            .into_iter()
            .map(owned_kv)
            .collect::<Result<Vec<_>>>()?;
        let next_key = if more {
            items.last().map(|kv| key_after(&kv.key))
        } else {
            None
        };
        Ok(ListResult {
            items,
            // etcd's header carries the current revision even for a read at a past one.
            revision: if opts.revision > 0 {
                opts.revision
            } else {
                header
            },
            next_key,
        })
    }

    async fn count(&self, prefix: &str) -> Result<u64> {
        let options = GetOptions::new()
            .with_range(range_end(prefix))
            .with_count_only();
        let response = self
            .inner
            .range(range_start(prefix), options)
            .await
            .map_err(|e| self.inner.error("range", e))?;
        u64::try_from(response.count()).map_err(|_| Error::EtcdBadResponse {
            op: "range",
            detail: "a negative count",
        })
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<Revision> {
        crate::check_key(key)?;
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, Vec::from(value), None)]);
        let response = self.inner.txn(txn).await?;
        if !response.succeeded() {
            return Err(Error::KeyExists { key: key.into() });
        }
        header_revision("txn", response.header())
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<Revision> {
        crate::check_key(key)?;
        loop {
            // An absent key has mod_revision 0 in etcd's compares: never let 0 (or less) through,
            // or an update would create the key.
            if expected > 0 {
                let txn = Txn::new()
                    .when([Compare::mod_revision(key, CompareOp::Equal, expected)])
                    .and_then([TxnOp::put(key, value.to_vec(), None)]);
                let response = self.inner.txn(txn).await?;
                if response.succeeded() {
                    return header_revision("txn", response.header());
                }
            }
            match self.inner.get(key).await? {
                None => return Err(Error::NotFound { key: key.into() }),
                Some(current) if current.mod_revision != expected => {
                    return Err(Error::Conflict {
                        key: key.into(),
                        expected,
                        current: Box::new(current),
                    });
                }
                // Created at exactly `expected` since the compare: the guard holds now.
                Some(_) => {}
            }
        }
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(Revision, KeyValue)> {
        crate::check_key(key)?;
        let inner = &self.inner;
        let Some(expected) = expected else {
            let mut kv = inner.kv.clone();
            let options = DeleteOptions::new().with_prev_key();
            let mut response = call(kv.delete(key, Some(options)))
                .await
                .map_err(|e| inner.error("delete", e))?;
            // Deleting nothing does not bump etcd's revision: a failed delete changes nothing.
            if response.deleted() == 0 {
                return Err(Error::NotFound { key: key.into() });
            }
            let revision = header_revision("delete", response.header())?;
            let prev =
                response
                    .take_prev_kvs()
                    .into_iter()
                    .next()
                    .ok_or(Error::EtcdBadResponse {
                        op: "delete",
                        detail: "a delete without the deleted key-value",
                    })?;
            return Ok((revision, owned_kv(prev)?));
        };
        loop {
            // Read first: the value to return is the one whose mod_revision the txn compares, so
            // a successful compare proves it is exactly what was deleted.
            let current = inner
                .get(key)
                .await?
                .ok_or_else(|| Error::NotFound { key: key.into() })?;
            if current.mod_revision != expected {
                return Err(Error::Conflict {
                    key: key.into(),
                    expected,
                    current: Box::new(current),
                });
            }
            let txn = Txn::new()
                .when([Compare::mod_revision(key, CompareOp::Equal, expected)])
                .and_then([TxnOp::delete(key, None)]);
            let response = inner.txn(txn).await?;
            if response.succeeded() {
                return Ok((header_revision("txn", response.header())?, current));
            }
            // Changed between the read and the txn: the next read reports how.
        }
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        watch::start(self.inner.clone(), prefix, after).await
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let inner = &self.inner;
        if revision <= inner.compacted.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut kv = inner.kv.clone();
        match call(kv.compact(revision, None)).await {
            Ok(_) => {
                inner.compacted.fetch_max(revision, Ordering::AcqRel);
                Ok(())
            }
            Err(err) => match classify(&err) {
                // At or below etcd's compacted revision: already done.
                Failure::Compacted => {
                    inner.compacted.fetch_max(revision, Ordering::AcqRel);
                    Ok(())
                }
                Failure::FutureRevision => Err(inner.future_error(revision).await),
                _ => Err(inner.error("compact", err)),
            },
        }
    }

    async fn current_revision(&self) -> Result<Revision> {
        self.inner.current_revision().await
    }

    async fn stats(&self) -> Result<Stats> {
        let inner = &self.inner;
        let everything = GetOptions::new().with_range(vec![0]).with_count_only();
        let response = inner
            .range(vec![0], everything)
            .await
            .map_err(|e| inner.error("range", e))?;
        let keys = u64::try_from(response.count()).map_err(|_| Error::EtcdBadResponse {
            op: "range",
            detail: "a negative count",
        })?;
        let revision = header_revision("range", response.header())?;
        let compacted_revision = inner.compacted_revision().await?;
        let mut maintenance = inner.maintenance.clone();
        let status = call(maintenance.status())
            .await
            .map_err(|e| inner.error("status", e))?;
        Ok(Stats {
            keys,
            revision,
            compacted_revision,
            size_bytes: u64::try_from(status.db_size()).unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_trusted_only_from_versions_that_order_it() {
        for (version, ordered) in [
            ("3.4.23", false),
            ("3.4.30", false),
            ("3.4.31", true),
            ("3.5.0", false),
            ("3.5.12", false),
            ("3.5.13", true),
            ("3.6.0", true),
            ("4.0.0", true),
            ("3.3.27", false),
            ("", false),
            ("garbage", false),
            ("v3.5.17-rc.0", true),
        ] {
            assert_eq!(orders_progress(version), ordered, "{version:?}");
        }
    }

    #[test]
    fn ranges_cover_the_prefix_or_everything() {
        assert_eq!(range_start(""), vec![0]);
        assert_eq!(range_end(""), vec![0]);
        assert_eq!(range_start("/a/"), b"/a/".to_vec());
        assert_eq!(range_end("/a/"), b"/a0".to_vec());
    }

    #[test]
    fn revision_errors_are_told_apart_by_etcds_messages() {
        let status = |code, message: &str| {
            etcd_client::Error::GRpcStatus(tonic::Status::new(code, message.to_owned()))
        };
        assert_eq!(
            classify(&status(
                tonic::Code::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted"
            )),
            Failure::Compacted
        );
        assert_eq!(
            classify(&status(
                tonic::Code::OutOfRange,
                "etcdserver: mvcc: required revision is a future revision"
            )),
            Failure::FutureRevision
        );
        assert_eq!(
            classify(&status(
                tonic::Code::Unavailable,
                "etcdserver: leader changed"
            )),
            Failure::Unavailable
        );
        assert_eq!(
            classify(&status(
                tonic::Code::InvalidArgument,
                "etcdserver: request is too large"
            )),
            Failure::Other
        );
        assert_eq!(classify(&timed_out(REQUEST_TIMEOUT)), Failure::Unavailable);
    }

    #[test]
    fn non_utf8_keys_are_reported_not_panicked_on() {
        match utf8_key(vec![b'/', 0xff]) {
            Err(Error::EtcdInvalidKey(detail)) => assert!(detail.contains("not UTF-8"), "{detail}"),
            other => panic!("expected EtcdInvalidKey, saw {other:?}"),
        }
    }
}
