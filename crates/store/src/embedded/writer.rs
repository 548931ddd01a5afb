//! The embedded store's single writer thread, doing group commit.
//!
//! The writer takes everything queued while the previous batch was syncing and handles it as one
//! batch: each write inside still gets its own revision and its own precondition check (as if the
//! writes had run one after another), the batch's effects are appended to the write-ahead log as
//! one record and synced once (`wal.rs`), and only then applied to redb, without a sync of its
//! own. Every caller is answered after the log sync, so throughput grows with the number of
//! concurrent writers while each write stays durable. When a log segment is full the writer makes
//! redb durable (a checkpoint) and starts the next segment.
//!
//! Compaction first records the new compacted revision (so readers stop asking for what is about to
//! go), then trims the history in small transactions between write batches, so a large trim never
//! stalls writers.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, TryRecvError};

use bytes::Bytes;
use redb::{Durability, ReadableTable, Table};
use tokio::sync::oneshot;

use super::wal::{self, Wal};
use super::{
    Core, KV, LOG, META, META_CHECKPOINT, META_COMPACTED, META_REVISION, codec, corrupt_record,
};
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

/// The writer thread's state besides its queue.
struct Writer {
    core: Arc<Core>,
    wal: Wal,
    /// The last revision written.
    revision: Revision,
    /// Set when the log failed part way: what is on disk is unknown, so no write is accepted
    /// until the store is reopened (which replays what the log really holds).
    failed: Option<Error>,
}

/// Runs until every sender of `requests` is gone.
pub(crate) fn run(core: Arc<Core>, wal: Wal, requests: Receiver<Request>, revision: Revision) {
    let mut writer = Writer {
        core,
        wal,
        revision,
        failed: None,
    };
    // History still to trim after a compaction, up to this revision.
    let mut trim_to: Option<u64> = None;
    loop {
        let first = match trim_to {
            // Trim only while no request waits, so writes never queue behind a trim.
            Some(to) => match requests.try_recv() {
                Ok(request) => request,
                Err(TryRecvError::Empty) => {
                    trim_to = trim_chunk(&writer.core, to);
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
                    writer.commit_batch(std::mem::take(&mut batch));
                    let result = mark_compacted(&writer.core, writer.revision, target);
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
        writer.commit_batch(batch);
    }
}

impl Writer {
    /// Applies a batch and answers its callers once it is durable.
    fn commit_batch(&mut self, batch: Vec<Pending>) {
        if batch.is_empty() {
            return;
        }
        let result = match &self.failed {
            Some(err) => Err(share(err)),
            None => self
                .make_room(&batch)
                .and_then(|()| self.apply_batch(&batch)),
        };
        match result {
            Ok((results, events, new_revision)) => {
                self.revision = new_revision;
                if !events.is_empty() {
                    self.core
                        .hub
                        .publish(&self.core.revision, new_revision, events);
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

    /// Rolls to a new log segment when the batch might not fit in the current one, after a
    /// checkpoint that makes everything the current one holds durable in redb.
    fn make_room(&mut self, batch: &[Pending]) -> Result<()> {
        let needed = wal::record_len(batch.iter().map(|(op, _)| match op {
            WriteOp::Create { key, value } | WriteOp::Update { key, value, .. } => {
                (key.len(), value.len())
            }
            WriteOp::Delete { key, .. } => (key.len(), 0),
        }));
        if self.wal.fits(needed) {
            return Ok(());
        }
        checkpoint(&self.core, self.revision)?;
        self.wal.roll(self.revision + 1, needed)
    }

    /// Applies a batch in one redb transaction: decides each write, appends the effects to the
    /// log and syncs it, then commits to redb without a sync.
    fn apply_batch(&mut self, batch: &[Pending]) -> Result<BatchResult> {
        let core = &*self.core;
        let base = self.revision;
        let mut txn = core.db.begin_write().map_err(commit_failed)?;
        txn.set_durability(Durability::None)
            .map_err(|e| commit_failed(redb::Error::from(e)))?;
        let mut revision = base;
        let mut results = Vec::with_capacity(batch.len());
        let mut events = Vec::with_capacity(batch.len());
        {
            let mut kv = txn.open_table(KV).map_err(commit_failed)?;
            let mut log = txn.open_table(LOG).map_err(commit_failed)?;
            for (op, _) in batch {
                match decide(core, &mut kv, revision + 1, op)? {
                    Ok(event) => {
                        write_event(&mut kv, &mut log, &event)?;
                        revision += 1;
                        results.push(Ok(Outcome {
                            revision,
                            prev: event.prev.clone(),
                        }));
                        events.push(event);
                    }
                    Err(refused) => results.push(Err(refused)),
                }
            }
        }
        if revision == base {
            // Every write was refused: nothing to make durable.
            txn.abort().map_err(commit_failed)?;
            return Ok((results, events, revision));
        }
        if let Err(err) = self.wal.append(&events) {
            let _ = txn.abort();
            return Err(self.fail(err));
        }
        // The batch is durable now; failing to apply it to redb leaves the store behind its log.
        if let Err(err) = txn.commit() {
            return Err(self.fail(commit_failed(err)));
        }
        Ok((results, events, revision))
    }

    /// Stops accepting writes after `err`; returns it for the current batch.
    fn fail(&mut self, err: Error) -> Error {
        tracing::error!(error = %err, "the store refuses writes until it is reopened");
        self.failed = Some(share(&err));
        err
    }
}

/// Makes everything applied to redb so far durable, recording `revision` as checkpointed.
pub(crate) fn checkpoint(core: &Core, revision: Revision) -> Result<()> {
    let txn = core.db.begin_write().map_err(commit_failed)?;
    txn.open_table(META)
        .map_err(commit_failed)?
        .insert(META_CHECKPOINT, revision as u64)
        .map_err(commit_failed)?;
    txn.commit().map_err(commit_failed)
}

/// One copy of a batch-wide failure per caller.
fn share(err: &Error) -> Error {
    match err {
        Error::CommitFailed(e) => Error::CommitFailed(e.clone()),
        Error::Log { path, source } => Error::Log {
            path: path.clone(),
            source: source.clone(),
        },
        Error::Corrupt { path, detail } => Error::Corrupt {
            path: path.clone(),
            detail: detail.clone(),
        },
        _ => Error::Closed,
    }
}

type BatchResult = (Vec<Result<Outcome>>, Vec<Event>, Revision);

/// Decides one write at `revision` against the current state. The outer error fails the whole
/// batch (storage trouble); the inner one refuses this write only (a precondition).
fn decide(
    core: &Core,
    kv: &mut Table<&[u8], &[u8]>,
    revision: Revision,
    op: &WriteOp,
) -> Result<Result<Event>> {
    let key = match op {
        WriteOp::Create { key, .. } | WriteOp::Update { key, .. } | WriteOp::Delete { key, .. } => {
            key
        }
    };
    let existing = current(core, kv, key)?;
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
    Ok(Ok(event))
}

/// The current state of `key` in a write transaction.
fn current(core: &Core, kv: &mut Table<&[u8], &[u8]>, key: &str) -> Result<Option<KeyValue>> {
    current_in(&core.path, kv, key)
}

/// [`current`] for the store file at `path` (also used by replay, before the writer exists).
pub(crate) fn current_in(
    path: &std::path::Path,
    kv: &mut Table<&[u8], &[u8]>,
    key: &str,
) -> Result<Option<KeyValue>> {
    kv.get(key.as_bytes())
        .map_err(commit_failed)?
        .map(|raw| codec::decode_kv(key.as_bytes(), raw.value()))
        .transpose()
        .map_err(|e| corrupt_record(path, e))
}

/// Writes a decided event: the key's new state and its history record.
pub(crate) fn write_event(
    kv: &mut Table<&[u8], &[u8]>,
    log: &mut Table<u64, &[u8]>,
    event: &Event,
) -> Result<()> {
    let key = event.kv.key.as_bytes();
    match event.kind {
        EventType::Put => {
            let raw = codec::encode_kv(
                event.kv.create_revision,
                event.kv.mod_revision,
                &event.kv.value,
            );
            kv.insert(key, raw.as_slice()).map_err(commit_failed)?;
        }
        EventType::Delete => {
            kv.remove(key).map_err(commit_failed)?;
        }
    }
    log.insert(
        event.kv.mod_revision as u64,
        codec::encode_event(event).as_slice(),
    )
    .map_err(commit_failed)?;
    Ok(())
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
        let mut txn = core.db.begin_write().map_err(commit_failed)?;
        // Durable with the next checkpoint; a trim lost to a crash is redone by the next compaction.
        txn.set_durability(Durability::None)
            .map_err(|e| commit_failed(redb::Error::from(e)))?;
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
