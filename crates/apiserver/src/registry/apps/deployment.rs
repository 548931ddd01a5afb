//! Deployment: defaults (replicas 1, RollingUpdate 25%/25%, history 10, progress deadline 600 s,
//! the pod template's defaults), a selector that must match the template's labels and never
//! changes, a template that restarts `Always`, generation bumped on spec changes, and kubectl's
//! columns.

use k8s_openapi::api::apps::v1::Deployment;
use serde_json::{Value, json};

use crate::registry::core::pod::{default_pod_spec, validate_pod_spec};
use crate::registry::validation::{FieldError, FieldErrors, immutable, validate_labels};
use crate::registry::{Column, Strategy, default_at, str_at, table};
use crate::rest::selector::LabelSelector;

/// The Deployment strategy.
pub struct DeploymentStrategy;

/// Defaults shared by workloads with a pod template and replicas.
pub fn default_replicated(obj: &mut Value) {
    default_at(obj, "/spec/replicas", json!(1));
    if let Some(spec) = obj.pointer_mut("/spec/template/spec") {
        default_pod_spec(spec);
    }
}

/// Validation shared by workloads with a selector, a pod template and replicas.
pub fn validate_replicated(obj: &Value, kind: &str, errors: &mut FieldErrors) {
    if let Some(r) = obj.pointer("/spec/replicas").and_then(Value::as_i64)
        && r < 0
    {
        errors.push(FieldError::invalid(
            "spec.replicas",
            r.into(),
            "must be greater than or equal to 0",
        ));
    }
    let selector = obj.pointer("/spec/selector");
    let template_labels = obj
        .pointer("/spec/template/metadata/labels")
        .cloned()
        .unwrap_or(json!({}));
    match selector.filter(|s| s.is_object()) {
        None => errors.push(FieldError::required("spec.selector", "")),
        Some(selector) => match LabelSelector::from_api(selector) {
            Err(detail) => errors.push(FieldError::invalid(
                "spec.selector",
                selector.clone(),
                detail,
            )),
            Ok(parsed) if parsed.is_empty() => errors.push(FieldError::invalid(
                "spec.selector",
                selector.clone(),
                format!("empty selector is invalid for {kind}"),
            )),
            Ok(parsed) => {
                if !parsed.matches(template_labels.as_object()) {
                    errors.push(FieldError::invalid(
                        "spec.template.metadata.labels",
                        template_labels.clone(),
                        "`selector` does not match template `labels`",
                    ));
                }
            }
        },
    }
    validate_labels(&template_labels, "spec.template.metadata.labels", errors);
    validate_pod_spec(
        obj.pointer("/spec/template/spec"),
        "spec.template.spec",
        errors,
    );
    let restart = str_at(obj, "/spec/template/spec/restartPolicy");
    if !restart.is_empty() && restart != "Always" {
        errors.push(FieldError::not_supported(
            "spec.template.spec.restartPolicy",
            restart.into(),
            &["Always"],
        ));
    }
}

/// kubectl's wide columns of a replicated workload: containers, images, selector.
pub fn wide_cells(obj: &Value) -> [Value; 3] {
    let (names, images) = table::containers_and_images(obj.pointer("/spec/template/spec"));
    [
        Value::String(names),
        Value::String(images),
        Value::String(table::selector_string(
            obj.pointer("/spec/selector").unwrap_or(&Value::Null),
        )),
    ]
}

/// The wide column definitions matching [`wide_cells`].
pub fn wide_columns() -> [Column; 3] {
    [
        Column::new("Containers", "string", "Names of each container in the template.").wide(),
        Column::new("Images", "string", "Images referenced by each container in the template.").wide(),
        Column::new("Selector", "string", "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.").wide(),
    ]
}

impl Strategy for DeploymentStrategy {
    fn check_shape(&self, obj: &Value) -> Result<(), String> {
        crate::registry::check_typed_lenient::<Deployment>(obj)
    }

    fn uses_generation(&self) -> bool {
        true
    }

    fn default(&self, obj: &mut Value) {
        default_replicated(obj);
        default_at(obj, "/spec/strategy/type", json!("RollingUpdate"));
        if str_at(obj, "/spec/strategy/type") == "RollingUpdate" {
            default_at(
                obj,
                "/spec/strategy/rollingUpdate/maxUnavailable",
                json!("25%"),
            );
            default_at(obj, "/spec/strategy/rollingUpdate/maxSurge", json!("25%"));
        }
        default_at(obj, "/spec/revisionHistoryLimit", json!(10));
        default_at(obj, "/spec/progressDeadlineSeconds", json!(600));
    }

    fn validate(&self, obj: &Value) -> FieldErrors {
        let mut errors = Vec::new();
        validate_replicated(obj, "deployment", &mut errors);
        let kind = str_at(obj, "/spec/strategy/type");
        if !["Recreate", "RollingUpdate"].contains(&kind) {
            errors.push(FieldError::not_supported(
                "spec.strategy.type",
                kind.into(),
                &["Recreate", "RollingUpdate"],
            ));
        } else if kind == "Recreate"
            && obj
                .pointer("/spec/strategy/rollingUpdate")
                .is_some_and(|v| !v.is_null())
        {
            errors.push(FieldError::forbidden(
                "spec.strategy.rollingUpdate",
                "may not be specified when strategy `type` is 'Recreate'",
            ));
        }
        errors
    }

    fn validate_update(&self, new: &Value, old: &Value) -> FieldErrors {
        let mut errors = self.validate(new);
        immutable(old, new, "/spec/selector", "spec.selector", &mut errors);
        errors
    }

    fn columns(&self) -> Vec<Column> {
        let mut columns = vec![
            Column::NAME,
            Column::new("Ready", "string", "Number of the pod with ready state"),
            Column::new(
                "Up-to-date",
                "string",
                "Total number of non-terminating pods targeted by this deployment that have the desired template spec.",
            ),
            Column::new(
                "Available",
                "string",
                "Total number of available non-terminating pods (ready for at least minReadySeconds) targeted by this deployment.",
            ),
            Column::AGE,
        ];
        columns.extend(wide_columns());
        columns
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        let mut cells = vec![
            Value::String(table::name(obj)),
            Value::String(format!(
                "{}/{}",
                table::int_at(obj, "/status/readyReplicas"),
                table::int_at(obj, "/spec/replicas")
            )),
            table::int_at(obj, "/status/updatedReplicas").into(),
            table::int_at(obj, "/status/availableReplicas").into(),
            table::age(obj),
        ];
        cells.extend(wide_cells(obj));
        cells
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment() -> Value {
        json!({"metadata": {"name": "web"}, "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})
    }

    #[test]
    fn defaults_follow_upstream() {
        let mut d = deployment();
        DeploymentStrategy.default(&mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
        assert!(DeploymentStrategy.validate(&d).is_empty());
    }

    #[test]
    fn the_selector_must_match_the_template_and_never_change() {
        let mut d = deployment();
        d["spec"]["template"]["metadata"]["labels"]["app"] = json!("other");
        DeploymentStrategy.default(&mut d);
        let errors = DeploymentStrategy.validate(&d);
        assert_eq!(errors[0].field, "spec.template.metadata.labels");
        let mut old = deployment();
        DeploymentStrategy.default(&mut old);
        let mut new = old.clone();
        new["spec"]["selector"]["matchLabels"]["tier"] = json!("x");
        new["spec"]["template"]["metadata"]["labels"]["tier"] = json!("x");
        let errors = DeploymentStrategy.validate_update(&new, &old);
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0]
                .to_string()
                .starts_with("spec.selector: Invalid value: ")
        );
    }

    #[test]
    fn a_missing_image_names_the_container() {
        let mut d = deployment();
        d["spec"]["template"]["spec"]["containers"][0]
            .as_object_mut()
            .unwrap()
            .remove("image");
        DeploymentStrategy.default(&mut d);
        let errors = DeploymentStrategy.validate(&d);
        assert_eq!(
            errors[0].to_string(),
            "spec.template.spec.containers[0].image: Required value"
        );
    }
}
