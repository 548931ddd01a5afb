//! Namespace: an RFC 1123 label name, the `kubernetes.io/metadata.name` label, phase `Active`
//! at create, and a delete that only marks it `Terminating` while finalizers remain (the
//! namespace controller that empties and finalizes it comes with the controller-manager).

use k8s_openapi::api::core::v1::Namespace;
use serde_json::{Value, json};

use crate::registry::meta::{metadata_mut, now};
use crate::registry::{Column, NameRule, Strategy, default_at, str_at, table};

/// The Namespace strategy.
pub struct NamespaceStrategy;

/// The label upstream keeps equal to the namespace's name.
pub const NAME_LABEL: &str = "kubernetes.io/metadata.name";

fn set_name_label(obj: &mut Value) {
    let name = str_at(obj, "/metadata/name").to_owned();
    if name.is_empty() {
        return;
    }
    let meta = metadata_mut(obj);
    let labels = meta.entry("labels").or_insert_with(|| json!({}));
    if !labels.is_object() {
        *labels = json!({});
    }
    labels[NAME_LABEL] = Value::String(name);
}

impl Strategy for NamespaceStrategy {
    fn name_rule(&self) -> NameRule {
        NameRule::Label
    }

    fn check_shape(&self, obj: &Value) -> Result<(), String> {
        crate::registry::check_typed_lenient::<Namespace>(obj)
    }

    fn default(&self, obj: &mut Value) {
        set_name_label(obj);
    }

    fn prepare_for_create(&self, obj: &mut Value) {
        default_at(obj, "/spec/finalizers", json!(["kubernetes"]));
        obj["status"] = json!({"phase": "Active"});
    }

    fn prepare_for_update(&self, new: &mut Value, old: &Value) {
        // spec.finalizers change only through /finalize.
        match old.pointer("/spec") {
            Some(spec) => new["spec"] = spec.clone(),
            None => {
                if let Some(map) = new.as_object_mut() {
                    map.remove("spec");
                }
            }
        }
    }

    fn begin_delete(&self, obj: &mut Value) -> bool {
        let spec_finalizers = obj
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        let meta_finalizers = obj
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if !spec_finalizers && !meta_finalizers {
            return false;
        }
        let meta = metadata_mut(obj);
        if !meta.contains_key("deletionTimestamp") {
            meta.insert("deletionTimestamp".into(), Value::String(now()));
            meta.insert("deletionGracePeriodSeconds".into(), json!(0));
        }
        obj["status"]["phase"] = json!("Terminating");
        true
    }

    fn field_labels(&self, obj: &Value) -> Vec<(&'static str, String)> {
        vec![("status.phase", str_at(obj, "/status/phase").to_owned())]
    }

    fn field_label_names(&self) -> &'static [&'static str] {
        &["status.phase"]
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::NAME,
            Column::new("Status", "string", "The status of the namespace"),
            Column::AGE,
        ]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        vec![
            Value::String(table::name(obj)),
            Value::String(str_at(obj, "/status/phase").to_owned()),
            table::age(obj),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_namespace_is_active_with_the_kubernetes_finalizer_and_name_label() {
        let mut obj = json!({"metadata": {"name": "team"}});
        NamespaceStrategy.default(&mut obj);
        NamespaceStrategy.prepare_for_create(&mut obj);
        assert_eq!(obj["metadata"]["labels"][NAME_LABEL], "team");
        assert_eq!(obj["spec"]["finalizers"], json!(["kubernetes"]));
        assert_eq!(obj["status"]["phase"], "Active");
    }

    #[test]
    fn delete_marks_terminating_while_finalizers_remain() {
        let mut obj = json!({"metadata": {"name": "team"}, "spec": {"finalizers": ["kubernetes"]}});
        assert!(NamespaceStrategy.begin_delete(&mut obj));
        assert_eq!(obj["status"]["phase"], "Terminating");
        assert!(obj["metadata"]["deletionTimestamp"].is_string());
        let mut bare = json!({"metadata": {"name": "team"}, "spec": {}});
        assert!(!NamespaceStrategy.begin_delete(&mut bare));
    }
}
