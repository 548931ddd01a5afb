//! Field paths and field sets as server-side apply records them in `metadata.managedFields`.
//!
//! A path is a list of elements: a field of an object (`f:name`), an item of a keyed list
//! (`k:{"name":"web"}`, keys sorted by name), an item of a set-like list (`v:"a"`) or an item by
//! position (`i:0`). A [`FieldSet`] is a set of paths; its wire form (`FieldsV1`) is a tree of
//! JSON objects keyed by the encoded elements, where `{}` marks a member leaf and `".": {}` marks
//! a node that is itself a member and also has members below it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{Map, Value};

/// How deep a `FieldsV1` tree may nest: deeper trees are refused (a guard against hostile
/// input; real objects are far shallower).
const MAX_DEPTH: usize = 100;

/// One step of a path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathElement {
    /// A field of an object (struct field or map key).
    Field(String),
    /// An item of a keyed list: the key fields, sorted by name, each with its value as compact
    /// JSON.
    Key(Vec<(String, String)>),
    /// An item of a set-like list: the value as compact JSON.
    Value(String),
    /// An item by position.
    Index(usize),
}

impl PathElement {
    /// A key element from its fields (sorted here).
    pub fn key(mut fields: Vec<(String, &Value)>) -> Self {
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        PathElement::Key(fields.into_iter().map(|(k, v)| (k, compact(v))).collect())
    }

    /// A value element.
    pub fn value(v: &Value) -> Self {
        PathElement::Value(compact(v))
    }

    /// The `FieldsV1` spelling: `f:name`, `k:{...}`, `v:...`, `i:n`.
    pub fn encode(&self) -> String {
        match self {
            PathElement::Field(name) => format!("f:{name}"),
            PathElement::Key(fields) => {
                let body: Vec<String> = fields
                    .iter()
                    .map(|(k, v)| format!("{}:{v}", compact(&Value::String(k.clone()))))
                    .collect();
                format!("k:{{{}}}", body.join(","))
            }
            PathElement::Value(v) => format!("v:{v}"),
            PathElement::Index(i) => format!("i:{i}"),
        }
    }

    /// Parses one `FieldsV1` key (not `.`).
    pub fn decode(text: &str) -> Result<Self, FieldsError> {
        let bad = || FieldsError::BadElement(text.to_owned());
        let (prefix, rest) = text.split_once(':').ok_or_else(bad)?;
        match prefix {
            "f" => Ok(PathElement::Field(rest.to_owned())),
            "k" => {
                let Value::Object(map) = serde_json::from_str::<Value>(rest).map_err(|_| bad())?
                else {
                    return Err(bad());
                };
                if map.is_empty() {
                    return Err(bad());
                }
                Ok(PathElement::key(
                    map.iter().map(|(k, v)| (k.clone(), v)).collect(),
                ))
            }
            "v" => {
                let v: Value = serde_json::from_str(rest).map_err(|_| bad())?;
                Ok(PathElement::value(&v))
            }
            "i" => rest.parse().map(PathElement::Index).map_err(|_| bad()),
            _ => Err(bad()),
        }
    }
}

/// Upstream's printing of paths in conflict messages: `.spec.replicas`,
/// `.spec.containers[name="web"].image`, `[=value]`, `[3]`.
impl fmt::Display for PathElement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathElement::Field(name) => write!(f, ".{name}"),
            PathElement::Key(fields) => {
                let parts: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
                write!(f, "[{}]", parts.join(","))
            }
            PathElement::Value(v) => write!(f, "[={v}]"),
            PathElement::Index(i) => write!(f, "[{i}]"),
        }
    }
}

fn compact(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// A path from the object's root.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Path(pub Vec<PathElement>);

impl Path {
    /// The path of a field under the root (`Path::field("spec")`).
    pub fn field(name: &str) -> Self {
        Path(vec![PathElement::Field(name.to_owned())])
    }

    /// This path extended by one element.
    pub fn child(&self, element: PathElement) -> Self {
        let mut p = self.0.clone();
        p.push(element);
        Path(p)
    }

    /// Whether `self` is `other` or lies under it.
    pub fn starts_with(&self, other: &Path) -> bool {
        self.0.starts_with(&other.0)
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.0 {
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Why a `FieldsV1` value was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FieldsError {
    /// A node that is not a JSON object.
    #[error("FieldsV1 nodes must be objects")]
    NotAnObject,
    /// A key that is not `.`, `f:`, `k:`, `v:` or `i:` followed by a valid value.
    #[error("invalid FieldsV1 path element {0:?}")]
    BadElement(String),
    /// Deeper than [`MAX_DEPTH`].
    #[error("FieldsV1 nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// A set of paths.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSet(BTreeSet<Path>);

impl FieldSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a path.
    pub fn insert(&mut self, path: Path) {
        self.0.insert(path);
    }

    /// Whether the set holds `path`.
    pub fn contains(&self, path: &Path) -> bool {
        self.0.contains(path)
    }

    /// Whether the set holds nothing.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many paths.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The paths, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &Path> {
        self.0.iter()
    }

    /// Paths in either.
    pub fn union(&self, other: &FieldSet) -> FieldSet {
        FieldSet(self.0.union(&other.0).cloned().collect())
    }

    /// Paths in `self` but not in `other`.
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        FieldSet(self.0.difference(&other.0).cloned().collect())
    }

    /// Paths in both.
    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        FieldSet(self.0.intersection(&other.0).cloned().collect())
    }

    /// Keeps the paths `keep` accepts.
    pub fn retain(&mut self, keep: impl Fn(&Path) -> bool) {
        self.0.retain(|p| keep(p));
    }

    /// Whether some path of the set lies strictly under `prefix`.
    pub fn has_descendant(&self, prefix: &Path) -> bool {
        self.0
            .range(prefix.clone()..)
            .skip_while(|p| *p == prefix)
            .take_while(|p| p.starts_with(prefix))
            .next()
            .is_some()
    }

    /// The wire form (`fieldsV1`).
    pub fn to_fields_v1(&self) -> Value {
        #[derive(Default)]
        struct Node {
            member: bool,
            children: BTreeMap<String, Node>,
        }
        fn render(node: &Node) -> Value {
            let mut map = Map::new();
            if node.member && !node.children.is_empty() {
                map.insert(".".into(), Value::Object(Map::new()));
            }
            for (k, child) in &node.children {
                map.insert(k.clone(), render(child));
            }
            Value::Object(map)
        }
        let mut root = Node::default();
        for path in &self.0 {
            let mut node = &mut root;
            for e in &path.0 {
                node = node.children.entry(e.encode()).or_default();
            }
            node.member = true;
        }
        render(&root)
    }

    /// Parses the wire form.
    pub fn from_fields_v1(value: &Value) -> Result<FieldSet, FieldsError> {
        fn walk(
            value: &Value,
            path: &mut Vec<PathElement>,
            out: &mut FieldSet,
        ) -> Result<(), FieldsError> {
            if path.len() > MAX_DEPTH {
                return Err(FieldsError::TooDeep);
            }
            let Value::Object(map) = value else {
                return Err(FieldsError::NotAnObject);
            };
            if !path.is_empty() && (map.is_empty() || map.contains_key(".")) {
                out.insert(Path(path.clone()));
            }
            for (k, child) in map {
                if k == "." {
                    if !child.as_object().is_some_and(Map::is_empty) {
                        return Err(FieldsError::NotAnObject);
                    }
                    continue;
                }
                path.push(PathElement::decode(k)?);
                walk(child, path, out)?;
                path.pop();
            }
            Ok(())
        }
        let mut out = FieldSet::new();
        walk(value, &mut Vec::new(), &mut out)?;
        Ok(out)
    }
}

impl FromIterator<Path> for FieldSet {
    fn from_iter<I: IntoIterator<Item = Path>>(iter: I) -> Self {
        FieldSet(iter.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(name: &str) -> PathElement {
        PathElement::Field(name.into())
    }

    #[test]
    fn float_values_round_trip_exactly() {
        // Found by the property test: without serde_json's float_roundtrip the last digit moved.
        for v in [
            json!(964283.1450612645),
            json!(0.1),
            json!(1e300),
            json!(-2.5e-8),
        ] {
            let element = PathElement::value(&v);
            assert_eq!(
                PathElement::decode(&element.encode()).unwrap(),
                element,
                "{v}"
            );
        }
    }

    #[test]
    fn fields_v1_round_trips_with_dot_for_member_nodes() {
        let wire = json!({
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {
                "f:replicas": {},
                "f:template": {"f:spec": {"f:containers": {
                    "k:{\"name\":\"web\"}": {".": {}, "f:image": {}, "f:name": {}}
                }}},
                "f:finalizers": {"v:\"a\"": {}},
                "f:x": {"i:0": {}}
            }
        });
        let set = FieldSet::from_fields_v1(&wire).unwrap();
        let web = PathElement::key(vec![("name".into(), &json!("web"))]);
        let containers = Path(vec![f("spec"), f("template"), f("spec"), f("containers")]);
        assert!(set.contains(&containers.child(web.clone())));
        assert!(set.contains(&containers.child(web.clone()).child(f("image"))));
        assert!(set.contains(&Path(vec![f("metadata"), f("labels")])));
        assert!(!set.contains(&Path::field("spec")));
        assert!(!set.contains(&Path::field("metadata")));
        assert!(set.contains(&Path(vec![
            f("spec"),
            f("finalizers"),
            PathElement::Value("\"a\"".into())
        ])));
        assert_eq!(set.len(), 8);
        assert_eq!(set.to_fields_v1(), wire);
    }

    #[test]
    fn keys_are_sorted_and_printed_as_upstream() {
        let key = PathElement::key(vec![
            ("protocol".into(), &json!("TCP")),
            ("containerPort".into(), &json!(80)),
        ]);
        assert_eq!(key.encode(), r#"k:{"containerPort":80,"protocol":"TCP"}"#);
        let path = Path(vec![f("spec"), f("ports"), key, f("name")]);
        assert_eq!(
            path.to_string(),
            r#".spec.ports[containerPort=80,protocol="TCP"].name"#
        );
        assert_eq!(
            PathElement::decode(r#"k:{"protocol":"TCP","containerPort":80}"#).unwrap(),
            PathElement::key(vec![
                ("containerPort".into(), &json!(80)),
                ("protocol".into(), &json!("TCP"))
            ])
        );
    }

    #[test]
    fn bad_wire_forms_are_refused() {
        for bad in [
            json!({"x:y": {}}),
            json!({"f:a": 1}),
            json!({"k:notjson": {}}),
            json!({"k:{}": {}}),
            json!({"i:-1": {}}),
            json!({"f:a": {".": {"f:b": {}}}}),
            json!([]),
        ] {
            assert!(FieldSet::from_fields_v1(&bad).is_err(), "{bad}");
        }
        let mut deep = json!({});
        for _ in 0..200 {
            deep = json!({ "f:a": deep });
        }
        assert_eq!(FieldSet::from_fields_v1(&deep), Err(FieldsError::TooDeep));
    }

    #[test]
    fn set_algebra_and_descendants() {
        let a: FieldSet = [Path::field("a"), Path(vec![f("b"), f("c")])]
            .into_iter()
            .collect();
        let b: FieldSet = [Path::field("a")].into_iter().collect();
        assert_eq!(a.difference(&b).len(), 1);
        assert_eq!(a.intersection(&b), b);
        assert_eq!(a.union(&b), a);
        assert!(a.has_descendant(&Path::field("b")));
        assert!(!a.has_descendant(&Path::field("a")));
        assert!(!a.has_descendant(&Path(vec![f("b"), f("c")])));
    }
}
