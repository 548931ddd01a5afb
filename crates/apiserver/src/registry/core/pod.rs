//! Pod: the pod-spec defaults and validation that Deployments and ReplicaSets reuse for their
//! templates, the initial status (`Pending`, QoS class), what an update may change (images,
//! `activeDeadlineSeconds`, added tolerations), graceful deletion, and kubectl's columns.

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use crate::registry::validation::{self, FieldError, FieldErrors};
use crate::registry::{Column, Strategy, default_at, str_at, table};

/// The Pod strategy.
pub struct PodStrategy;

const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];
const DNS_POLICIES: &[&str] = &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];
const PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP"];

/// Applies upstream's pod-spec defaults to `spec` (a pod's or a template's).
pub fn default_pod_spec(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    default_at(spec, "/restartPolicy", json!("Always"));
    default_at(spec, "/dnsPolicy", json!("ClusterFirst"));
    default_at(spec, "/terminationGracePeriodSeconds", json!(30));
    default_at(spec, "/securityContext", json!({}));
    default_at(spec, "/schedulerName", json!("default-scheduler"));
    default_at(spec, "/enableServiceLinks", json!(true));
    for list in ["initContainers", "containers"] {
        if let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in containers.iter_mut().filter(|c| c.is_object()) {
                default_container(c);
            }
        }
    }
}

fn default_container(c: &mut Value) {
    default_at(c, "/terminationMessagePath", json!("/dev/termination-log"));
    default_at(c, "/terminationMessagePolicy", json!("File"));
    default_at(c, "/resources", json!({}));
    let image = str_at(c, "/image");
    // The tag follows the last ':' after the last '/' (a registry port is not a tag).
    let last = image.rsplit('/').next().unwrap_or_default();
    let untagged_or_latest =
        !image.contains('@') && last.split_once(':').is_none_or(|(_, tag)| tag == "latest");
    let policy = if untagged_or_latest {
        "Always"
    } else {
        "IfNotPresent"
    };
    default_at(c, "/imagePullPolicy", json!(policy));
    if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter(|p| p.is_object()) {
            default_at(p, "/protocol", json!("TCP"));
        }
    }
}

/// Validates a pod spec at `path` (`spec` or `spec.template.spec`).
pub fn validate_pod_spec(spec: Option<&Value>, path: &str, errors: &mut FieldErrors) {
    let Some(spec) = spec.filter(|s| s.is_object()) else {
        errors.push(FieldError::required(path, ""));
        return;
    };
    let mut names = std::collections::HashSet::new();
    let containers = spec.get("containers").and_then(Value::as_array);
    if containers.is_none_or(Vec::is_empty) {
        errors.push(FieldError::required(format!("{path}.containers"), ""));
    }
    for list in ["initContainers", "containers"] {
        let Some(items) = spec.get(list).and_then(Value::as_array) else {
            continue;
        };
        for (i, c) in items.iter().enumerate() {
            validate_container(c, &format!("{path}.{list}[{i}]"), &mut names, errors);
        }
    }
    let restart = str_at(spec, "/restartPolicy");
    if !restart.is_empty() && !RESTART_POLICIES.contains(&restart) {
        errors.push(FieldError::not_supported(
            format!("{path}.restartPolicy"),
            restart.into(),
            RESTART_POLICIES,
        ));
    }
    let dns = str_at(spec, "/dnsPolicy");
    if !dns.is_empty() && !DNS_POLICIES.contains(&dns) {
        errors.push(FieldError::not_supported(
            format!("{path}.dnsPolicy"),
            dns.into(),
            DNS_POLICIES,
        ));
    }
    if let Some(grace) = spec
        .get("terminationGracePeriodSeconds")
        .and_then(Value::as_i64)
        && grace < 0
    {
        errors.push(FieldError::invalid(
            format!("{path}.terminationGracePeriodSeconds"),
            grace.into(),
            "must be greater than or equal to 0",
        ));
    }
    let node = str_at(spec, "/nodeName");
    if !node.is_empty() {
        for problem in validation::dns1123_subdomain(node) {
            errors.push(FieldError::invalid(
                format!("{path}.nodeName"),
                node.into(),
                problem,
            ));
        }
    }
    if let Some(selector) = spec.get("nodeSelector") {
        validation::validate_labels(selector, &format!("{path}.nodeSelector"), errors);
    }
}

fn validate_container(
    c: &Value,
    path: &str,
    names: &mut std::collections::HashSet<String>,
    errors: &mut FieldErrors,
) {
    let name = str_at(c, "/name");
    if name.is_empty() {
        errors.push(FieldError::required(format!("{path}.name"), ""));
    } else {
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
    if str_at(c, "/image").trim().is_empty() {
        errors.push(FieldError::required(format!("{path}.image"), ""));
    }
    let pull = str_at(c, "/imagePullPolicy");
    if !pull.is_empty() && !PULL_POLICIES.contains(&pull) {
        errors.push(FieldError::not_supported(
            format!("{path}.imagePullPolicy"),
            pull.into(),
            PULL_POLICIES,
        ));
    }
    let mut port_names = std::collections::HashSet::new();
    for (i, p) in c
        .get("ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let pp = format!("{path}.ports[{i}]");
        match p.get("containerPort").and_then(Value::as_i64) {
            Some(port) if (1..=65535).contains(&port) => {}
            Some(port) => errors.push(FieldError::invalid(
                format!("{pp}.containerPort"),
                port.into(),
                "must be between 1 and 65535, inclusive",
            )),
            None => errors.push(FieldError::required(format!("{pp}.containerPort"), "")),
        }
        let proto = str_at(p, "/protocol");
        if !proto.is_empty() && !PROTOCOLS.contains(&proto) {
            errors.push(FieldError::not_supported(
                format!("{pp}.protocol"),
                proto.into(),
                PROTOCOLS,
            ));
        }
        let pname = str_at(p, "/name");
        if !pname.is_empty() && !port_names.insert(pname.to_owned()) {
            errors.push(FieldError::duplicate(format!("{pp}.name"), pname.into()));
        }
    }
}

/// Upstream's QoS class from the containers' requests and limits.
fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .filter_map(|l| spec.get(*l).and_then(Value::as_array))
        .flatten()
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &containers {
        let requests = c.pointer("/resources/requests").and_then(Value::as_object);
        let limits = c.pointer("/resources/limits").and_then(Value::as_object);
        if requests.is_some_and(|r| !r.is_empty()) || limits.is_some_and(|l| !l.is_empty()) {
            any = true;
        }
        for resource in ["cpu", "memory"] {
            let limit = limits.and_then(|l| l.get(resource));
            let request = requests.and_then(|r| r.get(resource)).or(limit);
            if limit.is_none() || request != limit {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

/// The STATUS column: a deletion, a container's waiting/terminated reason, or the phase.
fn display_status(obj: &Value) -> String {
    if obj
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
    {
        return "Terminating".into();
    }
    let mut reason = str_at(obj, "/status/reason").to_owned();
    if reason.is_empty() {
        reason = str_at(obj, "/status/phase").to_owned();
    }
    for cs in obj
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let waiting = str_at(cs, "/state/waiting/reason");
        let terminated = str_at(cs, "/state/terminated/reason");
        if !waiting.is_empty() {
            reason = waiting.to_owned();
        } else if !terminated.is_empty() {
            reason = terminated.to_owned();
        }
    }
    reason
}

impl Strategy for PodStrategy {
    fn check_shape(&self, obj: &Value) -> Result<(), String> {
        crate::registry::check_typed_lenient::<Pod>(obj)
    }

    fn default(&self, obj: &mut Value) {
        if let Some(spec) = obj.get_mut("spec") {
            default_pod_spec(spec);
        }
    }

    fn prepare_for_create(&self, obj: &mut Value) {
        let qos = qos_class(obj.get("spec").unwrap_or(&Value::Null));
        obj["status"] = json!({"phase": "Pending", "qosClass": qos});
    }

    fn validate(&self, obj: &Value) -> FieldErrors {
        let mut errors = Vec::new();
        validate_pod_spec(obj.get("spec"), "spec", &mut errors);
        errors
    }

    fn validate_update(&self, new: &Value, old: &Value) -> FieldErrors {
        let mut errors = self.validate(new);
        // Only images, activeDeadlineSeconds, tolerations and the grace period may change.
        let mut allowed = old.get("spec").cloned().unwrap_or(Value::Null);
        let new_spec = new.get("spec").cloned().unwrap_or(Value::Null);
        for list in ["initContainers", "containers"] {
            let new_list = new_spec.get(list).and_then(Value::as_array);
            if let (Some(containers), Some(new_list)) = (
                allowed.get_mut(list).and_then(Value::as_array_mut),
                new_list,
            ) && containers.len() == new_list.len()
            {
                for (c, n) in containers.iter_mut().zip(new_list) {
                    if let (Some(map), Some(image)) = (c.as_object_mut(), n.get("image")) {
                        map.insert("image".into(), image.clone());
                    }
                }
            }
        }
        for field in [
            "activeDeadlineSeconds",
            "tolerations",
            "terminationGracePeriodSeconds",
        ] {
            if let Some(map) = allowed.as_object_mut() {
                match new_spec.get(field) {
                    Some(v) => map.insert(field.into(), v.clone()),
                    None => map.remove(field),
                };
            }
        }
        if allowed != new_spec {
            errors.push(FieldError::forbidden(
                "spec",
                "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
            ));
        }
        errors
    }

    fn default_grace_period(&self, obj: &Value) -> Option<i64> {
        // A pod no kubelet runs, or one that has finished, goes at once.
        let phase = str_at(obj, "/status/phase");
        if str_at(obj, "/spec/nodeName").is_empty() || phase == "Succeeded" || phase == "Failed" {
            return Some(0);
        }
        Some(
            obj.pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(30),
        )
    }

    fn return_deleted_object(&self) -> bool {
        true
    }

    fn field_labels(&self, obj: &Value) -> Vec<(&'static str, String)> {
        let s = |p: &str| str_at(obj, p).to_owned();
        vec![
            ("spec.nodeName", s("/spec/nodeName")),
            ("spec.restartPolicy", s("/spec/restartPolicy")),
            ("spec.schedulerName", s("/spec/schedulerName")),
            ("spec.serviceAccountName", s("/spec/serviceAccountName")),
            (
                "spec.hostNetwork",
                obj.pointer("/spec/hostNetwork")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
                    .to_string(),
            ),
            ("status.phase", s("/status/phase")),
            ("status.podIP", s("/status/podIP")),
            ("status.nominatedNodeName", s("/status/nominatedNodeName")),
        ]
    }

    fn field_label_names(&self) -> &'static [&'static str] {
        &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ]
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::NAME,
            Column::new("Ready", "string", "The aggregate readiness state of this pod for accepting traffic."),
            Column::new("Status", "string", "The aggregate status of the containers in this pod."),
            Column::new("Restarts", "string", "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
            Column::AGE,
            Column::new("IP", "string", "IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.").wide(),
            Column::new("Node", "string", "NodeName is a request to schedule this pod onto a specific node.").wide(),
            Column::new("Nominated Node", "string", "nominatedNodeName is set only when this pod preempts other pods on the node.").wide(),
            Column::new("Readiness Gates", "string", "If specified, all readiness gates will be evaluated for pod readiness.").wide(),
        ]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        let total = obj
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        let statuses = obj
            .pointer("/status/containerStatuses")
            .and_then(Value::as_array);
        let ready = statuses
            .into_iter()
            .flatten()
            .filter(|s| s.get("ready").and_then(Value::as_bool) == Some(true))
            .count();
        let restarts: i64 = statuses
            .into_iter()
            .flatten()
            .map(|s| table::int_at(s, "/restartCount"))
            .sum();
        let or_none = |p: &str| {
            let v = str_at(obj, p);
            Value::String(if v.is_empty() {
                "<none>".into()
            } else {
                v.to_owned()
            })
        };
        let gates = obj
            .pointer("/spec/readinessGates")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        vec![
            Value::String(table::name(obj)),
            Value::String(format!("{ready}/{total}")),
            Value::String(display_status(obj)),
            Value::String(restarts.to_string()),
            table::age(obj),
            or_none("/status/podIP"),
            or_none("/spec/nodeName"),
            or_none("/status/nominatedNodeName"),
            Value::String(if gates == 0 {
                "<none>".into()
            } else {
                format!("0/{gates}")
            }),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_upstream() {
        let mut pod = json!({"spec": {"containers": [{"name": "a", "image": "nginx"}, {"name": "b", "image": "reg:5000/x:1.2", "ports": [{"containerPort": 80}]}]}});
        PodStrategy.default(&mut pod);
        assert_eq!(pod["spec"]["restartPolicy"], "Always");
        assert_eq!(pod["spec"]["dnsPolicy"], "ClusterFirst");
        assert_eq!(pod["spec"]["terminationGracePeriodSeconds"], 30);
        assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(
            pod["spec"]["containers"][1]["imagePullPolicy"],
            "IfNotPresent"
        );
        assert_eq!(pod["spec"]["containers"][1]["ports"][0]["protocol"], "TCP");
        PodStrategy.prepare_for_create(&mut pod);
        assert_eq!(
            pod["status"],
            json!({"phase": "Pending", "qosClass": "BestEffort"})
        );
    }

    #[test]
    fn containers_need_unique_names_and_an_image() {
        let pod = json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "a"}]}});
        let errors: Vec<String> = PodStrategy
            .validate(&pod)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errors,
            [
                r#"spec.containers[1].name: Duplicate value: "a""#,
                "spec.containers[1].image: Required value",
            ]
        );
        let errors = PodStrategy.validate(&json!({"spec": {}}));
        assert_eq!(errors[0].to_string(), "spec.containers: Required value");
    }

    #[test]
    fn updates_may_change_images_but_not_the_rest_of_the_spec() {
        let old = json!({"spec": {"containers": [{"name": "a", "image": "x"}]}});
        let new = json!({"spec": {"containers": [{"name": "a", "image": "y"}]}});
        assert!(PodStrategy.validate_update(&new, &old).is_empty());
        let new = json!({"spec": {"containers": [{"name": "a", "image": "y"}], "nodeName": "n"}});
        assert_eq!(PodStrategy.validate_update(&new, &old)[0].field, "spec");
    }

    #[test]
    fn qos_classes() {
        let g = json!({"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]});
        assert_eq!(qos_class(&g), "Guaranteed");
        let b = json!({"containers": [{"resources": {"requests": {"cpu": "1"}}}]});
        assert_eq!(qos_class(&b), "Burstable");
    }
}
