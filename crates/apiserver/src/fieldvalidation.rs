//! Field validation of request bodies (`?fieldValidation=Ignore|Warn|Strict`): decoding JSON or
//! YAML while noting duplicate fields, finding fields the schema does not declare, and dropping
//! them, as kube-apiserver's decoding of built-in types does.
//!
//! * `Strict`: any unknown or duplicate field fails the request with 400 BadRequest,
//!   `strict decoding error: unknown field "spec.foo", duplicate field "spec.replicas"`.
//! * `Warn`: the request goes on, each problem becomes a `Warning` header text
//!   (`unknown field "spec.foo"`).
//! * `Ignore`: unknown fields are dropped silently.
//!
//! Field paths are written as upstream writes them: `spec.template.spec.containers[0].foo`.
//! Nesting is bounded by the decoders' recursion limit (128), reported as a decode error.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::openapi::{NodeShape, SchemaNode};

/// The `fieldValidation` directive of a write request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    /// Drop unknown fields silently.
    Ignore,
    /// Drop unknown fields and warn about each problem.
    Warn,
    /// Refuse the request when there is any problem (kubectl's default since 1.27).
    #[default]
    Strict,
}

impl FieldValidation {
    /// Parses the query parameter; an empty value means the server default (Strict).
    pub fn parse(value: &str) -> Result<Self, FieldValidationError> {
        match value {
            "" | "Strict" => Ok(Self::Strict),
            "Warn" => Ok(Self::Warn),
            "Ignore" => Ok(Self::Ignore),
            other => Err(FieldValidationError::UnknownDirective(other.to_owned())),
        }
    }
}

/// The encoding of a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// `application/json` (and the JSON patch types).
    Json,
    /// `application/yaml` (and `application/apply-patch+yaml`).
    Yaml,
}

/// A field the body should not have had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldProblem {
    /// The schema does not declare this field.
    Unknown(String),
    /// The field appears more than once in one object (the last value is kept).
    Duplicate(String),
}

impl fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown(p) => write!(f, "unknown field \"{p}\""),
            Self::Duplicate(p) => write!(f, "duplicate field \"{p}\""),
        }
    }
}

/// Why a body could not be accepted. All are 400 BadRequest.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FieldValidationError {
    /// Not valid JSON/YAML, too deeply nested, or not an object.
    #[error("{0}")]
    Decode(String),
    /// `fieldValidation=Strict` and the body has unknown or duplicate fields.
    #[error("strict decoding error: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    Strict(Vec<FieldProblem>),
    /// A `fieldValidation` value other than Ignore, Warn or Strict.
    #[error("fieldValidation must be one of \"Ignore\", \"Warn\" or \"Strict\", not {0:?}")]
    UnknownDirective(String),
}

impl FieldValidationError {
    /// The HTTP status to answer with.
    pub fn http_status(&self) -> u16 {
        400
    }
}

/// A decoded body: the object with unknown fields removed, and the problems found.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The object, unknown fields dropped.
    pub object: Value,
    /// Problems found (empty under Ignore).
    pub problems: Vec<FieldProblem>,
}

impl Decoded {
    /// The `Warning` header texts (for Warn; empty under Ignore).
    pub fn warnings(&self) -> Vec<String> {
        self.problems.iter().map(ToString::to_string).collect()
    }
}

/// Decodes a request body and validates its fields against `schema` (`None`: nothing is
/// unknown, only duplicates are found). The body must be an object.
pub fn decode_and_validate(
    body: &[u8],
    format: BodyFormat,
    schema: Option<SchemaNode<'_>>,
    mode: FieldValidation,
) -> Result<Decoded, FieldValidationError> {
    let (mut object, mut problems) = decode(body, format)?;
    if !object.is_object() {
        return Err(FieldValidationError::Decode(
            "the request body must be an object".into(),
        ));
    }
    if let Some(schema) = schema {
        prune_unknown(&mut object, schema, String::new(), &mut problems);
    }
    match mode {
        FieldValidation::Strict if !problems.is_empty() => {
            Err(FieldValidationError::Strict(problems))
        }
        FieldValidation::Ignore => Ok(Decoded {
            object,
            problems: Vec::new(),
        }),
        _ => Ok(Decoded { object, problems }),
    }
}

/// Validates the fields of an object built on the server (a patch's result) against `schema`,
/// as [`decode_and_validate`] does a body: unknown fields are dropped, and reported as `mode`
/// asks.
pub fn validate_value(
    mut object: Value,
    schema: SchemaNode<'_>,
    mode: FieldValidation,
) -> Result<Decoded, FieldValidationError> {
    let mut problems = Vec::new();
    prune_unknown(&mut object, schema, String::new(), &mut problems);
    match mode {
        FieldValidation::Strict if !problems.is_empty() => {
            Err(FieldValidationError::Strict(problems))
        }
        FieldValidation::Ignore => Ok(Decoded {
            object,
            problems: Vec::new(),
        }),
        _ => Ok(Decoded { object, problems }),
    }
}

/// Decodes JSON or YAML into a value, noting duplicate fields.
pub fn decode(
    body: &[u8],
    format: BodyFormat,
) -> Result<(Value, Vec<FieldProblem>), FieldValidationError> {
    let problems = RefCell::new(Vec::new());
    let seed = ValueSeed {
        problems: &problems,
        path: String::new(),
    };
    let value = match format {
        BodyFormat::Json => {
            let mut de = serde_json::Deserializer::from_slice(body);
            let v = seed
                .deserialize(&mut de)
                .map_err(|e| FieldValidationError::Decode(e.to_string()))?;
            de.end()
                .map_err(|e| FieldValidationError::Decode(e.to_string()))?;
            v
        }
        BodyFormat::Yaml => {
            let de = serde_yaml::Deserializer::from_slice(body);
            seed.deserialize(de)
                .map_err(|e| FieldValidationError::Decode(e.to_string()))?
        }
    };
    Ok((value, problems.into_inner()))
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Removes the fields `schema` does not declare, recording each as unknown.
fn prune_unknown(
    value: &mut Value,
    schema: SchemaNode<'_>,
    path: String,
    problems: &mut Vec<FieldProblem>,
) {
    let mut found = Vec::new();
    // Iterative over an explicit stack: bodies are bounded by the decoder, values built in
    // memory are not.
    let mut stack = vec![(value, schema, path)];
    while let Some((value, schema, path)) = stack.pop() {
        if schema.preserves_unknown_fields() && schema.property_names().is_empty() {
            continue;
        }
        match (value, schema.shape()) {
            (Value::Object(map), NodeShape::Struct) => {
                if !schema.preserves_unknown_fields() {
                    let unknown: Vec<String> = map
                        .keys()
                        .filter(|k| schema.property(k).is_none())
                        .cloned()
                        .collect();
                    for k in unknown {
                        map.remove(&k);
                        found.push(join(&path, &k));
                    }
                }
                for (k, v) in map.iter_mut() {
                    if let Some(field) = schema.property(k) {
                        stack.push((v, field, join(&path, k)));
                    }
                }
            }
            (Value::Object(map), NodeShape::Map) => {
                if let Some(values) = schema.additional_properties() {
                    for (k, v) in map.iter_mut() {
                        stack.push((v, values, join(&path, k)));
                    }
                }
            }
            (Value::Array(items), NodeShape::List) => {
                if let Some(item_schema) = schema.items() {
                    for (i, v) in items.iter_mut().enumerate() {
                        stack.push((v, item_schema, format!("{path}[{i}]")));
                    }
                }
            }
            // Type mismatches are validation's business, not field validation's.
            _ => {}
        }
    }
    // Objects are sorted maps, so document order is lost; report sorted by path.
    found.sort();
    problems.extend(found.into_iter().map(FieldProblem::Unknown));
}

/// Builds a `Value` from any serde format, recording duplicate keys with their path.
struct ValueSeed<'p> {
    problems: &'p RefCell<Vec<FieldProblem>>,
    path: String,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON or YAML value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom(format!("{v} is not a JSON number")))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(ValueSeed {
            problems: self.problems,
            path: format!("{}[{}]", self.path, out.len()),
        })? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let path = join(&self.path, &key);
            let value = map.next_value_seed(ValueSeed {
                problems: self.problems,
                path: path.clone(),
            })?;
            if out.insert(key, value).is_some() {
                self.problems
                    .borrow_mut()
                    .push(FieldProblem::Duplicate(path));
            }
        }
        Ok(Value::Object(out))
    }
}

/// Object keys: strings, and the scalars YAML allows as keys, written as strings.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = String;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_any(self)
    }
}

impl Visitor<'_> for KeySeed {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }

    fn visit_string<E>(self, v: String) -> Result<String, E> {
        Ok(v)
    }

    fn visit_bool<E>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_i64<E>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_u64<E>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_f64<E>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_unit<E>(self) -> Result<String, E> {
        Ok("null".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openapi::{GroupVersionKind, Schemas};
    use proptest::prelude::*;

    fn deployment(schemas: &Schemas) -> SchemaNode<'_> {
        schemas
            .for_kind(&GroupVersionKind::new("apps", "v1", "Deployment"))
            .unwrap()
    }

    const BODY: &str = r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web","labels":{"a":"b"}},
        "spec":{"replicas":1,"replicas":2,"foo":1,"selector":{"matchLabels":{"a":"b"}},
        "template":{"metadata":{"labels":{"a":"b"}},"spec":{"containers":[{"name":"c","image":"i","bar":true}]}}}}"#;

    #[test]
    fn strict_refuses_unknown_and_duplicate_fields_with_upstreams_message() {
        let schemas = Schemas::builtin();
        let err = decode_and_validate(
            BODY.as_bytes(),
            BodyFormat::Json,
            Some(deployment(&schemas)),
            FieldValidation::Strict,
        )
        .unwrap_err();
        assert_eq!(err.http_status(), 400);
        assert_eq!(
            err.to_string(),
            "strict decoding error: duplicate field \"spec.replicas\", unknown field \"spec.foo\", \
             unknown field \"spec.template.spec.containers[0].bar\""
        );
    }

    #[test]
    fn warn_keeps_going_drops_unknown_fields_and_lists_warnings() {
        let schemas = Schemas::builtin();
        let decoded = decode_and_validate(
            BODY.as_bytes(),
            BodyFormat::Json,
            Some(deployment(&schemas)),
            FieldValidation::Warn,
        )
        .unwrap();
        assert_eq!(decoded.warnings().len(), 3);
        assert!(
            decoded
                .warnings()
                .contains(&"unknown field \"spec.foo\"".to_owned())
        );
        assert!(decoded.object["spec"].get("foo").is_none());
        assert_eq!(decoded.object["spec"]["replicas"], 2);
        assert!(
            decoded.object["spec"]["template"]["spec"]["containers"][0]
                .get("bar")
                .is_none()
        );
        // Labels are a map: any key is known.
        assert_eq!(decoded.object["metadata"]["labels"]["a"], "b");
    }

    #[test]
    fn ignore_drops_unknown_fields_silently() {
        let schemas = Schemas::builtin();
        let decoded = decode_and_validate(
            BODY.as_bytes(),
            BodyFormat::Json,
            Some(deployment(&schemas)),
            FieldValidation::Ignore,
        )
        .unwrap();
        assert!(decoded.problems.is_empty());
        assert!(decoded.object["spec"].get("foo").is_none());
    }

    #[test]
    fn yaml_bodies_are_validated_the_same_way() {
        let schemas = Schemas::builtin();
        let yaml = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 1\n  replicas: 3\n  strategy:\n    type: Recreate\n    foo: x\n";
        let decoded = decode_and_validate(
            yaml.as_bytes(),
            BodyFormat::Yaml,
            Some(deployment(&schemas)),
            FieldValidation::Warn,
        )
        .unwrap();
        assert_eq!(
            decoded.warnings(),
            vec![
                "duplicate field \"spec.replicas\"",
                "unknown field \"spec.strategy.foo\""
            ]
        );
        assert_eq!(decoded.object["spec"]["replicas"], 3);
    }

    #[test]
    fn embedded_objects_and_preserved_fields_are_not_unknown() {
        let schemas = Schemas::builtin();
        let revision = schemas
            .for_kind(&GroupVersionKind::new("apps", "v1", "ControllerRevision"))
            .unwrap();
        let body = br#"{"apiVersion":"apps/v1","kind":"ControllerRevision","metadata":{"name":"r"},"revision":1,"data":{"anything":{"goes":1}}}"#;
        let decoded = decode_and_validate(
            body,
            BodyFormat::Json,
            Some(revision),
            FieldValidation::Strict,
        )
        .unwrap();
        assert_eq!(decoded.object["data"]["anything"]["goes"], 1);
    }

    #[test]
    fn bad_bodies_are_clear_errors() {
        for (body, format) in [
            (&b"{\"a\":"[..], BodyFormat::Json),
            (&b"[1,2]"[..], BodyFormat::Json),
            (&b"{} trailing"[..], BodyFormat::Json),
            (&b"a: [1"[..], BodyFormat::Yaml),
            (&b"- 1"[..], BodyFormat::Yaml),
        ] {
            let err = decode_and_validate(body, format, None, FieldValidation::Strict).unwrap_err();
            assert!(matches!(err, FieldValidationError::Decode(_)), "{err}");
        }
        assert!(FieldValidation::parse("Loud").is_err());
        assert_eq!(FieldValidation::parse("").unwrap(), FieldValidation::Strict);
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let err = decode(deep.as_bytes(), BodyFormat::Json).unwrap_err();
        assert!(err.to_string().contains("recursion limit"), "{err}");
        let deep_obj = format!("{}1{}", "{\"a\":".repeat(100_000), "}".repeat(100_000));
        assert!(decode(deep_obj.as_bytes(), BodyFormat::Json).is_err());
        let deep_yaml = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(decode(deep_yaml.as_bytes(), BodyFormat::Yaml).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..256)) {
            let schemas = Schemas::builtin();
            for format in [BodyFormat::Json, BodyFormat::Yaml] {
                let _ = decode_and_validate(&body, format, Some(deployment(&schemas)), FieldValidation::Warn);
            }
        }

        #[test]
        fn arbitrary_json_like_text_never_panics(body in r#"[\[\]{}":,a-z0-9 \-]{0,200}"#) {
            let schemas = Schemas::builtin();
            for format in [BodyFormat::Json, BodyFormat::Yaml] {
                let _ = decode_and_validate(body.as_bytes(), format, Some(deployment(&schemas)), FieldValidation::Strict);
            }
        }
    }
}
