//! A custom resource's structural schema (`openAPIV3Schema` of one CRD version) at work:
//! validating objects against it, applying its `default`s, and checking that a CRD's schema is
//! structural enough to serve. Errors read as upstream's apiextensions validation prints them
//! (`spec.replicas: Invalid value: "string": spec.replicas in body must be of type integer:
//! "string"`), because that is what users and scripts see from kube-apiserver.
//!
//! Unknown fields are not this module's business: the request decoder prunes them against the
//! same schema (see [`crate::fieldvalidation`]).

use serde_json::{Map, Value, json};

use crate::registry::validation::{ErrorType, FieldError, FieldErrors};

/// The deepest schema nesting looked at; objects deeper than their schema describes are
/// bounded by the decoder anyway, this bounds hostile schemas.
const MAX_DEPTH: usize = 64;

/// The JSON type name upstream reports for a value (`integer` for whole numbers).
fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(n) if n.as_f64().is_some_and(|f| f.fract() == 0.0) => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn flag(schema: &Value, name: &str) -> bool {
    schema.get(name).and_then(Value::as_bool).unwrap_or(false)
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn number(value: &Value) -> Option<f64> {
    value.as_f64()
}

/// Prints a bound as upstream does (`1`, not `1.0`).
fn bound(value: &Value) -> String {
    match value.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
        Some(f) => f.to_string(),
        None => value.to_string(),
    }
}

/// Validates `value` (found at `path`, `""` for the root) against `schema`.
pub fn validate(value: &Value, schema: &Value, path: &str, errors: &mut FieldErrors) {
    validate_at(value, schema, path, 0, errors);
}

fn validate_at(value: &Value, schema: &Value, path: &str, depth: usize, errors: &mut FieldErrors) {
    if depth > MAX_DEPTH || !schema.is_object() {
        return;
    }
    if value.is_null() {
        if flag(schema, "nullable") || schema.get("type").is_none() {
            return;
        }
        errors.push(type_error(path, schema_type(schema), value));
        return;
    }
    let int_or_string = flag(schema, "x-kubernetes-int-or-string");
    if int_or_string {
        if !matches!(type_name(value), "integer" | "string") {
            errors.push(FieldError::invalid(
                path,
                json!(type_name(value)),
                format!(
                    "{} in body must be of type integer,string: {:?}",
                    display(path),
                    type_name(value)
                ),
            ));
            return;
        }
    } else if let Some(want) = schema.get("type").and_then(Value::as_str) {
        let have = type_name(value);
        let fits = have == want || (want == "number" && have == "integer");
        if !fits {
            errors.push(type_error(path, want, value));
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let texts: Vec<String> = allowed
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        errors.push(FieldError::not_supported(path, value.clone(), &refs));
    }
    match value {
        Value::Object(map) => validate_object(map, schema, path, depth, errors),
        Value::Array(items) => validate_array(items, schema, path, depth, errors),
        Value::String(s) => validate_string(s, schema, path, errors),
        Value::Number(_) => validate_number(value, schema, path, errors),
        _ => {}
    }
    validate_combinators(value, schema, path, depth, errors);
}

fn schema_type(schema: &Value) -> &str {
    schema.get("type").and_then(Value::as_str).unwrap_or("")
}

/// Upstream names the root `<root>` only in messages about the whole body; fields by path.
fn display(path: &str) -> &str {
    if path.is_empty() { "body" } else { path }
}

fn type_error(path: &str, want: &str, value: &Value) -> FieldError {
    let have = type_name(value);
    FieldError::invalid(
        path,
        json!(have),
        format!("{} in body must be of type {want}: {have:?}", display(path)),
    )
}

fn validate_object(
    map: &Map<String, Value>,
    schema: &Value,
    path: &str,
    depth: usize,
    errors: &mut FieldErrors,
) {
    for required in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if map.get(required).is_none_or(Value::is_null) {
            errors.push(FieldError::required(child(path, required), ""));
        }
    }
    if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64)
        && map.len() as u64 > max
    {
        errors.push(FieldError {
            kind: ErrorType::TooMany,
            field: path.to_owned(),
            value: json!(map.len()),
            detail: format!("must have at most {max} items"),
        });
    }
    if let Some(min) = schema.get("minProperties").and_then(Value::as_u64)
        && (map.len() as u64) < min
    {
        errors.push(FieldError::invalid(
            path,
            json!(map.len()),
            format!("should have at least {min} properties"),
        ));
    }
    let properties = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties").filter(|v| v.is_object());
    for (key, item) in map {
        // The standard fields of the object itself are checked by the generic path.
        if depth == 0 && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        let item_schema = properties.and_then(|p| p.get(key)).or(additional);
        if let Some(item_schema) = item_schema {
            validate_at(item, item_schema, &child(path, key), depth + 1, errors);
        }
    }
}

fn validate_array(
    items: &[Value],
    schema: &Value,
    path: &str,
    depth: usize,
    errors: &mut FieldErrors,
) {
    if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
        && items.len() as u64 > max
    {
        errors.push(FieldError {
            kind: ErrorType::TooMany,
            field: path.to_owned(),
            value: json!(items.len()),
            detail: format!("must have at most {max} items"),
        });
    }
    if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
        && (items.len() as u64) < min
    {
        errors.push(FieldError::invalid(
            path,
            json!(items.len()),
            format!("should have at least {min} items"),
        ));
    }
    if flag(schema, "uniqueItems") {
        for (i, item) in items.iter().enumerate() {
            if items[..i].contains(item) {
                errors.push(FieldError::duplicate(format!("{path}[{i}]"), item.clone()));
            }
        }
    }
    if let Some(item_schema) = schema.get("items").filter(|s| s.is_object()) {
        for (i, item) in items.iter().enumerate() {
            validate_at(
                item,
                item_schema,
                &format!("{path}[{i}]"),
                depth + 1,
                errors,
            );
        }
    }
}

fn validate_string(s: &str, schema: &Value, path: &str, errors: &mut FieldErrors) {
    let len = s.chars().count() as u64;
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
        && len > max
    {
        errors.push(FieldError::too_long(path, max as usize));
    }
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
        && len < min
    {
        errors.push(FieldError::invalid(
            path,
            json!(s),
            format!("should be at least {min} chars long"),
        ));
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        // A pattern that does not compile was refused when the CRD was written.
        if let Ok(re) = regex::Regex::new(pattern)
            && !re.is_match(s)
        {
            errors.push(FieldError::invalid(
                path,
                json!(s),
                format!("should match '{pattern}'"),
            ));
        }
    }
}

fn validate_number(value: &Value, schema: &Value, path: &str, errors: &mut FieldErrors) {
    let Some(n) = number(value) else { return };
    if let Some(max) = schema.get("maximum")
        && let Some(m) = number(max)
    {
        if flag(schema, "exclusiveMaximum") && n >= m {
            errors.push(FieldError::invalid(
                path,
                value.clone(),
                format!("should be less than {}", bound(max)),
            ));
        } else if n > m {
            errors.push(FieldError::invalid(
                path,
                value.clone(),
                format!("should be less than or equal to {}", bound(max)),
            ));
        }
    }
    if let Some(min) = schema.get("minimum")
        && let Some(m) = number(min)
    {
        if flag(schema, "exclusiveMinimum") && n <= m {
            errors.push(FieldError::invalid(
                path,
                value.clone(),
                format!("should be greater than {}", bound(min)),
            ));
        } else if n < m {
            errors.push(FieldError::invalid(
                path,
                value.clone(),
                format!("should be greater than or equal to {}", bound(min)),
            ));
        }
    }
    if let Some(step) = schema.get("multipleOf").and_then(Value::as_f64)
        && step > 0.0
        && (n / step).fract().abs() > f64::EPSILON
    {
        errors.push(FieldError::invalid(
            path,
            value.clone(),
            format!("should be a multiple of {}", bound(&schema["multipleOf"])),
        ));
    }
}

/// `allOf`, `anyOf`, `oneOf` and `not`: value validations over the same value.
fn validate_combinators(
    value: &Value,
    schema: &Value,
    path: &str,
    depth: usize,
    errors: &mut FieldErrors,
) {
    let passes = |s: &Value| {
        let mut e = Vec::new();
        validate_at(value, s, path, depth + 1, &mut e);
        e.is_empty()
    };
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for s in all {
            validate_at(value, s, path, depth + 1, errors);
        }
    }
    if let Some(any) = schema.get("anyOf").and_then(Value::as_array)
        && !any.is_empty()
        && !any.iter().any(passes)
    {
        errors.push(FieldError::invalid(
            path,
            value.clone(),
            "must validate at least one schema (anyOf)",
        ));
    }
    if let Some(one) = schema.get("oneOf").and_then(Value::as_array)
        && !one.is_empty()
        && one.iter().filter(|s| passes(s)).count() != 1
    {
        errors.push(FieldError::invalid(
            path,
            value.clone(),
            "must validate one and only one schema (oneOf)",
        ));
    }
    if let Some(not) = schema.get("not").filter(|s| s.is_object())
        && passes(not)
    {
        errors.push(FieldError::invalid(
            path,
            value.clone(),
            "must not validate the schema (not)",
        ));
    }
}

/// Fills in the schema's `default`s where the object lacks a value (or has null where null is
/// not allowed), from the root down, as upstream's structural defaulting does.
pub fn apply_defaults(value: &mut Value, schema: &Value) {
    apply_defaults_at(value, schema, 0);
}

fn apply_defaults_at(value: &mut Value, schema: &Value, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    match value {
        Value::Object(map) => {
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                for (key, prop) in properties {
                    let Some(default) = prop.get("default") else {
                        continue;
                    };
                    let missing = match map.get(key) {
                        None => true,
                        Some(Value::Null) => !flag(prop, "nullable"),
                        Some(_) => false,
                    };
                    if missing {
                        map.insert(key.clone(), default.clone());
                    }
                }
                for (key, item) in map.iter_mut() {
                    if depth == 0 && key == "metadata" {
                        continue;
                    }
                    if let Some(prop) = properties.get(key) {
                        apply_defaults_at(item, prop, depth + 1);
                    }
                }
            } else if let Some(additional) =
                schema.get("additionalProperties").filter(|s| s.is_object())
            {
                for item in map.values_mut() {
                    apply_defaults_at(item, additional, depth + 1);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items").filter(|s| s.is_object()) {
                for item in items {
                    apply_defaults_at(item, item_schema, depth + 1);
                }
            }
        }
        _ => {}
    }
}

/// The types a structural schema may name.
const TYPES: &[&str] = &["array", "boolean", "integer", "number", "object", "string"];

/// Checks a CRD version's `openAPIV3Schema` (at `path`) the way upstream refuses non-structural
/// schemas and bad value validations: every node has a `type` (unless it is int-or-string or
/// preserves unknown fields), the root is an object, patterns compile, defaults validate.
pub fn check_structural(schema: &Value, path: &str, errors: &mut FieldErrors) {
    if !schema.is_object() {
        errors.push(FieldError::required(path, "schemas are required"));
        return;
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => {}
        None if flag(schema, "x-kubernetes-preserve-unknown-fields") => {}
        None => errors.push(FieldError::required(
            child(path, "type"),
            "must not be empty at the root",
        )),
        Some(other) => errors.push(FieldError::invalid(
            child(path, "type"),
            json!(other),
            "must be object at the root",
        )),
    }
    check_node(schema, path, 0, errors);
}

fn check_node(schema: &Value, path: &str, depth: usize, errors: &mut FieldErrors) {
    if depth > MAX_DEPTH {
        errors.push(FieldError::forbidden(path, "the schema nests too deeply"));
        return;
    }
    let Some(map) = schema.as_object() else {
        errors.push(FieldError::invalid(
            path,
            json!(type_name(schema)),
            "must be a schema object",
        ));
        return;
    };
    let typ = map.get("type").and_then(Value::as_str);
    match typ {
        Some(t) if !TYPES.contains(&t) => {
            errors.push(FieldError::not_supported(
                child(path, "type"),
                json!(t),
                TYPES,
            ));
        }
        None if depth > 0
            && !flag(schema, "x-kubernetes-int-or-string")
            && !flag(schema, "x-kubernetes-preserve-unknown-fields") =>
        {
            errors.push(FieldError::required(
                child(path, "type"),
                "must not be empty for specified object fields",
            ));
        }
        _ => {}
    }
    if let Some(pattern) = map.get("pattern").and_then(Value::as_str)
        && let Err(e) = regex::Regex::new(pattern)
    {
        errors.push(FieldError::invalid(
            child(path, "pattern"),
            json!(pattern),
            format!("must be a valid regular expression: {e}"),
        ));
    }
    if map.contains_key("properties") && map.contains_key("additionalProperties") {
        errors.push(FieldError::forbidden(
            child(path, "additionalProperties"),
            "additionalProperties and properties are mutual exclusive",
        ));
    }
    if let Some(props) = map.get("properties") {
        match props.as_object() {
            Some(props) => {
                for (key, prop) in props {
                    check_node(
                        prop,
                        &format!("{path}.properties[{key}]"),
                        depth + 1,
                        errors,
                    );
                }
            }
            None => errors.push(FieldError::invalid(
                child(path, "properties"),
                json!(type_name(props)),
                "must be an object",
            )),
        }
    }
    if let Some(items) = map.get("items") {
        check_node(items, &child(path, "items"), depth + 1, errors);
    } else if typ == Some("array") {
        errors.push(FieldError::required(
            child(path, "items"),
            "must be specified",
        ));
    }
    if let Some(additional) = map.get("additionalProperties").filter(|v| v.is_object()) {
        check_node(
            additional,
            &child(path, "additionalProperties"),
            depth + 1,
            errors,
        );
    }
    if let Some(default) = map.get("default") {
        let mut default = default.clone();
        apply_defaults_at(&mut default, schema, depth);
        let mut found = Vec::new();
        validate_at(&default, schema, "", depth, &mut found);
        for e in found {
            errors.push(FieldError::invalid(
                child(path, "default"),
                default.clone(),
                e.to_string(),
            ));
        }
    }
}

/// A column's JSONPath (`.spec.replicas`, `.status.conditions[?(@.type=="Ready")].status`,
/// `.spec.ports[*].port`, `.metadata.labels['app']`), the subset printer columns use.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonPath(Vec<Step>);

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Index(usize),
    All,
    Filter { key: Vec<String>, value: Value },
}

impl JsonPath {
    /// Parses a printer column path; the error says what is wrong.
    pub fn parse(text: &str) -> Result<JsonPath, String> {
        let text = text.trim();
        let text = text
            .strip_prefix('{')
            .and_then(|t| t.strip_suffix('}'))
            .unwrap_or(text);
        let text = text.strip_prefix('$').unwrap_or(text);
        if !text.starts_with('.') && !text.starts_with('[') {
            return Err("must be a simple json path starting with .".into());
        }
        let chars: Vec<char> = text.chars().collect();
        let mut steps = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '.' => {
                    let start = i + 1;
                    let mut end = start;
                    while end < chars.len() && chars[end] != '.' && chars[end] != '[' {
                        end += 1;
                    }
                    if end == start {
                        return Err(format!("empty field name at position {start}"));
                    }
                    steps.push(Step::Field(chars[start..end].iter().collect()));
                    i = end;
                }
                '[' => {
                    let close = (i..chars.len())
                        .find(|&j| chars[j] == ']' && !inside_quotes(&chars[i..j]))
                        .ok_or_else(|| format!("unclosed [ at position {i}"))?;
                    let inner: String = chars[i + 1..close].iter().collect();
                    steps.push(parse_bracket(inner.trim())?);
                    i = close + 1;
                }
                c => return Err(format!("unexpected {c:?} at position {i}")),
            }
        }
        Ok(JsonPath(steps))
    }

    /// Every value the path selects in `obj`, in order.
    pub fn find<'a>(&self, obj: &'a Value) -> Vec<&'a Value> {
        let mut current = vec![obj];
        for step in &self.0 {
            let mut next = Vec::new();
            for v in current {
                match step {
                    Step::Field(name) => next.extend(v.get(name.as_str())),
                    Step::Index(n) => next.extend(v.get(*n)),
                    Step::All => match v {
                        Value::Array(items) => next.extend(items.iter()),
                        Value::Object(map) => next.extend(map.values()),
                        _ => {}
                    },
                    Step::Filter { key, value } => {
                        for item in v.as_array().into_iter().flatten() {
                            let mut at = Some(item);
                            for k in key {
                                at = at.and_then(|a| a.get(k.as_str()));
                            }
                            if at == Some(value) {
                                next.push(item);
                            }
                        }
                    }
                }
            }
            current = next;
        }
        current
    }
}

fn inside_quotes(chars: &[char]) -> bool {
    chars.iter().filter(|c| **c == '\'' || **c == '"').count() % 2 == 1
}

fn parse_bracket(inner: &str) -> Result<Step, String> {
    if inner == "*" {
        return Ok(Step::All);
    }
    if let Ok(n) = inner.parse::<usize>() {
        return Ok(Step::Index(n));
    }
    if let Some(quoted) = unquote(inner) {
        return Ok(Step::Field(quoted));
    }
    if let Some(filter) = inner
        .strip_prefix("?(")
        .and_then(|f| f.strip_suffix(')'))
        .map(str::trim)
    {
        let (lhs, rhs) = filter
            .split_once("==")
            .ok_or_else(|| format!("unsupported filter {filter:?}: only @.field==value"))?;
        let key: Vec<String> = lhs
            .trim()
            .strip_prefix("@.")
            .ok_or_else(|| format!("filter {filter:?} must test a field of @"))?
            .split('.')
            .map(str::to_owned)
            .collect();
        let rhs = rhs.trim();
        let value = match unquote(rhs) {
            Some(s) => Value::String(s),
            None => serde_json::from_str(rhs)
                .map_err(|_| format!("filter value {rhs:?} is not a quoted string or a number"))?,
        };
        return Ok(Step::Filter { key, value });
    }
    Err(format!("unsupported subscript [{inner}]"))
}

fn unquote(s: &str) -> Option<String> {
    let s = s.trim();
    for q in ['\'', '"'] {
        if s.len() >= 2 && s.starts_with(q) && s.ends_with(q) {
            return Some(s[1..s.len() - 1].to_owned());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crontab_schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["cronSpec"],
                    "properties": {
                        "cronSpec": {"type": "string", "pattern": "^(\\d+|\\*)(/\\d+)?(\\s+(\\d+|\\*)(/\\d+)?){4}$"},
                        "image": {"type": "string", "maxLength": 20},
                        "replicas": {"type": "integer", "minimum": 1, "maximum": 10, "default": 1},
                        "mode": {"type": "string", "enum": ["a", "b"]},
                        "tags": {"type": "array", "maxItems": 2, "items": {"type": "string"}},
                        "port": {"x-kubernetes-int-or-string": true},
                        "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "limits": {"type": "object", "additionalProperties": {"type": "integer"}},
                    }
                }
            }
        })
    }

    fn errors_of(obj: Value) -> Vec<String> {
        let mut errors = Vec::new();
        validate(&obj, &crontab_schema(), "", &mut errors);
        errors.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_valid_object_passes() {
        let obj = json!({"apiVersion": "x/v1", "kind": "CronTab", "metadata": {"name": "a"},
            "spec": {"cronSpec": "* * * * */5", "image": "busybox", "replicas": 3, "mode": "a",
                "tags": ["x"], "port": "http", "extra": {"anything": [1]}, "limits": {"cpu": 2}}});
        assert_eq!(errors_of(obj), Vec::<String>::new());
    }

    #[test]
    fn errors_read_as_upstreams() {
        let obj = json!({"spec": {"cronSpec": "nope", "image": "a-very-long-image-name-indeed",
            "replicas": "three", "mode": "c", "tags": ["a", "b", "c"], "port": true,
            "limits": {"cpu": "x"}}});
        let errors = errors_of(obj);
        assert!(errors.contains(&"spec.replicas: Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\"".to_owned()), "{errors:?}");
        assert!(
            errors.contains(
                &"spec.mode: Unsupported value: \"c\": supported values: \"a\", \"b\"".to_owned()
            ),
            "{errors:?}"
        );
        assert!(
            errors.contains(&"spec.image: Too long: must have at most 20 bytes".to_owned()),
            "{errors:?}"
        );
        assert!(
            errors.contains(&"spec.tags: Too many: 3: must have at most 2 items".to_owned()),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("spec.cronSpec: Invalid value: \"nope\": should match")),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("spec.port: Invalid value: \"boolean\"")),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("spec.limits.cpu: Invalid value")),
            "{errors:?}"
        );
        let missing = errors_of(json!({"spec": {"replicas": 0}}));
        assert!(
            missing.contains(&"spec.cronSpec: Required value".to_owned()),
            "{missing:?}"
        );
        assert!(
            missing.contains(
                &"spec.replicas: Invalid value: 0: should be greater than or equal to 1".to_owned()
            ),
            "{missing:?}"
        );
    }

    #[test]
    fn defaults_fill_missing_fields_only() {
        let mut obj = json!({"spec": {"cronSpec": "x"}});
        apply_defaults(&mut obj, &crontab_schema());
        assert_eq!(obj["spec"]["replicas"], json!(1));
        let mut obj = json!({"spec": {"replicas": 4}});
        apply_defaults(&mut obj, &crontab_schema());
        assert_eq!(obj["spec"]["replicas"], json!(4));
        // No spec, no spec default: nothing appears.
        let mut obj = json!({"metadata": {}});
        apply_defaults(&mut obj, &crontab_schema());
        assert_eq!(obj, json!({"metadata": {}}));
    }

    #[test]
    fn non_structural_schemas_are_refused() {
        let mut errors = Vec::new();
        check_structural(&crontab_schema(), "s", &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        let bad = json!({"type": "object", "properties": {"spec": {"properties": {}},
            "list": {"type": "array"}, "p": {"type": "string", "pattern": "("},
            "d": {"type": "integer", "default": "x"}, "t": {"type": "float"}}});
        let mut errors = Vec::new();
        check_structural(&bad, "s", &mut errors);
        let texts: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(texts.contains(&"s.properties[spec].type: Required value: must not be empty for specified object fields".to_owned()), "{texts:?}");
        assert!(
            texts.contains(
                &"s.properties[list].items: Required value: must be specified".to_owned()
            ),
            "{texts:?}"
        );
        assert!(
            texts
                .iter()
                .any(|t| t.starts_with("s.properties[p].pattern: Invalid value")),
            "{texts:?}"
        );
        assert!(
            texts
                .iter()
                .any(|t| t.starts_with("s.properties[d].default: Invalid value")),
            "{texts:?}"
        );
        assert!(
            texts
                .iter()
                .any(|t| t.starts_with("s.properties[t].type: Unsupported value")),
            "{texts:?}"
        );
        let mut errors = Vec::new();
        check_structural(&json!({"type": "string"}), "s", &mut errors);
        assert_eq!(errors.len(), 1);
    }

    #[test]
    fn json_paths_find_what_columns_show() {
        let obj = json!({"spec": {"replicas": 3, "ports": [{"port": 80}, {"port": 443}]},
            "metadata": {"labels": {"app.kubernetes.io/name": "web"}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "X", "status": "False"}]}});
        let find = |p: &str| -> Vec<Value> {
            JsonPath::parse(p)
                .unwrap()
                .find(&obj)
                .into_iter()
                .cloned()
                .collect()
        };
        assert_eq!(find(".spec.replicas"), vec![json!(3)]);
        assert_eq!(find(".spec.ports[1].port"), vec![json!(443)]);
        assert_eq!(find(".spec.ports[*].port"), vec![json!(80), json!(443)]);
        assert_eq!(
            find(".status.conditions[?(@.type==\"Ready\")].status"),
            vec![json!("True")]
        );
        assert_eq!(
            find(".metadata.labels['app.kubernetes.io/name']"),
            vec![json!("web")]
        );
        assert_eq!(find(".spec.missing"), Vec::<Value>::new());
        assert!(JsonPath::parse("spec").is_err());
        assert!(JsonPath::parse(".spec[").is_err());
        assert!(JsonPath::parse(".a..b").is_err());
    }
}
