//! Watches on the embedded store, fed from memory.
//!
//! The writer publishes each committed batch once on a broadcast [`Hub`]; every watch has a task
//! that filters the batches by its prefix and forwards them to its [`WatchStream`]. Only two cases
//! read the file: a watch that starts from a past revision replays the history first, and a watch
//! whose consumer fell so far behind that the broadcast buffer moved on (it "lagged") catches up
//! from the history instead of holding an unbounded queue. Either way it then skips what it has
//! already delivered, so each event arrives exactly once and in revision order.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use redb::ReadableDatabase;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::{Core, LOG, codec, corrupt_record, read_revisions, run_blocking};
use crate::error::read_failed;
use crate::{Error, Event, ProgressRequester, Result, Revision, WatchItem, WatchStream};

/// Batches the hub keeps for slow watchers before they must catch up from the file.
const HUB_CAPACITY: usize = 1024;
/// Items buffered between a watch's task and its consumer.
const WATCH_BUFFER: usize = 256;
/// History records read per catch-up transaction.
const CATCH_UP_CHUNK: usize = 5000;

#[derive(Clone)]
pub(crate) enum HubMessage {
    /// A committed batch, and the revision it brought the store to.
    Events(Arc<[Event]>, Revision),
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
        if let Ok(tx) = self.tx.lock() {
            current.store(revision, Ordering::Release);
            let _ = tx.send(HubMessage::Events(events.into(), revision));
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
    let (out, out_rx) = mpsc::channel(WATCH_BUFFER);
    let (progress, progress_rx) = mpsc::channel(1);
    let task = WatchTask {
        core: Arc::downgrade(core),
        prefix: prefix.to_owned(),
        seen: after,
        out,
        progress_rx,
        progress_pending: false,
    };
    tokio::spawn(task.run(hub));
    Ok(WatchStream::new(
        ReceiverStream::new(out_rx),
        Requester(progress),
    ))
}

struct WatchTask {
    core: Weak<Core>,
    prefix: String,
    /// Every matching event up to this revision has been delivered.
    seen: Revision,
    out: mpsc::Sender<Result<WatchItem>>,
    progress_rx: mpsc::Receiver<()>,
    /// A progress request arrived while catching up: answer it once caught up.
    progress_pending: bool,
}

/// Why following the hub stopped.
enum Stop {
    /// The consumer or the store is gone.
    Done,
    /// The hub dropped batches this watch had not read: catch up from the file.
    Lagged,
}

impl WatchTask {
    async fn run(mut self, mut hub: broadcast::Receiver<HubMessage>) {
        loop {
            if !self.catch_up().await {
                return;
            }
            if self.progress_pending {
                self.progress_pending = false;
                if !self.send(WatchItem::Progress(self.seen)).await {
                    return;
                }
            }
            match self.follow(&mut hub).await {
                Stop::Done => return,
                Stop::Lagged => continue,
            }
        }
    }

    /// Replays history after `seen` from the file. Returns false when the watch is over.
    async fn catch_up(&mut self) -> bool {
        loop {
            let Some(core) = self.core.upgrade() else {
                return false;
            };
            let prefix = self.prefix.clone();
            let after = self.seen;
            let read = run_blocking(move || read_history(&core, &prefix, after)).await;
            let (events, upto, more) = match read {
                Ok(read) => read,
                Err(err) => {
                    let _ = self.out.send(Err(err)).await;
                    return false;
                }
            };
            for event in events {
                if !self.send(WatchItem::Event(event)).await {
                    return false;
                }
            }
            self.seen = self.seen.max(upto);
            if !more {
                return true;
            }
        }
    }

    async fn follow(&mut self, hub: &mut broadcast::Receiver<HubMessage>) -> Stop {
        loop {
            tokio::select! {
                biased;
                _ = self.out.closed() => return Stop::Done,
                message = hub.recv() => match message {
                    Ok(message) => {
                        if !self.deliver(message).await {
                            return Stop::Done;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => return Stop::Lagged,
                    Err(broadcast::error::RecvError::Closed) => {
                        let _ = self.out.send(Err(Error::Closed)).await;
                        return Stop::Done;
                    }
                },
                Some(()) = self.progress_rx.recv() => {
                    // Writes acknowledged before the request are already on the hub: deliver them
                    // first, so the progress covers every one of them.
                    loop {
                        match hub.try_recv() {
                            Ok(message) => {
                                if !self.deliver(message).await {
                                    return Stop::Done;
                                }
                            }
                            Err(broadcast::error::TryRecvError::Empty) => break,
                            Err(broadcast::error::TryRecvError::Lagged(_)) => {
                                self.progress_pending = true;
                                return Stop::Lagged;
                            }
                            Err(broadcast::error::TryRecvError::Closed) => return Stop::Done,
                        }
                    }
                    if !self.send(WatchItem::Progress(self.seen)).await {
                        return Stop::Done;
                    }
                }
            }
        }
    }

    /// Forwards one hub message. Returns false when the consumer is gone.
    async fn deliver(&mut self, message: HubMessage) -> bool {
        match message {
            HubMessage::Events(events, revision) => {
                for event in events.iter() {
                    if event.revision() > self.seen && event.kv.key.starts_with(&self.prefix) {
                        let revision = event.revision();
                        if !self.send(WatchItem::Event(event.clone())).await {
                            return false;
                        }
                        self.seen = revision;
                    }
                }
                self.seen = self.seen.max(revision);
                true
            }
            HubMessage::Progress(revision) => {
                self.seen = self.seen.max(revision);
                self.send(WatchItem::Progress(self.seen)).await
            }
        }
    }

    async fn send(&self, item: WatchItem) -> bool {
        self.out.send(Ok(item)).await.is_ok()
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
    for entry in log
        .range((after as u64 + 1)..=(current as u64))
        .map_err(read_failed)?
    {
        let (revision, raw) = entry.map_err(read_failed)?;
        let (revision, raw) = (revision.value() as Revision, raw.value());
        let key = codec::event_key(raw).map_err(|e| corrupt_record(&core.path, e))?;
        if key.starts_with(prefix.as_bytes()) {
            events.push(
                codec::decode_event(revision, raw).map_err(|e| corrupt_record(&core.path, e))?,
            );
        }
        scanned += 1;
        if scanned == CATCH_UP_CHUNK && revision < current {
            upto = revision;
            return Ok((events, upto, true));
        }
    }
    Ok((events, upto, false))
}
