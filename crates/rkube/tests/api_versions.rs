//! One object, several API versions: events written as events.k8s.io/v1 read as core/v1 events
//! and back, autoscaling/v1 HorizontalPodAutoscalers over the autoscaling/v2 objects, and a CRD
//! served in two versions. Each version answers in its own shape for get, list, watch, patch,
//! Table and delete, whatever version wrote the object.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Apiserver, json, kubectl, kubectls, stderr, stdout, write};

#[test]
fn events_are_served_as_core_v1_and_events_k8s_io_v1() {
    let server = Apiserver::start();
    let created = server.send(
        "POST",
        "/apis/events.k8s.io/v1/namespaces/default/events",
        "application/json",
        r#"{"apiVersion":"events.k8s.io/v1","kind":"Event","metadata":{"name":"web.1"},
            "eventTime":"2024-01-01T00:00:00.000000Z","reportingController":"example.com/ctl",
            "reportingInstance":"ctl-1","action":"Scaling","reason":"Scaled","type":"Normal",
            "note":"scaled web to 3","regarding":{"kind":"Deployment","name":"web","namespace":"default"}}"#,
    );
    assert_eq!(created["apiVersion"], "events.k8s.io/v1", "{created}");
    assert_eq!(created["note"], "scaled web to 3", "{created}");
    assert!(created.get("message").is_none(), "{created}");

    let core = json(&server.curl(&["/api/v1/namespaces/default/events/web.1"], true));
    assert_eq!(core["apiVersion"], "v1", "{core}");
    assert_eq!(core["message"], "scaled web to 3", "{core}");
    assert_eq!(core["involvedObject"]["name"], "web", "{core}");
    assert_eq!(core["reportingComponent"], "example.com/ctl", "{core}");
    // Core field selectors still select it.
    let selected = json(&server.curl(
        &["/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3Dweb"],
        true,
    ));
    assert_eq!(
        selected["items"].as_array().map(Vec::len),
        Some(1),
        "{selected}"
    );

    // A core write shows through events.k8s.io/v1, in lists too.
    let patched = server.send(
        "PATCH",
        "/api/v1/namespaces/default/events/web.1",
        "application/merge-patch+json",
        r#"{"message":"scaled web to 4"}"#,
    );
    assert_eq!(patched["message"], "scaled web to 4", "{patched}");
    let list = json(&server.curl(&["/apis/events.k8s.io/v1/namespaces/default/events"], true));
    assert_eq!(list["apiVersion"], "events.k8s.io/v1", "{list}");
    assert_eq!(list["items"][0]["note"], "scaled web to 4", "{list}");
    // A patch through events.k8s.io/v1 is made on its own fields.
    let patched = server.send(
        "PATCH",
        "/apis/events.k8s.io/v1/namespaces/default/events/web.1",
        "application/merge-patch+json",
        r#"{"note":"scaled web to 5"}"#,
    );
    assert_eq!(patched["note"], "scaled web to 5", "{patched}");
    let unknown = server.send(
        "PATCH",
        "/apis/events.k8s.io/v1/namespaces/default/events/web.1?fieldValidation=Strict",
        "application/merge-patch+json",
        r#"{"message":"not a field here"}"#,
    );
    assert_eq!(unknown["code"], 400, "{unknown}");
    assert!(
        unknown["message"]
            .as_str()
            .unwrap_or_default()
            .contains(r#"unknown field "message""#),
        "{unknown}"
    );

    for bin in kubectls() {
        let kc = server.kubeconfig();
        let out = kubectl(
            &bin,
            &kc,
            &[
                "get",
                "events.v1.events.k8s.io",
                "-o",
                "jsonpath={.items[0].note}",
            ],
        );
        assert_eq!(
            stdout(&out),
            "scaled web to 5",
            "{}: {}",
            bin.display(),
            stderr(&out)
        );
        let out = kubectl(
            &bin,
            &kc,
            &["get", "events", "-o", "jsonpath={.items[0].message}"],
        );
        assert_eq!(
            stdout(&out),
            "scaled web to 5",
            "{}: {}",
            bin.display(),
            stderr(&out)
        );
    }
    let gone = server.curl(
        &[
            "/apis/events.k8s.io/v1/namespaces/default/events/web.1",
            "-X",
            "DELETE",
        ],
        true,
    );
    assert_eq!(json(&gone)["status"], "Success", "{}", stdout(&gone));
}

#[test]
fn horizontal_pod_autoscalers_are_served_as_v1_and_v2() {
    let server = Apiserver::start();
    let v1 = server.send(
        "POST",
        "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers",
        "application/json",
        r#"{"apiVersion":"autoscaling/v1","kind":"HorizontalPodAutoscaler","metadata":{"name":"web"},
            "spec":{"scaleTargetRef":{"apiVersion":"apps/v1","kind":"Deployment","name":"web"},
            "minReplicas":1,"maxReplicas":5,"targetCPUUtilizationPercentage":60}}"#,
    );
    assert_eq!(v1["apiVersion"], "autoscaling/v1", "{v1}");
    assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 60, "{v1}");
    let v2 = json(&server.curl(
        &["/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers/web"],
        true,
    ));
    assert_eq!(v2["apiVersion"], "autoscaling/v2", "{v2}");
    assert_eq!(v2["spec"]["metrics"][0]["resource"]["name"], "cpu", "{v2}");
    assert_eq!(
        v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 60,
        "{v2}"
    );

    // A memory metric added through v2 survives a v1 read-modify-write.
    let v2 = server.send(
        "PATCH",
        "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers/web",
        "application/merge-patch+json",
        r#"{"spec":{"metrics":[
            {"type":"Resource","resource":{"name":"cpu","target":{"type":"Utilization","averageUtilization":60}}},
            {"type":"Resource","resource":{"name":"memory","target":{"type":"AverageValue","averageValue":"100Mi"}}}]}}"#,
    );
    assert_eq!(
        v2["spec"]["metrics"].as_array().map(Vec::len),
        Some(2),
        "{v2}"
    );
    let mut v1 = json(&server.curl(
        &["/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers/web"],
        true,
    ));
    assert!(
        v1["metadata"]["annotations"]["autoscaling.alpha.kubernetes.io/metrics"]
            .as_str()
            .unwrap_or_default()
            .contains("memory"),
        "{v1}"
    );
    v1["spec"]["maxReplicas"] = serde_json::json!(7);
    v1["spec"]["targetCPUUtilizationPercentage"] = serde_json::json!(70);
    let put = server.send(
        "PUT",
        "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers/web",
        "application/json",
        &v1.to_string(),
    );
    assert_eq!(put["spec"]["maxReplicas"], 7, "{put}");
    let v2 = json(&server.curl(
        &["/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers/web"],
        true,
    ));
    let metrics = v2["spec"]["metrics"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(metrics.len(), 2, "{v2}");
    assert_eq!(
        metrics[0]["resource"]["target"]["averageUtilization"], 70,
        "{v2}"
    );
    assert_eq!(metrics[1]["resource"]["name"], "memory", "{v2}");
    assert!(v2["metadata"].get("annotations").is_none(), "{v2}");

    // Table and watch through v1.
    let table = json(&server.curl(
        &[
            "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers?includeObject=Object",
            "-H",
            "Accept: application/json;as=Table;v=v1;g=meta.k8s.io",
        ],
        true,
    ));
    assert_eq!(
        table["rows"][0]["object"]["apiVersion"], "autoscaling/v1",
        "{table}"
    );
    let mut watch = Command::new("curl")
        .args(["-sSN", "--max-time", "5", "--cacert"])
        .arg(server.tls("server-ca.crt"))
        .arg("--cert")
        .arg(server.tls("client-admin.crt"))
        .arg("--key")
        .arg(server.tls("client-admin.key"))
        .arg(format!(
            "https://127.0.0.1:{}/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers?watch=1",
            server.port
        ))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(watch.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = watch.kill();
    let _ = watch.wait();
    let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
    assert_eq!(event["type"], "ADDED", "{line}");
    assert_eq!(event["object"]["apiVersion"], "autoscaling/v1", "{line}");
    assert_eq!(
        event["object"]["spec"]["targetCPUUtilizationPercentage"], 70,
        "{line}"
    );
}

const TWO_VERSIONS: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, kind: Widget}
  versions:
  - name: v1beta1
    served: true
    storage: false
    schema: {openAPIV3Schema: {type: object, properties: {spec: {type: object, properties: {size: {type: integer}}}}}}
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, properties: {spec: {type: object, properties: {size: {type: integer}}}}}}
"#;

#[test]
fn a_crd_serves_each_object_in_every_version() {
    let server = Apiserver::start();
    let crd = server.send(
        "POST",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        "application/yaml",
        TWO_VERSIONS,
    );
    assert_eq!(crd["metadata"]["name"], "widgets.example.com", "{crd}");
    let served = server.served_within("/apis/example.com/v1beta1/widgets", Duration::from_secs(1));
    assert!(served, "v1beta1 not served");
    let old = server.send(
        "POST",
        "/apis/example.com/v1beta1/namespaces/default/widgets",
        "application/yaml",
        "apiVersion: example.com/v1beta1\nkind: Widget\nmetadata: {name: w}\nspec: {size: 2}\n",
    );
    assert_eq!(old["apiVersion"], "example.com/v1beta1", "{old}");
    let new = json(&server.curl(&["/apis/example.com/v1/namespaces/default/widgets/w"], true));
    assert_eq!(new["apiVersion"], "example.com/v1", "{new}");
    assert_eq!(new["spec"]["size"], 2, "{new}");
    let list = json(&server.curl(&["/apis/example.com/v1beta1/widgets"], true));
    assert_eq!(list["apiVersion"], "example.com/v1beta1", "{list}");
    // Preferred version first in discovery.
    let group = json(&server.curl(&["/apis/example.com"], true));
    assert_eq!(group["preferredVersion"]["version"], "v1", "{group}");

    for bin in kubectls() {
        let kc = server.kubeconfig();
        let file = write(
            server.dir.path(),
            "w.yaml",
            "apiVersion: example.com/v1beta1\nkind: Widget\nmetadata: {name: w2}\nspec: {size: 3}\n",
        );
        let out = kubectl(&bin, &kc, &["apply", "-f", &file]);
        assert!(out.status.success(), "{}: {}", bin.display(), stderr(&out));
        let out = kubectl(
            &bin,
            &kc,
            &[
                "get",
                "widgets.v1.example.com",
                "w2",
                "-o",
                "jsonpath={.apiVersion} {.spec.size}",
            ],
        );
        assert_eq!(
            stdout(&out),
            "example.com/v1 3",
            "{}: {}",
            bin.display(),
            stderr(&out)
        );
        let out = kubectl(&bin, &kc, &["delete", "-f", &file]);
        assert!(out.status.success(), "{}: {}", bin.display(), stderr(&out));
    }
}
