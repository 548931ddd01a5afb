//! ReplicaSet: replicas and a selector matching its pod template (immutable in apps/v1),
//! generation, and kubectl's columns.

use k8s_openapi::api::apps::v1::ReplicaSet;
use serde_json::Value;

use super::deployment::{default_replicated, validate_replicated, wide_cells, wide_columns};
use crate::registry::validation::{FieldErrors, immutable};
use crate::registry::{Column, Strategy, table};

/// The ReplicaSet strategy.
pub struct ReplicaSetStrategy;

impl Strategy for ReplicaSetStrategy {
    fn check_shape(&self, obj: &Value) -> Result<(), String> {
        crate::registry::check_typed_lenient::<ReplicaSet>(obj)
    }

    fn uses_generation(&self) -> bool {
        true
    }

    fn default(&self, obj: &mut Value) {
        default_replicated(obj);
    }

    fn validate(&self, obj: &Value) -> FieldErrors {
        let mut errors = Vec::new();
        validate_replicated(obj, "replicaset", &mut errors);
        errors
    }

    fn validate_update(&self, new: &Value, old: &Value) -> FieldErrors {
        let mut errors = self.validate(new);
        immutable(old, new, "/spec/selector", "spec.selector", &mut errors);
        errors
    }

    fn field_labels(&self, obj: &Value) -> Vec<(&'static str, String)> {
        vec![(
            "status.replicas",
            table::int_at(obj, "/status/replicas").to_string(),
        )]
    }

    fn field_label_names(&self) -> &'static [&'static str] {
        &["status.replicas"]
    }

    fn columns(&self) -> Vec<Column> {
        let mut columns = vec![
            Column::NAME,
            Column::new(
                "Desired",
                "integer",
                "Replicas is the number of desired pods.",
            ),
            Column::new(
                "Current",
                "integer",
                "Replicas is the most recently observed number of replicas.",
            ),
            Column::new(
                "Ready",
                "integer",
                "The number of ready replicas for this replica set.",
            ),
            Column::AGE,
        ];
        columns.extend(wide_columns());
        columns
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        let mut cells = vec![
            Value::String(table::name(obj)),
            table::int_at(obj, "/spec/replicas").into(),
            table::int_at(obj, "/status/replicas").into(),
            table::int_at(obj, "/status/readyReplicas").into(),
            table::age(obj),
        ];
        cells.extend(wide_cells(obj));
        cells
    }
}
