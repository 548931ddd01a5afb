//! ConfigMap: keys are config keys, data and binaryData share one key space and 1 MiB, and an
//! `immutable` ConfigMap keeps its data.

use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::Value;

use crate::registry::table;
use crate::registry::validation::{self, FieldError, FieldErrors};
use crate::registry::{Column, Strategy};

/// The ConfigMap strategy.
pub struct ConfigMapStrategy;

/// The most a ConfigMap or Secret may hold.
pub const MAX_DATA_SIZE: usize = 1024 * 1024;

/// Validates `data`/`binaryData`-like maps: config keys, no key in both, total size.
pub fn validate_data_keys(obj: &Value, maps: &[&str], errors: &mut FieldErrors) {
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    for map_name in maps {
        let Some(map) = obj.get(*map_name).and_then(Value::as_object) else {
            continue;
        };
        for (key, value) in map {
            for problem in validation::config_map_key(key) {
                errors.push(FieldError::invalid(
                    format!("{map_name}[{key}]"),
                    Value::String(key.clone()),
                    problem,
                ));
            }
            if !seen.insert(key.clone()) {
                errors.push(FieldError::invalid(
                    format!("{map_name}[{key}]"),
                    Value::String(key.clone()),
                    "duplicate of key present in another map",
                ));
            }
            total += value.as_str().map_or(0, str::len);
        }
    }
    if total > MAX_DATA_SIZE {
        errors.push(FieldError::too_long("", MAX_DATA_SIZE));
    }
}

/// An object whose stored `immutable` is true may change neither its data nor that flag.
pub fn validate_immutable_data(new: &Value, old: &Value, maps: &[&str], errors: &mut FieldErrors) {
    if old.get("immutable").and_then(Value::as_bool) != Some(true) {
        return;
    }
    if new.get("immutable").and_then(Value::as_bool) != Some(true) {
        errors.push(FieldError::forbidden(
            "immutable",
            "field is immutable when `immutable` is set",
        ));
    }
    for map in maps {
        if new.get(*map) != old.get(*map) {
            errors.push(FieldError::forbidden(
                *map,
                "field is immutable when `immutable` is set",
            ));
        }
    }
}

impl Strategy for ConfigMapStrategy {
    fn check_shape(&self, obj: &Value) -> Result<(), String> {
        crate::registry::check_typed_lenient::<ConfigMap>(obj)
    }

    fn has_status(&self) -> bool {
        false
    }

    fn validate(&self, obj: &Value) -> FieldErrors {
        let mut errors = Vec::new();
        validate_data_keys(obj, &["data", "binaryData"], &mut errors);
        errors
    }

    fn validate_update(&self, new: &Value, old: &Value) -> FieldErrors {
        let mut errors = self.validate(new);
        validate_immutable_data(new, old, &["data", "binaryData"], &mut errors);
        errors
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::NAME,
            Column::new("Data", "integer", "Data contains the configuration data."),
            Column::AGE,
        ]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        let count = |m: &str| obj.get(m).and_then(Value::as_object).map_or(0, |m| m.len());
        vec![
            Value::String(table::name(obj)),
            (count("data") + count("binaryData")).into(),
            table::age(obj),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_must_be_config_keys_and_unique_across_maps() {
        let errors = ConfigMapStrategy
            .validate(&json!({"data": {"a b": "x", "k": "v"}, "binaryData": {"k": "dg=="}}));
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["data[a b]", "binaryData[k]"]);
    }

    #[test]
    fn an_immutable_config_map_keeps_its_data() {
        let old = json!({"immutable": true, "data": {"a": "1"}});
        let new = json!({"immutable": true, "data": {"a": "2"}});
        let errors = ConfigMapStrategy.validate_update(&new, &old);
        assert_eq!(errors.len(), 1);
        assert_eq!(
            errors[0].to_string(),
            "data: Forbidden: field is immutable when `immutable` is set"
        );
        assert!(
            ConfigMapStrategy
                .validate_update(&old, &json!({"data": {"a": "0"}}))
                .is_empty()
        );
    }

    #[test]
    fn wrong_types_are_decoding_errors() {
        assert!(
            ConfigMapStrategy
                .check_shape(&json!({"data": {"a": 1}}))
                .is_err()
        );
        assert!(
            ConfigMapStrategy
                .check_shape(&json!({"data": {"a": "1"}}))
                .is_ok()
        );
    }
}
