//! The in-memory schema model: named definitions (OpenAPI schema objects as JSON values) indexed
//! by the group/version/kind they describe, and [`SchemaNode`], a cursor that walks into fields
//! and answers the questions patching and validation ask (merge key, list type, int-or-string,
//! unknown fields allowed?).
//!
//! Definitions are stored in one neutral form: references are `#/definitions/<name>` (OpenAPI
//! v2 style), int-or-string is `x-kubernetes-int-or-string: true`, and a referencing property may
//! carry siblings of `$ref` (description, patch extensions). The v2 and v3 renderers translate
//! from this form.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::Value;

/// A Kubernetes group, version and kind (`apps`, `v1`, `Deployment`; the core group is `""`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupVersionKind {
    /// API group, empty for the core group.
    pub group: String,
    /// API version within the group.
    pub version: String,
    /// Kind name.
    pub kind: String,
}

impl GroupVersionKind {
    /// Builds a GVK from its parts.
    pub fn new(group: &str, version: &str, kind: &str) -> Self {
        Self {
            group: group.to_owned(),
            version: version.to_owned(),
            kind: kind.to_owned(),
        }
    }

    /// The `apiVersion` string of objects of this kind (`v1`, `apps/v1`).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// Names of the extensions the model understands.
pub mod ext {
    /// The GVKs a definition describes (a list of `{group, version, kind}`).
    pub const GVK: &str = "x-kubernetes-group-version-kind";
    /// Strategic merge patch strategy of a field: `merge`, `replace`, `retainKeys` or a
    /// comma-separated combination.
    pub const PATCH_STRATEGY: &str = "x-kubernetes-patch-strategy";
    /// Strategic merge patch key of a list of objects.
    pub const PATCH_MERGE_KEY: &str = "x-kubernetes-patch-merge-key";
    /// `atomic`, `set` or `map`.
    pub const LIST_TYPE: &str = "x-kubernetes-list-type";
    /// Keys of a `map` list.
    pub const LIST_MAP_KEYS: &str = "x-kubernetes-list-map-keys";
    /// `atomic` or `granular`, for maps and structs.
    pub const MAP_TYPE: &str = "x-kubernetes-map-type";
    /// The value is an integer or a string.
    pub const INT_OR_STRING: &str = "x-kubernetes-int-or-string";
    /// Fields not in `properties` are kept rather than pruned.
    pub const PRESERVE_UNKNOWN_FIELDS: &str = "x-kubernetes-preserve-unknown-fields";
    /// The value is a whole object with apiVersion, kind and metadata.
    pub const EMBEDDED_RESOURCE: &str = "x-kubernetes-embedded-resource";
}

/// How deep `$ref` chains are followed before a reference counts as unresolvable: real chains
/// are one hop; this only stops a malicious or broken cycle of references.
const MAX_REF_HOPS: usize = 16;

/// A set of named schema definitions, optionally layered over a base set (the built-in types)
/// so that adding custom resources does not copy the built-ins.
#[derive(Debug, Clone, Default)]
pub struct Schemas {
    base: Option<Arc<Schemas>>,
    definitions: BTreeMap<String, Value>,
    by_gvk: HashMap<GroupVersionKind, String>,
}

impl Schemas {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty layer over `base`: lookups fall through to it, inserts shadow it.
    pub fn layered_over(base: Arc<Schemas>) -> Self {
        Self {
            base: Some(base),
            ..Self::default()
        }
    }

    /// The schemas of every built-in type (generated once per process, then shared).
    pub fn builtin() -> Arc<Schemas> {
        super::builtin::builtin()
    }

    /// Adds (or replaces) a definition. Its `x-kubernetes-group-version-kind` entries index it
    /// by GVK.
    pub fn insert(&mut self, name: impl Into<String>, schema: Value) {
        let name = name.into();
        for gvk in gvks_of(&schema) {
            self.by_gvk.insert(gvk, name.clone());
        }
        self.definitions.insert(name, schema);
    }

    /// Mutable access to a definition of this layer (not of the base).
    pub(crate) fn definition_mut(&mut self, name: &str) -> Option<&mut Value> {
        self.definitions.get_mut(name)
    }

    /// The raw definition named `name`.
    pub fn raw(&self, name: &str) -> Option<&Value> {
        self.definitions
            .get(name)
            .or_else(|| self.base.as_ref().and_then(|b| b.raw(name)))
    }

    /// The definition named `name` as a node to walk.
    pub fn definition(&self, name: &str) -> Option<SchemaNode<'_>> {
        self.raw(name).map(|v| SchemaNode::new(self, v))
    }

    /// The name of the definition describing `gvk`.
    pub fn name_for_kind(&self, gvk: &GroupVersionKind) -> Option<&str> {
        self.by_gvk
            .get(gvk)
            .map(String::as_str)
            .or_else(|| self.base.as_ref().and_then(|b| b.name_for_kind(gvk)))
    }

    /// The schema of objects of kind `gvk`.
    pub fn for_kind(&self, gvk: &GroupVersionKind) -> Option<SchemaNode<'_>> {
        self.name_for_kind(gvk).and_then(|n| self.definition(n))
    }

    /// Every definition name with its schema, base layer included, sorted by name.
    pub fn iter(&self) -> Box<dyn Iterator<Item = (&str, &Value)> + '_> {
        let own = self.definitions.iter().map(|(k, v)| (k.as_str(), v));
        match &self.base {
            None => Box::new(own),
            Some(base) => {
                let mut all: BTreeMap<&str, &Value> = base.iter().collect();
                all.extend(own);
                Box::new(all.into_iter())
            }
        }
    }

    /// How many definitions there are, base layer included.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether there are no definitions at all.
    pub fn is_empty(&self) -> bool {
        self.definitions.is_empty() && self.base.as_ref().is_none_or(|b| b.is_empty())
    }
}

/// The GVKs listed in a definition's `x-kubernetes-group-version-kind`.
pub fn gvks_of(schema: &Value) -> Vec<GroupVersionKind> {
    let Some(list) = schema.get(ext::GVK).and_then(Value::as_array) else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|e| {
            Some(GroupVersionKind::new(
                e.get("group")?.as_str()?,
                e.get("version")?.as_str()?,
                e.get("kind")?.as_str()?,
            ))
        })
        .collect()
}

/// The definition name a `$ref` points at (`#/definitions/X` or `#/components/schemas/X`).
pub fn ref_target(reference: &str) -> Option<&str> {
    reference
        .strip_prefix("#/definitions/")
        .or_else(|| reference.strip_prefix("#/components/schemas/"))
}

/// A position in a schema: the schema written at that place (`outer`, which may be a `$ref` with
/// siblings) and what it resolves to (`target`). Extensions are read from `outer` first because
/// a property's patch strategy is written beside its `$ref`.
#[derive(Debug, Clone, Copy)]
pub struct SchemaNode<'a> {
    schemas: &'a Schemas,
    outer: &'a Value,
    target: &'a Value,
}

/// The kind of value a schema node describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeShape {
    /// An object with fixed properties (a struct).
    Struct,
    /// An object with arbitrary keys (`additionalProperties`).
    Map,
    /// An array.
    List,
    /// A scalar (string, integer, number, boolean) or int-or-string.
    Scalar,
    /// Anything: no type given (RawExtension-like or preserve-unknown-fields).
    Any,
}

impl<'a> SchemaNode<'a> {
    /// A node for `value`, resolving references through `schemas`.
    pub fn new(schemas: &'a Schemas, value: &'a Value) -> Self {
        let target = resolve(schemas, value);
        Self {
            schemas,
            outer: value,
            target,
        }
    }

    /// The resolved schema object.
    pub fn value(&self) -> &'a Value {
        self.target
    }

    /// The schema as written at this position (possibly a `$ref` with siblings).
    pub fn outer(&self) -> &'a Value {
        self.outer
    }

    /// The set of definitions this node resolves references against.
    pub fn schemas(&self) -> &'a Schemas {
        self.schemas
    }

    /// An extension or keyword, read beside the reference first, then on the target.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.outer.get(key).or_else(|| self.target.get(key))
    }

    /// The `type` keyword.
    pub fn type_name(&self) -> Option<&'a str> {
        self.target.get("type").and_then(Value::as_str)
    }

    /// The description, beside the reference first (a field's own text), else the type's.
    pub fn description(&self) -> Option<&'a str> {
        self.get("description").and_then(Value::as_str)
    }

    /// The `format` keyword.
    pub fn format(&self) -> Option<&'a str> {
        self.target.get("format").and_then(Value::as_str)
    }

    /// The required property names.
    pub fn required(&self) -> Vec<&'a str> {
        self.target
            .get("required")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }

    /// What kind of value this is.
    pub fn shape(&self) -> NodeShape {
        if self.is_int_or_string() {
            return NodeShape::Scalar;
        }
        match self.type_name() {
            Some("array") => NodeShape::List,
            Some("object") | None if self.target.get("properties").is_some() => NodeShape::Struct,
            Some("object") if self.additional_properties().is_some() => NodeShape::Map,
            Some("object") | None => NodeShape::Any,
            Some(_) => NodeShape::Scalar,
        }
    }

    /// Whether the value may be an integer or a string.
    pub fn is_int_or_string(&self) -> bool {
        self.get(ext::INT_OR_STRING).and_then(Value::as_bool) == Some(true)
            || self.format() == Some("int-or-string")
    }

    /// Whether fields not listed in `properties` are allowed and kept.
    pub fn preserves_unknown_fields(&self) -> bool {
        self.get(ext::PRESERVE_UNKNOWN_FIELDS)
            .and_then(Value::as_bool)
            == Some(true)
    }

    /// Whether the value is a whole embedded object (apiVersion/kind/metadata).
    pub fn is_embedded_resource(&self) -> bool {
        self.get(ext::EMBEDDED_RESOURCE).and_then(Value::as_bool) == Some(true)
    }

    /// The schema of property `name`, if this node declares it.
    pub fn property(&self, name: &str) -> Option<SchemaNode<'a>> {
        let prop = self.target.get("properties")?.get(name)?;
        Some(SchemaNode::new(self.schemas, prop))
    }

    /// Names of the declared properties.
    pub fn property_names(&self) -> Vec<&'a str> {
        self.target
            .get("properties")
            .and_then(Value::as_object)
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default()
    }

    /// The schema of list elements.
    pub fn items(&self) -> Option<SchemaNode<'a>> {
        let items = self.target.get("items")?;
        items
            .is_object()
            .then(|| SchemaNode::new(self.schemas, items))
    }

    /// The schema of map values (`additionalProperties` given as a schema).
    pub fn additional_properties(&self) -> Option<SchemaNode<'a>> {
        let ap = self.target.get("additionalProperties")?;
        ap.is_object().then(|| SchemaNode::new(self.schemas, ap))
    }

    /// The patch strategies of this field (`merge`, `replace`, `retainKeys`).
    pub fn patch_strategies(&self) -> Vec<&'a str> {
        self.get(ext::PATCH_STRATEGY)
            .and_then(Value::as_str)
            .map(|s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The merge key of a list of objects merged by strategic merge patch.
    pub fn patch_merge_key(&self) -> Option<&'a str> {
        self.get(ext::PATCH_MERGE_KEY).and_then(Value::as_str)
    }

    /// `x-kubernetes-list-type`.
    pub fn list_type(&self) -> Option<&'a str> {
        self.get(ext::LIST_TYPE).and_then(Value::as_str)
    }

    /// `x-kubernetes-list-map-keys`.
    pub fn list_map_keys(&self) -> Vec<&'a str> {
        self.get(ext::LIST_MAP_KEYS)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }

    /// `x-kubernetes-map-type`.
    pub fn map_type(&self) -> Option<&'a str> {
        self.get(ext::MAP_TYPE).and_then(Value::as_str)
    }
}

/// Follows `$ref` (and a lone `allOf: [{$ref}]`, the v3 spelling) to the schema it names. An
/// unresolvable reference resolves to the referencing schema itself, which then has no type:
/// callers treat it as "anything".
fn resolve<'a>(schemas: &'a Schemas, mut value: &'a Value) -> &'a Value {
    for _ in 0..MAX_REF_HOPS {
        let next = if let Some(r) = value.get("$ref").and_then(Value::as_str) {
            ref_target(r).and_then(|n| schemas.raw(n))
        } else if let Some([only]) = value
            .get("allOf")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
        {
            (value.get("properties").is_none() && value.get("type").is_none()).then_some(only)
        } else {
            None
        };
        match next {
            Some(n) => value = n,
            None => return value,
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Schemas {
        let mut s = Schemas::new();
        s.insert(
            "a.Thing",
            json!({
                "type": "object",
                "x-kubernetes-group-version-kind": [{"group": "g", "version": "v1", "kind": "Thing"}],
                "properties": {
                    "spec": {"$ref": "#/definitions/a.Spec", "description": "the spec"},
                    "loop": {"$ref": "#/definitions/a.Loop"},
                }
            }),
        );
        s.insert(
            "a.Spec",
            json!({
                "description": "Spec type",
                "type": "object",
                "properties": {
                    "items": {
                        "type": "array",
                        "items": {"allOf": [{"$ref": "#/definitions/a.Item"}]},
                        "x-kubernetes-patch-strategy": "merge,retainKeys",
                        "x-kubernetes-patch-merge-key": "name",
                    },
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "port": {"x-kubernetes-int-or-string": true},
                    "raw": {"type": "object"},
                }
            }),
        );
        s.insert(
            "a.Item",
            json!({"type": "object", "properties": {"name": {"type": "string"}}}),
        );
        s.insert("a.Loop", json!({"$ref": "#/definitions/a.Loop"}));
        s
    }

    #[test]
    fn nodes_walk_through_references_and_read_extensions_beside_them() {
        let s = sample();
        let thing = s
            .for_kind(&GroupVersionKind::new("g", "v1", "Thing"))
            .unwrap();
        let spec = thing.property("spec").unwrap();
        assert_eq!(spec.description(), Some("the spec"));
        assert_eq!(spec.shape(), NodeShape::Struct);
        let items = spec.property("items").unwrap();
        assert_eq!(items.shape(), NodeShape::List);
        assert_eq!(items.patch_strategies(), vec!["merge", "retainKeys"]);
        assert_eq!(items.patch_merge_key(), Some("name"));
        let item = items.items().unwrap();
        assert_eq!(item.property_names(), vec!["name"]);
        assert_eq!(spec.property("labels").unwrap().shape(), NodeShape::Map);
        assert_eq!(spec.property("port").unwrap().shape(), NodeShape::Scalar);
        assert_eq!(spec.property("raw").unwrap().shape(), NodeShape::Any);
        assert!(spec.property("nope").is_none());
    }

    #[test]
    fn a_reference_cycle_ends_instead_of_hanging() {
        let s = sample();
        let thing = s.definition("a.Thing").unwrap();
        let l = thing.property("loop").unwrap();
        assert_eq!(l.shape(), NodeShape::Any);
    }

    #[test]
    fn a_layer_shadows_and_falls_through_to_its_base() {
        let base = Arc::new(sample());
        let mut layer = Schemas::layered_over(base);
        layer.insert(
            "b.Other",
            json!({"x-kubernetes-group-version-kind": [{"group": "b", "version": "v1", "kind": "Other"}]}),
        );
        assert!(
            layer
                .for_kind(&GroupVersionKind::new("b", "v1", "Other"))
                .is_some()
        );
        assert!(
            layer
                .for_kind(&GroupVersionKind::new("g", "v1", "Thing"))
                .is_some()
        );
        assert_eq!(layer.len(), 5);
    }
}
