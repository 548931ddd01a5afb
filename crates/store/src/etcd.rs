//! The etcd v3 backend, for high availability: the same contract as the embedded store, kept by
//! a real etcd cluster.
//!
//! Creates and guarded writes are single txns comparing `create_revision`/`mod_revision`, as
//! kube-apiserver's etcd3 storage does; when the compare fails, the txn's else-branch reads the key
//! in the same round trip, so a `Conflict` carries the current value without a second call.
//! etcd's revision is the store revision, so `resourceVersion`s are etcd's.
//!
//! Every call has a deadline, so an unreachable etcd gives [`Error::EtcdUnavailable`] instead of a
//! hang, and the client's channel reconnects by itself once etcd is back. A watch runs in a task
//! that re-establishes a broken etcd watch from the revision after the last one it delivered, with
//! back-off, so a restart of etcd loses and repeats nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions,
    PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::{
    Error, Event, EventType, KeyValue, ListOptions, ListResult, ProgressRequester, Result,
    Revision, Stats, Store, WatchItem, WatchStream, key_after, prefix_range_end,
};

/// Deadline of one request. Generous for a loaded etcd, short enough that callers see an outage.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Items buffered between a watch's task and its consumer.
const WATCH_BUFFER: usize = 256;
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A store kept by an etcd v3 cluster.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    endpoints: String,
    /// The highest compaction this client made or saw: etcd does not report it directly.
    compacted: Arc<AtomicI64>,
}

impl EtcdStore {
    /// Connects to `endpoints` (`http://host:2379`, ...) and checks that etcd answers.
    pub async fn connect(endpoints: &[String]) -> Result<EtcdStore> {
        let joined = endpoints.join(",");
        let unavailable = |source: etcd_client::Error| Error::EtcdUnavailable {
            endpoints: joined.clone(),
            source: Box::new(source),
        };
        if endpoints.is_empty() {
            return Err(unavailable(etcd_client::Error::InvalidArgs(
                "no etcd endpoint given".into(),
            )));
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        let connect = Client::connect(endpoints, Some(options));
        let mut client = tokio::time::timeout(CONNECT_TIMEOUT * 2, connect)
            .await
            .map_err(|_| unavailable(timeout_error("connect")))?
            .map_err(unavailable)?;
        // The channel connects lazily: make one call so an unreachable etcd shows now.
        tokio::time::timeout(CONNECT_TIMEOUT * 2, client.status())
            .await
            .map_err(|_| unavailable(timeout_error("status")))?
            .map_err(unavailable)?;
        Ok(EtcdStore {
            client,
            endpoints: joined,
            compacted: Arc::new(AtomicI64::new(0)),
        })
    }

    /// Maps a client error: transport failures mean etcd is unreachable; gRPC answers are
    /// request failures, except the revision errors the contract names.
    fn request_error(&self, op: &'static str, err: etcd_client::Error) -> Error {
        match &err {
            etcd_client::Error::GRpcStatus(status) => {
                let message = status.message();
                if message.contains("required revision has been compacted") {
                    return Error::Compacted {
                        requested: 0,
                        compacted: self.compacted.load(Ordering::Acquire),
                    };
                }
                if message.contains("required revision is a future revision") {
                    return Error::FutureRevision {
                        requested: 0,
                        current: 0,
                    };
                }
                match status.code() {
                    tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
                        Error::EtcdUnavailable {
                            endpoints: self.endpoints.clone(),
                            source: Box::new(err),
                        }
                    }
                    _ => Error::EtcdRequest {
                        op,
                        source: Box::new(err),
                    },
                }
            }
            etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => {
                Error::EtcdUnavailable {
                    endpoints: self.endpoints.clone(),
                    source: Box::new(err),
                }
            }
            _ => Error::EtcdRequest {
                op,
                source: Box::new(err),
            },
        }
    }

    async fn txn(&self, op: &'static str, txn: Txn) -> Result<etcd_client::TxnResponse> {
        self.client
            .kv_client()
            .txn(txn)
            .await
            .map_err(|e| self.request_error(op, e))
    }
}

fn timeout_error(what: &str) -> etcd_client::Error {
    etcd_client::Error::IoError(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("{what} timed out"),
    ))
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Revision {
    header.map_or(0, |h| h.revision())
}

fn convert_kv(kv: &etcd_client::KeyValue) -> Result<KeyValue> {
    let key = std::str::from_utf8(kv.key())
        .map_err(|_| Error::EtcdInvalidKey(String::from_utf8_lossy(kv.key()).into_owned()))?;
    Ok(KeyValue {
        key: key.to_owned(),
        value: Bytes::copy_from_slice(kv.value()),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
    })
}

/// The first key-value of a txn's get in its else-branch: the current state of the key.
fn current_from(response: &etcd_client::TxnResponse) -> Result<Option<KeyValue>> {
    for op in response.op_responses() {
        if let TxnOpResponse::Get(get) = op {
            return get.kvs().first().map(convert_kv).transpose();
        }
    }
    Ok(None)
}

/// Range options covering `[start, end of prefix)`.
fn range_options(prefix: &str) -> GetOptions {
    match prefix_range_end(prefix) {
        Some(end) => GetOptions::new().with_range(end),
        None => GetOptions::new().with_from_key(),
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let response = self
            .client
            .kv_client()
            .get(key, None)
            .await
            .map_err(|e| self.request_error("range", e))?;
        response.kvs().first().map(convert_kv).transpose()
    }

    async fn list(&self, opts: ListOptions) -> Result<ListResult> {
        let start = match &opts.start_key {
            Some(start) if start.as_str() > opts.prefix.as_str() => start.clone(),
            _ => opts.prefix.clone(),
        };
        let mut options = range_options(&opts.prefix);
        if opts.limit > 0 {
            options = options.with_limit(opts.limit as i64);
        }
        if opts.revision > 0 {
            options = options.with_revision(opts.revision);
        }
        if let Some(end) = prefix_range_end(&opts.prefix)
            && start.as_bytes() >= end.as_slice()
        {
            let revision = match opts.revision {
                0 => self.current_revision().await?,
                r => r,
            };
            return Ok(ListResult {
                items: Vec::new(),
                revision,
                next_key: None,
            });
        }
        let key = if start.is_empty() {
            "\0".to_owned()
        } else {
            start
        };
        let response = match self.client.kv_client().get(key, Some(options)).await {
            Ok(response) => response,
            Err(err) => {
                return Err(match self.request_error("range", err) {
                    Error::Compacted { compacted, .. } => Error::Compacted {
                        requested: opts.revision,
                        compacted,
                    },
                    // Only the error path pays for reading the current revision.
                    Error::FutureRevision { .. } => Error::FutureRevision {
                        requested: opts.revision,
                        current: self.current_revision().await?,
                    },
                    other => other,
                });
            }
        };
        let items = response
            .kvs()
            .iter()
            .map(convert_kv)
            .collect::<Result<Vec<_>>>()?;
        let next_key = if response.more() {
            items.last().map(|kv| key_after(&kv.key))
        } else {
            None
        };
        let revision = match opts.revision {
            0 => header_revision(response.header()),
            r => r,
        };
        Ok(ListResult {
            items,
            revision,
            next_key,
        })
    }

    async fn count(&self, prefix: &str) -> Result<u64> {
        let key = if prefix.is_empty() { "\0" } else { prefix };
        let response = self
            .client
            .kv_client()
            .get(key, Some(range_options(prefix).with_count_only()))
            .await
            .map_err(|e| self.request_error("range", e))?;
        Ok(response.count().max(0) as u64)
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<Revision> {
        check_key(key)?;
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value.to_vec(), None)]);
        let response = self.txn("txn", txn).await?;
        if !response.succeeded() {
            return Err(Error::KeyExists { key: key.into() });
        }
        Ok(header_revision(response.header()))
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<Revision> {
        check_key(key)?;
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, expected)])
            .and_then([TxnOp::put(key, value.to_vec(), Some(PutOptions::new()))])
            .or_else([TxnOp::get(key, None)]);
        let response = self.txn("txn", txn).await?;
        if response.succeeded() {
            return Ok(header_revision(response.header()));
        }
        match current_from(&response)? {
            None => Err(Error::NotFound { key: key.into() }),
            Some(current) => Err(Error::Conflict {
                key: key.into(),
                expected,
                current: Box::new(current),
            }),
        }
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(Revision, KeyValue)> {
        check_key(key)?;
        let delete = TxnOp::delete(key, Some(DeleteOptions::new().with_prev_key()));
        // Unguarded deletes still go through a txn that requires the key to exist, so "not found"
        // and the deleted value come from one atomic step.
        let compare = match expected {
            Some(expected) => Compare::mod_revision(key, CompareOp::Equal, expected),
            None => Compare::create_revision(key, CompareOp::Greater, 0),
        };
        let txn = Txn::new()
            .when([compare])
            .and_then([delete])
            .or_else([TxnOp::get(key, None)]);
        let response = self.txn("txn", txn).await?;
        if response.succeeded() {
            let revision = header_revision(response.header());
            for op in response.op_responses() {
                if let TxnOpResponse::Delete(deleted) = op
                    && let Some(prev) = deleted.prev_kvs().first()
                {
                    return Ok((revision, convert_kv(prev)?));
                }
            }
            return Err(Error::NotFound { key: key.into() });
        }
        match (current_from(&response)?, expected) {
            (Some(current), Some(expected)) => Err(Error::Conflict {
                key: key.into(),
                expected,
                current: Box::new(current),
            }),
            _ => Err(Error::NotFound { key: key.into() }),
        }
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        // Check the start revision first, so a stale one fails at the call: a range read at
        // `after` fails exactly when etcd no longer has that revision.
        let current = self.current_revision().await?;
        let compacted = self.compacted.load(Ordering::Acquire);
        if after < compacted {
            return Err(Error::Compacted {
                requested: after,
                compacted,
            });
        }
        if after > 0 && after <= current {
            let probe = self
                .client
                .kv_client()
                .get(
                    "\0",
                    Some(GetOptions::new().with_revision(after).with_count_only()),
                )
                .await;
            if let Err(err) = probe {
                return Err(match self.request_error("range", err) {
                    Error::Compacted { compacted, .. } => Error::Compacted {
                        requested: after,
                        compacted,
                    },
                    other => other,
                });
            }
        }
        let (out, out_rx) = mpsc::channel(WATCH_BUFFER);
        let (progress, progress_rx) = mpsc::channel(1);
        let task = EtcdWatch {
            store: self.clone(),
            prefix: prefix.to_owned(),
            next: after + 1,
            out,
            progress_rx,
        };
        tokio::spawn(task.run());
        Ok(WatchStream::new(
            ReceiverStream::new(out_rx),
            Requester(progress),
        ))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let current = self.current_revision().await?;
        if revision > current {
            return Err(Error::FutureRevision {
                requested: revision,
                current,
            });
        }
        let result = self
            .client
            .kv_client()
            .compact(revision, Some(CompactionOptions::new()))
            .await;
        match result.map_err(|e| self.request_error("compact", e)) {
            // Compacting to an already compacted revision is a no-op, as the contract says.
            Ok(_) | Err(Error::Compacted { .. }) => {
                self.compacted.fetch_max(revision, Ordering::AcqRel);
                Ok(())
            }
            Err(err) => Err(err),
        }
    }

    async fn current_revision(&self) -> Result<Revision> {
        let response = self
            .client
            .kv_client()
            .get("\0", Some(GetOptions::new().with_count_only()))
            .await
            .map_err(|e| self.request_error("range", e))?;
        Ok(header_revision(response.header()))
    }

    async fn stats(&self) -> Result<Stats> {
        let keys = self.count("").await?;
        let status = self
            .client
            .maintenance_client()
            .status()
            .await
            .map_err(|e| self.request_error("status", e))?;
        Ok(Stats {
            keys,
            revision: header_revision(status.header()),
            compacted_revision: self.compacted.load(Ordering::Acquire),
            size_bytes: status.db_size().max(0) as u64,
        })
    }
}

fn check_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::InvalidKey {
            key: key.into(),
            reason: "keys must not be empty",
        });
    }
    Ok(())
}

struct Requester(mpsc::Sender<()>);

impl ProgressRequester for Requester {
    fn request_progress(&self) {
        let _ = self.0.try_send(());
    }
}

/// One watch: an etcd watch kept alive across etcd restarts.
struct EtcdWatch {
    store: EtcdStore,
    prefix: String,
    /// The first revision not yet delivered.
    next: Revision,
    out: mpsc::Sender<Result<WatchItem>>,
    progress_rx: mpsc::Receiver<()>,
}

/// Why an etcd watch stream ended.
enum Ended {
    /// The consumer is gone, or the watch ended with an error item.
    Done,
    /// The stream broke: establish it again.
    Broken,
}

impl EtcdWatch {
    async fn run(mut self) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.stream_once(&mut backoff).await {
                Ended::Done => return,
                Ended::Broken => {
                    tracing::debug!(prefix = %self.prefix, next = self.next, "etcd watch broke; resuming");
                    tokio::select! {
                        _ = self.out.closed() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    async fn stream_once(&mut self, backoff: &mut Duration) -> Ended {
        let mut options = WatchOptions::new()
            .with_start_revision(self.next)
            .with_prev_key()
            .with_progress_notify();
        options = match prefix_range_end(&self.prefix) {
            Some(end) => options.with_range(end),
            None => options.with_from_key(),
        };
        let key = if self.prefix.is_empty() {
            "\0".to_owned()
        } else {
            self.prefix.clone()
        };
        let stream = match self
            .store
            .client
            .watch_client()
            .watch(key, Some(options))
            .await
        {
            Ok(stream) => stream,
            Err(err) => {
                tracing::debug!(error = %err, "etcd watch could not start");
                return Ended::Broken;
            }
        };
        let (mut requests, mut responses) = stream.split();
        loop {
            tokio::select! {
                _ = self.out.closed() => return Ended::Done,
                Some(()) = self.progress_rx.recv() => {
                    if requests.request_progress().await.is_err() {
                        return Ended::Broken;
                    }
                }
                message = responses.message() => {
                    let response = match message {
                        Ok(Some(response)) => response,
                        Ok(None) | Err(_) => return Ended::Broken,
                    };
                    *backoff = Duration::from_millis(100);
                    if response.compact_revision() != 0 {
                        self.store
                            .compacted
                            .fetch_max(response.compact_revision(), Ordering::AcqRel);
                        let _ = self
                            .out
                            .send(Err(Error::Compacted {
                                requested: self.next - 1,
                                compacted: response.compact_revision(),
                            }))
                            .await;
                        return Ended::Done;
                    }
                    if response.canceled() {
                        return Ended::Broken;
                    }
                    if response.events().is_empty() {
                        if !response.created() {
                            // A progress notification: nothing is pending up to its revision.
                            let revision = header_revision(response.header()).max(self.next - 1);
                            if self.out.send(Ok(WatchItem::Progress(revision))).await.is_err() {
                                return Ended::Done;
                            }
                        }
                        continue;
                    }
                    for event in response.events() {
                        let item = match convert_event(event) {
                            Ok(event) if event.revision() < self.next => continue,
                            Ok(event) => {
                                self.next = event.revision() + 1;
                                Ok(WatchItem::Event(event))
                            }
                            Err(err) => Err(err),
                        };
                        let failed = item.is_err();
                        if self.out.send(item).await.is_err() || failed {
                            return Ended::Done;
                        }
                    }
                }
            }
        }
    }
}

fn convert_event(event: &etcd_client::Event) -> Result<Event> {
    let kv = event
        .kv()
        .ok_or_else(|| Error::EtcdInvalidKey("watch event without a key".into()))?;
    let prev = event.prev_kv().map(convert_kv).transpose()?;
    let kind = match event.event_type() {
        etcd_client::EventType::Put => EventType::Put,
        etcd_client::EventType::Delete => EventType::Delete,
    };
    let mut kv = convert_kv(kv)?;
    if kind == EventType::Delete {
        kv.value = Bytes::new();
        if let Some(prev) = &prev {
            kv.create_revision = prev.create_revision;
        }
    }
    Ok(Event { kind, kv, prev })
}
