//! Node: cluster-scoped, status written by its kubelet; kubectl's columns (status with
//! SchedulingDisabled, roles from `node-role.kubernetes.io/*` labels, kubelet version).

use k8s_openapi::api::core::v1::Node;
use serde_json::Value;

use crate::registry::{Column, Strategy, str_at, table};

/// The Node strategy.
pub struct NodeStrategy;

impl Strategy for NodeStrategy {
    fn check_shape(&self, obj: &Value) -> Result<(), String> {
        crate::registry::check_typed_lenient::<Node>(obj)
    }

    fn field_labels(&self, obj: &Value) -> Vec<(&'static str, String)> {
        let unschedulable = obj
            .pointer("/spec/unschedulable")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        vec![("spec.unschedulable", unschedulable.to_string())]
    }

    fn field_label_names(&self) -> &'static [&'static str] {
        &["spec.unschedulable"]
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::NAME,
            Column::new("Status", "string", "The status of the node"),
            Column::new("Roles", "string", "The roles of the node"),
            Column::AGE,
            Column::new("Version", "string", "Kubelet Version reported by the node."),
            Column::new("Internal-IP", "string", "List of addresses reachable to the node. Queried from cloud provider, if available.").wide(),
            Column::new("External-IP", "string", "List of addresses reachable to the node. Queried from cloud provider, if available.").wide(),
            Column::new("OS-Image", "string", "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).").wide(),
            Column::new("Kernel-Version", "string", "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).").wide(),
            Column::new("Container-Runtime", "string", "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).").wide(),
        ]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        let mut status = "Unknown".to_owned();
        for c in obj
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if str_at(c, "/type") == "Ready" {
                status = match str_at(c, "/status") {
                    "True" => "Ready".into(),
                    "False" => "NotReady".into(),
                    _ => "Unknown".into(),
                };
            }
        }
        if obj.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
            status.push_str(",SchedulingDisabled");
        }
        let mut roles: Vec<String> = obj
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(k, _)| {
                k.strip_prefix("node-role.kubernetes.io/")
                    .map(str::to_owned)
            })
            .filter(|r| !r.is_empty())
            .collect();
        roles.sort();
        let address = |kind: &str| {
            obj.pointer("/status/addresses")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|a| str_at(a, "/type") == kind)
                .map(|a| str_at(a, "/address").to_owned())
                .unwrap_or_else(|| "<none>".into())
        };
        let info = |p: &str| {
            let v = str_at(obj, &format!("/status/nodeInfo/{p}"));
            Value::String(if v.is_empty() {
                "<unknown>".into()
            } else {
                v.to_owned()
            })
        };
        vec![
            Value::String(table::name(obj)),
            Value::String(status),
            Value::String(if roles.is_empty() {
                "<none>".into()
            } else {
                roles.join(",")
            }),
            table::age(obj),
            Value::String(str_at(obj, "/status/nodeInfo/kubeletVersion").to_owned()),
            Value::String(address("InternalIP")),
            Value::String(address("ExternalIP")),
            info("osImage"),
            info("kernelVersion"),
            info("containerRuntimeVersion"),
        ]
    }
}
