//! Service: an RFC 1123 label name, type and port rules, defaults (type ClusterIP, protocol TCP,
//! targetPort = port, session affinity None), and what an update keeps of the allocated values.
//! The allocation itself (cluster IPs, node ports) needs the store and is in
//! [`crate::allocator`].

use k8s_openapi::api::core::v1::Service;
use serde_json::{Value, json};

use crate::registry::validation::{self, FieldError, FieldErrors, immutable};
use crate::registry::{Column, NameRule, Strategy, default_at, str_at, table};

/// The Service strategy.
pub struct ServiceStrategy;

const TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];

impl Strategy for ServiceStrategy {
    fn name_rule(&self) -> NameRule {
        NameRule::Label
    }

    fn check_shape(&self, obj: &Value) -> Result<(), String> {
        crate::registry::check_typed_lenient::<Service>(obj)
    }

    fn default(&self, obj: &mut Value) {
        default_at(obj, "/spec/type", json!("ClusterIP"));
        default_at(obj, "/spec/sessionAffinity", json!("None"));
        let kind = str_at(obj, "/spec/type").to_owned();
        if kind != "ExternalName" {
            default_at(obj, "/spec/internalTrafficPolicy", json!("Cluster"));
        }
        if kind == "NodePort" || kind == "LoadBalancer" {
            default_at(obj, "/spec/externalTrafficPolicy", json!("Cluster"));
        }
        if kind == "LoadBalancer" {
            default_at(obj, "/spec/allocateLoadBalancerNodePorts", json!(true));
        }
        if let Some(ports) = obj.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
            for p in ports.iter_mut().filter(|p| p.is_object()) {
                default_at(p, "/protocol", json!("TCP"));
                if let Some(port) = p.get("port").cloned() {
                    default_at(p, "/targetPort", port);
                }
            }
        }
    }

    fn prepare_for_create(&self, obj: &mut Value) {
        obj["status"] = json!({"loadBalancer": {}});
    }

    /// Upstream's `patchAllocatedValues` and `dropTypeDependentFields`: a client that leaves out
    /// the allocated IP or node ports (a `kubectl replace` of the original manifest) keeps them;
    /// a type change drops what the new type does not use, so it is released.
    fn prepare_for_update(&self, new: &mut Value, old: &Value) {
        let (new_type, old_type) = (
            str_at(new, "/spec/type").to_owned(),
            str_at(old, "/spec/type").to_owned(),
        );
        let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) else {
            return;
        };
        let old_spec = old.get("spec").cloned().unwrap_or(json!({}));
        const IP_FIELDS: [&str; 4] = ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"];
        if new_type != "ExternalName" && old_type != "ExternalName" {
            let unset = |spec: &serde_json::Map<String, Value>, f: &str| {
                spec.get(f).is_none_or(|v| {
                    v.is_null() || v.as_str() == Some("") || v.as_array().is_some_and(Vec::is_empty)
                })
            };
            if unset(spec, "clusterIP") && unset(spec, "clusterIPs") {
                for f in IP_FIELDS {
                    if unset(spec, f)
                        && let Some(v) = old_spec.get(f)
                    {
                        spec.insert(f.into(), v.clone());
                    }
                }
            }
        } else if new_type == "ExternalName" && old_type != "ExternalName" {
            for f in IP_FIELDS {
                if spec.get(f) == old_spec.get(f) {
                    spec.remove(f);
                }
            }
        }
        let old_ports = old_spec
            .get("ports")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let node_port_types = ["NodePort", "LoadBalancer"];
        let new_uses = node_port_types.contains(&new_type.as_str());
        let old_used = node_port_types.contains(&old_type.as_str());
        if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
            for p in ports.iter_mut() {
                let Some(map) = p.as_object_mut() else {
                    continue;
                };
                let same = old_ports.iter().find(|o| {
                    o.get("port") == map.get("port")
                        && o.get("protocol").unwrap_or(&json!("TCP"))
                            == map.get("protocol").unwrap_or(&json!("TCP"))
                });
                let old_node_port = same.and_then(|o| o.get("nodePort")).cloned();
                let unset = map
                    .get("nodePort")
                    .is_none_or(|v| v.is_null() || v.as_i64() == Some(0));
                if new_uses && old_used && unset {
                    if let Some(np) = old_node_port {
                        map.insert("nodePort".into(), np);
                    }
                } else if !new_uses && old_used && map.get("nodePort") == old_node_port.as_ref() {
                    map.remove("nodePort");
                }
            }
        }
    }

    fn validate(&self, obj: &Value) -> FieldErrors {
        let mut errors = Vec::new();
        let kind = str_at(obj, "/spec/type");
        if !TYPES.contains(&kind) {
            errors.push(FieldError::not_supported("spec.type", kind.into(), TYPES));
        }
        let ports = obj.pointer("/spec/ports").and_then(Value::as_array);
        let headless = str_at(obj, "/spec/clusterIP") == "None";
        if kind == "ExternalName" {
            let name = str_at(obj, "/spec/externalName");
            if name.is_empty() {
                errors.push(FieldError::required("spec.externalName", ""));
            } else {
                for problem in validation::dns1123_subdomain(name) {
                    errors.push(FieldError::invalid(
                        "spec.externalName",
                        name.into(),
                        problem,
                    ));
                }
            }
        } else if ports.is_none_or(Vec::is_empty) && !headless {
            errors.push(FieldError::required("spec.ports", ""));
        }
        let ports = ports.cloned().unwrap_or_default();
        let mut names = std::collections::HashSet::new();
        for (i, p) in ports.iter().enumerate() {
            let path = format!("spec.ports[{i}]");
            let name = str_at(p, "/name");
            if ports.len() > 1 && name.is_empty() {
                errors.push(FieldError::required(format!("{path}.name"), ""));
            } else if !name.is_empty() {
                for problem in validation::dns1123_label(name) {
                    errors.push(FieldError::invalid(
                        format!("{path}.name"),
                        name.into(),
                        problem,
                    ));
                }
                if !names.insert(name.to_owned()) {
                    errors.push(FieldError::duplicate(format!("{path}.name"), name.into()));
                }
            }
            match p.get("port").and_then(Value::as_i64) {
                Some(port) if (1..=65535).contains(&port) => {}
                Some(port) => errors.push(FieldError::invalid(
                    format!("{path}.port"),
                    port.into(),
                    "must be between 1 and 65535, inclusive",
                )),
                None => errors.push(FieldError::required(format!("{path}.port"), "")),
            }
            let proto = str_at(p, "/protocol");
            if !PROTOCOLS.contains(&proto) {
                errors.push(FieldError::not_supported(
                    format!("{path}.protocol"),
                    proto.into(),
                    PROTOCOLS,
                ));
            }
            if let Some(np) = p.get("nodePort").and_then(Value::as_i64)
                && kind != "NodePort"
                && kind != "LoadBalancer"
                && np != 0
            {
                errors.push(FieldError::forbidden(
                    format!("{path}.nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            }
        }
        if let Some(selector) = obj.pointer("/spec/selector") {
            validation::validate_labels(selector, "spec.selector", &mut errors);
        }
        errors
    }

    fn validate_update(&self, new: &Value, old: &Value) -> FieldErrors {
        let mut errors = self.validate(new);
        if !str_at(old, "/spec/clusterIP").is_empty() && str_at(new, "/spec/type") != "ExternalName"
        {
            immutable(old, new, "/spec/clusterIP", "spec.clusterIP", &mut errors);
        }
        errors
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::NAME,
            Column::new(
                "Type",
                "string",
                "type determines how the Service is exposed.",
            ),
            Column::new(
                "Cluster-IP",
                "string",
                "clusterIP is the IP address of the service and is usually assigned randomly.",
            ),
            Column::new(
                "External-IP",
                "string",
                "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.",
            ),
            Column::new(
                "Port(s)",
                "string",
                "The list of ports that are exposed by this service.",
            ),
            Column::AGE,
            Column::new(
                "Selector",
                "string",
                "Route service traffic to pods with label keys and values matching this selector.",
            )
            .wide(),
        ]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        let kind = str_at(obj, "/spec/type");
        let cluster_ip = str_at(obj, "/spec/clusterIP");
        let mut external: Vec<String> = obj
            .pointer("/spec/externalIPs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        for ing in obj
            .pointer("/status/loadBalancer/ingress")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let ip = str_at(ing, "/ip");
            let host = str_at(ing, "/hostname");
            external.push(if ip.is_empty() {
                host.to_owned()
            } else {
                ip.to_owned()
            });
        }
        let external = match (kind, external.is_empty()) {
            ("ExternalName", _) => str_at(obj, "/spec/externalName").to_owned(),
            ("LoadBalancer", true) => "<pending>".into(),
            (_, true) => "<none>".into(),
            _ => external.join(","),
        };
        let ports: Vec<String> = obj
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|p| {
                let port = table::int_at(p, "/port");
                let proto = str_at(p, "/protocol");
                match p.get("nodePort").and_then(Value::as_i64) {
                    Some(np) if np != 0 => format!("{port}:{np}/{proto}"),
                    _ => format!("{port}/{proto}"),
                }
            })
            .collect();
        vec![
            Value::String(table::name(obj)),
            Value::String(kind.to_owned()),
            Value::String(if cluster_ip.is_empty() {
                "<none>".into()
            } else {
                cluster_ip.to_owned()
            }),
            Value::String(external),
            Value::String(if ports.is_empty() {
                "<none>".into()
            } else {
                ports.join(",")
            }),
            table::age(obj),
            Value::String(table::map_selector_string(obj.pointer("/spec/selector"))),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_default_and_are_checked() {
        let mut svc = json!({"spec": {"ports": [{"port": 80}, {"port": 70000, "name": "b"}]}});
        ServiceStrategy.default(&mut svc);
        assert_eq!(svc["spec"]["type"], "ClusterIP");
        assert!(svc["spec"].get("externalTrafficPolicy").is_none());
        let mut lb = json!({"spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}});
        ServiceStrategy.default(&mut lb);
        assert_eq!(lb["spec"]["externalTrafficPolicy"], "Cluster");
        assert_eq!(lb["spec"]["allocateLoadBalancerNodePorts"], true);
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 80);
        let errors: Vec<String> = ServiceStrategy
            .validate(&svc)
            .iter()
            .map(|e| e.field.clone())
            .collect();
        assert_eq!(errors, ["spec.ports[0].name", "spec.ports[1].port"]);
        let errors = ServiceStrategy.validate(
            &json!({"spec": {"type": "Magic", "ports": [{"port": 1, "protocol": "TCP"}]}}),
        );
        assert_eq!(errors[0].field, "spec.type");
    }

    #[test]
    fn updates_keep_allocated_values_and_type_changes_drop_unused_ones() {
        let old = json!({"spec": {"type": "NodePort", "clusterIP": "10.43.0.9",
            "clusterIPs": ["10.43.0.9"], "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
            "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}]}});
        // A replace of the original manifest: no IP, no node port.
        let mut new =
            json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}});
        ServiceStrategy.prepare_for_update(&mut new, &old);
        assert_eq!(new["spec"]["clusterIP"], "10.43.0.9");
        assert_eq!(new["spec"]["ports"][0]["nodePort"], 30080);
        // NodePort -> ClusterIP drops the node port it had.
        let mut new = old.clone();
        new["spec"]["type"] = json!("ClusterIP");
        ServiceStrategy.prepare_for_update(&mut new, &old);
        assert!(new["spec"]["ports"][0].get("nodePort").is_none());
        assert_eq!(new["spec"]["clusterIP"], "10.43.0.9");
        // -> ExternalName drops the IP fields too.
        let mut new = old.clone();
        new["spec"]["type"] = json!("ExternalName");
        new["spec"]["externalName"] = json!("example.com");
        ServiceStrategy.prepare_for_update(&mut new, &old);
        for f in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            assert!(new["spec"].get(f).is_none(), "{f}");
        }
        assert!(ServiceStrategy.validate_update(&new, &old).is_empty());
    }
}
