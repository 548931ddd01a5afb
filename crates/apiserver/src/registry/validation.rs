//! Field errors and the validation primitives every strategy shares: DNS-1123 names, label and
//! annotation keys and values, quantities of things. Errors are reported the way upstream's
//! `field.Error` prints them (`metadata.name: Invalid value: "X": ...`), because clients and
//! people match on that text and on the `causes` built from it.

use serde_json::Value;

/// What is wrong with a field, as upstream's `field.ErrorType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorType {
    /// A required field is missing.
    Required,
    /// The value is malformed or out of range.
    Invalid,
    /// The value repeats one that must be unique.
    Duplicate,
    /// The field may not be set (or changed) here.
    Forbidden,
    /// The value is not one of a fixed set.
    NotSupported,
    /// The value is too long.
    TooLong,
    /// A list has too many items.
    TooMany,
}

impl ErrorType {
    /// The words upstream prints for this type.
    pub fn text(self) -> &'static str {
        match self {
            ErrorType::Required => "Required value",
            ErrorType::Invalid => "Invalid value",
            ErrorType::Duplicate => "Duplicate value",
            ErrorType::Forbidden => "Forbidden",
            ErrorType::NotSupported => "Unsupported value",
            ErrorType::TooLong => "Too long",
            ErrorType::TooMany => "Too many",
        }
    }

    /// The `reason` of the `Status` cause.
    pub fn cause_reason(self) -> &'static str {
        match self {
            ErrorType::Required => "FieldValueRequired",
            ErrorType::Invalid => "FieldValueInvalid",
            ErrorType::Duplicate => "FieldValueDuplicate",
            ErrorType::Forbidden => "FieldValueForbidden",
            ErrorType::NotSupported => "FieldValueNotSupported",
            ErrorType::TooLong => "FieldValueTooLong",
            ErrorType::TooMany => "FieldValueTooMany",
        }
    }

    /// Whether the printed error shows the bad value.
    fn shows_value(self) -> bool {
        matches!(
            self,
            ErrorType::Invalid | ErrorType::Duplicate | ErrorType::NotSupported
        )
    }
}

/// One invalid field.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldError {
    /// The kind of problem.
    pub kind: ErrorType,
    /// The field path, e.g. `spec.containers[0].image`.
    pub field: String,
    /// The offending value, for the types that print it.
    pub value: Value,
    /// What a person should know; may be empty.
    pub detail: String,
}

/// Every error found in one object.
pub type FieldErrors = Vec<FieldError>;

impl FieldError {
    /// A required field is missing.
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(ErrorType::Required, field, Value::Null, detail)
    }

    /// A value is malformed.
    pub fn invalid(field: impl Into<String>, value: Value, detail: impl Into<String>) -> Self {
        Self::new(ErrorType::Invalid, field, value, detail)
    }

    /// A value repeats.
    pub fn duplicate(field: impl Into<String>, value: Value) -> Self {
        Self::new(ErrorType::Duplicate, field, value, "")
    }

    /// A field may not be set or changed.
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(ErrorType::Forbidden, field, Value::Null, detail)
    }

    /// A value outside a fixed set.
    pub fn not_supported(field: impl Into<String>, value: Value, supported: &[&str]) -> Self {
        let list = supported
            .iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        Self::new(
            ErrorType::NotSupported,
            field,
            value,
            format!("supported values: {list}"),
        )
    }

    /// A value longer than allowed.
    pub fn too_long(field: impl Into<String>, max: usize) -> Self {
        Self::new(
            ErrorType::TooLong,
            field,
            Value::Null,
            format!("must have at most {max} bytes"),
        )
    }

    fn new(
        kind: ErrorType,
        field: impl Into<String>,
        value: Value,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            field: field.into(),
            value,
            detail: detail.into(),
        }
    }

    /// The error without its field: what a `Status` cause's `message` holds.
    pub fn body(&self) -> String {
        let mut text = self.kind.text().to_owned();
        // A count that was given is shown, as upstream's `TooMany` does.
        if self.kind.shows_value() || (self.kind == ErrorType::TooMany && !self.value.is_null()) {
            text.push_str(": ");
            text.push_str(&print_value(&self.value));
        }
        if !self.detail.is_empty() {
            text.push_str(": ");
            text.push_str(&self.detail);
        }
        text
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

/// Upstream prints strings quoted and everything else as it is.
fn print_value(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

/// Joins errors as upstream's aggregate does: one alone, several in brackets.
pub fn aggregate(errors: &[FieldError]) -> String {
    match errors {
        [one] => one.to_string(),
        many => format!(
            "[{}]",
            many.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

const DNS1123_LABEL_MAX: usize = 63;
const DNS1123_SUBDOMAIN_MAX: usize = 253;

fn is_alnum_lower(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && is_alnum_lower(b[0])
        && is_alnum_lower(b[b.len() - 1])
        && b.iter().all(|&c| is_alnum_lower(c) || c == b'-')
}

/// Problems with `s` as an RFC 1123 label (namespaces, services): empty when valid.
pub fn dns1123_label(s: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if s.len() > DNS1123_LABEL_MAX {
        problems.push(format!(
            "must be no more than {DNS1123_LABEL_MAX} characters"
        ));
    }
    if !is_dns1123_label(s) {
        problems.push(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or \
             '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or \
             '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
                .into(),
        );
    }
    problems
}

/// Problems with `s` as an RFC 1123 subdomain (most object names): empty when valid.
pub fn dns1123_subdomain(s: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if s.len() > DNS1123_SUBDOMAIN_MAX {
        problems.push(format!(
            "must be no more than {DNS1123_SUBDOMAIN_MAX} characters"
        ));
    }
    if s.is_empty() || !s.split('.').all(is_dns1123_label) {
        problems.push(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, \
             '-' or '.', and must start and end with an alphanumeric character (e.g. \
             'example.com', regex used for validation is \
             '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
                .into(),
        );
    }
    problems
}

/// Problems with `s` as a path segment name (RBAC objects, events): only `.`, `..`, `/`, `%`
/// are refused, as upstream's `ValidatePathSegmentName`.
pub fn path_segment_name(s: &str) -> Vec<String> {
    if s == "." || s == ".." {
        return vec![format!("may not be '{s}'")];
    }
    let mut problems = Vec::new();
    for bad in ["/", "%"] {
        if s.contains(bad) {
            problems.push(format!("may not contain '{bad}'"));
        }
    }
    problems
}

fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

const QUALIFIED_NAME_ERR: &str = "name part must consist of alphanumeric characters, '-', '_' or \
     '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or \
     'my.name',  or '123-abc', regex used for validation is \
     '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

/// Problems with a label or annotation key: an optional DNS subdomain prefix (≤253) and `/`,
/// then a name of at most 63 characters.
pub fn qualified_name(key: &str) -> Vec<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let mut problems = Vec::new();
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            problems.push("prefix part must be non-empty".into());
        } else {
            problems.extend(
                dns1123_subdomain(prefix)
                    .into_iter()
                    .map(|p| format!("prefix part {p}")),
            );
        }
    }
    if name.is_empty() {
        problems.push("name part must be non-empty".into());
    } else if name.len() > 63 {
        problems.push("name part must be no more than 63 characters".into());
    }
    if !name.is_empty() && !is_qualified_name_part(name) && name.len() <= 63 {
        problems.push(QUALIFIED_NAME_ERR.into());
    }
    problems
}

/// Problems with a label value: empty, or at most 63 characters of the qualified-name alphabet.
pub fn label_value(value: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if value.len() > 63 {
        problems.push("must be no more than 63 characters".into());
    }
    if !value.is_empty() && !is_qualified_name_part(&value[..value.len().min(63)]) {
        problems.push(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', \
             '_' or '.', and must start and end with an alphanumeric character (e.g. \
             'MyValue',  or 'my_value',  or '12345', regex used for validation is \
             '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
                .into(),
        );
    }
    problems
}

/// Validates a `map[string]string` of labels at `field`.
pub fn validate_labels(labels: &Value, field: &str, errors: &mut FieldErrors) {
    let Some(map) = labels.as_object() else {
        if !labels.is_null() {
            errors.push(FieldError::invalid(field, labels.clone(), "must be a map"));
        }
        return;
    };
    for (key, value) in map {
        for problem in qualified_name(key) {
            errors.push(FieldError::invalid(
                field,
                Value::String(key.clone()),
                problem,
            ));
        }
        match value.as_str() {
            Some(v) => {
                for problem in label_value(v) {
                    errors.push(FieldError::invalid(
                        field,
                        Value::String(v.to_owned()),
                        problem,
                    ));
                }
            }
            None => errors.push(FieldError::invalid(
                format!("{field}.{key}"),
                value.clone(),
                "must be a string",
            )),
        }
    }
}

/// Annotations may total at most this many bytes (keys plus values).
pub const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

/// Validates annotations at `field`: keys as labels' keys, values any string, total ≤256 KiB.
pub fn validate_annotations(annotations: &Value, field: &str, errors: &mut FieldErrors) {
    let Some(map) = annotations.as_object() else {
        if !annotations.is_null() {
            errors.push(FieldError::invalid(
                field,
                annotations.clone(),
                "must be a map",
            ));
        }
        return;
    };
    let mut total = 0;
    for (key, value) in map {
        for problem in qualified_name(&key.to_ascii_lowercase()) {
            errors.push(FieldError::invalid(
                field,
                Value::String(key.clone()),
                problem,
            ));
        }
        match value.as_str() {
            Some(v) => total += key.len() + v.len(),
            None => errors.push(FieldError::invalid(
                format!("{field}.{key}"),
                value.clone(),
                "must be a string",
            )),
        }
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        errors.push(FieldError::too_long(field, TOTAL_ANNOTATION_SIZE_LIMIT));
    }
}

/// Problems with `s` as a C identifier (env var names in older rules, config keys).
pub fn config_map_key(key: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if key.len() > DNS1123_SUBDOMAIN_MAX {
        problems.push(format!(
            "must be no more than {DNS1123_SUBDOMAIN_MAX} characters"
        ));
    }
    if key.is_empty()
        || key == "."
        || key == ".."
        || key.starts_with("..")
        || !key
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
    {
        problems.push(
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. \
             'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is \
             '[-._a-zA-Z0-9]+')"
                .into(),
        );
    }
    problems
}

/// Pushes a `Forbidden` "field is immutable" error when `old` and `new` differ at `pointer`.
pub fn immutable(old: &Value, new: &Value, pointer: &str, field: &str, errors: &mut FieldErrors) {
    let before = old.pointer(pointer).unwrap_or(&Value::Null);
    let after = new.pointer(pointer).unwrap_or(&Value::Null);
    if before != after {
        errors.push(FieldError::invalid(
            field,
            after.clone(),
            "field is immutable",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn errors_print_as_upstream_prints_them() {
        let e = FieldError::invalid("metadata.name", json!("A_B"), "bad");
        assert_eq!(e.to_string(), r#"metadata.name: Invalid value: "A_B": bad"#);
        let e = FieldError::required("spec.containers[0].image", "");
        assert_eq!(e.to_string(), "spec.containers[0].image: Required value");
        let e = FieldError::duplicate("spec.containers[1].name", json!("a"));
        assert_eq!(
            e.to_string(),
            r#"spec.containers[1].name: Duplicate value: "a""#
        );
        let e = FieldError::not_supported("type", json!("X"), &["A", "B"]);
        assert_eq!(
            e.to_string(),
            r#"type: Unsupported value: "X": supported values: "A", "B""#
        );
        assert_eq!(aggregate(std::slice::from_ref(&e)), e.to_string());
        assert!(aggregate(&[e.clone(), e]).starts_with("[type: "));
    }

    #[test]
    fn dns_names_follow_rfc_1123() {
        for ok in ["a", "abc-1", "0a", "a.b.c"] {
            assert!(dns1123_subdomain(ok).is_empty(), "{ok}");
        }
        for bad in ["", "A", "-a", "a-", "a_b", "a..b", ".a", &"a".repeat(254)] {
            assert!(!dns1123_subdomain(bad).is_empty(), "{bad}");
        }
        assert!(dns1123_label("abc").is_empty());
        assert!(!dns1123_label("a.b").is_empty());
        assert!(!dns1123_label(&"a".repeat(64)).is_empty());
        assert!(dns1123_label(&"a".repeat(63)).is_empty());
    }

    #[test]
    fn label_keys_have_a_253_prefix_and_a_63_name() {
        assert!(qualified_name("app").is_empty());
        assert!(qualified_name("example.com/app").is_empty());
        assert!(qualified_name("app.kubernetes.io/name").is_empty());
        assert!(!qualified_name(&"a".repeat(64)).is_empty());
        assert!(qualified_name(&"a".repeat(63)).is_empty());
        assert!(!qualified_name(&format!("{}/a", "a".repeat(254))).is_empty());
        assert!(!qualified_name("/a").is_empty());
        assert!(!qualified_name("a/").is_empty());
        assert!(!qualified_name("Example.com/a").is_empty());
        assert!(!qualified_name("a b").is_empty());
    }

    #[test]
    fn label_values_are_empty_or_at_most_63_simple_characters() {
        assert!(label_value("").is_empty());
        assert!(label_value("v1.2_3-x").is_empty());
        assert!(!label_value(&"a".repeat(64)).is_empty());
        assert!(!label_value("-a").is_empty());
        assert!(!label_value("a b").is_empty());
    }

    #[test]
    fn annotations_are_limited_in_total_size() {
        let mut errors = Vec::new();
        validate_annotations(
            &json!({"a": "x".repeat(TOTAL_ANNOTATION_SIZE_LIMIT)}),
            "metadata.annotations",
            &mut errors,
        );
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].kind, ErrorType::TooLong);
        let mut errors = Vec::new();
        validate_annotations(&json!({"a": "x".repeat(1000)}), "m", &mut errors);
        assert!(errors.is_empty());
    }

    #[test]
    fn path_segment_names_refuse_only_slashes_percents_and_dots() {
        assert!(path_segment_name("system:controller:x").is_empty());
        assert!(!path_segment_name("a/b").is_empty());
        assert!(!path_segment_name("..").is_empty());
    }
}
