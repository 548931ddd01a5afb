//! autoscaling/v1 `HorizontalPodAutoscaler`: the autoscaling/v2 objects (stored at
//! `/registry/horizontalpodautoscalers`) as the older version shows them, with a CPU target and
//! CPU reading of their own. What v1 has no field for — other metrics, behaviour, conditions,
//! other current metrics — rides in annotations, as upstream keeps it, so that an object read
//! and written back through v1 loses nothing.

use serde_json::{Map, Value, json};

use super::Conversion;

const METRICS: &str = "autoscaling.alpha.kubernetes.io/metrics";
const CURRENT_METRICS: &str = "autoscaling.alpha.kubernetes.io/current-metrics";
const CONDITIONS: &str = "autoscaling.alpha.kubernetes.io/conditions";
const BEHAVIOR: &str = "autoscaling.alpha.kubernetes.io/behavior";

/// The conversion between autoscaling/v1 and autoscaling/v2.
pub struct HorizontalPodAutoscalerV1;

/// Whether a v2 metric is the CPU utilisation target v1 shows as its own field.
fn is_cpu_utilization(metric: &Value, field: &str) -> bool {
    metric["type"] == "Resource"
        && metric["resource"]["name"] == "cpu"
        && metric["resource"][field]["averageUtilization"].is_number()
}

fn annotations(obj: &mut Value) -> &mut Map<String, Value> {
    let meta = super::meta::metadata_mut(obj);
    let entry = meta
        .entry("annotations")
        .or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    entry.as_object_mut().expect("made an object above")
}

/// Moves `list` into annotation `key` as JSON text when it is not empty.
fn stash(obj: &mut Value, key: &str, list: Vec<Value>) {
    if !list.is_empty() {
        let text = serde_json::to_string(&list).unwrap_or_default();
        annotations(obj).insert(key.into(), Value::String(text));
    }
}

/// Takes annotation `key` back out as JSON.
fn unstash(obj: &mut Value, key: &str) -> Option<Value> {
    let text = obj
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)?
        .remove(key)?;
    serde_json::from_str(text.as_str()?).ok()
}

fn drop_empty_annotations(obj: &mut Value) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut)
        && meta
            .get("annotations")
            .and_then(Value::as_object)
            .is_some_and(Map::is_empty)
    {
        meta.remove("annotations");
    }
}

impl Conversion for HorizontalPodAutoscalerV1 {
    fn to_served(&self, mut obj: Value) -> Value {
        obj["apiVersion"] = json!("autoscaling/v1");
        let spec = obj
            .get_mut("spec")
            .and_then(Value::as_object_mut)
            .map(std::mem::take);
        if let Some(mut spec) = spec {
            let metrics = match spec.remove("metrics") {
                Some(Value::Array(m)) => m,
                _ => Vec::new(),
            };
            let (cpu, others): (Vec<Value>, Vec<Value>) = metrics
                .into_iter()
                .partition(|m| is_cpu_utilization(m, "target"));
            if let Some(cpu) = cpu.first() {
                spec.insert(
                    "targetCPUUtilizationPercentage".into(),
                    cpu["resource"]["target"]["averageUtilization"].clone(),
                );
            }
            let behavior = spec.remove("behavior");
            obj["spec"] = Value::Object(spec);
            stash(&mut obj, METRICS, others);
            if let Some(b) = behavior.filter(|b| !b.is_null()) {
                let text = serde_json::to_string(&b).unwrap_or_default();
                annotations(&mut obj).insert(BEHAVIOR.into(), Value::String(text));
            }
        }
        let status = obj
            .get_mut("status")
            .and_then(Value::as_object_mut)
            .map(std::mem::take);
        if let Some(mut status) = status {
            let current = match status.remove("currentMetrics") {
                Some(Value::Array(m)) => m,
                _ => Vec::new(),
            };
            let (cpu, others): (Vec<Value>, Vec<Value>) = current
                .into_iter()
                .partition(|m| is_cpu_utilization(m, "current"));
            if let Some(cpu) = cpu.first() {
                status.insert(
                    "currentCPUUtilizationPercentage".into(),
                    cpu["resource"]["current"]["averageUtilization"].clone(),
                );
            }
            let conditions = match status.remove("conditions") {
                Some(Value::Array(c)) => c,
                _ => Vec::new(),
            };
            obj["status"] = Value::Object(status);
            stash(&mut obj, CURRENT_METRICS, others);
            stash(&mut obj, CONDITIONS, conditions);
        }
        obj
    }

    fn to_stored(&self, mut obj: Value) -> Value {
        obj["apiVersion"] = json!("autoscaling/v2");
        let mut metrics = match unstash(&mut obj, METRICS) {
            Some(Value::Array(m)) => m,
            _ => Vec::new(),
        };
        let behavior = unstash(&mut obj, BEHAVIOR);
        let mut current = match unstash(&mut obj, CURRENT_METRICS) {
            Some(Value::Array(m)) => m,
            _ => Vec::new(),
        };
        let conditions = unstash(&mut obj, CONDITIONS);
        drop_empty_annotations(&mut obj);
        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
            if let Some(cpu) = spec.remove("targetCPUUtilizationPercentage")
                && !cpu.is_null()
            {
                metrics.insert(
                    0,
                    json!({"type": "Resource", "resource": {"name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": cpu}}}),
                );
            }
            if !metrics.is_empty() {
                spec.insert("metrics".into(), Value::Array(metrics));
            }
            if let Some(b) = behavior {
                spec.insert("behavior".into(), b);
            }
        }
        if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut) {
            if let Some(cpu) = status.remove("currentCPUUtilizationPercentage")
                && !cpu.is_null()
            {
                current.insert(
                    0,
                    json!({"type": "Resource", "resource": {"name": "cpu",
                        "current": {"averageUtilization": cpu}}}),
                );
            }
            if !current.is_empty() {
                status.insert("currentMetrics".into(), Value::Array(current));
            }
            if let Some(c) = conditions {
                status.insert("conditions".into(), c);
            }
        }
        obj
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_shows_the_cpu_target_and_keeps_the_rest_in_annotations() {
        let v2 = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 1, "maxReplicas": 5,
                "metrics": [
                    {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}},
                    {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}}],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}},
            "status": {"currentReplicas": 2, "desiredReplicas": 2,
                "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 30}}}],
                "conditions": [{"type": "AbleToScale", "status": "True"}]}});
        let v1 = HorizontalPodAutoscalerV1.to_served(v2.clone());
        assert_eq!(v1["apiVersion"], "autoscaling/v1");
        assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 60);
        assert!(v1["spec"].get("metrics").is_none() && v1["spec"].get("behavior").is_none());
        assert_eq!(v1["status"]["currentCPUUtilizationPercentage"], 30);
        let annotations = v1["metadata"]["annotations"].as_object().unwrap();
        assert!(annotations[METRICS].as_str().unwrap().contains("memory"));
        assert!(annotations.contains_key(BEHAVIOR) && annotations.contains_key(CONDITIONS));
        assert_eq!(HorizontalPodAutoscalerV1.to_stored(v1), v2);
    }

    #[test]
    fn a_v1_object_becomes_a_v2_cpu_metric() {
        let v1 = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 3,
                "targetCPUUtilizationPercentage": 50}});
        let v2 = HorizontalPodAutoscalerV1.to_stored(v1);
        assert_eq!(
            v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            50
        );
        assert!(v2["metadata"].get("annotations").is_none());
    }
}
