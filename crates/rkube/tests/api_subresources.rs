//! End-to-end: the `scale`, `pods/binding`, `pods/eviction` and `namespaces/finalize`
//! subresources, with the real kubectl (`scale`, `drain`) and curl.

mod common;

use std::process::Output;

use common::{Apiserver, json, kubectl, kubectls};
use serde_json::{Value, json};

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "kubectl failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn send(server: &Apiserver, method: &str, path: &str, body: &Value) -> Value {
    server.send(method, path, "application/json", &body.to_string())
}

fn create_file(server: &Apiserver, bin: &std::path::Path, yaml: &str) {
    let path = server.dir.path().join("objects.yaml");
    std::fs::write(&path, yaml).unwrap();
    ok(kubectl(
        bin,
        &server.kubeconfig(),
        &["create", "--validate=false", "-f", path.to_str().unwrap()],
    ));
}

const WORKLOADS: &str = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: db, image: postgres}]}
---
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: rs}
spec:
  selector: {matchLabels: {app: rs}}
  template:
    metadata: {labels: {app: rs}}
    spec: {containers: [{name: c, image: nginx}]}
---
apiVersion: v1
kind: ReplicationController
metadata: {name: rc}
spec:
  selector: {app: rc}
  template:
    metadata: {labels: {app: rc}}
    spec: {containers: [{name: c, image: nginx}]}
"#;

#[test]
fn kubectl_scale_works_on_every_scalable_kind() {
    for bin in kubectls() {
        let server = Apiserver::start();
        let kc = server.kubeconfig();
        ok(kubectl(
            &bin,
            &kc,
            &[
                "create",
                "deployment",
                "web",
                "--image=nginx",
                "--replicas=2",
            ],
        ));
        create_file(&server, &bin, WORKLOADS);
        for what in [
            "deployment/web",
            "statefulset/db",
            "replicaset/rs",
            "replicationcontroller/rc",
        ] {
            ok(kubectl(&bin, &kc, &["scale", what, "--replicas=4"]));
            let obj = json(&kubectl(&bin, &kc, &["get", what, "-o", "json"]));
            assert_eq!(obj["spec"]["replicas"], 4, "{what}");
            assert_eq!(obj["metadata"]["generation"], 2, "{what}");
            let out = kubectl(
                &bin,
                &kc,
                &["scale", what, "--current-replicas=3", "--replicas=1"],
            );
            assert!(
                !out.status.success(),
                "{what}: a wrong precondition must fail"
            );
            ok(kubectl(
                &bin,
                &kc,
                &["scale", what, "--current-replicas=4", "--replicas=0"],
            ));
            let obj = json(&kubectl(&bin, &kc, &["get", what, "-o", "json"]));
            assert_eq!(obj["spec"]["replicas"], 0, "{what}");
        }
        let scale = json(&server.curl(
            &["/apis/apps/v1/namespaces/default/deployments/web/scale"],
            true,
        ));
        assert_eq!(scale["kind"], "Scale");
        assert_eq!(scale["apiVersion"], "autoscaling/v1");
        assert_eq!(scale["spec"]["replicas"], 0);
        assert_eq!(scale["status"]["selector"], "app=web");
        let mut bad = scale.clone();
        bad["spec"]["replicas"] = json!(-1);
        let err = send(
            &server,
            "PUT",
            "/apis/apps/v1/namespaces/default/deployments/web/scale",
            &bad,
        );
        assert_eq!(err["code"], 422, "{err}");
        assert_eq!(
            err["message"],
            "Scale.autoscaling \"web\" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0"
        );
        let mut stale = scale.clone();
        stale["metadata"]["resourceVersion"] = json!("1");
        let err = send(
            &server,
            "PUT",
            "/apis/apps/v1/namespaces/default/deployments/web/scale",
            &stale,
        );
        assert_eq!(err["code"], 409, "{err}");
    }
}

const POD: &str = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"NAME","labels":{"app":"x"}},
  "spec":{"containers":[{"name":"c","image":"busybox"}]}}"#;

fn pod(server: &Apiserver, name: &str) {
    let body: Value = serde_json::from_str(&POD.replace("NAME", name)).unwrap();
    let created = send(server, "POST", "/api/v1/namespaces/default/pods", &body);
    assert_eq!(created["metadata"]["name"], name, "{created}");
}

fn bind(server: &Apiserver, name: &str, node: &str) -> Value {
    send(
        server,
        "POST",
        &format!("/api/v1/namespaces/default/pods/{name}/binding"),
        &json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node}}),
    )
}

/// Marks a pod running and ready, as a kubelet would.
fn run(server: &Apiserver, name: &str) {
    let path = format!("/api/v1/namespaces/default/pods/{name}/status");
    let patched = json(&server.curl(
        &[
            &path,
            "-X",
            "PATCH",
            "-H",
            "Content-Type: application/merge-patch+json",
            "--data-binary",
            r#"{"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}]}}"#,
        ],
        true,
    ));
    assert_eq!(patched["status"]["phase"], "Running", "{patched}");
}

#[test]
fn binding_sets_the_node_once() {
    let server = Apiserver::start();
    pod(&server, "p");
    let status = bind(&server, "p", "node1");
    assert_eq!(
        (status["status"].as_str(), status["code"].as_i64()),
        (Some("Success"), Some(201)),
        "{status}"
    );
    let p = json(&server.curl(&["/api/v1/namespaces/default/pods/p"], true));
    assert_eq!(p["spec"]["nodeName"], "node1");
    let scheduled = p["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "PodScheduled")
        .cloned()
        .unwrap();
    assert_eq!(scheduled["status"], "True");
    let again = bind(&server, "p", "node2");
    assert_eq!(again["code"], 409, "{again}");
    assert_eq!(
        again["message"],
        "Operation cannot be fulfilled on pods/binding \"p\": pod p is already assigned to node \"node1\""
    );
    let missing = bind(&server, "nope", "node1");
    assert_eq!(missing["code"], 404, "{missing}");
    let no_target = send(
        &server,
        "POST",
        "/api/v1/namespaces/default/pods/p/binding",
        &json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"}, "target": {}}),
    );
    assert_eq!(no_target["code"], 422, "{no_target}");
}

#[test]
fn eviction_honours_disruption_budgets() {
    let server = Apiserver::start();
    let evict = |name: &str| {
        send(
            &server,
            "POST",
            &format!("/api/v1/namespaces/default/pods/{name}/eviction"),
            &json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name},
                    "deleteOptions": {"gracePeriodSeconds": 0}}),
        )
    };
    // No budget: the pod goes.
    pod(&server, "free");
    run(&server, "free");
    assert_eq!(evict("free")["code"], 201);
    let gone = json(&server.curl(&["/api/v1/namespaces/default/pods/free"], true));
    assert_eq!(gone["code"], 404, "{gone}");

    pod(&server, "kept");
    run(&server, "kept");
    let pdb = json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "budget"}, "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "x"}}}});
    send(
        &server,
        "POST",
        "/apis/policy/v1/namespaces/default/poddisruptionbudgets",
        &pdb,
    );
    // No controller has computed the budget's status yet.
    let err = evict("kept");
    assert_eq!(err["code"], 429, "{err}");
    assert_eq!(
        err["message"],
        "Cannot evict pod as it would violate the pod's disruption budget."
    );
    assert_eq!(
        err["details"]["causes"][0]["message"],
        "The disruption budget budget is still being processed by the server."
    );
    let status_path = "/apis/policy/v1/namespaces/default/poddisruptionbudgets/budget/status";
    let set_status = |allowed: i64| {
        let out = json(&server.curl(
            &[
                status_path,
                "-X",
                "PATCH",
                "-H",
                "Content-Type: application/merge-patch+json",
                "--data-binary",
                &json!({"status": {"observedGeneration": 1, "disruptionsAllowed": allowed,
                    "currentHealthy": 1 + allowed, "desiredHealthy": 1, "expectedPods": 1 + allowed}})
                .to_string(),
            ],
            true,
        ));
        assert_eq!(out["status"]["disruptionsAllowed"], allowed, "{out}");
    };
    set_status(0);
    let err = evict("kept");
    assert_eq!(err["code"], 429, "{err}");
    assert_eq!(
        err["details"]["causes"][0]["message"],
        "The disruption budget budget needs 1 healthy pods and has 1 currently"
    );
    set_status(1);
    assert_eq!(evict("kept")["code"], 201);
    let budget = json(&server.curl(&[status_path], true));
    assert_eq!(budget["status"]["disruptionsAllowed"], 0);
    assert!(
        budget["status"]["disruptedPods"]["kept"].is_string(),
        "{budget}"
    );
}

#[test]
fn kubectl_drain_evicts_the_pods_of_a_node() {
    let server = Apiserver::start();
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node1"}});
    send(&server, "POST", "/api/v1/nodes", &node);
    for name in ["a", "b"] {
        pod(&server, name);
        bind(&server, name, "node1");
        run(&server, name);
    }
    pod(&server, "elsewhere");
    bind(&server, "elsewhere", "node2");
    for bin in kubectls() {
        // Cordoned beforehand: kubectl cordons with a strategic merge patch, which is the patch
        // engine's (drain skips the patch for a node already unschedulable).
        ok(kubectl(
            &bin,
            &server.kubeconfig(),
            &[
                "patch",
                "node",
                "node1",
                "--type=merge",
                "-p",
                r#"{"spec":{"unschedulable":true}}"#,
            ],
        ));
        let out = kubectl(
            &bin,
            &server.kubeconfig(),
            &[
                "drain",
                "node1",
                "--force",
                "--grace-period=0",
                "--timeout=30s",
            ],
        );
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let out = ok(out);
        assert!(out.contains("drained"), "{out}");
        assert!(!stderr.contains("error"), "{stderr}");
        let pods = json(&kubectl(
            &bin,
            &server.kubeconfig(),
            &["get", "pods", "-o", "json"],
        ));
        let names: Vec<&str> = pods["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["metadata"]["name"].as_str())
            .collect();
        assert_eq!(names, ["elsewhere"]);
        let n = json(&kubectl(
            &bin,
            &server.kubeconfig(),
            &["get", "node", "node1", "-o", "json"],
        ));
        assert_eq!(n["spec"]["unschedulable"], true);
    }
}

#[test]
fn finalize_sets_spec_finalizers_and_other_subresources_are_501() {
    let server = Apiserver::start();
    send(
        &server,
        "POST",
        "/api/v1/namespaces",
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}),
    );
    let ns = json(&server.curl(&["/api/v1/namespaces/team"], true));
    assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
    let mut cleared = ns.clone();
    cleared["spec"]["finalizers"] = json!([]);
    let out = send(&server, "PUT", "/api/v1/namespaces/team/finalize", &cleared);
    assert_eq!(out["spec"]["finalizers"], json!([]), "{out}");
    let mut bad = ns.clone();
    bad["spec"]["finalizers"] = json!(["not a name!"]);
    let err = send(&server, "PUT", "/api/v1/namespaces/team/finalize", &bad);
    assert_eq!(err["code"], 422, "{err}");

    pod(&server, "p");
    let log = json(&server.curl(&["/api/v1/namespaces/default/pods/p/log"], true));
    assert_eq!(log["code"], 501, "{log}");
    assert_eq!(
        log["message"],
        "the pods/log subresource is not served by rkube yet"
    );
}
