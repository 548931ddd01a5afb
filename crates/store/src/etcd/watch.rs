//! Watches on etcd.
//!
//! Each [`WatchStream`] is one task with its own gRPC watch stream carrying one etcd watcher on
//! the prefix (`MAIN`), created with `prev_kv` and `progress_notify`. The task:
//!
//! * hands events over in etcd's order, remembering `delivered`: every event of the watch up to
//!   that revision has reached the consumer;
//! * when the stream breaks (etcd restarted, the connection died), opens a new one from
//!   `delivered + 1` with back-off, so nothing is lost or repeated; if that revision was
//!   compacted meanwhile, the stream yields [`Error::Compacted`] and ends;
//! * answers [`WatchStream::request_progress`] with etcd's `RequestProgress`.
//!
//! **Truthful progress.** A [`WatchItem::Progress`] promises that nothing at or below its
//! revision is still to come. etcd before 3.4.31 / 3.5.13 answers `RequestProgress` at once with
//! the current revision, even while the watcher is still replaying history or has events queued
//! (etcd-io/etcd#15220: on 3.4.23 a watch replaying 3,000 events got the answer before any of
//! them, nearly every time). On those versions the task checks each answer `R` before passing it
//! on: a short-lived second watcher on the same stream replays the whole key space from
//! `delivered + 1` until it reaches `R` (every revision above 1 has at least one event, so it
//! always does), which names the last revision up to `R` that touched the prefix; the progress
//! is yielded once the main watcher has delivered that one. The cost is a replay of the writes
//! since the last delivered revision, paid per progress request, and only on old etcd.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use etcd_client::{WatchOptions, WatchRequestSender, WatchResponse, WatchResponseStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{Inner, borrowed_kv, call, range_end, range_start};
use crate::{
    Error, Event, EventType, KeyValue, ProgressRequester, Result, Revision, WatchItem, WatchStream,
};

/// The id this backend gives its watcher on the prefix (etcd accepts client-chosen ids since 3.4).
const MAIN: i64 = 1;
/// Items buffered between the task and the consumer. When the consumer lags further, the task
/// stops reading from etcd and etcd holds the rest.
const BUFFER: usize = 256;
/// Back-off between attempts to re-establish a broken watch.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(3);
/// A stream that lived this long was healthy: the next break starts the back-off over.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);

/// Starts a watch of `prefix` for events after `after`.
pub(super) async fn start(inner: Arc<Inner>, prefix: &str, after: Revision) -> Result<WatchStream> {
    let after = after.max(0);
    // A read at `after` fails exactly when etcd may have lost events after it: refuse the watch
    // here, at the call, rather than as its first item.
    if !inner.readable(after.max(1)).await? {
        return Err(inner.compacted_error(after).await);
    }
    let (out, out_rx) = mpsc::channel(BUFFER);
    let (requests_tx, requests) = mpsc::channel(1);
    let task = Task {
        inner,
        prefix: prefix.to_owned(),
        delivered: after,
        out,
        requests,
        requested: 0,
        asked: 0,
        answered: 0,
    };
    // The first etcd watch is opened before returning, so an unreachable etcd fails the call.
    let conn = match task.open().await {
        Ok(conn) => conn,
        Err(Refused::Compacted(compacted)) => {
            task.inner.compacted.fetch_max(compacted, Ordering::AcqRel);
            return Err(Error::Compacted {
                requested: after,
                compacted,
            });
        }
        Err(Refused::Failed(err)) => return Err(err),
    };
    tokio::spawn(task.run(conn));
    Ok(WatchStream::new(
        ReceiverStream::new(out_rx),
        Requester(requests_tx),
    ))
}

/// Passes progress requests to the task; requests made while one is pending merge into it.
struct Requester(mpsc::Sender<()>);

impl ProgressRequester for Requester {
    fn request_progress(&self) {
        let _ = self.0.try_send(());
    }
}

/// One open etcd watch stream.
struct Conn {
    sender: WatchRequestSender,
    responses: WatchResponseStream,
    /// The id the next verification watcher gets on this stream.
    next_probe: i64,
}

/// Why a watch could not be (re-)established.
enum Refused {
    /// etcd no longer has the revision to start from.
    Compacted(Revision),
    /// etcd is unreachable or refused: worth another try.
    Failed(Error),
}

/// Why following a stream stopped.
enum End {
    /// The consumer dropped the watch, or it got its final error item.
    Done,
    /// etcd compacted past the revision the watch needs next.
    Compacted(Revision),
    /// The stream broke; re-establish it.
    Broken(String),
}

/// Where the answer to a progress request stands, on one stream.
enum Round {
    /// No request in flight.
    Idle,
    /// `RequestProgress` sent; etcd's answer is due.
    Asked,
    /// Checking etcd's answer `target` (old etcd): watcher `probe` replays the key space.
    Probing {
        probe: i64,
        target: Revision,
        /// The last revision up to `target` that touched the prefix, as far as replayed.
        last_match: Option<Revision>,
    },
    /// Everything up to `target` is known: yield it once `last_match` has been delivered.
    Draining {
        target: Revision,
        last_match: Option<Revision>,
    },
}

struct Task {
    inner: Arc<Inner>,
    prefix: String,
    /// Every event of this watch at or below this revision has reached the consumer.
    delivered: Revision,
    out: mpsc::Sender<Result<WatchItem>>,
    requests: mpsc::Receiver<()>,
    /// Progress requests received from the consumer, counted.
    requested: u64,
    /// `requested` when etcd was last asked: the requests the round in flight answers.
    asked: u64,
    /// Requests answered by a yielded progress.
    answered: u64,
}

impl Task {
    async fn run(mut self, first: Conn) {
        let mut conn = Some(first);
        let mut backoff = BACKOFF_MIN;
        loop {
            let current = match conn.take() {
                Some(current) => current,
                None => match self.open().await {
                    Ok(opened) => opened,
                    Err(Refused::Compacted(compacted)) => {
                        return self.fail_compacted(compacted).await;
                    }
                    Err(Refused::Failed(err)) => {
                        tracing::debug!(
                            prefix = %self.prefix,
                            resume_from = self.delivered.saturating_add(1),
                            error = %err,
                            "re-establishing an etcd watch failed; retrying"
                        );
                        if !self.pause(&mut backoff).await {
                            return;
                        }
                        continue;
                    }
                },
            };
            let opened_at = Instant::now();
            match self.follow(current).await {
                End::Done => return,
                End::Compacted(compacted) => return self.fail_compacted(compacted).await,
                End::Broken(reason) => {
                    tracing::info!(
                        prefix = %self.prefix,
                        resume_from = self.delivered.saturating_add(1),
                        %reason,
                        "etcd watch stream broke; resuming"
                    );
                    if opened_at.elapsed() >= HEALTHY_AFTER {
                        backoff = BACKOFF_MIN;
                    }
                    if !self.pause(&mut backoff).await {
                        return;
                    }
                }
            }
        }
    }

    /// Waits out the back-off and doubles it; false when the consumer left meanwhile.
    async fn pause(&mut self, backoff: &mut Duration) -> bool {
        let wait = *backoff;
        *backoff = (*backoff * 2).min(BACKOFF_MAX);
        tokio::select! {
            _ = self.out.closed() => false,
            _ = tokio::time::sleep(wait) => true,
        }
    }

    async fn fail_compacted(&mut self, compacted: Revision) {
        self.inner.compacted.fetch_max(compacted, Ordering::AcqRel);
        let _ = self
            .out
            .send(Err(Error::Compacted {
                requested: self.delivered,
                compacted,
            }))
            .await;
    }

    /// Opens an etcd watch from `delivered + 1` and waits for etcd to confirm it.
    async fn open(&self) -> std::result::Result<Conn, Refused> {
        let options = WatchOptions::new()
            .with_range(range_end(&self.prefix))
            .with_start_revision(self.delivered.saturating_add(1))
            .with_prev_key()
            .with_progress_notify()
            .with_watch_id(MAIN);
        let failed = |err| Refused::Failed(self.inner.error("watch", err));
        let mut client = self.inner.watch.clone();
        let stream = call(client.watch(range_start(&self.prefix), Some(options)))
            .await
            .map_err(failed)?;
        let (sender, mut responses) = stream.split();
        let first = call(responses.message()).await.map_err(failed)?;
        match first {
            Some(response) if response.canceled() => {
                if response.compact_revision() > 0 {
                    Err(Refused::Compacted(response.compact_revision()))
                } else {
                    Err(failed(etcd_client::Error::WatchError(format!(
                        "etcd refused the watch: {}",
                        response.cancel_reason()
                    ))))
                }
            }
            Some(response) if response.created() => Ok(Conn {
                sender,
                responses,
                next_probe: MAIN + 1,
            }),
            Some(_) => Err(Refused::Failed(Error::EtcdBadResponse {
                op: "watch",
                detail: "the first answer to a watch did not confirm it",
            })),
            None => Err(failed(etcd_client::Error::WatchError(
                "the watch stream ended before etcd confirmed the watch".into(),
            ))),
        }
    }

    /// Follows one etcd stream until it ends.
    async fn follow(&mut self, mut conn: Conn) -> End {
        let mut round = Round::Idle;
        // A request left unanswered on a broken stream is asked again on this one.
        if self.requested > self.answered
            && let Err(end) = self.ask(&mut conn, &mut round).await
        {
            return end;
        }
        loop {
            tokio::select! {
                biased;
                _ = self.out.closed() => return End::Done,
                request = self.requests.recv() => {
                    if request.is_none() {
                        return End::Done;
                    }
                    self.requested += 1;
                    if matches!(round, Round::Idle)
                        && let Err(end) = self.ask(&mut conn, &mut round).await
                    {
                        return end;
                    }
                }
                message = conn.responses.message() => {
                    let response = match message {
                        Ok(Some(response)) => response,
                        Ok(None) => return End::Broken("etcd closed the watch stream".into()),
                        Err(err) => return End::Broken(err.to_string()),
                    };
                    if let Err(end) = self.handle(&mut conn, &mut round, response).await {
                        return end;
                    }
                }
            }
        }
    }

    /// Sends etcd a progress request for every request received so far.
    async fn ask(&mut self, conn: &mut Conn, round: &mut Round) -> std::result::Result<(), End> {
        conn.sender
            .request_progress()
            .await
            .map_err(|e| End::Broken(e.to_string()))?;
        self.asked = self.requested;
        *round = Round::Asked;
        Ok(())
    }

    async fn handle(
        &mut self,
        conn: &mut Conn,
        round: &mut Round,
        response: WatchResponse,
    ) -> std::result::Result<(), End> {
        let id = response.watch_id();
        let probing = match round {
            Round::Probing { probe, .. } => Some(*probe),
            _ => None,
        };
        if id == MAIN {
            if response.canceled() {
                if response.compact_revision() > 0 {
                    return Err(End::Compacted(response.compact_revision()));
                }
                return Err(End::Broken(format!(
                    "etcd cancelled the watch: {}",
                    response.cancel_reason()
                )));
            }
            if response.created() {
                return Ok(());
            }
            if response.events().is_empty() {
                // etcd's own periodic notification goes out only to a watcher that is caught up,
                // in order with its events: it is true as it stands.
                if let Some(header) = response.header()
                    && header.revision() > self.delivered
                {
                    self.progress(header.revision()).await?;
                    return self.settle(conn, round).await;
                }
                return Ok(());
            }
            self.deliver(&response).await?;
            return self.settle(conn, round).await;
        }
        if Some(id) == probing {
            return self.probe_response(conn, round, &response).await;
        }
        if response.created() || response.canceled() || !response.events().is_empty() {
            // A verification watcher that is done with, or never ours.
            return Ok(());
        }
        // etcd's answer to a progress request: its header revision, not tied to a watcher.
        let Some(revision) = response.header().map(|h| h.revision()) else {
            return Ok(());
        };
        if !matches!(round, Round::Asked) {
            // An answer to a request of an earlier round, already dealt with.
            return Ok(());
        }
        if self.inner.progress_ordered || revision <= self.delivered.max(1) {
            // Nothing above `delivered` can be due (or etcd orders its answer after it).
            return self.complete(conn, round, revision).await;
        }
        self.start_probe(conn, round, revision, self.delivered.saturating_add(1))
            .await
    }

    /// Hands a response's events to the consumer, in order, skipping what an earlier stream
    /// delivered already.
    async fn deliver(&mut self, response: &WatchResponse) -> std::result::Result<(), End> {
        // One response holds whole revisions (etcd never splits one without `fragment`), so
        // everything at or below `floor` was delivered by an earlier stream, all above it not.
        let floor = self.delivered;
        for event in response.events() {
            match convert_event(event) {
                Ok(event) if event.revision() <= floor => {}
                Ok(event) => {
                    self.delivered = self.delivered.max(event.revision());
                    self.send(Ok(WatchItem::Event(event))).await?;
                }
                Err(err) => {
                    let _ = self.out.send(Err(err)).await;
                    return Err(End::Done);
                }
            }
        }
        Ok(())
    }

    async fn send(&mut self, item: Result<WatchItem>) -> std::result::Result<(), End> {
        self.out.send(item).await.map_err(|_| End::Done)
    }

    /// Yields `Progress(revision)` (or of `delivered`, if that is later).
    async fn progress(&mut self, revision: Revision) -> std::result::Result<(), End> {
        self.delivered = self.delivered.max(revision);
        let delivered = self.delivered;
        self.send(Ok(WatchItem::Progress(delivered))).await
    }

    /// Answers the round with `revision` and starts the next one if requests came in meanwhile.
    async fn complete(
        &mut self,
        conn: &mut Conn,
        round: &mut Round,
        revision: Revision,
    ) -> std::result::Result<(), End> {
        // Every request received before this round was asked of etcd is answered now.
        self.progress(revision).await?;
        self.answered = self.answered.max(self.asked);
        *round = Round::Idle;
        // Requests that arrived while this round ran need one of their own.
        while let Ok(()) = self.requests.try_recv() {
            self.requested += 1;
        }
        if self.requested > self.answered {
            self.ask(conn, round).await?;
        }
        Ok(())
    }

    /// Starts a verification watcher over the whole key space from `from`, to learn which
    /// revisions up to `target` touched the prefix.
    async fn start_probe(
        &mut self,
        conn: &mut Conn,
        round: &mut Round,
        target: Revision,
        from: Revision,
    ) -> std::result::Result<(), End> {
        let probe = conn.next_probe;
        conn.next_probe += 1;
        let options = WatchOptions::new()
            .with_range(vec![0])
            .with_start_revision(from)
            .with_watch_id(probe);
        conn.sender
            .watch(vec![0], Some(options))
            .await
            .map_err(|e| End::Broken(e.to_string()))?;
        *round = Round::Probing {
            probe,
            target,
            last_match: None,
        };
        Ok(())
    }

    async fn probe_response(
        &mut self,
        conn: &mut Conn,
        round: &mut Round,
        response: &WatchResponse,
    ) -> std::result::Result<(), End> {
        let Round::Probing {
            probe,
            target,
            last_match,
        } = round
        else {
            return Ok(());
        };
        let (probe, target) = (*probe, *target);
        if response.canceled() {
            if response.compact_revision() > 0 {
                // The replay's start is compacted. etcd queued this answer on the stream after
                // compacting, and a live main watcher had every event below the compacted
                // revision queued before that (otherwise etcd would have cancelled it too), so
                // those have been delivered by now: replay from the compacted revision instead.
                let compacted = response.compact_revision();
                self.inner.compacted.fetch_max(compacted, Ordering::AcqRel);
                if compacted > target {
                    *round = Round::Draining {
                        target,
                        last_match: None,
                    };
                    return self.settle(conn, round).await;
                }
                return self.start_probe(conn, round, target, compacted).await;
            }
            return Err(End::Broken(format!(
                "etcd cancelled a progress check: {}",
                response.cancel_reason()
            )));
        }
        let mut reached = false;
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            let revision = kv.mod_revision();
            if revision <= target && kv.key().starts_with(self.prefix.as_bytes()) {
                *last_match = Some(last_match.map_or(revision, |m| m.max(revision)));
            }
            reached |= revision >= target;
        }
        if reached {
            let last_match = *last_match;
            conn.sender
                .cancel(probe)
                .await
                .map_err(|e| End::Broken(e.to_string()))?;
            *round = Round::Draining { target, last_match };
            return self.settle(conn, round).await;
        }
        Ok(())
    }

    /// Finishes the round once the main watcher has delivered far enough: up to the last event
    /// the check found, or past the checked revision altogether (its own events or etcd's
    /// periodic notification got there first).
    async fn settle(&mut self, conn: &mut Conn, round: &mut Round) -> std::result::Result<(), End> {
        match *round {
            Round::Draining { target, last_match }
                if last_match.is_none_or(|m| m <= self.delivered) =>
            {
                self.complete(conn, round, target).await
            }
            Round::Probing { probe, target, .. } if target <= self.delivered => {
                conn.sender
                    .cancel(probe)
                    .await
                    .map_err(|e| End::Broken(e.to_string()))?;
                self.complete(conn, round, target).await
            }
            _ => Ok(()),
        }
    }
}

/// Converts a watch event. etcd marks a deletion by a key-value without a create revision — the
/// rule it uses itself — which also avoids `etcd-client`'s `event_type()`, which panics on a type
/// it does not know.
fn convert_event(event: &etcd_client::Event) -> Result<Event> {
    let kv = event.kv().ok_or(Error::EtcdBadResponse {
        op: "watch",
        detail: "an event without its key-value",
    })?;
    let prev = event.prev_kv().map(borrowed_kv).transpose()?;
    if kv.create_revision() == 0 {
        let key = super::utf8_key(kv.key().to_vec())?;
        return Ok(Event {
            kind: EventType::Delete,
            kv: KeyValue {
                key,
                value: Bytes::new(),
                create_revision: 0,
                mod_revision: kv.mod_revision(),
            },
            prev,
        });
    }
    Ok(Event {
        kind: EventType::Put,
        kv: borrowed_kv(kv)?,
        prev,
    })
}
