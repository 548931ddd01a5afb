//! Label selectors (`a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`) and field
//! selectors (`metadata.name=x,spec.nodeName!=y`), parsed from query strings or from API
//! `LabelSelector` objects, and matched against objects.

use serde_json::{Map, Value};

use crate::registry::validation;

/// One requirement on a label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requirement {
    /// The key has this value.
    Equals(String, String),
    /// The key is absent or has another value.
    NotEquals(String, String),
    /// The key has one of these values.
    In(String, Vec<String>),
    /// The key is absent or has none of these values.
    NotIn(String, Vec<String>),
    /// The key is present.
    Exists(String),
    /// The key is absent.
    DoesNotExist(String),
}

/// A conjunction of label requirements; empty matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector(pub Vec<Requirement>);

fn split_top_level(s: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut current = String::new();
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    parts.push(current);
    parts
}

fn check_key(key: &str) -> Result<(), String> {
    match validation::qualified_name(key).first() {
        None => Ok(()),
        Some(problem) => Err(format!(
            "unable to parse requirement: invalid label key \"{key}\": {problem}"
        )),
    }
}

fn check_value(value: &str) -> Result<(), String> {
    match validation::label_value(value).first() {
        None => Ok(()),
        Some(problem) => Err(format!(
            "unable to parse requirement: invalid label value: \"{value}\": at key: {problem}"
        )),
    }
}

impl LabelSelector {
    /// Parses the query-string form.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        if s.trim().is_empty() {
            return Ok(Self(requirements));
        }
        for part in split_top_level(s) {
            let part = part.trim();
            if part.is_empty() {
                return Err(format!("found '', expected: identifier in selector {s:?}"));
            }
            let requirement = if let Some(key) = part.strip_prefix('!') {
                let key = key.trim();
                check_key(key)?;
                Requirement::DoesNotExist(key.to_owned())
            } else if let Some(open) = part.find('(') {
                let Some(inner) = part[open + 1..].strip_suffix(')') else {
                    return Err(format!("found '{part}', expected: ')' in selector {s:?}"));
                };
                let head: Vec<&str> = part[..open].split_whitespace().collect();
                let [key, op] = head[..] else {
                    return Err(format!(
                        "found '{part}', expected: key and operator in selector {s:?}"
                    ));
                };
                check_key(key)?;
                let values: Vec<String> = inner.split(',').map(|v| v.trim().to_owned()).collect();
                for v in &values {
                    check_value(v)?;
                }
                match op {
                    "in" => Requirement::In(key.into(), values),
                    "notin" => Requirement::NotIn(key.into(), values),
                    other => {
                        return Err(format!(
                            "found '{other}', expected: in, notin in selector {s:?}"
                        ));
                    }
                }
            } else if let Some((key, value)) = part.split_once("!=") {
                let (key, value) = (key.trim(), value.trim());
                check_key(key)?;
                check_value(value)?;
                Requirement::NotEquals(key.into(), value.into())
            } else if let Some((key, value)) =
                part.split_once("==").or_else(|| part.split_once('='))
            {
                let (key, value) = (key.trim(), value.trim());
                check_key(key)?;
                check_value(value)?;
                Requirement::Equals(key.into(), value.into())
            } else {
                if part.contains(char::is_whitespace) {
                    return Err(format!(
                        "found '{part}', expected: =, !=, ==, in, notin in selector {s:?}"
                    ));
                }
                check_key(part)?;
                Requirement::Exists(part.to_owned())
            };
            requirements.push(requirement);
        }
        Ok(Self(requirements))
    }

    /// Converts an API `LabelSelector` (`matchLabels`, `matchExpressions`).
    pub fn from_api(selector: &Value) -> Result<Self, String> {
        let mut requirements = Vec::new();
        if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in labels {
                let v = v.as_str().ok_or("matchLabels values must be strings")?;
                requirements.push(Requirement::Equals(k.clone(), v.to_owned()));
            }
        }
        for e in selector
            .get("matchExpressions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = e
                .get("key")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let values: Vec<String> = e
                .get("values")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            let op = e
                .get("operator")
                .and_then(Value::as_str)
                .unwrap_or_default();
            requirements.push(match op {
                "In" | "NotIn" if values.is_empty() => {
                    return Err("values: Required value: must be specified when `operator` is 'In' or 'NotIn'".into());
                }
                "In" => Requirement::In(key, values),
                "NotIn" => Requirement::NotIn(key, values),
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err("values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'".into());
                }
                "Exists" => Requirement::Exists(key),
                "DoesNotExist" => Requirement::DoesNotExist(key),
                other => return Err(format!("{other:?} is not a valid label selector operator")),
            });
        }
        Ok(Self(requirements))
    }

    /// Whether it has no requirement (matches everything).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, vs) => get(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|l| !vs.iter().any(|v| v == l)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::DoesNotExist(k) => get(k).is_none(),
        })
    }

    /// Whether an object's `metadata.labels` match.
    pub fn matches_object(&self, obj: &Value) -> bool {
        self.matches(obj.pointer("/metadata/labels").and_then(Value::as_object))
    }
}

/// A conjunction of `field=value` / `field!=value` terms.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector(pub Vec<(String, bool, String)>);

/// Splits on unescaped `sep`, keeping escapes for the next step.
fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            current.push('\\');
            current.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            parts.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    if escaped {
        current.push('\\');
    }
    parts.push(current);
    parts
}

fn unescape(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(e @ ('\\' | ',' | '=')) => out.push(e),
                other => {
                    return Err(format!(
                        "invalid field selector: invalid escape sequence: \\{}",
                        other.map(String::from).unwrap_or_default()
                    ));
                }
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

impl FieldSelector {
    /// Parses the query-string form.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        if s.trim().is_empty() {
            return Ok(Self(terms));
        }
        for part in split_unescaped(s, ',') {
            let (field, negate, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, false, v)
            } else {
                return Err(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                ));
            };
            terms.push((unescape(field.trim())?, negate, unescape(value)?));
        }
        Ok(Self(terms))
    }

    /// Whether it has no term.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The first field not in `supported`, if any.
    pub fn unsupported<'a>(&'a self, supported: &[&str]) -> Option<&'a str> {
        self.0
            .iter()
            .map(|(f, _, _)| f.as_str())
            .find(|f| !supported.contains(f))
    }

    /// Whether the field values satisfy every term (an unknown field never matches).
    pub fn matches(&self, fields: &[(&str, String)]) -> bool {
        self.0.iter().all(|(field, negate, value)| {
            match fields.iter().find(|(name, _)| name == field) {
                Some((_, actual)) => (actual == value) != *negate,
                None => false,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn every_operator_parses_and_matches() {
        let l = labels(json!({"app": "web", "tier": "front"}));
        for (selector, expected) in [
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app in (x, web)", true),
            ("app in (x,y)", false),
            ("app notin (x,y)", true),
            ("app notin (web)", false),
            ("tier", true),
            ("!tier", false),
            ("!missing", true),
            ("missing!=x", true),
            ("missing notin (x)", true),
            ("app=web,tier in (front,back),!missing", true),
            ("", true),
        ] {
            let parsed =
                LabelSelector::parse(selector).unwrap_or_else(|e| panic!("{selector}: {e}"));
            assert_eq!(parsed.matches(Some(&l)), expected, "{selector}");
        }
    }

    #[test]
    fn malformed_selectors_are_errors() {
        for bad in [
            "a in (x",
            "a b",
            "=x",
            "a=b c",
            ",",
            "a foo (x)",
            "a in (b c)",
        ] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn api_selectors_convert() {
        let sel = LabelSelector::from_api(&json!({"matchLabels": {"a": "b"},
            "matchExpressions": [{"key": "c", "operator": "NotIn", "values": ["d"]}]}))
        .unwrap();
        assert_eq!(
            sel.0,
            [
                Requirement::Equals("a".into(), "b".into()),
                Requirement::NotIn("c".into(), vec!["d".into()])
            ]
        );
        assert!(
            LabelSelector::from_api(&json!({"matchExpressions": [{"key": "c", "operator": "In"}]}))
                .is_err()
        );
        assert!(LabelSelector::from_api(&json!({})).unwrap().is_empty());
    }

    #[test]
    fn field_selectors_match_with_escapes() {
        let sel = FieldSelector::parse(r"metadata.name=a\,b,status.phase!=Running").unwrap();
        assert_eq!(sel.0[0], ("metadata.name".into(), false, "a,b".into()));
        assert!(sel.matches(&[
            ("metadata.name", "a,b".into()),
            ("status.phase", "Pending".into())
        ]));
        assert!(!sel.matches(&[
            ("metadata.name", "a,b".into()),
            ("status.phase", "Running".into())
        ]));
        assert_eq!(sel.unsupported(&["metadata.name"]), Some("status.phase"));
        assert!(FieldSelector::parse("nonsense").is_err());
        assert!(FieldSelector::parse(r"a=\x").is_err());
    }
}
