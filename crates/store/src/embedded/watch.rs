//! Watches on the embedded store, fed from memory.
//!
//! The writer publishes each committed batch once on a broadcast [`Hub`]; each [`WatchStream`]
//! reads the hub directly as its consumer polls it and keeps the events under its prefix. Only two
//! cases read the file: a watch that starts from a past revision replays the history first, and a watch
//! whose consumer fell so far behind that the broadcast buffer moved on (it "lagged") catches up
//! from the history instead of holding an unbounded queue. Either way it then skips what it has
//! already delivered, so each event arrives exactly once and in revision order.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use redb::ReadableDatabase;
use tokio::sync::{broadcast, mpsc};

use super::{Core, LOG, codec, corrupt_record, read_revisions, run_blocking};
use crate::error::read_failed;
use crate::{Error, Event, ProgressRequester, Result, Revision, WatchItem, WatchStream};

/// Batches the hub keeps for slow watchers before they must catch up from the file.
const HUB_CAPACITY: usize = 1024;
/// Largest batch (keys and values, new and previous) the hub carries itself. A stalled watcher
/// pins every message the hub holds, so larger batches are announced by revision only and read
/// from the history: the hub never holds more than `HUB_CAPACITY` × this.
const INLINE_BATCH_BYTES: usize = 64 << 10;
/// History records read per catch-up transaction.
const CATCH_UP_CHUNK: usize = 5000;
/// Bytes of events read per catch-up transaction (a chunk of large objects stops early).
const CATCH_UP_BYTES: usize = 4 << 20;

#[derive(Clone)]
pub(crate) enum HubMessage {
    /// A committed batch, and the revision it brought the store to.
    Events(Arc<[Event]>, Revision),
    /// A committed batch too large to carry: its events are in the history, up to this revision.
    Committed(Revision),
    /// Nothing is pending up to this revision.
    Progress(Revision),
}

/// The broadcast of committed batches.
pub(crate) struct Hub {
    /// The mutex orders "store the new revision, then send" against progress messages, so a
    /// progress message never overtakes the events it claims were delivered.
    tx: Mutex<broadcast::Sender<HubMessage>>,
}

impl Hub {
    pub(crate) fn new() -> Self {
        Self {
            tx: Mutex::new(broadcast::channel(HUB_CAPACITY).0),
        }
    }

    /// Makes `revision` current and hands `events` to every watcher.
    pub(crate) fn publish(&self, current: &AtomicI64, revision: Revision, events: Vec<Event>) {
        let bytes: usize = events.iter().map(event_bytes).sum();
        let message = if bytes > INLINE_BATCH_BYTES {
            HubMessage::Committed(revision)
        } else {
            HubMessage::Events(events.into(), revision)
        };
        if let Ok(tx) = self.tx.lock() {
            current.store(revision, Ordering::Release);
            let _ = tx.send(message);
        } else {
            current.store(revision, Ordering::Release);
        }
    }

    /// Tells every watcher that nothing is pending up to the current revision.
    pub(crate) fn progress(&self, current: &AtomicI64) {
        if let Ok(tx) = self.tx.lock() {
            let _ = tx.send(HubMessage::Progress(current.load(Ordering::Acquire)));
        }
    }

    fn subscribe(&self) -> Result<broadcast::Receiver<HubMessage>> {
        self.tx
            .lock()
            .map(|tx| tx.subscribe())
            .map_err(|_| Error::Closed)
    }
}

/// What an event holds in memory, roughly.
fn event_bytes(event: &Event) -> usize {
    event.kv.key.len() + event.kv.value.len() + event.prev.as_ref().map_or(0, |p| p.value.len())
}

/// Sends a progress message to idle watchers every `every`, until the store is gone.
pub(crate) async fn progress_ticker(core: Weak<Core>, every: Duration) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await;
    loop {
        interval.tick().await;
        let Some(core) = core.upgrade() else {
            return;
        };
        core.hub.progress(&core.revision);
    }
}

struct Requester(mpsc::Sender<()>);

impl ProgressRequester for Requester {
    fn request_progress(&self) {
        // A request already queued covers this one too.
        let _ = self.0.try_send(());
    }
}

/// Starts a watch of `prefix` for events after `after`.
pub(crate) fn start(core: &Arc<Core>, prefix: &str, after: Revision) -> Result<WatchStream> {
    let compacted = core.compacted.load(Ordering::Acquire);
    if after < compacted {
        return Err(Error::Compacted {
            requested: after,
            compacted,
        });
    }
    // Subscribe before reading any history, so nothing committed meanwhile is missed.
    let hub = core.hub.subscribe()?;
    let (progress, progress_rx) = mpsc::channel(1);
    let state = WatchState {
        core: Arc::downgrade(core),
        prefix: prefix.to_owned(),
        seen: after,
        hub,
        progress_rx,
        pending: VecDeque::new(),
        catching_up: true,
        progress_pending: false,
        done: false,
    };
    // The consumer's own polling drives the watch: no task and no second queue per watch, so a
    // write wakes each watcher once.
    let stream = futures::stream::unfold(state, |mut state| async move {
        let item = state.next_item().await?;
        Some((item, state))
    });
    Ok(WatchStream::new(stream, Requester(progress)))
}

/// The state of one watch, advanced by its consumer's polls.
struct WatchState {
    core: Weak<Core>,
    prefix: String,
    /// Every matching event up to this revision is in `pending` or delivered.
    seen: Revision,
    hub: broadcast::Receiver<HubMessage>,
    progress_rx: mpsc::Receiver<()>,
    /// Items taken from the hub or the history, not yet handed out: at most one hub batch or one
    /// history chunk.
    pending: VecDeque<WatchItem>,
    /// History after `seen` must be read from the file before following the hub (at start, and
    /// after the hub dropped batches this watch had not read).
    catching_up: bool,
    /// A progress request arrived while catching up: answer it once caught up.
    progress_pending: bool,
    done: bool,
}

impl WatchState {
    async fn next_item(&mut self) -> Option<Result<WatchItem>> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(Ok(item));
            }
            if self.done {
                return None;
            }
            if self.catching_up {
                if let Err(err) = self.catch_up_chunk().await {
                    self.done = true;
                    return Some(Err(err));
                }
                continue;
            }
            tokio::select! {
                biased;
                message = self.hub.recv() => match message {
                    Ok(message) => self.take(message),
                    Err(broadcast::error::RecvError::Lagged(_)) => self.catching_up = true,
                    Err(broadcast::error::RecvError::Closed) => {
                        self.done = true;
                        return Some(Err(Error::Closed));
                    }
                },
                Some(()) = self.progress_rx.recv() => {
                    // Writes acknowledged before the request are already on the hub: take them
                    // first, so the progress covers every one of them.
                    loop {
                        match self.hub.try_recv() {
                            Ok(message) => self.take(message),
                            Err(broadcast::error::TryRecvError::Empty) => {
                                self.pending.push_back(WatchItem::Progress(self.seen));
                                break;
                            }
                            Err(broadcast::error::TryRecvError::Lagged(_)) => {
                                self.catching_up = true;
                                self.progress_pending = true;
                                break;
                            }
                            Err(broadcast::error::TryRecvError::Closed) => {
                                self.done = true;
                                break;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Reads the next chunk of history after `seen` into `pending`.
    async fn catch_up_chunk(&mut self) -> Result<()> {
        let core = self.core.upgrade().ok_or(Error::Closed)?;
        let prefix = self.prefix.clone();
        let after = self.seen;
        let (events, upto, more) =
            run_blocking(move || read_history(&core, &prefix, after)).await?;
        self.pending
            .extend(events.into_iter().map(WatchItem::Event));
        self.seen = self.seen.max(upto);
        if !more {
            self.catching_up = false;
            if std::mem::take(&mut self.progress_pending) {
                self.pending.push_back(WatchItem::Progress(self.seen));
            }
        }
        Ok(())
    }

    /// Queues what a hub message holds for this watch.
    fn take(&mut self, message: HubMessage) {
        if self.catching_up {
            // The history read next covers this message too; taking it now would move `seen`
            // past events still to be read.
            return;
        }
        match message {
            HubMessage::Events(events, revision) => {
                for event in events.iter() {
                    if event.revision() > self.seen && event.kv.key.starts_with(&self.prefix) {
                        self.pending.push_back(WatchItem::Event(event.clone()));
                    }
                }
                self.seen = self.seen.max(revision);
            }
            HubMessage::Committed(revision) => {
                if revision > self.seen {
                    self.catching_up = true;
                }
            }
            HubMessage::Progress(revision) => {
                self.seen = self.seen.max(revision);
                self.pending.push_back(WatchItem::Progress(self.seen));
            }
        }
    }
}

/// Reads up to [`CATCH_UP_CHUNK`] history records after `after`; returns the matching events, the
/// revision read up to, and whether more history remains.
fn read_history(
    core: &Core,
    prefix: &str,
    after: Revision,
) -> Result<(Vec<Event>, Revision, bool)> {
    let txn = core.db.begin_read().map_err(read_failed)?;
    let (current, compacted) = read_revisions(&txn)?;
    if after < compacted {
        return Err(Error::Compacted {
            requested: after,
            compacted,
        });
    }
    if after >= current {
        return Ok((Vec::new(), after, false));
    }
    let log = txn.open_table(LOG).map_err(read_failed)?;
    let mut events = Vec::new();
    let mut upto = current;
    let mut scanned = 0;
    let mut bytes = 0;
    for entry in log
        .range((after as u64 + 1)..=(current as u64))
        .map_err(read_failed)?
    {
        let (revision, raw) = entry.map_err(read_failed)?;
        let (revision, raw) = (revision.value() as Revision, raw.value());
        let key = codec::event_key(raw).map_err(|e| corrupt_record(&core.path, e))?;
        if key.starts_with(prefix.as_bytes()) {
            let event =
                codec::decode_event(revision, raw).map_err(|e| corrupt_record(&core.path, e))?;
            bytes += event_bytes(&event);
            events.push(event);
        }
        scanned += 1;
        if (scanned == CATCH_UP_CHUNK || bytes >= CATCH_UP_BYTES) && revision < current {
            upto = revision;
            return Ok((events, upto, true));
        }
    }
    Ok((events, upto, false))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use futures::StreamExt;

    use crate::embedded::EmbeddedStore;
    use crate::{Store, WatchItem};

    /// Large batches travel by revision and are read from the history: a watcher still gets every
    /// event exactly once and in order, mixed with small ones, whether it reads each at once or
    /// finds a backlog of both kinds on the hub.
    #[tokio::test]
    async fn large_and_small_writes_arrive_in_order_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path().join("db")).unwrap();
        let mut watch = store.watch("/k/", 1).await.unwrap();
        let big = Bytes::from(vec![7u8; 300 << 10]);
        let mut next_event = async || loop {
            if let WatchItem::Event(event) = watch.next().await.unwrap().unwrap() {
                return event;
            }
        };
        let mut i = 0;
        let mut write = async |value: Bytes| {
            i += 1;
            let revision = store
                .create(&format!("/k/{i:03}"), value.clone())
                .await
                .unwrap();
            (revision, value)
        };
        // Read at once after each write (the watch follows the hub between writes).
        for n in 0..6 {
            let value = if n % 2 == 0 {
                big.clone()
            } else {
                Bytes::from_static(b"small")
            };
            let (revision, value) = write(value).await;
            let event = next_event().await;
            assert_eq!((event.revision(), &event.kv.value), (revision, &value));
        }
        // A backlog: small, big, small, small, big, small, waiting on the hub.
        let mut expected = Vec::new();
        for n in 0..12 {
            let value = if n % 3 == 1 {
                big.clone()
            } else {
                Bytes::from_static(b"small")
            };
            expected.push(write(value).await);
        }
        for (revision, value) in expected {
            let event = next_event().await;
            assert_eq!((event.revision(), &event.kv.value), (revision, &value));
        }
    }
}
