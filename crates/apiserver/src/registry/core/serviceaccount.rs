//! ServiceAccount: metadata rules only; the table counts its secrets.

use k8s_openapi::api::core::v1::ServiceAccount;
use serde_json::Value;

use crate::registry::table;
use crate::registry::{Column, Strategy};

/// The ServiceAccount strategy.
pub struct ServiceAccountStrategy;

impl Strategy for ServiceAccountStrategy {
    fn check_shape(&self, obj: &Value) -> Result<(), String> {
        crate::registry::check_typed_lenient::<ServiceAccount>(obj)
    }

    fn has_status(&self) -> bool {
        false
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::NAME,
            Column::new(
                "Secrets",
                "string",
                "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use.",
            ),
            Column::AGE,
        ]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        vec![
            Value::String(table::name(obj)),
            obj.get("secrets")
                .and_then(Value::as_array)
                .map_or(0, Vec::len)
                .into(),
            table::age(obj),
        ]
    }
}
