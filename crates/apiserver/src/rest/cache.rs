//! The watch cache: every object under `/registry/`, decoded once, kept current by ONE store
//! watch, so LIST and WATCH are served from memory, as kube-apiserver's cacher does.
//!
//! * **Lists** at the current state (`resourceVersion` unset: a consistent read, which waits
//!   until the cache has seen the store's current revision; `0`; or `NotOlderThan` N) come from
//!   the map; their first page's continue token points at the store (later pages read the store
//!   at the page's revision, one snapshot as upstream). `Exact` and continued lists go to the store.
//! * **Watches** read a ring of recent changes (bounded by count and bytes) through a cursor:
//!   each keeps only the revision it has delivered, wakes when its prefix changes, and reads the
//!   changes after its cursor. The snapshot for initial events and the cursor are taken under
//!   the lock changes are applied with, so no event is lost or doubled. A watch older than the
//!   ring falls back to the store's history (410 once compacted); a watcher whose cursor falls
//!   off the ring (too slow) is ended and re-watches from its last revision. Memory is the
//!   objects plus the ring, whatever the number or speed of watchers.
//! * Each object keeps its JSON encodings and each change its watch-event lines, made once on
//!   first use, so a list is a concatenation and 1,000 watchers share one encoding.
//!
//! Until the first fill completes (and while refilling after a broken store watch) the cache
//! says so and callers read the store as before.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use rkube_store::{Event, EventType, ListOptions, Revision, Store, WatchItem};
use serde_json::Value;
use tokio::sync::{Notify, watch};

use super::storage;

/// Root of every object the apiserver stores.
const ROOT: &str = "/registry/";
/// How much history the cache keeps for watches that resume or lag.
#[derive(Debug, Clone, Copy)]
struct RingLimits {
    /// At most this many changes ...
    changes: usize,
    /// ... and at most about this many bytes of objects.
    bytes: usize,
}

const RING: RingLimits = RingLimits {
    changes: 10_000,
    bytes: 64 << 20,
};
/// Changes a watcher takes from the ring at a time.
pub const BATCH: usize = 256;
/// How often the cache asks the store for a progress notification (watch bookmarks).
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// How long a consistent read waits for the cache to catch up before reading the store.
const FRESHNESS_WAIT: Duration = Duration::from_secs(1);

/// One stored object, kept as its JSON (with `metadata.resourceVersion`): a decoded
/// `serde_json::Value` costs ten times the bytes, and most reads only copy the encoding.
pub struct Cached {
    /// Store key.
    pub key: String,
    /// Revision of its last change.
    pub revision: Revision,
    json: Bytes,
    /// kubectl's `Table` row with `PartialObjectMetadata`, for the resource named first.
    row: OnceLock<(ResourceId, RowTemplate)>,
    /// What selectors read (labels, selectable fields), for the resource named first: decoding
    /// the whole object for each selector test made `-l` over 10,000 pods take half a second.
    selectable: OnceLock<(ResourceId, Selectable)>,
}

/// Which catalogue entry a kept row or selector view was made for: its address, compared on
/// every listed object without formatting anything. Entries live for the process, and a custom
/// resource whose CRD changed (other printer columns) is a new entry, so its rows are made anew.
#[derive(Clone, Copy, PartialEq, Eq)]
struct ResourceId(usize);

impl ResourceId {
    fn of(info: &crate::registry::ResourceInfo) -> Self {
        Self(std::ptr::from_ref(info) as usize)
    }
}

/// An object's labels and its selectable fields (`metadata.name`, `metadata.namespace` and the
/// strategy's field labels).
pub struct Selectable {
    /// `metadata.labels`.
    pub labels: serde_json::Map<String, Value>,
    /// Field selector names and values.
    pub fields: Vec<(&'static str, String)>,
}

impl Selectable {
    fn of(info: &crate::registry::ResourceInfo, obj: &Value) -> Selectable {
        Selectable {
            labels: obj
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
            fields: super::selectable_fields(info, obj),
        }
    }
}

/// A rendered `Table` row whose age cells are filled in when it is written.
struct RowTemplate(Vec<Segment>);

enum Segment {
    Text(Bytes),
    /// The age of this RFC 3339 timestamp, as a JSON string.
    Age(String),
}

impl RowTemplate {
    /// Splits a row rendered under [`crate::registry::table::with_deferred_ages`] at its age
    /// markers (which JSON writes as `"\u0001age\u0001<timestamp>"`).
    fn new(json: &[u8]) -> RowTemplate {
        const MARKER: &[u8] = br#""\u0001age\u0001"#;
        let mut segments = Vec::new();
        let mut rest = json;
        while let Some(at) = rest.windows(MARKER.len()).position(|w| w == MARKER) {
            let after = &rest[at + MARKER.len()..];
            let Some(end) = after.iter().position(|b| *b == b'"') else {
                break;
            };
            segments.push(Segment::Text(Bytes::copy_from_slice(&rest[..at])));
            segments.push(Segment::Age(
                String::from_utf8_lossy(&after[..end]).into_owned(),
            ));
            rest = &after[end + 1..];
        }
        segments.push(Segment::Text(Bytes::copy_from_slice(rest)));
        RowTemplate(segments)
    }

    fn write(&self, out: &mut Vec<u8>) {
        for segment in &self.0 {
            match segment {
                Segment::Text(bytes) => out.extend_from_slice(bytes),
                Segment::Age(timestamp) => {
                    out.push(b'"');
                    out.extend_from_slice(crate::registry::table::since(timestamp).as_bytes());
                    out.push(b'"');
                }
            }
        }
    }
}

impl Cached {
    fn new(key: String, revision: Revision, mut value: Value) -> Cached {
        storage::set_resource_version(&mut value, revision);
        Cached {
            key,
            revision,
            json: Bytes::from(serde_json::to_vec(&value).unwrap_or_default()),
            row: OnceLock::new(),
            selectable: OnceLock::new(),
        }
    }

    /// The object as JSON (as a GET or watch event shows it; list items too).
    pub fn json(&self) -> &Bytes {
        &self.json
    }

    /// The object, decoded (for selectors and the shapes that are not plain JSON).
    pub fn value(&self) -> Value {
        serde_json::from_slice(&self.json).unwrap_or(Value::Null)
    }

    /// Appends the object's `Table` row with its `PartialObjectMetadata` as JSON to `out`: made
    /// once (for the resource it is first listed as; another version's columns are made each
    /// time), with its ages worked out each time.
    pub fn write_metadata_row(&self, info: &crate::registry::ResourceInfo, out: &mut Vec<u8>) {
        let id = ResourceId::of(info);
        let make = || {
            crate::registry::table::with_deferred_ages(|| {
                let row = super::render::table_row(
                    info,
                    &self.value(),
                    super::render::IncludeObject::Metadata,
                );
                RowTemplate::new(&serde_json::to_vec(&row).unwrap_or_default())
            })
        };
        let (cached_for, template) = self.row.get_or_init(|| (id, make()));
        if *cached_for == id {
            template.write(out);
        } else {
            make().write(out);
        }
    }

    /// Whether `filter` selects the object (decoding it only when there is a selector).
    pub fn selected(&self, filter: &super::Filter, info: &crate::registry::ResourceInfo) -> bool {
        if filter.is_empty() {
            return true;
        }
        let id = ResourceId::of(info);
        let (for_id, selectable) = self
            .selectable
            .get_or_init(|| (id, Selectable::of(info, &self.value())));
        if *for_id == id {
            filter.matches_selectable(selectable)
        } else {
            filter.matches(info, &self.value())
        }
    }
}

/// One change to one key.
pub struct Change {
    /// The change's revision.
    pub revision: Revision,
    /// Store key.
    pub key: String,
    /// The new object (`None`: deleted).
    pub object: Option<Arc<Cached>>,
    /// The object before the change (for a delete: with the delete's revision, as watch
    /// events show deleted objects).
    pub prev: Option<Arc<Cached>>,
    /// Approximate bytes the ring keeps alive for it.
    size: usize,
    lines: [OnceLock<Bytes>; 3],
}

/// Watch event types, indexing [`Change::json_line`]'s encodings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// `ADDED`
    Added = 0,
    /// `MODIFIED`
    Modified = 1,
    /// `DELETED`
    Deleted = 2,
}

impl EventKind {
    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Added => "ADDED",
            EventKind::Modified => "MODIFIED",
            EventKind::Deleted => "DELETED",
        }
    }
}

impl Change {
    /// The object a watch event carries: the new object (also for a `DELETED` event of an
    /// object that stopped matching a selector), or for a delete the object as it was.
    pub fn event_object(&self) -> Option<&Arc<Cached>> {
        self.object.as_ref().or(self.prev.as_ref())
    }

    /// `{"type":...,"object":...}\n`, made once per kind for every watcher.
    pub fn json_line(&self, kind: EventKind) -> Option<Bytes> {
        let obj = self.event_object()?;
        Some(
            self.lines[kind as usize]
                .get_or_init(|| event_line(kind.name(), obj.json()))
                .clone(),
        )
    }
}

/// A JSON watch-event line around an encoded object.
pub fn event_line(kind: &str, object: &[u8]) -> Bytes {
    let mut line = Vec::with_capacity(object.len() + 32);
    line.extend_from_slice(b"{\"type\":\"");
    line.extend_from_slice(kind.as_bytes());
    line.extend_from_slice(b"\",\"object\":");
    line.extend_from_slice(object);
    line.extend_from_slice(b"}\n");
    Bytes::from(line)
}

/// Where a watch starts.
pub enum Start {
    /// With the current objects (initial `ADDED` events).
    Snapshot,
    /// With the changes after this revision.
    After(Revision),
}

/// A watch served by the cache.
pub struct Subscription {
    /// Current objects under the prefix (for [`Start::Snapshot`]), in key order.
    pub initial: Vec<Arc<Cached>>,
    /// The revision delivered so far: the snapshot's, or the requested one.
    pub cursor: Revision,
    /// Changes when a change under the prefix is applied.
    pub changed: watch::Receiver<Revision>,
    /// Changes when the store reports progress (time for a bookmark).
    pub progress: watch::Receiver<Revision>,
}

/// A watcher's cursor fell off the ring: it is too slow (or its revision too old).
#[derive(Debug)]
pub struct TooOld;

/// A list served by the cache.
pub struct Listed {
    /// Matching objects in key order.
    pub items: Vec<Arc<Cached>>,
    /// The revision of the state listed.
    pub revision: Revision,
    /// Set when the limit cut the list short: the last key returned.
    pub last_key: Option<String>,
}

#[derive(Default)]
struct State {
    ready: bool,
    revision: Revision,
    objects: BTreeMap<String, Arc<Cached>>,
    ring: VecDeque<Arc<Change>>,
    ring_bytes: usize,
    /// Every change after this revision is in the ring.
    horizon: Revision,
    /// Per watched prefix: woken with the revision of each change under it.
    notifiers: Vec<(String, watch::Sender<Revision>)>,
}

/// The cache (see the module documentation).
pub struct WatchCache {
    state: RwLock<State>,
    revision: watch::Sender<Revision>,
    /// Store progress, for watchers' bookmarks.
    progressed: watch::Sender<Revision>,
    progress: Notify,
    feeder: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    limits: RingLimits,
}

impl WatchCache {
    /// Starts the cache over `store`: filled in the background, then kept current.
    pub fn start(store: Arc<dyn Store>) -> Arc<WatchCache> {
        Self::start_with(store, RING)
    }

    fn start_with(store: Arc<dyn Store>, limits: RingLimits) -> Arc<WatchCache> {
        let cache = Arc::new(WatchCache {
            limits,
            state: RwLock::new(State::default()),
            revision: watch::Sender::new(0),
            progressed: watch::Sender::new(0),
            progress: Notify::new(),
            feeder: std::sync::Mutex::new(None),
        });
        let feeding = cache.clone();
        let task = tokio::spawn(async move { feeding.feed(store).await });
        *cache.feeder.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        cache
    }

    /// Stops following the store and lets go of it (readers then go to the store).
    pub async fn stop(&self) {
        let task = self.feeder.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
        let mut state = self.write();
        state.ready = false;
        state.notifiers.clear();
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the cache serves reads now.
    pub fn ready(&self) -> bool {
        self.read().ready
    }

    /// Fills the cache, then follows the store; refills after the store watch breaks.
    async fn feed(self: Arc<Self>, store: Arc<dyn Store>) {
        loop {
            match self.fill(&store).await {
                Ok(revision) => self.follow(&store, revision).await,
                Err(e) => tracing::warn!(error = %e, "watch cache: fill failed; retrying"),
            }
            // Not ready while refilling: readers go to the store, watchers end and re-watch.
            {
                let mut state = self.write();
                state.ready = false;
                state.notifiers.clear();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn fill(&self, store: &Arc<dyn Store>) -> Result<Revision, rkube_store::Error> {
        let mut objects = BTreeMap::new();
        let (mut revision, mut start_key) = (0, None);
        loop {
            let page = store
                .list(ListOptions {
                    prefix: ROOT.to_owned(),
                    start_key,
                    limit: 1000,
                    revision,
                })
                .await?;
            revision = page.revision;
            for kv in page.items {
                if let Ok(value) = serde_json::from_slice::<Value>(&kv.value) {
                    let cached = Cached::new(kv.key.clone(), kv.mod_revision, value);
                    objects.insert(kv.key, Arc::new(cached));
                }
            }
            match page.next_key {
                Some(k) => start_key = Some(k),
                None => break,
            }
        }
        let mut state = self.write();
        *state = State {
            ready: true,
            revision,
            objects,
            ring: VecDeque::new(),
            ring_bytes: 0,
            horizon: revision,
            notifiers: Vec::new(),
        };
        drop(state);
        self.revision.send_replace(revision);
        tracing::debug!(revision, "watch cache filled");
        Ok(revision)
    }

    async fn follow(&self, store: &Arc<dyn Store>, from: Revision) {
        let mut stream = match store.watch(ROOT, from).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "watch cache: store watch failed");
                return;
            }
        };
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        loop {
            tokio::select! {
                item = stream.next() => match item {
                    Some(Ok(WatchItem::Event(event))) => self.apply(event),
                    Some(Ok(WatchItem::Progress(revision))) => self.progressed(revision),
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "watch cache: store watch ended; refilling");
                        return;
                    }
                    None => return,
                },
                _ = self.progress.notified() => stream.request_progress(),
                _ = tick.tick() => stream.request_progress(),
            }
        }
    }

    fn apply(&self, event: Event) {
        let revision = event.revision();
        let key = event.kv.key.clone();
        // What the ring keeps alive: the new version and its event line, and the old version.
        let size =
            2 * event.kv.value.len() + event.prev.as_ref().map_or(0, |p| p.value.len()) + 256;
        let mut state = self.write();
        let prev = state.objects.get(&key).cloned();
        let change = match event.kind {
            EventType::Put => {
                let Ok(value) = serde_json::from_slice::<Value>(&event.kv.value) else {
                    // Not an object (nothing the REST path reads): only the revision moves.
                    state.revision = state.revision.max(revision);
                    drop(state);
                    self.revision.send_replace(revision);
                    return;
                };
                let object = Arc::new(Cached::new(key.clone(), revision, value));
                state.objects.insert(key.clone(), object.clone());
                Change {
                    revision,
                    key,
                    object: Some(object),
                    prev,
                    size,
                    lines: Default::default(),
                }
            }
            EventType::Delete => {
                state.objects.remove(&key);
                // Deleted objects are shown with the delete's revision.
                let prev = prev.map(|p| Arc::new(Cached::new(p.key.clone(), revision, p.value())));
                Change {
                    revision,
                    key,
                    object: None,
                    prev,
                    size,
                    lines: Default::default(),
                }
            }
        };
        let change = Arc::new(change);
        state.revision = state.revision.max(revision);
        state.ring_bytes += size;
        state.ring.push_back(change.clone());
        while state.ring.len() > self.limits.changes || state.ring_bytes > self.limits.bytes {
            let Some(old) = state.ring.pop_front() else {
                break;
            };
            state.ring_bytes = state.ring_bytes.saturating_sub(old.size);
            state.horizon = state.horizon.max(old.revision);
        }
        state.notifiers.retain(|(prefix, tx)| {
            if tx.receiver_count() == 0 {
                return false;
            }
            if change.key.starts_with(prefix.as_str()) {
                tx.send_replace(revision);
            }
            true
        });
        drop(state);
        self.revision.send_replace(revision);
    }

    fn progressed(&self, revision: Revision) {
        let current = {
            let mut state = self.write();
            state.revision = state.revision.max(revision);
            state.revision
        };
        self.revision.send_if_modified(|r| {
            let changed = *r < current;
            *r = (*r).max(current);
            changed
        });
        self.progressed.send_replace(current);
    }

    /// Waits until the cache has seen `revision` (asking the store for progress); false if it
    /// does not within a second (the caller reads the store instead).
    pub async fn wait_for(&self, revision: Revision) -> bool {
        if !self.ready() {
            return false;
        }
        let mut rx = self.revision.subscribe();
        if *rx.borrow() >= revision {
            return self.ready();
        }
        self.progress.notify_one();
        let caught_up = tokio::time::timeout(FRESHNESS_WAIT, rx.wait_for(|r| *r >= revision))
            .await
            .is_ok_and(|r| r.is_ok());
        caught_up && self.ready()
    }

    /// Waits until the cache is as new as the store (a consistent read); false if it cannot.
    pub async fn wait_fresh(&self, store: &dyn Store) -> bool {
        match store.current_revision().await {
            Ok(current) => self.wait_for(current).await,
            Err(_) => false,
        }
    }

    /// Objects under `prefix` from `start_key` on that `matches` accepts, at most `limit` (0: all).
    /// `None` when the cache is not ready.
    pub fn list(
        &self,
        prefix: &str,
        start_key: Option<&str>,
        limit: usize,
        matches: impl Fn(&Cached) -> bool,
    ) -> Option<Listed> {
        let state = self.read();
        if !state.ready {
            return None;
        }
        let from = start_key.unwrap_or(prefix).to_owned();
        let mut items = Vec::new();
        let mut last_key = None;
        let mut range = state
            .objects
            .range(from..)
            .take_while(|(k, _)| k.starts_with(prefix));
        for (key, obj) in range.by_ref() {
            if !matches(obj) {
                continue;
            }
            items.push(obj.clone());
            if limit > 0 && items.len() == limit {
                last_key = Some(key.clone());
                break;
            }
        }
        // Cut short only if something is left after the last item returned.
        if last_key.is_some() && range.next().is_none() {
            last_key = None;
        }
        Some(Listed {
            items,
            revision: state.revision,
            last_key,
        })
    }

    /// Starts a watch of `prefix`. `None` when the cache cannot serve this start (not ready, or
    /// a revision older than its ring or newer than it has seen): read the store.
    pub fn subscribe(&self, prefix: &str, start: Start) -> Option<Subscription> {
        let mut state = self.write();
        if !state.ready {
            return None;
        }
        let (initial, cursor) = match start {
            Start::Snapshot => (
                state
                    .objects
                    .range(prefix.to_owned()..)
                    .take_while(|(k, _)| k.starts_with(prefix))
                    .map(|(_, o)| o.clone())
                    .collect(),
                state.revision,
            ),
            Start::After(revision) => {
                if revision < state.horizon || revision > state.revision {
                    return None;
                }
                (Vec::new(), revision)
            }
        };
        let changed = match state.notifiers.iter().find(|(p, _)| p == prefix) {
            Some((_, tx)) => tx.subscribe(),
            None => {
                let (tx, rx) = watch::channel(state.revision);
                state.notifiers.push((prefix.to_owned(), tx));
                rx
            }
        };
        Some(Subscription {
            initial,
            cursor,
            changed,
            progress: self.progressed.subscribe(),
        })
    }

    /// Up to about [`BATCH`] changes under `prefix` after `cursor`, and the cursor to continue
    /// from (everything under `prefix` up to it has been returned). [`TooOld`] when changes
    /// after `cursor` have already left the ring.
    pub fn changes_after(
        &self,
        prefix: &str,
        cursor: Revision,
    ) -> Result<(Vec<Arc<Change>>, Revision), TooOld> {
        let state = self.read();
        if !state.ready || cursor < state.horizon {
            return Err(TooOld);
        }
        let start = state.ring.partition_point(|c| c.revision <= cursor);
        let mut out = Vec::new();
        let mut next = state.revision.max(cursor);
        for (i, change) in state.ring.iter().enumerate().skip(start) {
            if out.len() >= BATCH {
                // Stop between revisions, never inside one.
                let last = out.last().map_or(cursor, |c: &Arc<Change>| c.revision);
                if change.revision != last {
                    next = state.ring[i - 1].revision;
                    break;
                }
            }
            if change.key.starts_with(prefix) {
                out.push(change.clone());
            }
        }
        Ok((out, next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rkube_store::embedded::EmbeddedStore;
    use serde_json::json;

    async fn started() -> (tempfile::TempDir, Arc<dyn Store>, Arc<WatchCache>) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path().join("db")).unwrap());
        store
            .create(
                "/registry/configmaps/a/one",
                Bytes::from(r#"{"metadata":{"name":"one"}}"#),
            )
            .await
            .unwrap();
        // A small ring, so the tests that run past it write a thousand objects, not 10,000.
        let cache = WatchCache::start_with(store.clone(), SMALL);
        // wait_for answers at once while the cache fills (readers go to the store meanwhile).
        for _ in 0..500 {
            if cache.ready() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(cache.wait_fresh(&*store).await);
        (dir, store, cache)
    }

    #[test]
    fn kept_table_rows_show_the_age_at_each_listing() {
        let created = (time::OffsetDateTime::now_utc() - time::Duration::seconds(30))
            .replace_nanosecond(0)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        let deployments = crate::registry::catalog::find("apps", "v1", "deployments").unwrap();
        let obj = Cached::new(
            "/registry/deployments/default/web".into(),
            7,
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "namespace": "default", "creationTimestamp": created},
                "spec": {"replicas": 1}}),
        );
        let row = |obj: &Cached| {
            let mut out = Vec::new();
            obj.write_metadata_row(deployments, &mut out);
            serde_json::from_slice::<Value>(&out).unwrap()
        };
        let first = row(&obj);
        let cells = first["cells"].as_array().unwrap();
        assert!(
            cells
                .iter()
                .any(|c| matches!(c.as_str(), Some("30s" | "31s" | "32s"))),
            "{cells:?}"
        );
        assert!(!first.to_string().contains("age\\u0001"), "{first}");
        assert_eq!(first["object"]["metadata"]["name"], "web");
        // The kept row is the same row, its age worked out again.
        assert!(matches!(obj.row.get(), Some((_, t)) if t.0.len() == 3));
        assert_eq!(row(&obj)["cells"].as_array().unwrap().len(), cells.len());
    }

    #[test]
    fn rows_follow_a_crd_whose_columns_changed() {
        use crate::registry::apiextensions::customresource::intern;
        let crd = |path: &str| {
            json!({"spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"plural": "things", "kind": "Thing"},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "additionalPrinterColumns": [{"name": "Col", "type": "string", "jsonPath": path}]}]}})
        };
        let (one, two) = (crd(".spec.a"), crd(".spec.b"));
        let first = intern(&one, &one["spec"]["versions"][0], false);
        let second = intern(&two, &two["spec"]["versions"][0], false);
        let obj = Cached::new(
            "/registry/example.com/things/default/t".into(),
            3,
            json!({"apiVersion": "example.com/v1", "kind": "Thing",
                "metadata": {"name": "t", "namespace": "default"}, "spec": {"a": "x", "b": "y"}}),
        );
        for (info, cell) in [(first, "x"), (second, "y"), (first, "x")] {
            let mut out = Vec::new();
            obj.write_metadata_row(info, &mut out);
            let row: Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(row["cells"], json!(["t", cell]));
        }
        assert!(matches!(obj.row.get(), Some((id, _)) if *id == ResourceId::of(first)));
    }

    const SMALL: RingLimits = RingLimits {
        changes: 1_000,
        bytes: 4 << 20,
    };

    fn cm(name: &str, v: u32) -> Bytes {
        Bytes::from(json!({"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": name}, "data": {"v": v.to_string()}}).to_string())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lists_are_consistent_reads_in_key_order_with_limits() {
        let (_d, store, cache) = started().await;
        let r1 = store
            .create("/registry/configmaps/a/two", cm("two", 1))
            .await
            .unwrap();
        store
            .create("/registry/configmaps/b/three", cm("three", 1))
            .await
            .unwrap();
        assert!(cache.wait_fresh(&*store).await);
        let all = cache
            .list("/registry/configmaps/", None, 0, |_| true)
            .unwrap();
        let keys: Vec<_> = all.items.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "/registry/configmaps/a/one",
                "/registry/configmaps/a/two",
                "/registry/configmaps/b/three"
            ]
        );
        assert!(all.last_key.is_none());
        let ns = cache
            .list("/registry/configmaps/a/", None, 1, |_| true)
            .unwrap();
        assert_eq!(ns.items.len(), 1);
        assert_eq!(ns.last_key.as_deref(), Some("/registry/configmaps/a/one"));
        let two = &cache
            .list("/registry/configmaps/a/t", None, 0, |_| true)
            .unwrap()
            .items[0];
        assert_eq!(two.value()["metadata"]["resourceVersion"], r1.to_string());
        assert!(String::from_utf8_lossy(two.json()).contains("\"apiVersion\":\"v1\""));
        // A selector filters; a limit reached exactly at the end is no continuation.
        let one = cache
            .list("/registry/configmaps/", None, 1, |v| {
                v.value()["metadata"]["name"] == "three"
            })
            .unwrap();
        assert_eq!(one.items.len(), 1);
        assert!(one.last_key.is_none());
        cache.stop().await;
    }

    /// Everything under `prefix` after `cursor` up to `until`, as (revision, still exists).
    async fn drain(
        cache: &WatchCache,
        prefix: &str,
        mut cursor: Revision,
        until: Revision,
    ) -> Vec<(Revision, bool)> {
        let mut seen = Vec::new();
        assert!(cache.wait_for(until).await);
        while cursor < until {
            let (changes, next) = cache.changes_after(prefix, cursor).unwrap();
            seen.extend(changes.iter().map(|c| (c.revision, c.object.is_some())));
            cursor = next;
        }
        seen
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watchers_see_every_change_once_in_order_from_a_snapshot_or_a_revision() {
        let (_d, store, cache) = started().await;
        let mut snap = cache
            .subscribe("/registry/configmaps/a/", Start::Snapshot)
            .unwrap();
        assert_eq!(snap.initial.len(), 1);
        let from = snap.cursor;
        let r1 = store
            .create("/registry/configmaps/a/x", cm("x", 1))
            .await
            .unwrap();
        store
            .create("/registry/configmaps/other/y", cm("y", 1))
            .await
            .unwrap();
        let r2 = store
            .update("/registry/configmaps/a/x", cm("x", 2), r1)
            .await
            .unwrap();
        let (r3, _) = store
            .delete("/registry/configmaps/a/x", None)
            .await
            .unwrap();
        // The watcher is woken for its prefix.
        tokio::time::timeout(Duration::from_secs(10), snap.changed.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            drain(&cache, "/registry/configmaps/a/", from, r3).await,
            [(r1, true), (r2, true), (r3, false)]
        );
        // A resumed watch starts after its revision.
        let resumed = cache
            .subscribe("/registry/configmaps/a/", Start::After(r1))
            .unwrap();
        assert_eq!(
            drain(&cache, "/registry/configmaps/a/", resumed.cursor, r3).await,
            [(r2, true), (r3, false)]
        );
        // The deleted object carries the delete's revision, as a watch shows it.
        let (changes, _) = cache.changes_after("/registry/configmaps/a/", r2).unwrap();
        let deleted = changes[0].json_line(EventKind::Deleted).unwrap();
        let line: Value = serde_json::from_slice(&deleted).unwrap();
        assert_eq!(line["type"], "DELETED");
        assert_eq!(
            line["object"]["metadata"]["resourceVersion"],
            r3.to_string()
        );
        // A revision the cache has not reached is not served from it.
        assert!(
            cache
                .subscribe("/registry/", Start::After(r3 + 100))
                .is_none()
        );
        cache.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches_end_between_revisions_and_cover_everything() {
        let (_d, store, cache) = started().await;
        let from = cache
            .subscribe("/registry/", Start::Snapshot)
            .unwrap()
            .cursor;
        let mut last = from;
        for i in 0..(BATCH as u32 * 2 + 7) {
            last = store
                .create(&format!("/registry/configmaps/a/n{i}"), cm("n", i))
                .await
                .unwrap();
        }
        let seen = drain(&cache, "/registry/configmaps/", from, last).await;
        assert_eq!(seen.len(), BATCH * 2 + 7);
        assert!(seen.windows(2).all(|w| w[0].0 < w[1].0));
        cache.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_watcher_is_too_old_once_the_ring_moves_past_it_whatever_it_holds() {
        let (_d, store, cache) = started().await;
        let slow = cache
            .subscribe("/registry/configmaps/", Start::Snapshot)
            .unwrap();
        // Big objects: the ring's byte bound, not its count, moves it on.
        let big = "x".repeat(1 << 20);
        let mut last = 0;
        for i in 0..(SMALL.bytes / (1 << 20) + 8) {
            let body = Bytes::from(
                json!({"metadata": {"name": "b"}, "data": {"v": big, "i": i}}).to_string(),
            );
            last = store
                .create(&format!("/registry/configmaps/a/big{i}"), body)
                .await
                .unwrap();
        }
        assert!(cache.wait_for(last).await);
        assert!(
            cache
                .changes_after("/registry/configmaps/", slow.cursor)
                .is_err()
        );
        let bytes = cache.read().ring_bytes;
        assert!(bytes <= SMALL.bytes, "{bytes}");
        cache.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_revision_older_than_the_ring_goes_to_the_store() {
        let (_d, store, cache) = started().await;
        let first = store
            .create("/registry/configmaps/a/first", cm("f", 0))
            .await
            .unwrap();
        let mut last = first;
        for i in 0..(SMALL.changes as u32 + 5) {
            last = store
                .create(&format!("/registry/leases/a/n{i}"), cm("n", i))
                .await
                .unwrap();
        }
        assert!(cache.wait_for(last).await);
        assert!(
            cache
                .subscribe("/registry/configmaps/", Start::After(first - 1))
                .is_none()
        );
        assert!(
            cache
                .subscribe("/registry/configmaps/", Start::After(last))
                .is_some()
        );
        cache.stop().await;
    }
}
