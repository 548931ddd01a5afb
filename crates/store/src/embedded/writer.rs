//! The embedded store's single writer thread, doing group commit.
//!
//! redb allows one write transaction at a time and each durable commit costs an fsync, so the
//! writer takes everything queued while the previous commit synced and commits it in one
//! transaction. Each write inside still gets its own revision and its own precondition check (as if
//! the writes had run one after another), and every caller is answered only after the fsync, so
//! throughput grows with the number of concurrent writers while each write stays durable.
//!
//! Compaction first records the new compacted revision (so readers stop asking for what is about to
//! go), then trims the history in small transactions between write batches, so a large trim never
//! stalls writers.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, TryRecvError};

use bytes::Bytes;
use redb::{ReadableTable, Table};
use tokio::sync::oneshot;

use super::{Core, KV, LOG, META, META_COMPACTED, META_REVISION, codec, corrupt_record};
use crate::error::commit_failed;
use crate::{Error, Event, EventType, KeyValue, Result, Revision};

/// Most writes committed in one transaction: bounds the latency of the first writer in a batch.
const MAX_BATCH: usize = 2048;
/// History records removed per trim transaction.
const TRIM_CHUNK: usize = 2000;

/// A write the writer thread applies.
pub(crate) enum WriteOp {
    Create {
        key: String,
        value: Bytes,
    },
    Update {
        key: String,
        value: Bytes,
        expected: Revision,
    },
    Delete {
        key: String,
        expected: Option<Revision>,
    },
}

/// What a successful write returns.
pub(crate) struct Outcome {
    pub(crate) revision: Revision,
    /// The value replaced or deleted.
    pub(crate) prev: Option<KeyValue>,
}

/// A message to the writer thread.
pub(crate) enum Request {
    Write {
        op: WriteOp,
        reply: oneshot::Sender<Result<Outcome>>,
    },
    Compact {
        revision: Revision,
        reply: oneshot::Sender<Result<()>>,
    },
}

type Pending = (WriteOp, oneshot::Sender<Result<Outcome>>);

/// Runs until every sender of `requests` is gone.
pub(crate) fn run(core: Arc<Core>, requests: Receiver<Request>, mut revision: Revision) {
    // History still to trim after a compaction, up to this revision.
    let mut trim_to: Option<u64> = None;
    loop {
        let first = match trim_to {
            // Trim only while no request waits, so writes never queue behind a trim.
            Some(to) => match requests.try_recv() {
                Ok(request) => request,
                Err(TryRecvError::Empty) => {
                    trim_to = trim_chunk(&core, to);
                    continue;
                }
                Err(TryRecvError::Disconnected) => return,
            },
            None => match requests.recv() {
                Ok(request) => request,
                Err(_) => return,
            },
        };
        let mut batch: Vec<Pending> = Vec::new();
        let mut next = Some(first);
        while let Some(request) = next.take() {
            match request {
                Request::Write { op, reply } => batch.push((op, reply)),
                Request::Compact {
                    revision: target,
                    reply,
                } => {
                    // Writes queued before the compaction commit first, in order.
                    commit_batch(&core, &mut revision, std::mem::take(&mut batch));
                    let result = mark_compacted(&core, revision, target);
                    if let Ok(Some(to)) = &result {
                        trim_to = Some(trim_to.map_or(*to, |t| t.max(*to)));
                    }
                    let _ = reply.send(result.map(|_| ()));
                }
            }
            if batch.len() < MAX_BATCH {
                next = requests.try_recv().ok();
            }
        }
        commit_batch(&core, &mut revision, batch);
    }
}

/// Applies a batch in one transaction and answers its callers after the commit.
fn commit_batch(core: &Core, revision: &mut Revision, batch: Vec<Pending>) {
    if batch.is_empty() {
        return;
    }
    match apply_batch(core, *revision, &batch) {
        Ok((results, events, new_revision)) => {
            *revision = new_revision;
            if !events.is_empty() {
                core.hub.publish(&core.revision, new_revision, events);
            }
            for ((_, reply), result) in batch.into_iter().zip(results) {
                let _ = reply.send(result);
            }
        }
        Err(err) => {
            tracing::error!(error = %err, writes = batch.len(), "store commit failed");
            for (_, reply) in batch {
                let _ = reply.send(Err(share(&err)));
            }
        }
    }
}

/// One copy of a batch-wide failure per caller.
fn share(err: &Error) -> Error {
    match err {
        Error::CommitFailed(e) => Error::CommitFailed(e.clone()),
        Error::Corrupt { path, detail } => Error::Corrupt {
            path: path.clone(),
            detail: detail.clone(),
        },
        _ => Error::Closed,
    }
}

type BatchResult = (Vec<Result<Outcome>>, Vec<Event>, Revision);

fn apply_batch(core: &Core, base: Revision, batch: &[Pending]) -> Result<BatchResult> {
    let txn = core.db.begin_write().map_err(commit_failed)?;
    let mut revision = base;
    let mut results = Vec::with_capacity(batch.len());
    let mut events = Vec::with_capacity(batch.len());
    {
        let mut kv = txn.open_table(KV).map_err(commit_failed)?;
        let mut log = txn.open_table(LOG).map_err(commit_failed)?;
        for (op, _) in batch {
            match apply(core, &mut kv, &mut log, revision + 1, op)? {
                Ok((outcome, event)) => {
                    revision += 1;
                    results.push(Ok(outcome));
                    events.push(event);
                }
                Err(refused) => results.push(Err(refused)),
            }
        }
    }
    if revision == base {
        // Every write was refused: nothing to make durable.
        txn.abort().map_err(commit_failed)?;
    } else {
        txn.commit().map_err(commit_failed)?;
    }
    Ok((results, events, revision))
}

/// Applies one write at `revision`. The outer error fails the whole batch (storage trouble); the
/// inner one refuses this write only (a precondition).
fn apply(
    core: &Core,
    kv: &mut Table<&[u8], &[u8]>,
    log: &mut Table<u64, &[u8]>,
    revision: Revision,
    op: &WriteOp,
) -> Result<Result<(Outcome, Event)>> {
    let key = match op {
        WriteOp::Create { key, .. } | WriteOp::Update { key, .. } | WriteOp::Delete { key, .. } => {
            key
        }
    };
    let existing = kv
        .get(key.as_bytes())
        .map_err(commit_failed)?
        .map(|raw| codec::decode_kv(key.as_bytes(), raw.value()))
        .transpose()
        .map_err(|e| corrupt_record(&core.path, e))?;
    let event = match (op, existing) {
        (WriteOp::Create { .. }, Some(_)) => {
            return Ok(Err(Error::KeyExists { key: key.clone() }));
        }
        (WriteOp::Create { value, .. }, None) => Event {
            kind: EventType::Put,
            kv: KeyValue {
                key: key.clone(),
                value: value.clone(),
                create_revision: revision,
                mod_revision: revision,
            },
            prev: None,
        },
        (WriteOp::Update { .. } | WriteOp::Delete { .. }, None) => {
            return Ok(Err(Error::NotFound { key: key.clone() }));
        }
        (WriteOp::Update { expected, .. }, Some(current))
        | (
            WriteOp::Delete {
                expected: Some(expected),
                ..
            },
            Some(current),
        ) if current.mod_revision != *expected => {
            return Ok(Err(Error::Conflict {
                key: key.clone(),
                expected: *expected,
                current: Box::new(current),
            }));
        }
        (WriteOp::Update { value, .. }, Some(current)) => Event {
            kind: EventType::Put,
            kv: KeyValue {
                key: key.clone(),
                value: value.clone(),
                create_revision: current.create_revision,
                mod_revision: revision,
            },
            prev: Some(current),
        },
        (WriteOp::Delete { .. }, Some(current)) => Event {
            kind: EventType::Delete,
            kv: KeyValue {
                key: key.clone(),
                value: Bytes::new(),
                create_revision: current.create_revision,
                mod_revision: revision,
            },
            prev: Some(current),
        },
    };
    match event.kind {
        EventType::Put => {
            let raw = codec::encode_kv(event.kv.create_revision, revision, &event.kv.value);
            kv.insert(key.as_bytes(), raw.as_slice())
                .map_err(commit_failed)?;
        }
        EventType::Delete => {
            kv.remove(key.as_bytes()).map_err(commit_failed)?;
        }
    }
    log.insert(revision as u64, codec::encode_event(&event).as_slice())
        .map_err(commit_failed)?;
    let outcome = Outcome {
        revision,
        prev: event.prev.clone(),
    };
    Ok(Ok((outcome, event)))
}

/// Records `target` as the compacted revision. Returns the revision history must be trimmed to,
/// or `None` when `target` was already compacted.
fn mark_compacted(core: &Core, current: Revision, target: Revision) -> Result<Option<u64>> {
    if target > current {
        return Err(Error::FutureRevision {
            requested: target,
            current,
        });
    }
    let compacted = core.compacted.load(std::sync::atomic::Ordering::Acquire);
    if target <= compacted {
        return Ok(None);
    }
    let txn = core.db.begin_write().map_err(commit_failed)?;
    {
        let mut meta = txn.open_table(META).map_err(commit_failed)?;
        meta.insert(META_COMPACTED, target as u64)
            .map_err(commit_failed)?;
        // Trimming may empty `log`, whose newest record otherwise tells the current revision.
        meta.insert(META_REVISION, current as u64)
            .map_err(commit_failed)?;
    }
    txn.commit().map_err(commit_failed)?;
    core.compacted
        .store(target, std::sync::atomic::Ordering::Release);
    tracing::debug!(revision = target, "store compacted");
    Ok(Some(target as u64))
}

/// Removes up to [`TRIM_CHUNK`] history records at or below `to`; returns `Some(to)` while more
/// remain. A failure is logged and retried with the next compaction.
fn trim_chunk(core: &Core, to: u64) -> Option<u64> {
    let result = (|| -> Result<bool> {
        let txn = core.db.begin_write().map_err(commit_failed)?;
        let more = {
            let mut log = txn.open_table(LOG).map_err(commit_failed)?;
            let revisions: Vec<u64> = log
                .range(..=to)
                .map_err(commit_failed)?
                .take(TRIM_CHUNK + 1)
                .map(|entry| entry.map(|(k, _)| k.value()))
                .collect::<std::result::Result<_, _>>()
                .map_err(commit_failed)?;
            for revision in revisions.iter().take(TRIM_CHUNK) {
                log.remove(revision).map_err(commit_failed)?;
            }
            revisions.len() > TRIM_CHUNK
        };
        txn.commit().map_err(commit_failed)?;
        Ok(more)
    })();
    match result {
        Ok(true) => Some(to),
        Ok(false) => None,
        Err(err) => {
            tracing::warn!(error = %err, "trimming compacted history failed");
            None
        }
    }
}
