//! The resources the apiserver serves and the rules of each.
//!
//! [`catalog`] lists every built-in resource (group, version, kind, names, scope, verbs,
//! categories, subresources, where it lives in the store). Each points at a [`Strategy`]: the
//! resource's own rules (defaults, validation, what an update may change, printer columns, field
//! selectors), one file per resource under `registry/<group>/`. The generic object-metadata rules
//! every resource shares are in [`meta`]. Objects are `serde_json::Value` throughout, so a
//! CustomResourceDefinition can later supply a strategy built at run time and take the same road.

pub mod apiextensions;
pub mod apps;
pub mod autoscaling;
pub mod catalog;
pub mod coordination;
pub mod core;
pub mod events;
pub mod generic;
pub mod meta;
pub mod table;
pub mod validation;

use serde_json::Value;

pub use catalog::ResourceInfo;
use validation::FieldErrors;

/// Which rule an object's `metadata.name` must follow (upstream's `ValidateNameFunc` per kind).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRule {
    /// RFC 1123 subdomain: most resources.
    Subdomain,
    /// RFC 1123 label: namespaces, services.
    Label,
    /// Anything but `.`, `..`, `/`, `%`: RBAC objects, events.
    PathSegment,
}

/// One column of the `Table` form (`kubectl get`), as `meta.k8s.io/v1` `TableColumnDefinition`.
#[derive(Clone, Copy, Debug)]
pub struct Column {
    /// Header, as upstream names it (`Name`, `Ready`, ...).
    pub name: &'static str,
    /// OpenAPI type: `string`, `integer`, `date`, ...
    pub kind: &'static str,
    /// OpenAPI format (`name` marks the name column).
    pub format: &'static str,
    /// What the column means.
    pub description: &'static str,
    /// 0 = always shown; 1 = only with `-o wide`.
    pub priority: u8,
}

impl Column {
    /// A column shown by default.
    pub const fn new(name: &'static str, kind: &'static str, description: &'static str) -> Self {
        Self {
            name,
            kind,
            format: "",
            description,
            priority: 0,
        }
    }

    /// The name column.
    pub const NAME: Column = Column {
        name: "Name",
        kind: "string",
        format: "name",
        description: "Name must be unique within a namespace.",
        priority: 0,
    };

    /// The age column.
    pub const AGE: Column = Column::new(
        "Age",
        "string",
        "CreationTimestamp is a timestamp representing the server time when this object was created.",
    );

    /// The same column, shown only with `-o wide`.
    pub const fn wide(mut self) -> Self {
        self.priority = 1;
        self
    }
}

/// Where a scalable resource keeps what its `scale` subresource shows, as JSON pointers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScalePaths {
    /// The desired replicas (`/spec/replicas`).
    pub spec_replicas: String,
    /// The observed replicas (`/status/replicas`).
    pub status_replicas: String,
    /// The selector, if any.
    pub label_selector: Option<String>,
    /// Whether the selector is already text (a custom resource's `labelSelectorPath`) rather
    /// than a `LabelSelector` object (workloads).
    pub selector_is_text: bool,
}

impl ScalePaths {
    /// The paths of the built-in workloads.
    pub fn workload() -> Self {
        Self {
            spec_replicas: "/spec/replicas".into(),
            status_replicas: "/status/replicas".into(),
            label_selector: Some("/spec/selector".into()),
            selector_is_text: false,
        }
    }
}

/// How a served version that is not the one stored is converted, both ways. The REST path
/// converts a request's object to the stored form right after decoding it (the resource's
/// strategy then works on the stored form, as it does for the stored version) and every object
/// it answers with back to the requested version.
pub trait Conversion: Send + Sync + 'static {
    /// A stored object as this version.
    fn to_served(&self, obj: Value) -> Value;
    /// An object of this version as it is stored.
    fn to_stored(&self, obj: Value) -> Value;
}

/// A resource's own rules. Every hook has the generic behaviour as its default, so a resource
/// states only where it differs. Hooks see whole objects as JSON; the generic path has already
/// applied the [`meta`] rules.
pub trait Strategy: Send + Sync + 'static {
    /// The rule for `metadata.name`.
    fn name_rule(&self) -> NameRule {
        NameRule::Subdomain
    }

    /// Checks that the object decodes as the typed API struct (wrong field types are a 400, as
    /// upstream's decoder makes them). The text is the decoder's complaint.
    fn check_shape(&self, _obj: &Value) -> Result<(), String> {
        Ok(())
    }

    /// Whether `status` is a subresource: a main-resource write keeps the stored status, a
    /// `/status` write keeps everything else.
    fn has_status(&self) -> bool {
        true
    }

    /// Whether PATCH takes `application/strategic-merge-patch+json` (built-ins; custom
    /// resources have no patch strategies, and upstream answers 415 for them).
    fn strategic_merge_patch(&self) -> bool {
        true
    }

    /// Validation of a `/status` write (the whole resulting object); built-ins check nothing
    /// there yet, custom resources check their schema.
    fn validate_status(&self, _obj: &Value) -> FieldErrors {
        Vec::new()
    }

    /// Warnings for the client about an object it writes (`Warning` headers, which kubectl
    /// prints): what the server accepts but does not act on.
    fn warnings(&self, _obj: &Value) -> Vec<String> {
        Vec::new()
    }

    /// Where the `scale` subresource reads and writes, for resources that have one.
    fn scale_paths(&self) -> Option<ScalePaths> {
        Some(ScalePaths::workload())
    }

    /// Whether `metadata.generation` is kept (1 at create, +1 when the spec changes).
    fn uses_generation(&self) -> bool {
        false
    }

    /// Defaulting, applied to every object a client sends (create, update, patch result), as
    /// upstream defaults every decoded object.
    fn default(&self, _obj: &mut Value) {}

    /// Clean-up before a create, after defaulting (status has already been cleared when
    /// [`Strategy::has_status`]); e.g. an initial status.
    fn prepare_for_create(&self, _obj: &mut Value) {}

    /// Validation of a new object (beyond metadata).
    fn validate(&self, _obj: &Value) -> FieldErrors {
        Vec::new()
    }

    /// Clean-up before an update of the main resource, after defaulting (status has already
    /// been restored from `old` when [`Strategy::has_status`]).
    fn prepare_for_update(&self, _new: &mut Value, _old: &Value) {}

    /// Validation of an update: by default the new object's validation; immutable fields here.
    fn validate_update(&self, new: &Value, _old: &Value) -> FieldErrors {
        self.validate(new)
    }

    /// Whether a PUT of a missing object creates it.
    fn allow_create_on_update(&self) -> bool {
        false
    }

    /// Fields a field selector may name besides `metadata.name` and `metadata.namespace`, with
    /// this object's values.
    fn field_labels(&self, _obj: &Value) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    /// The names [`Strategy::field_labels`] supports (to refuse others by name).
    fn field_label_names(&self) -> &'static [&'static str] {
        &[]
    }

    /// The `Table` columns; the default is upstream's `Name`, `Created At`.
    fn columns(&self) -> Vec<Column> {
        vec![
            Column::NAME,
            Column {
                name: "Created At",
                kind: "date",
                format: "",
                description: "CreationTimestamp is a timestamp representing the server time when this object was created.",
                priority: 0,
            },
        ]
    }

    /// One row's cells, in [`Strategy::columns`] order.
    fn cells(&self, obj: &Value) -> Vec<Value> {
        vec![
            Value::String(table::name(obj)),
            obj.pointer("/metadata/creationTimestamp")
                .cloned()
                .unwrap_or(Value::Null),
        ]
    }

    /// The grace period a delete without `gracePeriodSeconds` gets; `None` or 0 deletes at once.
    fn default_grace_period(&self, _obj: &Value) -> Option<i64> {
        None
    }

    /// Whether a delete that removed the object answers with the object (pods) rather than a
    /// success `Status`.
    fn return_deleted_object(&self) -> bool {
        false
    }

    /// Called when a delete is requested: may turn it into an update (a namespace becomes
    /// `Terminating`) by changing `obj` and returning `true`.
    fn begin_delete(&self, _obj: &mut Value) -> bool {
        false
    }
}

/// Whether two objects differ outside `metadata` and `status`: what bumps the generation.
pub fn spec_changed(new: &Value, old: &Value) -> bool {
    let strip = |v: &Value| -> Value {
        let mut v = v.clone();
        if let Some(map) = v.as_object_mut() {
            map.remove("metadata");
            map.remove("status");
            map.remove("apiVersion");
            map.remove("kind");
        }
        v
    };
    strip(new) != strip(old)
}

/// A string at a JSON pointer, or "".
pub fn str_at<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// Sets `obj[pointer]` to `value` when it is absent or null, creating parent objects.
pub fn default_at(obj: &mut Value, pointer: &str, value: Value) {
    if obj.pointer(pointer).is_some_and(|v| !v.is_null()) {
        return;
    }
    set_at(obj, pointer, value);
}

/// Sets `obj[pointer]` to `value`, creating parent objects (not arrays) on the way.
pub fn set_at(obj: &mut Value, pointer: &str, value: Value) {
    let mut current = obj;
    let parts: Vec<&str> = pointer.split('/').skip(1).collect();
    for (i, part) in parts.iter().enumerate() {
        if !current.is_object() {
            *current = Value::Object(Default::default());
        }
        let map = current.as_object_mut().expect("made an object above");
        if i + 1 == parts.len() {
            map.insert((*part).to_owned(), value);
            return;
        }
        current = map
            .entry((*part).to_owned())
            .or_insert_with(|| Value::Object(Default::default()));
    }
}

/// Decodes `obj` as the typed struct `T`, returning the decoder's complaint.
pub fn check_typed<T: serde::de::DeserializeOwned>(obj: &Value) -> Result<(), String> {
    T::deserialize(obj).map(|_| ()).map_err(|e| e.to_string())
}

/// [`check_typed`] that leaves missing required fields to validation, which reports them as
/// upstream does (422 `Required value`) rather than as a decoding error.
pub fn check_typed_lenient<T: serde::de::DeserializeOwned>(obj: &Value) -> Result<(), String> {
    match check_typed::<T>(obj) {
        Err(e) if e.starts_with("missing field") => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_fill_only_missing_values() {
        let mut obj = json!({"spec": {"replicas": 3}});
        default_at(&mut obj, "/spec/replicas", json!(1));
        default_at(&mut obj, "/spec/strategy/type", json!("RollingUpdate"));
        assert_eq!(
            obj,
            json!({"spec": {"replicas": 3, "strategy": {"type": "RollingUpdate"}}})
        );
    }

    #[test]
    fn only_spec_changes_bump_the_generation() {
        let a = json!({"metadata": {"labels": {"a": "b"}}, "spec": {"x": 1}, "status": {"y": 1}});
        let b = json!({"metadata": {}, "spec": {"x": 1}, "status": {"y": 2}});
        assert!(!spec_changed(&a, &b));
        let c = json!({"metadata": {}, "spec": {"x": 2}});
        assert!(spec_changed(&a, &c));
    }
}
