//! Strategic merge patch (`application/strategic-merge-patch+json`), applied as Kubernetes
//! applies it to a stored object.
//!
//! The schema says how each field merges: a list whose field has patch strategy `merge` is
//! merged element by element (objects matched by the field's merge key, scalars as a set); any
//! other list is replaced; objects are merged key by key unless their strategy is `replace`.
//! Where the schema says nothing (unknown fields, `RawExtension`, no schema at all), objects
//! merge and lists are replaced: JSON merge patch semantics. The patch may carry directives:
//!
//! * `null` deletes a key;
//! * `$patch: replace` (the object replaces the original), `$patch: delete` (the object becomes
//!   empty), and in a merged list `{"<key>": v, "$patch": "delete"}` removes that element and
//!   `{"$patch": "replace"}` makes the patch's elements the whole list;
//! * `$deleteFromPrimitiveList/<field>: [values]` removes values from a merged scalar list;
//! * `$setElementOrder/<field>: [...]` fixes the order of a merged list (objects given by their
//!   merge key);
//! * `$retainKeys: [fields]` clears every field of the original object not listed.
//!
//! One deliberate difference: content the patch adds wholesale (a new key, a new list element)
//! has its directives and `null`s removed here, where upstream would store them and rely on
//! typed decoding to drop them; objects here are unstructured, so nothing would.

use serde_json::{Map, Value};

use crate::openapi::{NodeShape, SchemaNode};

/// Patch nesting beyond this is refused rather than recursed into (the JSON decoder already
/// stops at 128 levels; this also guards values built in memory).
pub const MAX_DEPTH: usize = 200;

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList";
const SET_ELEMENT_ORDER: &str = "$setElementOrder";

/// Why a strategic merge patch could not be applied. Each names the field (`.spec.containers`)
/// where it failed; [`StrategicMergeError::http_status`] says which status the handler answers.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StrategicMergeError {
    /// The original or the patch is not a JSON object.
    #[error("invalid JSON document")]
    NotAnObject,
    /// A `$deleteFromPrimitiveList` key without a field name or with a non-list value.
    #[error("invalid patch format of primitive list at {path}")]
    BadDeleteFromPrimitiveList {
        /// Where.
        path: String,
    },
    /// `$retainKeys` is not a list, or the patch sets a field it does not list.
    #[error("invalid patch format of retainKeys at {path}")]
    BadRetainKeys {
        /// Where.
        path: String,
    },
    /// A `$setElementOrder` key without a field name or with a non-list value.
    #[error("invalid patch format of setElementOrder list at {path}")]
    BadSetElementOrder {
        /// Where.
        path: String,
    },
    /// The patch's elements are not in the order its `$setElementOrder` list gives.
    #[error("the order in the patch list at {path} doesn't match the $setElementOrder list")]
    OrderMismatch {
        /// Where.
        path: String,
    },
    /// A list whose elements are lists.
    #[error("lists of lists are not supported (at {path})")]
    ListOfLists {
        /// Where.
        path: String,
    },
    /// A list mixing objects, scalars or lists.
    #[error("list element types are not identical at {path}")]
    MixedElementTypes {
        /// Where.
        path: String,
    },
    /// An element of a merged list lacks the merge key.
    #[error("map: {element} does not contain declared merge key: {key} (at {path})")]
    MissingMergeKey {
        /// Where.
        path: String,
        /// The merge key.
        key: String,
        /// The element, as JSON.
        element: String,
    },
    /// A list of objects merged without a merge key in the schema.
    #[error("cannot merge lists without merge key for {path}")]
    NoMergeKey {
        /// Where.
        path: String,
    },
    /// `$patch` with a value other than replace, delete or merge (or merge where it is not
    /// supported).
    #[error("unknown patch type: {directive} at {path}")]
    UnknownDirective {
        /// Where.
        path: String,
        /// The value given.
        directive: String,
    },
    /// A value of the wrong kind where a list or object was required.
    #[error("expected {expected} at {path}")]
    WrongType {
        /// Where.
        path: String,
        /// What was required.
        expected: &'static str,
    },
    /// The schema gives a patch strategy this code does not know.
    #[error("unexpected patch strategy {strategy:?} at {path}")]
    UnexpectedStrategy {
        /// Where.
        path: String,
        /// The strategies given.
        strategy: String,
    },
    /// Nesting deeper than [`MAX_DEPTH`].
    #[error("the patch is nested deeper than {MAX_DEPTH} levels at {path}")]
    TooDeep {
        /// Where.
        path: String,
    },
}

impl StrategicMergeError {
    /// The HTTP status upstream answers for this failure: 400 for a malformed patch, 422 for a
    /// patch that is well-formed but cannot apply to this object.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::NotAnObject
            | Self::BadDeleteFromPrimitiveList { .. }
            | Self::BadRetainKeys { .. }
            | Self::BadSetElementOrder { .. }
            | Self::OrderMismatch { .. }
            | Self::UnknownDirective { .. }
            | Self::WrongType { .. }
            | Self::TooDeep { .. } => 400,
            Self::ListOfLists { .. }
            | Self::MixedElementTypes { .. }
            | Self::MissingMergeKey { .. }
            | Self::NoMergeKey { .. }
            | Self::UnexpectedStrategy { .. } => 422,
        }
    }
}

type Result<T, E = StrategicMergeError> = std::result::Result<T, E>;

/// Applies `patch` to `original`; `schema` is the schema of the object's kind, `None` when the
/// kind has none (then JSON merge patch semantics, directives honoured).
pub fn apply_strategic_merge_patch(
    original: &Value,
    patch: &Value,
    schema: Option<SchemaNode<'_>>,
) -> Result<Value> {
    let (Value::Object(original), Value::Object(patch)) = (original, patch) else {
        return Err(StrategicMergeError::NotAnObject);
    };
    check_depth(patch, 0, "")?;
    merge_map(original.clone(), patch.clone(), schema, "", 0).map(Value::Object)
}

/// Refuses patches nested deeper than [`MAX_DEPTH`] before any recursion over them.
fn check_depth(value: &Map<String, Value>, depth: usize, path: &str) -> Result<()> {
    let mut stack: Vec<(&Value, usize)> = value.values().map(|v| (v, depth + 1)).collect();
    while let Some((v, d)) = stack.pop() {
        if d > MAX_DEPTH {
            return Err(StrategicMergeError::TooDeep { path: path.into() });
        }
        match v {
            Value::Object(o) => stack.extend(o.values().map(|c| (c, d + 1))),
            Value::Array(a) => stack.extend(a.iter().map(|c| (c, d + 1))),
            _ => {}
        }
    }
    Ok(())
}

fn child_path(path: &str, key: &str) -> String {
    format!("{path}.{key}")
}

/// The schema of field `key` of an object described by `schema`.
fn field_schema<'a>(schema: Option<SchemaNode<'a>>, key: &str) -> Option<SchemaNode<'a>> {
    let s = schema?;
    match s.shape() {
        NodeShape::Struct => s.property(key),
        NodeShape::Map => s.additional_properties(),
        _ => None,
    }
}

/// The field's strategy with `retainKeys` set aside (it only matters when computing patches).
fn field_strategy(field: Option<SchemaNode<'_>>, path: &str) -> Result<Option<String>> {
    let Some(field) = field else { return Ok(None) };
    let strategies = field.patch_strategies();
    let others: Vec<&str> = strategies
        .iter()
        .copied()
        .filter(|s| *s != "retainKeys")
        .collect();
    match (strategies.len(), others.as_slice()) {
        (0, _) => Ok(None),
        (1, []) => Ok(None),
        (1 | 2, [one]) if strategies.len() == 1 || strategies.contains(&"retainKeys") => {
            Ok(Some((*one).to_owned()))
        }
        _ => Err(StrategicMergeError::UnexpectedStrategy {
            path: path.into(),
            strategy: strategies.join(","),
        }),
    }
}

fn merge_key_of(field: Option<SchemaNode<'_>>) -> Option<String> {
    field.and_then(|f| f.patch_merge_key()).map(str::to_owned)
}

fn items_schema(field: Option<SchemaNode<'_>>) -> Option<SchemaNode<'_>> {
    field.and_then(|f| f.items())
}

fn merge_map(
    mut original: Map<String, Value>,
    mut patch: Map<String, Value>,
    schema: Option<SchemaNode<'_>>,
    path: &str,
    depth: usize,
) -> Result<Map<String, Value>> {
    if depth > MAX_DEPTH {
        return Err(StrategicMergeError::TooDeep { path: path.into() });
    }
    if let Some(directive) = patch.remove(DIRECTIVE) {
        return match directive.as_str() {
            Some("replace") => Ok(clean_map(patch)),
            Some("delete") => Ok(Map::new()),
            _ => Err(StrategicMergeError::UnknownDirective {
                path: path.into(),
                directive: directive.to_string(),
            }),
        };
    }

    apply_retain_keys(&mut original, &mut patch, path)?;
    apply_set_element_order(&mut original, &mut patch, schema, path, depth)?;

    for (key, patch_value) in patch {
        let (key, is_delete_list) = if key.starts_with(DELETE_FROM_PRIMITIVE_LIST) {
            match key.split_once('/') {
                Some((DELETE_FROM_PRIMITIVE_LIST, field)) => (field.to_owned(), true),
                _ => {
                    return Err(StrategicMergeError::BadDeleteFromPrimitiveList {
                        path: child_path(path, &key),
                    });
                }
            }
        } else {
            (key, false)
        };
        let field_path = child_path(path, &key);

        if patch_value.is_null() {
            if !is_delete_list {
                original.remove(&key);
            }
            continue;
        }
        let Some(original_value) = original.remove(&key) else {
            if !is_delete_list && let Some(v) = clean(patch_value) {
                original.insert(key, v);
            }
            continue;
        };
        let merged = match (original_value, patch_value) {
            (Value::Object(o), Value::Object(p)) => {
                let field = field_schema(schema, &key);
                if field_strategy(field, &field_path)?.as_deref() == Some("replace") {
                    clean(Value::Object(p))
                } else {
                    Some(Value::Object(merge_map(
                        o,
                        p,
                        field,
                        &field_path,
                        depth + 1,
                    )?))
                }
            }
            (Value::Array(o), Value::Array(p)) => {
                let field = field_schema(schema, &key);
                let strategy = field_strategy(field, &field_path)?;
                if strategy.as_deref() == Some("merge") || is_delete_list {
                    Some(Value::Array(merge_list(
                        o,
                        p,
                        items_schema(field),
                        merge_key_of(field).as_deref(),
                        is_delete_list,
                        &field_path,
                        depth + 1,
                    )?))
                } else {
                    clean(Value::Array(p))
                }
            }
            (o, p) => {
                if is_delete_list {
                    if let Value::Array(_) = p {
                        Some(o)
                    } else {
                        return Err(StrategicMergeError::BadDeleteFromPrimitiveList {
                            path: field_path,
                        });
                    }
                } else {
                    clean(p)
                }
            }
        };
        if let Some(v) = merged {
            original.insert(key, v);
        }
    }
    Ok(original)
}

/// `$retainKeys`: every field the patch sets must be listed; fields of the original that are
/// not listed are cleared.
fn apply_retain_keys(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
    path: &str,
) -> Result<()> {
    let Some(retain) = patch.remove(RETAIN_KEYS) else {
        return Ok(());
    };
    let Value::Array(retain) = retain else {
        return Err(StrategicMergeError::BadRetainKeys { path: path.into() });
    };
    let listed = |k: &str| retain.iter().any(|r| r.as_str() == Some(k));
    for (k, v) in patch.iter() {
        if v.is_null()
            || k.starts_with(DELETE_FROM_PRIMITIVE_LIST)
            || k.starts_with(SET_ELEMENT_ORDER)
        {
            continue;
        }
        if !listed(k) {
            return Err(StrategicMergeError::BadRetainKeys { path: path.into() });
        }
    }
    original.retain(|k, _| listed(k));
    Ok(())
}

/// `$setElementOrder/<field>`: merges the field now (original and patch) and orders the result
/// as the directive lists, elements only the server has keeping their place relative to it.
fn apply_set_element_order(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
    schema: Option<SchemaNode<'_>>,
    path: &str,
    depth: usize,
) -> Result<()> {
    let keys: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with(SET_ELEMENT_ORDER))
        .cloned()
        .collect();
    for directive_key in keys {
        let order = patch.remove(&directive_key).unwrap_or(Value::Null);
        let field_key = match directive_key.split_once('/') {
            Some((SET_ELEMENT_ORDER, field)) => field.to_owned(),
            _ => {
                return Err(StrategicMergeError::BadSetElementOrder {
                    path: child_path(path, &directive_key),
                });
            }
        };
        let field_path = child_path(path, &field_key);
        let Value::Array(order) = order else {
            return Err(StrategicMergeError::BadSetElementOrder { path: field_path });
        };
        let original_list = match original.get(&field_key) {
            None => None,
            Some(Value::Array(a)) => Some(a.clone()),
            Some(_) => {
                return Err(StrategicMergeError::WrongType {
                    path: field_path,
                    expected: "a list in the original",
                });
            }
        };
        let patch_list = match patch.get(&field_key) {
            None => None,
            Some(Value::Array(a)) => Some(a.clone()),
            Some(_) => {
                return Err(StrategicMergeError::WrongType {
                    path: field_path,
                    expected: "a list in the patch",
                });
            }
        };
        let field = field_schema(schema, &field_key);
        let strategy = field_strategy(field, &field_path)?;
        let merge_key = merge_key_of(field);
        if let Some(p) = &patch_list {
            validate_order(p, &order, merge_key.as_deref(), &field_path)?;
        }
        let merged = match (original_list.clone(), patch_list.clone()) {
            (Some(o), None) => o,
            (None, Some(p)) => match clean(Value::Array(p)) {
                Some(Value::Array(a)) => a,
                _ => continue,
            },
            (Some(o), Some(p)) => {
                if strategy.as_deref() == Some("merge") {
                    merge_list(
                        o,
                        p,
                        items_schema(field),
                        merge_key.as_deref(),
                        false,
                        &field_path,
                        depth + 1,
                    )?
                } else {
                    p
                }
            }
            (None, None) => continue,
        };
        let elements: Vec<&Value> = original_list
            .iter()
            .flatten()
            .chain(patch_list.iter().flatten())
            .collect();
        let is_map = element_kind(elements.into_iter(), &field_path)? == Some(ElementKind::Object);
        let key = if is_map { merge_key.as_deref() } else { None };
        let (in_order, server_only) = partition(merged, &order, key, &field_path)?;
        let server_order = original_list.unwrap_or_default();
        let result = normalize_order(
            in_order,
            server_only,
            &order,
            &server_order,
            key,
            &field_path,
        )?;
        original.insert(field_key.clone(), Value::Array(result));
        patch.remove(&field_key);
    }
    Ok(())
}

/// The patch's elements (other than deletions) must appear in the order the directive lists.
fn validate_order(
    patch: &[Value],
    order: &[Value],
    merge_key: Option<&str>,
    path: &str,
) -> Result<()> {
    if patch.is_empty() || order.is_empty() {
        return Ok(());
    }
    let non_delete: Vec<&Value> = match merge_key {
        Some(_) => patch
            .iter()
            .filter(|v| v.get(DIRECTIVE).and_then(Value::as_str) != Some("delete"))
            .collect(),
        None => patch.iter().collect(),
    };
    let (mut p, mut o) = (0, 0);
    while p < non_delete.len() && o < order.len() {
        if non_delete[p].get(DIRECTIVE).is_some() {
            p += 1;
            continue;
        }
        if merge_key_equal(non_delete[p], &order[o], merge_key, path)? {
            p += 1;
        }
        o += 1;
    }
    if p < non_delete.len() && o >= order.len() {
        return Err(StrategicMergeError::OrderMismatch { path: path.into() });
    }
    Ok(())
}

fn merge_key_equal(a: &Value, b: &Value, merge_key: Option<&str>, path: &str) -> Result<bool> {
    let Some(key) = merge_key else {
        return Ok(a == b);
    };
    Ok(key_value(a, key, path)? == key_value(b, key, path)?)
}

fn key_value<'v>(element: &'v Value, key: &str, path: &str) -> Result<&'v Value> {
    let Value::Object(o) = element else {
        return Err(StrategicMergeError::WrongType {
            path: path.into(),
            expected: "objects in a list merged by key",
        });
    };
    o.get(key)
        .ok_or_else(|| StrategicMergeError::MissingMergeKey {
            path: path.into(),
            key: key.into(),
            element: element.to_string(),
        })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ElementKind {
    Object,
    Scalar,
}

/// The common kind of the elements; lists of lists and mixtures are errors.
fn element_kind<'v>(
    elements: impl Iterator<Item = &'v Value>,
    path: &str,
) -> Result<Option<ElementKind>> {
    let mut kind = None;
    for e in elements {
        let k = match e {
            Value::Array(_) => return Err(StrategicMergeError::ListOfLists { path: path.into() }),
            Value::Object(_) => ElementKind::Object,
            _ => ElementKind::Scalar,
        };
        match kind {
            None => kind = Some(k),
            Some(prev) if prev != k => {
                return Err(StrategicMergeError::MixedElementTypes { path: path.into() });
            }
            Some(_) => {}
        }
    }
    Ok(kind)
}

fn merge_list(
    mut original: Vec<Value>,
    patch: Vec<Value>,
    items: Option<SchemaNode<'_>>,
    merge_key: Option<&str>,
    is_delete_list: bool,
    path: &str,
    depth: usize,
) -> Result<Vec<Value>> {
    if depth > MAX_DEPTH {
        return Err(StrategicMergeError::TooDeep { path: path.into() });
    }
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    let Some(kind) = element_kind(original.iter().chain(patch.iter()), path)? else {
        return Ok(original);
    };

    if kind == ElementKind::Scalar {
        if is_delete_list {
            original.retain(|v| !patch.contains(v));
            return Ok(original);
        }
        let server_order = original.clone();
        let mut merged = original;
        for v in &patch {
            if !merged.contains(v) {
                merged.push(v.clone());
            }
        }
        let (in_patch, server_only) = partition(merged, &patch, None, path)?;
        return normalize_order(in_patch, server_only, &patch, &server_order, None, path);
    }

    let Some(key) = merge_key else {
        return Err(StrategicMergeError::NoMergeKey { path: path.into() });
    };
    // Special elements first: deletions and a whole-list replacement.
    let mut plain = Vec::with_capacity(patch.len());
    let mut replace = false;
    for element in patch {
        match element.get(DIRECTIVE) {
            None => plain.push(element),
            Some(Value::String(d)) if d == "delete" => {
                let value = key_value(&element, key, path)?.clone();
                let mut kept = Vec::with_capacity(original.len());
                for o in original {
                    if key_value(&o, key, path)? != &value {
                        kept.push(o);
                    }
                }
                original = kept;
            }
            Some(Value::String(d)) if d == "replace" => replace = true,
            Some(other) => {
                return Err(StrategicMergeError::UnknownDirective {
                    path: path.into(),
                    directive: other.to_string(),
                });
            }
        }
    }
    let (original, patch) = if replace {
        (plain.into_iter().filter_map(clean).collect(), Vec::new())
    } else {
        (original, plain)
    };
    let server_order = original.clone();
    let mut merged = original;
    for element in &patch {
        let value = key_value(element, key, path)?;
        let mut found = None;
        for (i, o) in merged.iter().enumerate() {
            if key_value(o, key, path)? == value {
                found = Some(i);
                break;
            }
        }
        match (found, element) {
            (Some(i), Value::Object(p)) => {
                let Value::Object(o) = std::mem::take(&mut merged[i]) else {
                    unreachable!("key_value accepted only objects");
                };
                merged[i] = Value::Object(merge_map(o, p.clone(), items, path, depth + 1)?);
            }
            _ => {
                if let Some(v) = clean(element.clone()) {
                    merged.push(v);
                }
            }
        }
    }
    let (in_patch, server_only) = partition(merged, &patch, Some(key), path)?;
    normalize_order(
        in_patch,
        server_only,
        &patch,
        &server_order,
        Some(key),
        path,
    )
}

/// Splits `merged` into the elements `by` names and the others, keeping their order.
fn partition(
    merged: Vec<Value>,
    by: &[Value],
    key: Option<&str>,
    path: &str,
) -> Result<(Vec<Value>, Vec<Value>)> {
    let mut named = Vec::new();
    let mut others = Vec::new();
    for v in merged {
        if position(by, &v, key, path)?.is_some() {
            named.push(v);
        } else {
            others.push(v);
        }
    }
    Ok((named, others))
}

/// Where `value` is in `list` (by merge key for objects, by value for scalars).
fn position(list: &[Value], value: &Value, key: Option<&str>, path: &str) -> Result<Option<usize>> {
    match key {
        None => Ok(list.iter().position(|v| v == value)),
        Some(k) => {
            let want = key_value(value, k, path)?;
            Ok(list.iter().position(|v| v.get(k) == Some(want)))
        }
    }
}

/// Orders the patch's elements as `patch_order` lists them and the server's as `server_order`
/// does, then interleaves them: a server element goes first only when the server order puts it
/// before the patch element being placed.
fn normalize_order(
    mut in_patch: Vec<Value>,
    mut server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    key: Option<&str>,
    path: &str,
) -> Result<Vec<Value>> {
    sort_by_order(&mut in_patch, patch_order, key, path)?;
    sort_by_order(&mut server_only, server_order, key, path)?;
    let left_pos: Vec<Option<usize>> = server_only
        .iter()
        .map(|v| position(server_order, v, key, path))
        .collect::<Result<_>>()?;
    let right_pos: Vec<Option<usize>> = in_patch
        .iter()
        .map(|v| position(server_order, v, key, path))
        .collect::<Result<_>>()?;
    let mut out = Vec::with_capacity(in_patch.len() + server_only.len());
    let (mut left, mut right) = (server_only.into_iter(), in_patch.into_iter());
    let (mut i, mut j) = (0, 0);
    let mut next_left = left.next();
    let mut next_right = right.next();
    loop {
        match (next_left.take(), next_right.take()) {
            (None, None) => break,
            (Some(l), None) => {
                out.push(l);
                next_left = left.next();
            }
            (None, Some(r)) => {
                out.push(r);
                next_right = right.next();
            }
            (Some(l), Some(r)) => {
                let left_first = matches!((left_pos[i], right_pos[j]), (Some(a), Some(b)) if a < b);
                if left_first {
                    out.push(l);
                    i += 1;
                    next_left = left.next();
                    next_right = Some(r);
                } else {
                    out.push(r);
                    j += 1;
                    next_right = right.next();
                    next_left = Some(l);
                }
            }
        }
    }
    Ok(out)
}

/// Stable sort by position in `order`; elements it does not name go last in their own order.
fn sort_by_order(
    list: &mut Vec<Value>,
    order: &[Value],
    key: Option<&str>,
    path: &str,
) -> Result<()> {
    let mut keyed: Vec<(usize, Value)> = Vec::with_capacity(list.len());
    for v in list.drain(..) {
        let p = position(order, &v, key, path)?.unwrap_or(usize::MAX);
        keyed.push((p, v));
    }
    keyed.sort_by_key(|(p, _)| *p);
    list.extend(keyed.into_iter().map(|(_, v)| v));
    Ok(())
}

/// Content the patch adds wholesale, without directives and nulls; `None` when it is an
/// object carrying `$patch` (a directive about content that does not exist).
fn clean(value: Value) -> Option<Value> {
    match value {
        Value::Object(o) => {
            if o.contains_key(DIRECTIVE) {
                return None;
            }
            Some(Value::Object(clean_map(o)))
        }
        Value::Array(a) => Some(Value::Array(a.into_iter().filter_map(clean).collect())),
        Value::Null => None,
        other => Some(other),
    }
}

fn clean_map(map: Map<String, Value>) -> Map<String, Value> {
    map.into_iter()
        .filter(|(k, _)| !is_directive_key(k))
        .filter_map(|(k, v)| clean(v).map(|v| (k, v)))
        .collect()
}

fn is_directive_key(key: &str) -> bool {
    key == DIRECTIVE
        || key == RETAIN_KEYS
        || key.starts_with(DELETE_FROM_PRIMITIVE_LIST)
        || key.starts_with(SET_ELEMENT_ORDER)
}

#[cfg(test)]
mod tests;
