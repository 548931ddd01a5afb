//! Watch: a chunked stream of `{"type": ..., "object": ...}` lines. Without a
//! `resourceVersion` (or with "0") it starts with the current objects as `ADDED`, as upstream's
//! legacy watch does; `sendInitialEvents=true` does the same and ends the initial part with the
//! `k8s.io/initial-events-end` bookmark. Selectors apply to each event: an object that stops
//! matching is sent as `DELETED`, one that starts as `ADDED`. A revision that is compacted
//! yields one `ERROR` event carrying a 410 `Status`.
//!
//! One task per watch reads the store's stream and writes into a small bounded channel that the
//! response body drains, so a slow reader holds the task (and the store falls back to reading
//! history) instead of growing a queue; a reader that goes away ends the task.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use rkube_store::{Error as StoreError, EventType, Revision, WatchItem};
use serde_json::{Value, json};
use tokio::sync::mpsc;

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

    async fn run(self, tx: mpsc::Sender<Bytes>) {
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
