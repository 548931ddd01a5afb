//! Watch: a chunked stream of `{"type": ..., "object": ...}` lines. Without a
//! `resourceVersion` (or with "0") it starts with the current objects as `ADDED`, as upstream's
//! legacy watch does; `sendInitialEvents=true` does the same and ends the initial part with the
//! `k8s.io/initial-events-end` bookmark. Selectors apply to each event: an object that stops
//! matching is sent as `DELETED`, one that starts as `ADDED`. A revision that is compacted
//! yields one `ERROR` event carrying a 410 `Status`.
//!
//! Watches are served from the watch cache (`cache.rs`) when it can: one broadcast channel per
//! watched prefix, the change lines encoded once for all plain-JSON watchers; a watcher that
//! falls the channel's depth behind is ended. Otherwise (cache not ready, a revision older than
//! its ring) one task per watch reads the store's stream. Either way the task writes into a
//! small bounded channel that the response body drains, and a reader that goes away ends it.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use rkube_store::{Error as StoreError, EventType, Revision, WatchItem};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::cache::{
    BATCH, Cached, Change, EventKind, Start, Subscription, TooOld, WatchCache, event_line,
};
use super::negotiate::{Accept, Format, Shape};
use super::render::{self, IncludeObject};
use super::storage::{self, Objects};
use super::{Filter, Query, Target, flag, parse_revision};
use crate::registry::ResourceInfo;
use crate::status::ApiError;

/// Events buffered between the store and a slow client.
const CHANNEL_DEPTH: usize = 64;

/// How long a watch without `timeoutSeconds` lasts (upstream: 30–60 min, randomized).
fn default_timeout() -> Duration {
    Duration::from_secs(1800 + rand::random_range(0..1800))
}

/// Starts a watch and answers with its stream.
pub async fn serve(
    objects: &Objects,
    target: &Target,
    query: &Query,
    accept: Accept,
) -> Result<Response, ApiError> {
    let info = target.info;
    let mut filter = Filter::from_query(info, query)?;
    if let Some(name) = &target.name {
        // /watch/namespaces/x/configmaps/name: one object.
        let mut q = query.clone();
        let extra = format!("metadata.name={name}");
        let fs = match q.get("fieldSelector").filter(|s| !s.is_empty()) {
            Some(existing) => format!("{existing},{extra}"),
            None => extra,
        };
        q.insert("fieldSelector".into(), fs);
        filter = Filter::from_query(info, &q)?;
    }
    let include = IncludeObject::parse(query.get("includeObject").map(String::as_str))
        .map_err(ApiError::bad_request)?;
    let bookmarks = flag(query, "allowWatchBookmarks");
    let send_initial = query.get("sendInitialEvents").map(String::as_str);
    let send_initial = match send_initial {
        None | Some("") => None,
        Some("true" | "1") => Some(true),
        Some("false" | "0") => Some(false),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "sendInitialEvents: invalid value {other:?}"
            )));
        }
    };
    let rv_match = query
        .get("resourceVersionMatch")
        .map(String::as_str)
        .unwrap_or("");
    if send_initial.is_some() && (rv_match != "NotOlderThan" || !bookmarks) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "ListOptions.meta.k8s.io \"\" is invalid: sendInitialEvents: Forbidden: sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled and resourceVersionMatch is set to NotOlderThan and allowWatchBookmarks is set to true",
        ));
    }
    if send_initial.is_none() && !rv_match.is_empty() {
        return Err(ApiError::bad_request(
            "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch",
        ));
    }
    let timeout =
        match query.get("timeoutSeconds").map(String::as_str) {
            None | Some("") | Some("0") => default_timeout(),
            Some(t) => Duration::from_secs(t.parse().map_err(|_| {
                ApiError::bad_request(format!("timeoutSeconds: invalid value {t:?}"))
            })?),
        };
    let rv = query
        .get("resourceVersion")
        .map(String::as_str)
        .unwrap_or("");
    let initial = match (send_initial, rv) {
        (Some(true), _) => true,
        (Some(false), _) => false,
        (None, "" | "0") => true,
        (None, _) => false,
    };
    let start: Revision = match rv {
        "" | "0" => 0,
        rv => parse_revision(rv)?,
    };
    // One format for the whole stream: protobuf frames when asked for and the kind has a
    // protobuf form (custom resources do not), else JSON lines.
    let protobuf = accept.format == Format::Protobuf
        && crate::protobuf::supports(&info.api_version(), info.kind);
    if accept.format == Format::Protobuf && !protobuf && !accept.json_fallback {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "NotAcceptable",
            format!(
                "{} has no protobuf form; accept application/json",
                info.kind
            ),
        ));
    }
    let watcher = Watcher {
        consistent: rv.is_empty(),
        objects: objects.clone(),
        protobuf,
        info,
        prefix: info.prefix(target.namespace.as_deref()),
        filter,
        shape: accept.shape,
        include,
        bookmarks,
        initial,
        initial_end_bookmark: send_initial == Some(true),
        start,
    };
    let (tx, mut rx) = mpsc::channel::<Bytes>(CHANNEL_DEPTH);
    tokio::spawn(async move {
        let closed = tx.clone();
        tokio::select! {
            _ = watcher.run(tx) => {}
            _ = tokio::time::sleep(timeout) => {}
            _ = closed.closed() => {}
        }
    });
    let chunks = futures::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
            .map(|chunk| chunk.map(Ok::<_, std::io::Error>))
    });
    let body = Body::from_stream(chunks);
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(if protobuf {
            crate::protobuf::WATCH_MEDIA_TYPE
        } else {
            "application/json"
        }),
    );
    Ok(response)
}

struct Watcher {
    /// `resourceVersion` unset: the initial state is as new as the store.
    consistent: bool,
    objects: Objects,
    /// Length-prefixed protobuf `WatchEvent`s instead of JSON lines.
    protobuf: bool,
    info: &'static ResourceInfo,
    prefix: String,
    filter: Filter,
    shape: Shape,
    include: IncludeObject,
    bookmarks: bool,
    initial: bool,
    initial_end_bookmark: bool,
    start: Revision,
}

impl Watcher {
    fn encode(&self, kind: &str, obj: Value) -> Bytes {
        let object = match kind {
            "BOOKMARK" | "ERROR" => obj,
            _ => render::one(self.info, obj, self.shape, self.include),
        };
        if self.protobuf {
            match crate::protobuf::encode_watch_event(kind, &object) {
                Ok(frame) => return Bytes::from(frame),
                Err(e) => {
                    // Only a stored object that does not fit its own schema gets here.
                    tracing::error!(error = %e, "a watch event cannot be encoded as protobuf");
                    let status = ApiError::internal(format!(
                        "Internal error occurred: the object cannot be encoded as protobuf: {e}"
                    ))
                    .to_status();
                    return Bytes::from(
                        crate::protobuf::encode_watch_event("ERROR", &status).unwrap_or_default(),
                    );
                }
            }
        }
        let mut line =
            serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
        line.push(b'\n');
        Bytes::from(line)
    }

    fn bookmark(&self, revision: Revision, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": revision.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        self.encode("BOOKMARK", json!({"kind": self.info.kind, "apiVersion": self.info.api_version(), "metadata": meta}))
    }

    fn error(&self, error: ApiError) -> Bytes {
        self.encode("ERROR", error.to_status())
    }

    /// Serves the watch from the watch cache when it can (see `cache.rs`), else from the store.
    async fn run(self, tx: mpsc::Sender<Bytes>) {
        if let Some(cache) = self.objects.cache().cloned() {
            let fresh = if !self.initial {
                // The ring may still hold changes the store has compacted away; a client must
                // get its 410 all the same (from the store path below), as without a cache.
                !self.compacted(self.start).await && cache.wait_for(self.start).await
            } else if self.consistent {
                cache.wait_fresh(&**self.objects.store()).await
            } else {
                cache.ready()
            };
            let start = if self.initial {
                Start::Snapshot
            } else {
                Start::After(self.start)
            };
            if fresh && let Some(subscription) = cache.subscribe(&self.prefix, start) {
                return self.run_cached(cache, subscription, tx).await;
            }
        }
        self.run_store(tx).await
    }

    async fn run_cached(
        self,
        cache: Arc<WatchCache>,
        subscription: Subscription,
        tx: mpsc::Sender<Bytes>,
    ) {
        for obj in &subscription.initial {
            if obj.selected(&self.filter, self.info)
                && tx
                    .send(self.encode_cached(EventKind::Added, obj))
                    .await
                    .is_err()
            {
                return;
            }
        }
        let mut cursor = subscription.cursor;
        if self.initial_end_bookmark && tx.send(self.bookmark(cursor, true)).await.is_err() {
            return;
        }
        let (mut changed, mut progress) = (subscription.changed, subscription.progress);
        loop {
            // Deliver everything after the cursor, a batch at a time (the lock is not held
            // while sending, so a slow client slows only itself).
            loop {
                let (changes, next) = match cache.changes_after(&self.prefix, cursor) {
                    Ok(batch) => batch,
                    Err(TooOld) => {
                        // Too slow for the ring (or the cache is refilling): end the stream;
                        // the client re-watches from its last revision.
                        tracing::debug!(prefix = %self.prefix, cursor, "ending a watch that fell behind");
                        return;
                    }
                };
                let full = changes.len() >= BATCH;
                for change in &changes {
                    if let Some(chunk) = self.cached_event(change)
                        && tx.send(chunk).await.is_err()
                    {
                        return;
                    }
                }
                cursor = next;
                if !full {
                    break;
                }
            }
            tokio::select! {
                woke = changed.changed() => if woke.is_err() { return },
                woke = progress.changed() => {
                    if woke.is_err() {
                        return;
                    }
                    if self.bookmarks {
                        // Deliver what is pending first: a bookmark promises all before it.
                        if let Ok((pending, next)) = cache.changes_after(&self.prefix, cursor)
                            && pending.is_empty()
                        {
                            cursor = next;
                            if tx.send(self.bookmark(cursor, false)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                _ = tx.closed() => return,
            }
        }
    }

    /// Whether the store has compacted `revision` away (a one-key read at it says).
    async fn compacted(&self, revision: Revision) -> bool {
        let probe = rkube_store::ListOptions {
            prefix: self.prefix.clone(),
            start_key: None,
            limit: 1,
            revision,
        };
        matches!(
            self.objects.store().list(probe).await,
            Err(StoreError::Compacted { .. })
        )
    }

    /// Plain JSON watches share the cache's encodings; other shapes encode per watcher.
    fn shares_encoding(&self) -> bool {
        !self.protobuf && self.shape == Shape::Object && self.info.conversion.is_none()
    }

    fn encode_cached(&self, kind: EventKind, obj: &Cached) -> Bytes {
        if self.shares_encoding() {
            event_line(kind.name(), obj.json())
        } else {
            self.encode(kind.name(), obj.value())
        }
    }

    /// The event a watcher sees for a cached change, after selectors.
    fn cached_event(&self, change: &Change) -> Option<Bytes> {
        let prev_matches = change
            .prev
            .as_ref()
            .is_some_and(|p| p.selected(&self.filter, self.info));
        let kind = match &change.object {
            Some(obj) => match (prev_matches, obj.selected(&self.filter, self.info)) {
                (true, true) => EventKind::Modified,
                (false, true) => EventKind::Added,
                (true, false) => EventKind::Deleted,
                (false, false) => return None,
            },
            None if prev_matches => EventKind::Deleted,
            None => return None,
        };
        if self.shares_encoding() {
            return change.json_line(kind);
        }
        let obj = change.event_object()?;
        Some(self.encode(kind.name(), obj.value()))
    }

    async fn run_store(self, tx: mpsc::Sender<Bytes>) {
        let mut from = self.start;
        if self.initial {
            let page = match self.objects.list(&self.prefix, None, 0, self.start).await {
                Ok(page) => page,
                Err(e) => {
                    let _ = tx.send(self.error(store_error(e))).await;
                    return;
                }
            };
            for (_, obj) in page.items {
                if self.filter.matches(self.info, &obj)
                    && tx.send(self.encode("ADDED", obj)).await.is_err()
                {
                    return;
                }
            }
            from = page.revision;
            if self.initial_end_bookmark && tx.send(self.bookmark(from, true)).await.is_err() {
                return;
            }
        }
        let mut stream = match self.objects.watch(&self.prefix, from).await {
            Ok(stream) => stream,
            Err(e) => {
                let _ = tx.send(self.error(store_error(e))).await;
                return;
            }
        };
        while let Some(item) = stream.next().await {
            let chunk = match item {
                Ok(WatchItem::Progress(rev)) if self.bookmarks => Some(self.bookmark(rev, false)),
                Ok(WatchItem::Progress(_)) => None,
                Ok(WatchItem::Event(event)) => self.event(event),
                Err(e) => {
                    let _ = tx.send(self.error(store_error(e))).await;
                    return;
                }
            };
            if let Some(chunk) = chunk
                && tx.send(chunk).await.is_err()
            {
                return;
            }
        }
    }

    /// The event a client sees for a store event, after selectors.
    fn event(&self, event: rkube_store::Event) -> Option<Bytes> {
        let revision = event.revision();
        let prev = event.prev.as_ref().and_then(|kv| storage::decode(kv).ok());
        let prev_matches = prev
            .as_ref()
            .is_some_and(|p| self.filter.matches(self.info, p));
        match event.kind {
            EventType::Put => {
                let obj = storage::decode(&event.kv).ok()?;
                let matches = self.filter.matches(self.info, &obj);
                match (prev_matches, matches) {
                    (true, true) => Some(self.encode("MODIFIED", obj)),
                    (false, true) => Some(self.encode("ADDED", obj)),
                    (true, false) => Some(self.encode("DELETED", obj)),
                    (false, false) => None,
                }
            }
            EventType::Delete => {
                let mut obj = prev.filter(|_| prev_matches)?;
                storage::set_resource_version(&mut obj, revision);
                Some(self.encode("DELETED", obj))
            }
        }
    }
}

/// A store failure inside a watch, as the `Status` of an `ERROR` event.
fn store_error(error: StoreError) -> ApiError {
    match error {
        StoreError::Compacted {
            requested,
            compacted,
        } => ApiError::expired(format!(
            "too old resource version: {requested} ({compacted})"
        )),
        other => storage::internal(other),
    }
}
