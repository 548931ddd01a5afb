//! Secret: `data` is base64 (the decoder checks it), `stringData` is folded into `data`, `type`
//! defaults to `Opaque` and never changes, typed secrets need their keys.

use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use serde_json::{Value, json};

use super::configmap::{validate_data_keys, validate_immutable_data};
use crate::registry::table;
use crate::registry::validation::{FieldError, FieldErrors, immutable};
use crate::registry::{Column, Strategy, default_at, str_at};

/// The Secret strategy.
pub struct SecretStrategy;

/// Keys each well-known type requires in `data`.
fn required_keys(kind: &str) -> &'static [&'static str] {
    match kind {
        "kubernetes.io/dockercfg" => &[".dockercfg"],
        "kubernetes.io/dockerconfigjson" => &[".dockerconfigjson"],
        "kubernetes.io/tls" => &["tls.crt", "tls.key"],
        _ => &[],
    }
}

impl Strategy for SecretStrategy {
    fn check_shape(&self, obj: &Value) -> Result<(), String> {
        crate::registry::check_typed_lenient::<Secret>(obj)
    }

    fn has_status(&self) -> bool {
        false
    }

    fn default(&self, obj: &mut Value) {
        default_at(obj, "/type", json!("Opaque"));
        // stringData is write-only: its entries replace data's, encoded.
        let Some(map) = obj.as_object_mut() else {
            return;
        };
        // stringData is write-only: its entries replace data's, encoded.
        if let Some(Value::Object(strings)) = map.remove("stringData") {
            let data = map.entry("data").or_insert_with(|| json!({}));
            if !data.is_object() {
                *data = json!({});
            }
            if let Some(data) = data.as_object_mut() {
                for (k, v) in strings {
                    let encoded = base64::engine::general_purpose::STANDARD
                        .encode(v.as_str().unwrap_or_default());
                    data.insert(k, Value::String(encoded));
                }
            }
        }
    }

    fn validate(&self, obj: &Value) -> FieldErrors {
        let mut errors = Vec::new();
        validate_data_keys(obj, &["data"], &mut errors);
        let kind = str_at(obj, "/type");
        for key in required_keys(kind) {
            if obj.pointer(&format!("/data/{key}")).is_none() {
                errors.push(FieldError::required(format!("data[{key}]"), ""));
            }
        }
        if kind == "kubernetes.io/service-account-token"
            && str_at(
                obj,
                "/metadata/annotations/kubernetes.io~1service-account.name",
            )
            .is_empty()
        {
            errors.push(FieldError::required(
                "metadata.annotations[kubernetes.io/service-account.name]",
                "",
            ));
        }
        errors
    }

    fn validate_update(&self, new: &Value, old: &Value) -> FieldErrors {
        let mut errors = self.validate(new);
        immutable(old, new, "/type", "type", &mut errors);
        validate_immutable_data(new, old, &["data"], &mut errors);
        errors
    }

    fn field_labels(&self, obj: &Value) -> Vec<(&'static str, String)> {
        vec![("type", str_at(obj, "/type").to_owned())]
    }

    fn field_label_names(&self) -> &'static [&'static str] {
        &["type"]
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::NAME,
            Column::new("Type", "string", "The type of the secret"),
            Column::new("Data", "integer", "The number of entries in the secret"),
            Column::AGE,
        ]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        vec![
            Value::String(table::name(obj)),
            Value::String(str_at(obj, "/type").to_owned()),
            obj.get("data")
                .and_then(Value::as_object)
                .map_or(0, |m| m.len())
                .into(),
            table::age(obj),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_data_is_folded_into_data_and_type_defaults() {
        let mut obj = json!({"data": {"a": "eA=="}, "stringData": {"a": "hello", "b": "x"}});
        SecretStrategy.default(&mut obj);
        assert_eq!(
            obj,
            json!({"type": "Opaque", "data": {"a": "aGVsbG8=", "b": "eA=="}})
        );
    }

    #[test]
    fn data_must_be_base64() {
        assert!(
            SecretStrategy
                .check_shape(&json!({"data": {"a": "!!not base64"}}))
                .is_err()
        );
        assert!(
            SecretStrategy
                .check_shape(&json!({"data": {"a": "aGk="}}))
                .is_ok()
        );
    }

    #[test]
    fn type_is_immutable_and_typed_secrets_need_their_keys() {
        let old = json!({"type": "Opaque"});
        let new = json!({"type": "kubernetes.io/tls", "data": {"tls.crt": "eA=="}});
        let errors: Vec<String> = SecretStrategy
            .validate_update(&new, &old)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errors,
            [
                "data[tls.key]: Required value",
                r#"type: Invalid value: "kubernetes.io/tls": field is immutable"#,
            ]
        );
    }
}
