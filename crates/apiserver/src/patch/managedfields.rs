//! `metadata.managedFields`: who set which fields, kept on every write, and server-side apply's
//! ownership rules (upstream's `fieldmanager` over structured-merge-diff's `Updater`).
//!
//! * An **update** (create, PUT, non-apply PATCH) gives its manager the fields it added or
//!   changed; every other manager loses those and the removed ones.
//! * An **apply** sets its manager's fields to exactly what its configuration names. Fields it
//!   applied before and names no longer are removed from the object unless another applier
//!   names them too. Changing a field another manager owns is a conflict (409) unless forced,
//!   when the field changes hands.
//!
//! Managers are identified as upstream does: name, operation, subresource, and for updates the
//! API version. Clients may replace managedFields with a valid list; an invalid one is ignored
//! (the stored one stays), and `[]` or `[{}]` resets them.

use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::apply::{self, ApplyError, Comparison};
use super::fieldpath::{FieldSet, FieldsError, Path, PathElement};
use crate::openapi::SchemaNode;

/// kubectl's client-side apply annotation.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Update managers kept before the oldest are merged into [`ANCIENT_CHANGES`].
pub const MAX_UPDATE_MANAGERS: usize = 10;

/// The manager the oldest updates are merged into once there are too many.
pub const ANCIENT_CHANGES: &str = "ancient-changes";

/// The manager that owns what an object held when it is first applied to without any
/// managedFields.
pub const BEFORE_FIRST_APPLY: &str = "before-first-apply";

/// The manager name whose applies upgrade from client-side apply (upstream hard-codes it).
const KUBECTL: &str = "kubectl";

/// The longest field manager name accepted.
pub const MAX_MANAGER_LENGTH: usize = 128;

/// Whether an entry records an apply or an update.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    /// Server-side apply.
    Apply,
    /// Any other write.
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// One `managedFields` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The manager's name.
    pub manager: String,
    /// Apply or Update.
    pub operation: Operation,
    /// The API version the fields are expressed in.
    pub api_version: String,
    /// The subresource written through (`status`, `scale`), empty for the main resource.
    pub subresource: String,
    /// When the manager last changed the object (RFC 3339).
    pub time: Option<String>,
    /// The fields it owns.
    pub fields: FieldSet,
}

impl Entry {
    /// Whether `self` and `other` are the same manager (upstream's manager identifier: the API
    /// version counts only for updates).
    fn same_manager(&self, other: &Entry) -> bool {
        self.manager == other.manager
            && self.operation == other.operation
            && self.subresource == other.subresource
            && (self.operation == Operation::Apply || self.api_version == other.api_version)
    }

    /// As upstream prints a manager in conflict messages.
    pub fn describe(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            s.push_str(&format!(" with subresource {:?}", self.subresource));
        }
        if self.operation == Operation::Update {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("manager".into(), json!(self.manager));
        m.insert("operation".into(), json!(self.operation.as_str()));
        m.insert("apiVersion".into(), json!(self.api_version));
        if let Some(t) = &self.time {
            m.insert("time".into(), json!(t));
        }
        m.insert("fieldsType".into(), json!("FieldsV1"));
        m.insert("fieldsV1".into(), self.fields.to_fields_v1());
        if !self.subresource.is_empty() {
            m.insert("subresource".into(), json!(self.subresource));
        }
        Value::Object(m)
    }
}

/// Why a `managedFields` list from a request was not usable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ManagedFieldsError {
    /// Not a list of objects.
    #[error("managedFields must be a list of objects")]
    NotAList,
    /// An operation other than Apply or Update.
    #[error("operation must be `Apply` or `Update`")]
    Operation,
    /// No apiVersion.
    #[error("apiVersion must not be empty")]
    ApiVersion,
    /// A missing or unknown fieldsType.
    #[error("invalid fieldsType {0:?} in managed fields entry {1}")]
    FieldsType(String, usize),
    /// A time that is not RFC 3339.
    #[error("invalid time {0:?} in managed fields entry {1}")]
    Time(String, usize),
    /// A field that is not a string.
    #[error("{0} must be a string in managed fields entry {1}")]
    NotAString(&'static str, usize),
    /// An undecodable `fieldsV1`.
    #[error("error decoding fieldsV1 of managed fields entry {1}: {0}")]
    Fields(FieldsError, usize),
}

/// The managers of one object.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Managed(pub Vec<Entry>);

impl Managed {
    /// Decodes `metadata.managedFields` of `obj` (absent: none), refusing what upstream refuses.
    pub fn of(obj: &Value) -> Result<Managed, ManagedFieldsError> {
        match obj.pointer("/metadata/managedFields") {
            None | Some(Value::Null) => Ok(Managed::default()),
            Some(list) => Managed::decode(list),
        }
    }

    /// Decodes a `managedFields` list.
    pub fn decode(list: &Value) -> Result<Managed, ManagedFieldsError> {
        let list = list.as_array().ok_or(ManagedFieldsError::NotAList)?;
        let mut out = Managed::default();
        for (i, e) in list.iter().enumerate() {
            let e = e.as_object().ok_or(ManagedFieldsError::NotAList)?;
            let text = |name: &'static str| -> Result<String, ManagedFieldsError> {
                match e.get(name) {
                    None | Some(Value::Null) => Ok(String::new()),
                    Some(Value::String(s)) => Ok(s.clone()),
                    Some(_) => Err(ManagedFieldsError::NotAString(name, i)),
                }
            };
            let operation = match text("operation")?.as_str() {
                "Apply" => Operation::Apply,
                "Update" => Operation::Update,
                _ => return Err(ManagedFieldsError::Operation),
            };
            let api_version = text("apiVersion")?;
            if api_version.is_empty() {
                return Err(ManagedFieldsError::ApiVersion);
            }
            let fields_type = text("fieldsType")?;
            if fields_type != "FieldsV1" {
                return Err(ManagedFieldsError::FieldsType(fields_type, i));
            }
            let time = match text("time")? {
                t if t.is_empty() => None,
                t => {
                    OffsetDateTime::parse(&t, &Rfc3339)
                        .map_err(|_| ManagedFieldsError::Time(t.clone(), i))?;
                    Some(t)
                }
            };
            let fields = match e.get("fieldsV1") {
                None | Some(Value::Null) => FieldSet::new(),
                Some(v) => {
                    FieldSet::from_fields_v1(v).map_err(|err| ManagedFieldsError::Fields(err, i))?
                }
            };
            let entry = Entry {
                manager: text("manager")?,
                operation,
                api_version,
                subresource: text("subresource")?,
                time,
                fields,
            };
            // The same manager twice: the later one wins, as upstream's map does.
            out.0.retain(|x| !x.same_manager(&entry));
            out.0.push(entry);
        }
        Ok(out)
    }

    /// The wire form, sorted as upstream sorts it (operation, time, manager, version,
    /// subresource); `None` when there are no managers.
    pub fn encode(&self) -> Option<Value> {
        if self.0.is_empty() {
            return None;
        }
        let mut entries: Vec<&Entry> = self.0.iter().collect();
        entries.sort_by(|a, b| {
            a.operation
                .cmp(&b.operation)
                .then_with(|| seconds(&a.time).cmp(&seconds(&b.time)))
                .then_with(|| a.manager.cmp(&b.manager))
                .then_with(|| a.api_version.cmp(&b.api_version))
                .then_with(|| a.subresource.cmp(&b.subresource))
        });
        Some(Value::Array(entries.iter().map(|e| e.to_json()).collect()))
    }

    /// Writes the managers into `obj.metadata.managedFields` (removing it when there are none).
    pub fn write_to(&self, obj: &mut Value) {
        let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
            return;
        };
        match self.encode() {
            Some(list) => meta.insert("managedFields".into(), list),
            None => meta.remove("managedFields"),
        };
    }

    fn entry_mut(&mut self, like: &Entry) -> Option<&mut Entry> {
        self.0.iter_mut().find(|e| e.same_manager(like))
    }

    fn drop_empty(&mut self) {
        self.0.retain(|e| !e.fields.is_empty());
    }

    /// Keeps at most [`MAX_UPDATE_MANAGERS`] update entries by merging the oldest into
    /// [`ANCIENT_CHANGES`] (one per API version), as upstream caps them.
    fn cap_updates(&mut self) {
        loop {
            let mut updates: Vec<usize> = (0..self.0.len())
                .filter(|&i| {
                    self.0[i].operation == Operation::Update && self.0[i].manager != ANCIENT_CHANGES
                })
                .collect();
            let buckets = self
                .0
                .iter()
                .filter(|e| e.operation == Operation::Update && e.manager == ANCIENT_CHANGES)
                .count();
            if updates.len() + buckets <= MAX_UPDATE_MANAGERS || updates.is_empty() {
                return;
            }
            updates.sort_by(|&a, &b| {
                seconds(&self.0[a].time)
                    .cmp(&seconds(&self.0[b].time))
                    .then_with(|| self.0[a].manager.cmp(&self.0[b].manager))
            });
            let oldest = self.0.remove(updates[0]);
            let bucket = Entry {
                manager: ANCIENT_CHANGES.into(),
                operation: Operation::Update,
                api_version: oldest.api_version.clone(),
                subresource: String::new(),
                time: oldest.time.clone(),
                fields: FieldSet::new(),
            };
            match self.entry_mut(&bucket) {
                Some(b) => {
                    b.fields = b.fields.union(&oldest.fields);
                    b.time = oldest.time;
                }
                None => self.0.push(Entry {
                    fields: oldest.fields,
                    ..bucket
                }),
            }
        }
    }
}

fn seconds(time: &Option<String>) -> i64 {
    time.as_deref()
        .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
        .map_or(0, OffsetDateTime::unix_timestamp)
}

/// Whether a request's managedFields asks for a reset: `[]` or `[{}]`.
pub fn is_reset(list: Option<&Value>) -> bool {
    match list.and_then(Value::as_array).map(Vec::as_slice) {
        Some([]) => true,
        Some([only]) => only.as_object().is_some_and(Map::is_empty),
        _ => false,
    }
}

/// The managers an update starts from (upstream's `decodeLiveOrNew`): a reset request starts
/// from none; a valid, non-empty list in the request replaces the stored one (unless written
/// through a subresource); otherwise the stored list stays.
pub fn for_update(new: &Value, live: Option<&Value>, subresource: bool) -> Managed {
    let live_managed = || live.and_then(|l| Managed::of(l).ok()).unwrap_or_default();
    if subresource {
        return live_managed();
    }
    let requested = new.pointer("/metadata/managedFields");
    if is_reset(requested) {
        return Managed::default();
    }
    match Managed::of(new) {
        Ok(m) if !m.0.is_empty() => m,
        _ => live_managed(),
    }
}

/// Which fields are not tracked for a write (upstream's per-strategy reset fields).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reset {
    /// Everything is tracked.
    Nothing,
    /// The main resource of a kind with a status subresource: `.status` is the status writers'.
    Status,
    /// The status subresource: only `.status` is tracked.
    AllButStatus,
}

/// What a write is, for recording it.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    /// The kind's schema.
    pub schema: Option<SchemaNode<'a>>,
    /// `apps/v1`.
    pub api_version: &'a str,
    /// The subresource written through, `""` for the main resource.
    pub subresource: &'a str,
    /// Fields not tracked.
    pub reset: Reset,
    /// The time to record.
    pub now: &'a str,
}

impl Context<'_> {
    /// Whether a path is recorded at all: not the fields every object has (upstream's
    /// strip-meta set) and not a reset field.
    fn tracked(&self, path: &Path) -> bool {
        let status = Path::field("status");
        match self.reset {
            Reset::Status if path.starts_with(&status) => return false,
            Reset::AllButStatus if !path.starts_with(&status) => return false,
            _ => {}
        }
        let names: Vec<&str> = path
            .0
            .iter()
            .map(|e| match e {
                PathElement::Field(f) => f.as_str(),
                _ => "",
            })
            .collect();
        !matches!(
            names.as_slice(),
            ["apiVersion" | "kind" | "metadata"]
                | [
                    "metadata",
                    "name"
                        | "namespace"
                        | "creationTimestamp"
                        | "selfLink"
                        | "uid"
                        | "clusterName"
                        | "generation"
                        | "managedFields"
                        | "resourceVersion"
                ]
        )
    }

    fn entry(&self, manager: &str, operation: Operation) -> Entry {
        Entry {
            manager: manager.to_owned(),
            operation,
            api_version: self.api_version.to_owned(),
            subresource: self.subresource.to_owned(),
            time: None,
            fields: FieldSet::new(),
        }
    }

    fn compare(&self, old: &Value, new: &Value) -> Comparison {
        let mut c = apply::compare(&without_managed(old), &without_managed(new), self.schema);
        c.retain(|p| self.tracked(p));
        c
    }
}

/// `obj` without `metadata.managedFields`.
pub fn without_managed(obj: &Value) -> Value {
    let mut obj = obj.clone();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    obj
}

/// Records an update by `manager` from `live` (`{}` for a create) to `new`.
pub fn record_update(
    managed: &mut Managed,
    live: &Value,
    new: &Value,
    manager: &str,
    cx: &Context,
) {
    let c = cx.compare(live, new);
    let changed = c.added.union(&c.modified);
    let touched = changed.union(&c.removed);
    for e in &mut managed.0 {
        e.fields = e.fields.difference(&touched);
    }
    if !changed.is_empty() {
        let like = cx.entry(manager, Operation::Update);
        match managed.entry_mut(&like) {
            Some(e) => {
                e.fields = e.fields.union(&changed);
                e.time = Some(cx.now.to_owned());
            }
            None => managed.0.push(Entry {
                fields: changed,
                time: Some(cx.now.to_owned()),
                ..like
            }),
        }
    }
    managed.drop_empty();
    managed.cap_updates();
}

/// A field another manager owns with a different value than the one applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    /// The owner.
    pub manager: Entry,
    /// The field.
    pub path: Path,
}

/// An apply that would change fields other managers own.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", self.message())]
pub struct Conflicts(pub Vec<Conflict>);

impl Conflicts {
    /// Upstream's message: `Apply failed with 1 conflict: conflict with "x" using apps/v1:
    /// .spec.replicas`, or for several, the conflicts grouped by manager.
    pub fn message(&self) -> String {
        if let [one] = self.0.as_slice() {
            return format!(
                "Apply failed with 1 conflict: conflict with {}: {}",
                one.manager.describe(),
                one.path
            );
        }
        let mut by_manager: Vec<(String, Vec<String>)> = Vec::new();
        for c in &self.0 {
            let name = c.manager.describe();
            match by_manager.iter_mut().find(|(m, _)| *m == name) {
                Some((_, paths)) => paths.push(c.path.to_string()),
                None => by_manager.push((name, vec![c.path.to_string()])),
            }
        }
        by_manager.sort();
        let mut lines = Vec::new();
        for (manager, paths) in by_manager {
            lines.push(format!("conflicts with {manager}:"));
            lines.extend(paths.into_iter().map(|p| format!("- {p}")));
        }
        format!(
            "Apply failed with {} conflicts: {}",
            self.0.len(),
            lines.join("\n")
        )
    }

    /// The `details.causes` of the 409: `(message, field)` pairs of reason
    /// `FieldManagerConflict`.
    pub fn causes(&self) -> Vec<(String, String)> {
        self.0
            .iter()
            .map(|c| {
                (
                    format!("conflict with {}", c.manager.describe()),
                    c.path.to_string(),
                )
            })
            .collect()
    }
}

/// Why an apply failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApplyFailure {
    /// Fields owned by others would change.
    #[error(transparent)]
    Conflicts(#[from] Conflicts),
    /// The configuration does not fit the schema.
    #[error(transparent)]
    Invalid(#[from] ApplyError),
}

/// Applies `config` as `manager` to `live` (`None`: the object does not exist yet). Returns the
/// new object, with its managedFields written, to go through the usual update (or create)
/// admission.
pub fn apply(
    live: Option<&Value>,
    config: &Value,
    manager: &str,
    force: bool,
    cx: &Context,
) -> Result<Value, ApplyFailure> {
    let empty = json!({});
    let live_obj = without_managed(live.unwrap_or(&empty));
    let mut managed = live.and_then(|l| Managed::of(l).ok()).unwrap_or_default();
    if managed.0.is_empty() && live.is_some() {
        // An object never tracked: what it holds belongs to someone, so applies conflict with it.
        record_update(&mut managed, &empty, &live_obj, BEFORE_FIRST_APPLY, cx);
    }
    let config = without_managed(config);
    let mut new_set = apply::field_set(&config, cx.schema, true)?;
    new_set.retain(|p| cx.tracked(p));
    let mut merged = apply::merge(&live_obj, &config, cx.schema)?;

    let me = cx.entry(manager, Operation::Apply);
    let last = managed
        .entry_mut(&me)
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    // What appliers (this one's new configuration included) still name stays.
    let mut named = new_set.clone();
    for e in managed.0.iter().filter(|e| e.operation == Operation::Apply) {
        if !e.same_manager(&me) {
            named = named.union(&e.fields);
        }
    }
    for path in last.difference(&named).iter() {
        if !named.has_descendant(path) {
            apply::remove(&mut merged, path, cx.schema);
        }
    }

    let c = cx.compare(&live_obj, &merged);
    let changed = c.added.union(&c.modified);
    let mut conflicts = Vec::new();
    for e in managed.0.iter().filter(|e| !e.same_manager(&me)) {
        for path in e.fields.intersection(&changed).iter() {
            conflicts.push(Conflict {
                manager: e.clone(),
                path: path.clone(),
            });
        }
    }
    if !conflicts.is_empty() && !force && manager == KUBECTL {
        // Upgrading from client-side apply: fields kubectl applied client-side, still as it
        // applied them, are taken over without a conflict.
        let allowed = last_applied_fields(&live_obj, cx);
        conflicts.retain(|c| !allowed.contains(&c.path));
    }
    if !conflicts.is_empty() && !force {
        conflicts
            .sort_by(|a, b| (a.manager.describe(), &a.path).cmp(&(b.manager.describe(), &b.path)));
        return Err(Conflicts(conflicts).into());
    }
    let touched = changed.union(&c.removed);
    for e in managed.0.iter_mut().filter(|e| !e.same_manager(&me)) {
        e.fields = e.fields.difference(&touched);
    }
    let object_changed = !c.is_empty() || without_managed(&merged) != live_obj;
    match managed.entry_mut(&me) {
        Some(e) => {
            e.fields = new_set;
            e.api_version = cx.api_version.to_owned();
            if object_changed || e.time.is_none() {
                e.time = Some(cx.now.to_owned());
            }
        }
        None => managed.0.push(Entry {
            fields: new_set,
            time: Some(cx.now.to_owned()),
            ..me
        }),
    }
    managed.drop_empty();
    managed.cap_updates();

    if manager == KUBECTL
        && live_obj
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(LAST_APPLIED))
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
    {
        // kubectl's server-side applies keep its client-side annotation current.
        let mut last = config.clone();
        if let Some(a) = last
            .pointer_mut("/metadata/annotations")
            .and_then(Value::as_object_mut)
        {
            a.remove(LAST_APPLIED);
        }
        let text = serde_json::to_string(&last).unwrap_or_default();
        if let Some(a) = merged
            .pointer_mut("/metadata/annotations")
            .and_then(Value::as_object_mut)
        {
            a.insert(LAST_APPLIED.into(), Value::String(text));
        }
    }
    if merged.get("metadata").is_none_or(|m| !m.is_object()) {
        merged["metadata"] = json!({});
    }
    managed.write_to(&mut merged);
    Ok(merged)
}

/// The fields the client-side apply annotation names with the value the object still has
/// (empty when there is no usable annotation).
fn last_applied_fields(live: &Value, cx: &Context) -> FieldSet {
    let Some(text) = live
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(LAST_APPLIED))
        .and_then(Value::as_str)
    else {
        return FieldSet::new();
    };
    let Ok(last) = serde_json::from_str::<Value>(text) else {
        return FieldSet::new();
    };
    if last.get("apiVersion").and_then(Value::as_str) != Some(cx.api_version) {
        return FieldSet::new();
    }
    let Ok(set) = apply::field_set(&last, cx.schema, false) else {
        return FieldSet::new();
    };
    let c = apply::compare(&last, live, cx.schema);
    set.difference(&c.modified)
        .difference(&c.added)
        .difference(&c.removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openapi::{GroupVersionKind, Schemas};

    fn f(name: &str) -> PathElement {
        PathElement::Field(name.into())
    }

    fn replicas() -> Path {
        Path(vec![f("spec"), f("replicas")])
    }

    fn deploy(replicas: i64, image: &str) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": image}]}
                }
            }
        })
    }

    struct Fixture {
        schemas: std::sync::Arc<Schemas>,
        gvk: GroupVersionKind,
    }

    impl Fixture {
        fn new() -> Self {
            Fixture {
                schemas: Schemas::builtin(),
                gvk: GroupVersionKind::new("apps", "v1", "Deployment"),
            }
        }

        fn cx(&self) -> Context<'_> {
            Context {
                schema: self.schemas.for_kind(&self.gvk),
                api_version: "apps/v1",
                subresource: "",
                reset: Reset::Status,
                now: "2026-01-01T00:00:00Z",
            }
        }
    }

    fn owners(obj: &Value, path: &Path) -> Vec<String> {
        Managed::of(obj)
            .unwrap()
            .0
            .iter()
            .filter(|e| e.fields.contains(path))
            .map(|e| format!("{}/{}", e.manager, e.operation.as_str()))
            .collect()
    }

    #[test]
    fn create_records_everything_but_server_fields() {
        let fx = Fixture::new();
        let mut obj = deploy(1, "nginx");
        obj["metadata"]["uid"] = json!("u");
        obj["status"] = json!({"replicas": 1});
        let mut m = Managed::default();
        record_update(&mut m, &json!({}), &obj, "kubectl-create", &fx.cx());
        assert_eq!(m.0.len(), 1);
        let e = &m.0[0];
        assert_eq!(
            (e.operation, e.api_version.as_str()),
            (Operation::Update, "apps/v1")
        );
        assert!(e.fields.contains(&replicas()));
        assert!(!e.fields.contains(&Path(vec![f("metadata"), f("uid")])));
        assert!(!e.fields.contains(&Path(vec![f("metadata"), f("name")])));
        assert!(!e.fields.iter().any(|p| p.0[0] == f("status")));
        let wire = m.encode().unwrap();
        assert_eq!(wire[0]["fieldsType"], "FieldsV1");
        assert_eq!(wire[0]["time"], "2026-01-01T00:00:00Z");
        assert_eq!(
            wire[0]["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"c\"}"]
                ["."],
            json!({})
        );
    }

    #[test]
    fn updates_take_fields_from_other_managers() {
        let fx = Fixture::new();
        let cx = fx.cx();
        let old = deploy(1, "nginx");
        let mut m = Managed::default();
        record_update(&mut m, &json!({}), &old, "a", &cx);
        let new = deploy(3, "nginx");
        record_update(&mut m, &old, &new, "b", &cx);
        let b = m.0.iter().find(|e| e.manager == "b").unwrap();
        assert_eq!(b.fields, [replicas()].into_iter().collect());
        let a = m.0.iter().find(|e| e.manager == "a").unwrap();
        assert!(!a.fields.contains(&replicas()));
        // An update that changes nothing records nothing.
        let before = m.clone();
        record_update(&mut m, &new, &new, "c", &cx);
        assert_eq!(m, before);
    }

    #[test]
    fn apply_creates_then_conflicts_then_forces() {
        let fx = Fixture::new();
        let cx = fx.cx();
        let created = apply(None, &deploy(2, "nginx"), "kubectl", false, &cx).unwrap();
        assert_eq!(owners(&created, &replicas()), ["kubectl/Apply"]);
        // Re-applying the same configuration changes nothing.
        let again = apply(Some(&created), &deploy(2, "nginx"), "kubectl", false, &cx).unwrap();
        assert_eq!(again, created);
        // Someone else scales.
        let mut scaled = created.clone();
        scaled["spec"]["replicas"] = json!(5);
        let mut m = Managed::of(&created).unwrap();
        record_update(&mut m, &created, &scaled, "kubectl-client-side-apply", &cx);
        m.write_to(&mut scaled);
        assert_eq!(
            owners(&scaled, &replicas()),
            ["kubectl-client-side-apply/Update"]
        );
        // Applying the same value is not a conflict: the field is shared.
        let shared = apply(Some(&scaled), &deploy(5, "nginx"), "kubectl", false, &cx).unwrap();
        assert_eq!(owners(&shared, &replicas()).len(), 2);
        // A different value is.
        let err = apply(Some(&scaled), &deploy(3, "nginx"), "kubectl", false, &cx).unwrap_err();
        let ApplyFailure::Conflicts(conflicts) = err else {
            panic!("{err:?}")
        };
        assert_eq!(
            conflicts.message(),
            "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas"
        );
        assert_eq!(
            conflicts.causes(),
            [(
                "conflict with \"kubectl-client-side-apply\" using apps/v1".to_owned(),
                ".spec.replicas".to_owned()
            )]
        );
        // Forced: the applier takes the field over.
        let forced = apply(Some(&scaled), &deploy(3, "nginx"), "kubectl", true, &cx).unwrap();
        assert_eq!(forced["spec"]["replicas"], 3);
        assert_eq!(owners(&forced, &replicas()), ["kubectl/Apply"]);
    }

    #[test]
    fn omitted_fields_are_removed_unless_another_applier_names_them() {
        let fx = Fixture::new();
        let cx = fx.cx();
        let mut config = deploy(2, "nginx");
        config["metadata"]["labels"] = json!({"a": "1", "b": "2"});
        let obj = apply(None, &config, "one", false, &cx).unwrap();
        // A second applier names label b with the same value.
        let other = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"b": "2"}}});
        let obj = apply(Some(&obj), &other, "two", false, &cx).unwrap();
        // The first drops both labels and replicas.
        let mut config = deploy(2, "nginx");
        config["spec"].as_object_mut().unwrap().remove("replicas");
        let obj = apply(Some(&obj), &config, "one", false, &cx).unwrap();
        assert_eq!(obj["metadata"]["labels"], json!({"b": "2"}));
        assert!(obj["spec"].get("replicas").is_none());
        // Fields set by an update are not the applier's to remove.
        let mut updated = obj.clone();
        updated["spec"]["paused"] = json!(true);
        let mut m = Managed::of(&obj).unwrap();
        record_update(&mut m, &obj, &updated, "editor", &cx);
        m.write_to(&mut updated);
        let after = apply(Some(&updated), &config, "one", false, &cx).unwrap();
        assert_eq!(after["spec"]["paused"], true);
    }

    #[test]
    fn kubectl_takes_over_fields_it_applied_client_side() {
        let fx = Fixture::new();
        let cx = fx.cx();
        let mut obj = deploy(3, "nginx");
        let last = serde_json::to_string(&deploy(3, "nginx")).unwrap();
        obj["metadata"]["annotations"] = json!({ LAST_APPLIED: last });
        let mut m = Managed::default();
        record_update(&mut m, &json!({}), &obj, "kubectl-client-side-apply", &cx);
        m.write_to(&mut obj);
        // replicas is still as applied client-side: no conflict for kubectl, and the
        // annotation follows the new configuration.
        let applied = apply(Some(&obj), &deploy(4, "nginx"), "kubectl", false, &cx).unwrap();
        assert_eq!(applied["spec"]["replicas"], 4);
        let annotation: Value = serde_json::from_str(
            applied["metadata"]["annotations"][LAST_APPLIED]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(annotation["spec"]["replicas"], 4);
        // Any other manager conflicts.
        assert!(apply(Some(&obj), &deploy(4, "nginx"), "other", false, &cx).is_err());
    }

    #[test]
    fn several_conflicts_are_grouped_by_manager() {
        let fx = Fixture::new();
        let cx = fx.cx();
        let created = apply(None, &deploy(2, "nginx"), "a", false, &cx).unwrap();
        let err = apply(Some(&created), &deploy(3, "other"), "b", false, &cx).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Apply failed with 2 conflicts: conflicts with \"a\":\n- .spec.replicas\n- .spec.template.spec.containers[name=\"c\"].image"
        );
    }

    #[test]
    fn untracked_objects_belong_to_before_first_apply() {
        let fx = Fixture::new();
        let cx = fx.cx();
        let err = apply(
            Some(&deploy(1, "nginx")),
            &deploy(2, "nginx"),
            "x",
            false,
            &cx,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("\"before-first-apply\" using apps/v1")
        );
    }

    #[test]
    fn request_managed_fields_replace_reset_or_are_ignored() {
        let live = json!({"metadata": {"managedFields": [{"manager": "a", "operation": "Update",
            "apiVersion": "v1", "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {}}}]}});
        let valid = json!({"metadata": {"managedFields": [{"manager": "b", "operation": "Apply",
            "apiVersion": "v1", "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {}}}]}});
        assert_eq!(for_update(&valid, Some(&live), false).0[0].manager, "b");
        assert_eq!(for_update(&valid, Some(&live), true).0[0].manager, "a");
        for reset in [json!([]), json!([{}])] {
            let new = json!({"metadata": {"managedFields": reset}});
            assert!(for_update(&new, Some(&live), false).0.is_empty());
        }
        for bad in [
            json!([{"manager": "x", "operation": "Nope", "apiVersion": "v1", "fieldsType": "FieldsV1"}]),
            json!([{"manager": "x", "operation": "Apply", "apiVersion": "v1", "fieldsType": "FieldsV2"}]),
            json!([{"manager": "x", "operation": "Apply", "fieldsType": "FieldsV1"}]),
            json!([{"manager": "x", "operation": "Apply", "apiVersion": "v1",
                "fieldsType": "FieldsV1", "fieldsV1": {"bogus": {}}}]),
            json!([{"manager": "x", "operation": "Apply", "apiVersion": "v1",
                "fieldsType": "FieldsV1", "time": "yesterday"}]),
            json!("nope"),
        ] {
            let new = json!({"metadata": {"managedFields": bad}});
            assert_eq!(
                for_update(&new, Some(&live), false).0[0].manager,
                "a",
                "{new}"
            );
        }
    }

    #[test]
    fn update_managers_are_capped() {
        let fx = Fixture::new();
        let mut m = Managed::default();
        let mut obj = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "w", "labels": {}}});
        for i in 0..12 {
            let mut next = obj.clone();
            next["metadata"]["labels"][format!("l{i}")] = json!("x");
            let now = format!("2026-01-01T00:00:{i:02}Z");
            let cx = Context {
                now: &now,
                ..fx.cx()
            };
            record_update(&mut m, &obj, &next, &format!("m{i}"), &cx);
            obj = next;
        }
        assert_eq!(m.0.len(), MAX_UPDATE_MANAGERS);
        let ancient = m.0.iter().find(|e| e.manager == ANCIENT_CHANGES).unwrap();
        assert_eq!(ancient.fields.len(), 3);
    }
}
