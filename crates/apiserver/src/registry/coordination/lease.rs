//! Lease: leader election and node heartbeats; durations must be positive.

use k8s_openapi::api::coordination::v1::Lease;
use serde_json::Value;

use crate::registry::validation::{FieldError, FieldErrors};
use crate::registry::{Column, Strategy, str_at, table};

/// The Lease strategy.
pub struct LeaseStrategy;

impl Strategy for LeaseStrategy {
    fn check_shape(&self, obj: &Value) -> Result<(), String> {
        crate::registry::check_typed_lenient::<Lease>(obj)
    }

    fn has_status(&self) -> bool {
        false
    }

    fn allow_create_on_update(&self) -> bool {
        true
    }

    fn validate(&self, obj: &Value) -> FieldErrors {
        let mut errors = Vec::new();
        if let Some(d) = obj
            .pointer("/spec/leaseDurationSeconds")
            .and_then(Value::as_i64)
            && d <= 0
        {
            errors.push(FieldError::invalid(
                "spec.leaseDurationSeconds",
                d.into(),
                "must be greater than 0",
            ));
        }
        if let Some(t) = obj
            .pointer("/spec/leaseTransitions")
            .and_then(Value::as_i64)
            && t < 0
        {
            errors.push(FieldError::invalid(
                "spec.leaseTransitions",
                t.into(),
                "must be greater than or equal to 0",
            ));
        }
        errors
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::NAME,
            Column::new("Holder", "string", "The holder of the lease"),
            Column::AGE,
        ]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        vec![
            Value::String(table::name(obj)),
            Value::String(str_at(obj, "/spec/holderIdentity").to_owned()),
            table::age(obj),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations_must_be_positive() {
        let errors = LeaseStrategy.validate(&json!({"spec": {"leaseDurationSeconds": 0}}));
        assert_eq!(
            errors[0].to_string(),
            "spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0"
        );
    }
}
