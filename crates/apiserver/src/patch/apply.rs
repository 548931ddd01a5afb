//! The structure-aware operations server-side apply is built from, over unstructured JSON and
//! the kind's schema: the field set of an object ([`field_set`]), the difference of two objects
//! ([`compare`]), merging an applied configuration into a live object ([`merge`]) and removing
//! paths ([`remove`]).
//!
//! The schema says how each node behaves (upstream's structured-merge-diff rules):
//!
//! * objects with declared properties are structs: their fields are separate; a struct marked
//!   `x-kubernetes-map-type: atomic` is one value;
//! * maps (`additionalProperties`) are granular per key unless atomic;
//! * lists are `map` (items keyed by `x-kubernetes-list-map-keys`), `set` (scalar items by value)
//!   or `atomic` (one value). Without `x-kubernetes-list-type`, patch strategy `merge` with a
//!   merge key makes a keyed list, `merge` without one a set, anything else atomic;
//! * where there is no schema (unknown fields, `RawExtension`, preserved unknown fields), objects
//!   are granular maps and lists are atomic.
//!
//! A keyed-list item without a key field takes the field's schema default (upstream fills
//! defaults of key fields too; `protocol` of ports defaults to `TCP`). Live objects are read
//! leniently: a keyed list whose items cannot all be keyed uniquely is treated as one value;
//! applied configurations are read strictly ([`ApplyError`]).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::fieldpath::{FieldSet, Path, PathElement};
use crate::openapi::model::ext;
use crate::openapi::{NodeShape, SchemaNode};

/// Nesting beyond this is refused instead of recursed into.
const MAX_DEPTH: usize = 100;

/// Why an applied configuration does not fit its schema.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApplyError {
    /// A keyed-list item lacks a key field that has no default.
    #[error(
        "{path}: associative list with keys has an element that omits key field {key:?} (and doesn't have default value)"
    )]
    MissingKey {
        /// The list.
        path: String,
        /// The key field.
        key: String,
    },
    /// Two items of a keyed or set-like list have the same key.
    #[error("{path}: duplicate entries for key {key}")]
    Duplicate {
        /// The list.
        path: String,
        /// The key, as printed in paths.
        key: String,
    },
    /// A keyed-list item that is not an object.
    #[error("{path}: associative list with keys may only have objects as elements")]
    NotAnObject {
        /// The list.
        path: String,
    },
    /// Nesting deeper than [`MAX_DEPTH`].
    #[error("{path}: nested deeper than {MAX_DEPTH} levels")]
    TooDeep {
        /// Where.
        path: String,
    },
}

type Result<T, E = ApplyError> = std::result::Result<T, E>;

/// How a node behaves, from its schema and its value.
#[derive(Clone, Copy)]
enum Kind<'a> {
    /// One value: scalars, atomic lists/maps/structs, nulls, values not of the schema's type.
    Leaf,
    /// An object with declared fields.
    Struct(SchemaNode<'a>),
    /// An object whose keys are all entries (`None`: no schema for the values).
    Map(Option<SchemaNode<'a>>),
    /// A list keyed by the given fields.
    Keyed(Option<SchemaNode<'a>>, Keys<'a>),
    /// A list of scalars, each item itself.
    Set,
}

/// The key fields of a keyed list, borrowed from the schema.
#[derive(Clone, Copy)]
enum Keys<'a> {
    /// The strategic merge key.
    One(&'a str),
    /// `x-kubernetes-list-map-keys`.
    Many(&'a [Value]),
}

impl<'a> Keys<'a> {
    fn names(self) -> Vec<&'a str> {
        match self {
            Keys::One(k) => vec![k],
            Keys::Many(list) => list.iter().filter_map(Value::as_str).collect(),
        }
    }
}

/// Which variant a kind is: two sides of a node are compared or merged structurally only when
/// they agree.
#[derive(PartialEq)]
enum KindTag {
    Leaf,
    Object,
    Keyed,
    Set,
}

fn tag(kind: Kind<'_>) -> KindTag {
    match kind {
        Kind::Leaf => KindTag::Leaf,
        Kind::Struct(_) | Kind::Map(_) => KindTag::Object,
        Kind::Keyed(..) => KindTag::Keyed,
        Kind::Set => KindTag::Set,
    }
}

fn kind_of<'a>(schema: Option<SchemaNode<'a>>, value: &Value) -> Kind<'a> {
    let Some(s) = schema else {
        return match value {
            Value::Object(_) => Kind::Map(None),
            _ => Kind::Leaf,
        };
    };
    match (s.shape(), value) {
        (_, Value::Null) => Kind::Leaf,
        (NodeShape::Struct, Value::Object(_)) if s.map_type() != Some("atomic") => Kind::Struct(s),
        (NodeShape::Map, Value::Object(_)) if s.map_type() != Some("atomic") => {
            Kind::Map(s.additional_properties())
        }
        (NodeShape::Any, Value::Object(_)) if s.map_type() != Some("atomic") => Kind::Map(None),
        (NodeShape::List, Value::Array(_)) => {
            let items = s.items();
            match s.list_type() {
                Some("map") => match s.get(ext::LIST_MAP_KEYS).and_then(Value::as_array) {
                    Some(keys) if !keys.is_empty() => Kind::Keyed(items, Keys::Many(keys)),
                    _ => Kind::Leaf,
                },
                Some("set") => Kind::Set,
                Some(_) => Kind::Leaf,
                None if s.patch_strategies().contains(&"merge") => match s.patch_merge_key() {
                    Some(key) => Kind::Keyed(items, Keys::One(key)),
                    None => Kind::Set,
                },
                None => Kind::Leaf,
            }
        }
        _ => Kind::Leaf,
    }
}

/// The schema of field `key` of a struct or map node.
fn child_schema<'a>(kind: Kind<'a>, key: &str) -> (Option<SchemaNode<'a>>, bool) {
    match kind {
        Kind::Struct(s) => match s.property(key) {
            Some(p) => (Some(p), true),
            None => (s.additional_properties(), false),
        },
        Kind::Map(elem) => (elem, false),
        _ => (None, false),
    }
}

/// The path element of a keyed-list item. `None` when the item cannot be keyed.
fn item_key(item: &Value, elem: Option<SchemaNode<'_>>, keys: Keys<'_>) -> Option<PathElement> {
    let obj = item.as_object()?;
    let mut fields = Vec::new();
    let defaults: Vec<Option<Value>> = keys.names().iter().map(|k| key_default(elem, k)).collect();
    for (k, default) in keys.names().into_iter().zip(&defaults) {
        match (obj.get(k), default) {
            (Some(v), _) if !v.is_null() => fields.push((k.to_owned(), v)),
            (_, Some(d)) => fields.push((k.to_owned(), d)),
            _ => return None,
        }
    }
    Some(PathElement::key(fields))
}

/// The default of a key field: the schema's, else upstream's for `protocol` (TCP), which the
/// Go types declare and the generated schema here does not carry.
fn key_default(elem: Option<SchemaNode<'_>>, key: &str) -> Option<Value> {
    if let Some(d) = elem
        .and_then(|e| e.property(key))
        .and_then(|p| p.get("default"))
    {
        return Some(d.clone());
    }
    (key == "protocol").then(|| Value::String("TCP".into()))
}

/// The elements of a list's items, or why they cannot be had. Lenient callers treat an error as
/// "this list is one value".
fn list_elements(
    list: &[Value],
    kind: Kind<'_>,
    path: &Path,
) -> Result<Vec<PathElement>, ApplyError> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(list.len());
    for item in list {
        let pe = match kind {
            Kind::Keyed(elem, keys) => {
                if !item.is_object() {
                    return Err(ApplyError::NotAnObject {
                        path: path.to_string(),
                    });
                }
                item_key(item, elem, keys).ok_or_else(|| {
                    let obj = item.as_object();
                    let key = keys
                        .names()
                        .into_iter()
                        .find(|k| {
                            obj.and_then(|o| o.get(*k)).is_none_or(Value::is_null)
                                && key_default(elem, k).is_none()
                        })
                        .unwrap_or_default()
                        .to_owned();
                    ApplyError::MissingKey {
                        path: path.to_string(),
                        key,
                    }
                })?
            }
            _ => PathElement::value(item),
        };
        if !seen.insert(pe.clone()) {
            return Err(ApplyError::Duplicate {
                path: path.to_string(),
                key: pe.to_string(),
            });
        }
        out.push(pe);
    }
    Ok(out)
}

fn check_depth(path: &Path) -> Result<()> {
    if path.0.len() > MAX_DEPTH {
        return Err(ApplyError::TooDeep {
            path: path.to_string(),
        });
    }
    Ok(())
}

/// The fields an object sets, as upstream's `ToFieldSet`: every leaf, every map entry and list
/// item, and struct fields whose value is null or an empty object. `strict`: a keyed list that
/// cannot be keyed is an error (applied configurations) instead of one value (live objects).
pub fn field_set(value: &Value, schema: Option<SchemaNode<'_>>, strict: bool) -> Result<FieldSet> {
    let mut out = FieldSet::new();
    walk_set(value, schema, &Path::default(), strict, &mut out)?;
    Ok(out)
}

fn walk_set(
    value: &Value,
    schema: Option<SchemaNode<'_>>,
    path: &Path,
    strict: bool,
    out: &mut FieldSet,
) -> Result<()> {
    check_depth(path)?;
    let kind = kind_of(schema, value);
    match (kind, value) {
        (Kind::Struct(_) | Kind::Map(_), Value::Object(map)) => {
            for (k, child) in map {
                let (child_schema, declared) = child_schema(kind, k);
                let p = path.child(PathElement::Field(k.clone()));
                walk_set(child, child_schema, &p, strict, out)?;
                let empty = child.is_null() || child.as_object().is_some_and(Map::is_empty);
                if empty || !declared {
                    out.insert(p);
                }
            }
        }
        (Kind::Keyed(elem, _), Value::Array(list)) => match list_elements(list, kind, path) {
            Ok(elements) => {
                for (item, pe) in list.iter().zip(elements) {
                    let p = path.child(pe);
                    walk_set(item, elem, &p, strict, out)?;
                    out.insert(p);
                }
            }
            Err(e) if strict => return Err(e),
            Err(_) => {
                if !path.0.is_empty() {
                    out.insert(path.clone());
                }
            }
        },
        (Kind::Set, Value::Array(list)) => match list_elements(list, kind, path) {
            Ok(elements) => elements
                .into_iter()
                .for_each(|pe| out.insert(path.child(pe))),
            Err(e) if strict => return Err(e),
            Err(_) => out.insert(path.clone()),
        },
        _ => {
            if !path.0.is_empty() {
                out.insert(path.clone());
            }
        }
    }
    Ok(())
}

/// What changed from one object to another.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Comparison {
    /// Present only in the new object.
    pub added: FieldSet,
    /// Present in both, different.
    pub modified: FieldSet,
    /// Present only in the old object.
    pub removed: FieldSet,
}

impl Comparison {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.modified.is_empty() && self.removed.is_empty()
    }

    /// Keeps, in all three sets, only the paths `keep` accepts.
    pub fn retain(&mut self, keep: impl Fn(&Path) -> bool) {
        self.added.retain(&keep);
        self.modified.retain(&keep);
        self.removed.retain(&keep);
    }
}

/// Compares two objects of the same kind (live objects: lenient).
pub fn compare(old: &Value, new: &Value, schema: Option<SchemaNode<'_>>) -> Comparison {
    let mut c = Comparison::default();
    walk_compare(Some(old), Some(new), schema, &Path::default(), true, &mut c);
    c
}

/// Compares one node, present in `old`, `new` or both. `record_node`: whether the node itself
/// (not only its contents) counts as added or removed when one side lacks it.
fn walk_compare(
    old: Option<&Value>,
    new: Option<&Value>,
    schema: Option<SchemaNode<'_>>,
    path: &Path,
    record_node: bool,
    c: &mut Comparison,
) {
    let (Some(sample), true) = (new.or(old), path.0.len() <= MAX_DEPTH) else {
        return;
    };
    let kind = kind_of(schema, sample);
    // A node whose two sides are not the same kind of value is compared as one value.
    let same_shape = match (old, new) {
        (Some(a), Some(b)) => tag(kind_of(schema, a)) == tag(kind_of(schema, b)),
        _ => true,
    };
    let leaf = |c: &mut Comparison| match (old, new) {
        (None, Some(_)) => c.added.insert(path.clone()),
        (Some(_), None) => c.removed.insert(path.clone()),
        (Some(a), Some(b)) if a != b => c.modified.insert(path.clone()),
        _ => {}
    };
    if !same_shape {
        leaf(c);
        return;
    }
    match kind {
        Kind::Struct(_) | Kind::Map(_) => {
            let empty = Map::new();
            let a = old.and_then(Value::as_object).unwrap_or(&empty);
            let b = new.and_then(Value::as_object).unwrap_or(&empty);
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            let required = match kind {
                Kind::Struct(s) => s.required(),
                _ => Vec::new(),
            };
            for k in keys {
                let (child_schema, declared) = child_schema(kind, k);
                let sample = b.get(k).or(a.get(k)).unwrap_or(&Value::Null);
                // Upstream compares typed objects, whose zero values have non-pointer structs
                // and required lists present even when unset: such a field appearing or going
                // is not a change of the node itself (unless empty, then it is a leaf).
                let record = !declared
                    || match kind_of(child_schema, sample) {
                        Kind::Struct(_) => sample.as_object().is_some_and(Map::is_empty),
                        Kind::Keyed(..) | Kind::Set | Kind::Map(_) => {
                            !required.contains(&k.as_str())
                        }
                        Kind::Leaf => true,
                    };
                walk_compare(
                    a.get(k),
                    b.get(k),
                    child_schema,
                    &path.child(PathElement::Field(k.clone())),
                    record,
                    c,
                );
            }
            if record_node && !path.0.is_empty() {
                match (old, new) {
                    (None, Some(_)) => c.added.insert(path.clone()),
                    (Some(_), None) => c.removed.insert(path.clone()),
                    _ => {}
                }
            }
        }
        Kind::Keyed(..) | Kind::Set => {
            let empty = Vec::new();
            let a = old.and_then(Value::as_array).unwrap_or(&empty);
            let b = new.and_then(Value::as_array).unwrap_or(&empty);
            let (Ok(ea), Ok(eb)) = (list_elements(a, kind, path), list_elements(b, kind, path))
            else {
                leaf(c);
                return;
            };
            let index_a: BTreeMap<&PathElement, &Value> = ea.iter().zip(a).collect();
            let index_b: BTreeMap<&PathElement, &Value> = eb.iter().zip(b).collect();
            let all: BTreeSet<&PathElement> = ea.iter().chain(eb.iter()).collect();
            let elem = match kind {
                Kind::Keyed(elem, _) => elem,
                _ => None,
            };
            for pe in all {
                let p = path.child(pe.clone());
                let (x, y) = (index_a.get(pe).copied(), index_b.get(pe).copied());
                if matches!(kind, Kind::Keyed(..)) {
                    walk_compare(x, y, elem, &p, false, c);
                }
                match (x, y) {
                    (None, Some(_)) => c.added.insert(p),
                    (Some(_), None) => c.removed.insert(p),
                    _ => {}
                }
            }
            if record_node && !path.0.is_empty() {
                match (old, new) {
                    (None, Some(_)) => c.added.insert(path.clone()),
                    (Some(_), None) => c.removed.insert(path.clone()),
                    _ => {}
                }
            }
        }
        Kind::Leaf => leaf(c),
    }
}

/// Merges an applied configuration into the live object: what the configuration sets wins,
/// struct fields and map entries it leaves out stay, keyed and set-like lists merge item by
/// item (the configuration's order for the items it names), atomic values are replaced. A
/// `null` in the configuration removes the field.
pub fn merge(live: &Value, config: &Value, schema: Option<SchemaNode<'_>>) -> Result<Value> {
    Ok(merge_node(Some(live), config, schema, &Path::default())?.unwrap_or(Value::Null))
}

fn merge_node(
    live: Option<&Value>,
    config: &Value,
    schema: Option<SchemaNode<'_>>,
    path: &Path,
) -> Result<Option<Value>> {
    check_depth(path)?;
    if config.is_null() {
        return Ok(None);
    }
    let kind = kind_of(schema, config);
    let live = live.filter(|l| tag(kind_of(schema, l)) == tag(kind));
    match (kind, config) {
        (Kind::Struct(_) | Kind::Map(_), Value::Object(cfg)) => {
            let mut out = live.and_then(Value::as_object).cloned().unwrap_or_default();
            for (k, cv) in cfg {
                let (child_schema, _) = child_schema(kind, k);
                let p = path.child(PathElement::Field(k.clone()));
                match merge_node(out.get(k), cv, child_schema, &p)? {
                    Some(v) => out.insert(k.clone(), v),
                    None => out.remove(k),
                };
            }
            Ok(Some(Value::Object(out)))
        }
        (Kind::Keyed(..) | Kind::Set, Value::Array(cfg)) => {
            let cfg_elements = list_elements(cfg, kind, path)?;
            let live_list = live.and_then(Value::as_array).cloned().unwrap_or_default();
            let Ok(live_elements) = list_elements(&live_list, kind, path) else {
                // The live list cannot be keyed: the configuration replaces it.
                return Ok(Some(config.clone()));
            };
            let elem = match kind {
                Kind::Keyed(elem, _) => elem,
                _ => None,
            };
            let merged = merge_lists(
                &live_list,
                &live_elements,
                cfg,
                &cfg_elements,
                |l, c, pe| merge_node(l, c, elem, &path.child(pe.clone())),
            )?;
            Ok(Some(Value::Array(merged)))
        }
        _ => Ok(Some(config.clone())),
    }
}

/// Orders a merged list as upstream does: live items the configuration does not name keep
/// their places; the items it names come in its order, each merged with its live version.
fn merge_lists(
    live: &[Value],
    live_pe: &[PathElement],
    cfg: &[Value],
    cfg_pe: &[PathElement],
    mut merge_item: impl FnMut(Option<&Value>, &Value, &PathElement) -> Result<Option<Value>>,
) -> Result<Vec<Value>> {
    let live_index: BTreeMap<&PathElement, &Value> = live_pe.iter().zip(live).collect();
    let cfg_set: BTreeSet<&PathElement> = cfg_pe.iter().collect();
    let mut out = Vec::with_capacity(live.len().max(cfg.len()));
    let mut emitted: BTreeSet<&PathElement> = BTreeSet::new();
    let (mut li, mut ci) = (0, 0);
    while li < live.len() || ci < cfg.len() {
        if li < live.len() {
            let pe = &live_pe[li];
            if !cfg_set.contains(pe) {
                out.push(live[li].clone());
                li += 1;
                continue;
            }
            if emitted.contains(pe) {
                li += 1;
                continue;
            }
        }
        if ci < cfg.len() {
            let pe = &cfg_pe[ci];
            emitted.insert(pe);
            if let Some(v) = merge_item(live_index.get(pe).copied(), &cfg[ci], pe)? {
                out.push(v);
            }
            ci += 1;
            // The live item just merged, if it is next, is done.
            if li < live.len() && live_pe[li] == *pe {
                li += 1;
            }
        } else {
            li += 1;
        }
    }
    Ok(out)
}

/// Removes the node at `path` (and everything under it) from `value`, if it is there.
pub fn remove(value: &mut Value, path: &Path, schema: Option<SchemaNode<'_>>) {
    let Some((last, parents)) = path.0.split_last() else {
        return;
    };
    let mut node = value;
    let mut schema = schema;
    for pe in parents {
        let kind = kind_of(schema, node);
        let Some((next, next_schema)) = step(node, kind, pe) else {
            return;
        };
        node = next;
        schema = next_schema;
    }
    let kind = kind_of(schema, node);
    match (last, node) {
        (PathElement::Field(k), Value::Object(map)) => {
            map.remove(k);
        }
        (PathElement::Index(i), Value::Array(list)) if *i < list.len() => {
            list.remove(*i);
        }
        (pe, Value::Array(list)) => {
            if let Some(i) = position(list, kind, pe) {
                list.remove(i);
            }
        }
        _ => {}
    }
}

/// The index of the item `pe` names in a list.
fn position(list: &[Value], kind: Kind<'_>, pe: &PathElement) -> Option<usize> {
    list.iter().position(|item| match (kind, pe) {
        (Kind::Keyed(elem, keys), PathElement::Key(_)) => {
            item_key(item, elem, keys).as_ref() == Some(pe)
        }
        (_, PathElement::Value(_)) => PathElement::value(item) == *pe,
        _ => false,
    })
}

/// One step down a path, with the schema of where it lands.
fn step<'v, 's>(
    node: &'v mut Value,
    kind: Kind<'s>,
    pe: &PathElement,
) -> Option<(&'v mut Value, Option<SchemaNode<'s>>)> {
    match (pe, kind) {
        (PathElement::Field(k), Kind::Struct(_) | Kind::Map(_)) => {
            let (s, _) = child_schema(kind, k);
            Some((node.as_object_mut()?.get_mut(k)?, s))
        }
        (PathElement::Index(i), _) => Some((node.as_array_mut()?.get_mut(*i)?, None)),
        (_, Kind::Keyed(elem, _)) => {
            let i = position(node.as_array()?, kind, pe)?;
            Some((node.as_array_mut()?.get_mut(i)?, elem))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openapi::{GroupVersionKind, Schemas};
    use serde_json::json;

    fn f(name: &str) -> PathElement {
        PathElement::Field(name.into())
    }

    fn p(elements: &[PathElement]) -> Path {
        Path(elements.to_vec())
    }

    fn key(name: &str) -> PathElement {
        PathElement::key(vec![("name".into(), &json!(name))])
    }

    fn deployment() -> (std::sync::Arc<Schemas>, GroupVersionKind) {
        (
            Schemas::builtin(),
            GroupVersionKind::new("apps", "v1", "Deployment"),
        )
    }

    fn web(replicas: i64, image: &str) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": image,
                        "ports": [{"containerPort": 80}]}]}
                }
            }
        })
    }

    #[test]
    fn field_set_of_a_deployment_is_upstreams() {
        let (schemas, gvk) = deployment();
        let set = field_set(&web(2, "nginx"), schemas.for_kind(&gvk), true).unwrap();
        let containers = p(&[f("spec"), f("template"), f("spec"), f("containers")]);
        let port = PathElement::key(vec![
            ("containerPort".into(), &json!(80)),
            ("protocol".into(), &json!("TCP")),
        ]);
        let want: FieldSet = [
            p(&[f("apiVersion")]),
            p(&[f("kind")]),
            p(&[f("metadata"), f("name")]),
            p(&[f("metadata"), f("labels"), f("app")]),
            p(&[f("spec"), f("replicas")]),
            // LabelSelector is an atomic struct.
            p(&[f("spec"), f("selector")]),
            p(&[
                f("spec"),
                f("template"),
                f("metadata"),
                f("labels"),
                f("app"),
            ]),
            containers.child(key("c")),
            containers.child(key("c")).child(f("name")),
            containers.child(key("c")).child(f("image")),
            containers
                .child(key("c"))
                .child(f("ports"))
                .child(port.clone()),
            containers
                .child(key("c"))
                .child(f("ports"))
                .child(port)
                .child(f("containerPort")),
        ]
        .into_iter()
        .collect();
        assert_eq!(set, want);
    }

    #[test]
    fn strict_field_sets_refuse_unkeyable_items() {
        let (schemas, gvk) = deployment();
        let mut obj = web(1, "a");
        obj["spec"]["template"]["spec"]["containers"] = json!([{"image": "x"}]);
        let err = field_set(&obj, schemas.for_kind(&gvk), true).unwrap_err();
        assert!(matches!(err, ApplyError::MissingKey { ref key, .. } if key == "name"));
        obj["spec"]["template"]["spec"]["containers"] =
            json!([{"name": "a", "image": "x"}, {"name": "a", "image": "y"}]);
        let err = field_set(&obj, schemas.for_kind(&gvk), true).unwrap_err();
        assert!(matches!(err, ApplyError::Duplicate { .. }));
        // Leniently the list is one value.
        let set = field_set(&obj, schemas.for_kind(&gvk), false).unwrap();
        assert!(set.contains(&p(&[f("spec"), f("template"), f("spec"), f("containers")])));
    }

    #[test]
    fn compare_finds_added_modified_removed() {
        let (schemas, gvk) = deployment();
        let old = web(2, "nginx");
        let mut new = web(3, "nginx:2");
        new["metadata"]["annotations"] = json!({"a": "b"});
        new["metadata"]["labels"] = json!({});
        let c = compare(&old, &new, schemas.for_kind(&gvk));
        let image = p(&[
            f("spec"),
            f("template"),
            f("spec"),
            f("containers"),
            key("c"),
            f("image"),
        ]);
        assert_eq!(
            c.modified,
            [p(&[f("spec"), f("replicas")]), image]
                .into_iter()
                .collect()
        );
        assert_eq!(
            c.added,
            [
                p(&[f("metadata"), f("annotations")]),
                p(&[f("metadata"), f("annotations"), f("a")])
            ]
            .into_iter()
            .collect()
        );
        assert_eq!(
            c.removed,
            [p(&[f("metadata"), f("labels"), f("app")])]
                .into_iter()
                .collect()
        );
        assert!(compare(&old, &old, schemas.for_kind(&gvk)).is_empty());
    }

    #[test]
    fn merge_keyed_lists_by_key_and_replaces_atomic_values() {
        let (schemas, gvk) = deployment();
        let mut live = web(2, "nginx");
        live["spec"]["template"]["spec"]["containers"] = json!([
            {"name": "a", "image": "a:1", "imagePullPolicy": "Always"},
            {"name": "b", "image": "b:1"}
        ]);
        live["spec"]["template"]["spec"]["containers"][0]["args"] = json!(["x", "y"]);
        let config = json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {
                "selector": {"matchLabels": {"app": "other"}},
                "template": {"spec": {"containers": [
                    {"name": "c", "image": "c:1"},
                    {"name": "a", "image": "a:2", "args": ["z"]}
                ]}}
            }
        });
        let merged = merge(&live, &config, schemas.for_kind(&gvk)).unwrap();
        assert_eq!(merged["spec"]["replicas"], 2);
        assert_eq!(
            merged["spec"]["selector"],
            json!({"matchLabels": {"app": "other"}})
        );
        assert_eq!(merged["metadata"]["labels"], json!({"app": "web"}));
        assert_eq!(
            merged["spec"]["template"]["spec"]["containers"],
            json!([
                {"name": "c", "image": "c:1"},
                {"name": "a", "image": "a:2", "imagePullPolicy": "Always", "args": ["z"]},
                {"name": "b", "image": "b:1"}
            ])
        );
        // null removes.
        let config = json!({"spec": {"replicas": null}});
        let merged = merge(&live, &config, schemas.for_kind(&gvk)).unwrap();
        assert!(merged["spec"].get("replicas").is_none());
    }

    #[test]
    fn remove_takes_out_keyed_items_and_fields() {
        let (schemas, gvk) = deployment();
        let mut obj = web(2, "nginx");
        let containers = p(&[f("spec"), f("template"), f("spec"), f("containers")]);
        remove(
            &mut obj,
            &containers
                .child(key("c"))
                .child(f("ports"))
                .child(PathElement::key(vec![
                    ("containerPort".into(), &json!(80)),
                    ("protocol".into(), &json!("TCP")),
                ])),
            schemas.for_kind(&gvk),
        );
        assert_eq!(
            obj["spec"]["template"]["spec"]["containers"][0]["ports"],
            json!([])
        );
        remove(
            &mut obj,
            &p(&[f("spec"), f("replicas")]),
            schemas.for_kind(&gvk),
        );
        assert!(obj["spec"].get("replicas").is_none());
        remove(
            &mut obj,
            &containers.child(key("c")),
            schemas.for_kind(&gvk),
        );
        assert_eq!(obj["spec"]["template"]["spec"]["containers"], json!([]));
    }

    #[test]
    fn unknown_objects_are_granular_and_lists_atomic() {
        let set = field_set(&json!({"a": {"b": 1}, "l": [1, 2]}), None, true).unwrap();
        let want: FieldSet = [p(&[f("a")]), p(&[f("a"), f("b")]), p(&[f("l")])]
            .into_iter()
            .collect();
        assert_eq!(set, want);
    }
}
