//! Server-side apply and managedFields against `rkube apiserver`, driven by the real kubectl
//! (`apply --server-side`, conflicts, `--force-conflicts`, `scale`, client-side apply) and
//! helm (which applies server-side), plus the raw API's answers (409 causes, option errors).

mod common;

use std::path::Path;
use std::process::Output;

use common::{Apiserver, helm_bin, json, kubectl, kubectls, stderr, stdout, write};
use serde_json::Value;

const DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: c, image: busybox, ports: [{containerPort: 80}]}
"#;

fn ok(bin: &Path, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}: {}{}",
        bin.display(),
        stdout(out),
        stderr(out)
    );
    stdout(out)
}

/// `manager/operation[/subresource]` of every managedFields entry that owns `.spec.replicas`.
fn replicas_owners(obj: &Value) -> Vec<String> {
    obj["metadata"]["managedFields"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .filter(|e| e["fieldsV1"]["f:spec"].get("f:replicas").is_some())
        .map(|e| {
            let mut s = format!(
                "{}/{}",
                e["manager"].as_str().unwrap(),
                e["operation"].as_str().unwrap()
            );
            if let Some(sub) = e["subresource"].as_str() {
                s.push_str(&format!("/{sub}"));
            }
            s
        })
        .collect()
}

#[test]
fn kubectl_server_side_apply_conflicts_and_force() {
    for bin in kubectls() {
        let server = Apiserver::start();
        let kc = server.kubeconfig();
        let k = |args: &[&str]| kubectl(&bin, &kc, args);
        let get = || -> Value {
            let out = k(&[
                "get",
                "deployment",
                "web",
                "-o",
                "json",
                "--show-managed-fields",
            ]);
            serde_json::from_str(&ok(&bin, &out)).unwrap()
        };
        let dir = server.dir.path();
        let file = write(dir, "web.yaml", DEPLOYMENT);

        // Created by apply; applied again it does not change.
        let out = k(&["apply", "--server-side", "-f", &file]);
        assert!(ok(&bin, &out).contains("deployment.apps/web serverside-applied"));
        let first = get();
        assert_eq!(first["spec"]["replicas"], 2);
        let entry = &first["metadata"]["managedFields"][0];
        assert_eq!(
            (&entry["manager"], &entry["operation"], &entry["fieldsType"]),
            (&"kubectl".into(), &"Apply".into(), &"FieldsV1".into()),
            "{first}"
        );
        assert_eq!(entry["apiVersion"], "apps/v1");
        let fields = &entry["fieldsV1"]["f:spec"];
        assert!(fields.get("f:replicas").is_some(), "{fields}");
        assert!(
            fields["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"c\"}"]["f:ports"]
                ["k:{\"containerPort\":80,\"protocol\":\"TCP\"}"]
                .get("f:containerPort")
                .is_some(),
            "{fields}"
        );
        let out = k(&["apply", "--server-side", "-f", &file]);
        assert!(ok(&bin, &out).contains("serverside-applied"));
        assert_eq!(
            get()["metadata"]["resourceVersion"],
            first["metadata"]["resourceVersion"],
            "a no-op apply writes nothing"
        );

        // kubectl scale takes spec.replicas through the scale subresource; applying another
        // value now conflicts.
        ok(&bin, &k(&["scale", "deployment", "web", "--replicas=4"]));
        // Without --field-manager the manager is the User-Agent's program name, which
        // client-go takes from the binary's file name.
        let program = bin.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(replicas_owners(&get()), [format!("{program}/Update/scale")]);
        let three = write(
            dir,
            "web.yaml",
            &DEPLOYMENT.replace("replicas: 2", "replicas: 3"),
        );
        let out = k(&["apply", "--server-side", "-f", &three]);
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains(&format!(
                "Apply failed with 1 conflict: conflict with {program:?} with subresource \"scale\" using apps/v1: .spec.replicas"
            )),
            "{}: {}",
            bin.display(),
            stderr(&out)
        );
        assert_eq!(get()["spec"]["replicas"], 4);

        // Client-side apply takes it as kubectl-client-side-apply; another applier conflicts.
        let five = write(
            dir,
            "web.yaml",
            &DEPLOYMENT.replace("replicas: 2", "replicas: 5"),
        );
        ok(&bin, &k(&["apply", "-f", &five]));
        assert_eq!(
            replicas_owners(&get()),
            ["kubectl-client-side-apply/Update"]
        );
        let six = write(
            dir,
            "web.yaml",
            &DEPLOYMENT.replace("replicas: 2", "replicas: 6"),
        );
        let out = k(&["apply", "--server-side", "--field-manager=ops", "-f", &six]);
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains(
                "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas"
            ),
            "{}: {}",
            bin.display(),
            stderr(&out)
        );
        // A server-side dry run changes nothing.
        let out = k(&[
            "apply",
            "--server-side",
            "--field-manager=ops",
            "--force-conflicts",
            "--dry-run=server",
            "-f",
            &six,
        ]);
        ok(&bin, &out);
        assert_eq!(get()["spec"]["replicas"], 5);

        // Forced, the field changes hands.
        let out = k(&[
            "apply",
            "--server-side",
            "--field-manager=ops",
            "--force-conflicts",
            "-f",
            &six,
        ]);
        assert!(ok(&bin, &out).contains("serverside-applied"));
        let obj = get();
        assert_eq!(obj["spec"]["replicas"], 6);
        assert_eq!(replicas_owners(&obj), ["ops/Apply"]);

        // kubectl (the manager name) upgrading from client-side apply takes over what it
        // applied client-side without a conflict.
        let out = k(&["apply", "--server-side", "-f", &five]);
        ok(&bin, &out);

        // A field an applier stops naming is removed.
        let labelled = DEPLOYMENT
            .replace("replicas: 2", "replicas: 6")
            .replace("labels: {app: web}}", "labels: {app: web, tier: front}}");
        let labelled = write(dir, "ops.yaml", &labelled);
        ok(
            &bin,
            &k(&[
                "apply",
                "--server-side",
                "--field-manager=ops",
                "--force-conflicts",
                "-f",
                &labelled,
            ]),
        );
        assert_eq!(get()["metadata"]["labels"]["tier"], "front");
        ok(
            &bin,
            &k(&["apply", "--server-side", "--field-manager=ops", "-f", &six]),
        );
        let obj = get();
        assert!(obj["metadata"]["labels"].get("tier").is_none(), "{obj}");
        assert_eq!(obj["metadata"]["labels"]["app"], "web");

        // kubectl shows managedFields only when asked.
        let out = k(&[
            "get",
            "deployment",
            "web",
            "-o",
            "yaml",
            "--show-managed-fields",
        ]);
        let yaml = ok(&bin, &out);
        assert!(yaml.contains("managedFields:"), "{yaml}");
        assert!(yaml.contains("manager: ops"), "{yaml}");
        assert!(yaml.contains("operation: Apply"), "{yaml}");
        assert!(yaml.contains("fieldsType: FieldsV1"), "{yaml}");
        let out = k(&["get", "deployment", "web", "-o", "yaml"]);
        assert!(!ok(&bin, &out).contains("managedFields"));
    }
}

#[test]
fn helm_installs_and_upgrades_a_chart_server_side() {
    let Some(helm) = helm_bin() else { return };
    let Some(kubectl_bin) = kubectls().pop() else {
        return;
    };
    let server = Apiserver::start();
    let kc = server.kubeconfig();
    let dir = server.dir.path();
    let h = |args: &[&str]| {
        std::process::Command::new(&helm)
            .arg("--kubeconfig")
            .arg(&kc)
            .args(args)
            .env("HELM_CACHE_HOME", dir.join("helm-cache"))
            .env("HELM_CONFIG_HOME", dir.join("helm-config"))
            .env("HELM_DATA_HOME", dir.join("helm-data"))
            .output()
            .expect("run helm")
    };
    let chart = dir.join("chart");
    ok(&helm, &h(&["create", chart.to_str().unwrap()]));
    ok(
        &helm,
        &h(&["install", "demo", chart.to_str().unwrap(), "--wait=false"]),
    );
    let get = || -> Value {
        let out = kubectl(
            &kubectl_bin,
            &kc,
            &[
                "get",
                "deployment",
                "demo-chart",
                "-o",
                "json",
                "--show-managed-fields",
            ],
        );
        serde_json::from_str(&ok(&kubectl_bin, &out)).unwrap()
    };
    let obj = get();
    assert_eq!(obj["spec"]["replicas"], 1);
    let applied_by_helm = |obj: &Value| {
        obj["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["manager"] == "helm" && e["operation"] == "Apply")
    };
    assert!(applied_by_helm(&obj), "helm applies server-side: {obj}");
    // The Service it applied got its cluster IP.
    let out = kubectl(
        &kubectl_bin,
        &kc,
        &["get", "service", "demo-chart", "-o", "json"],
    );
    let svc: Value = serde_json::from_str(&ok(&kubectl_bin, &out)).unwrap();
    assert!(
        svc["spec"]["clusterIP"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("10.")),
        "{svc}"
    );

    ok(
        &helm,
        &h(&[
            "upgrade",
            "demo",
            chart.to_str().unwrap(),
            "--set",
            "replicaCount=3",
            "--wait=false",
        ]),
    );
    let obj = get();
    assert_eq!(obj["spec"]["replicas"], 3);
    assert!(applied_by_helm(&obj));
    let out = h(&["history", "demo"]);
    assert!(
        ok(&helm, &out).contains("Upgrade complete"),
        "{}",
        stdout(&out)
    );
    ok(&helm, &h(&["uninstall", "demo", "--wait=false"]));
}

#[test]
fn the_api_answers_apply_as_upstream() {
    let server = Apiserver::start();
    let cms = "/api/v1/namespaces/default/configmaps";
    let apply = |manager: &str, force: bool, body: &str| {
        let mut path = format!("{cms}/c?fieldManager={manager}");
        if force {
            path.push_str("&force=true");
        }
        server.send("PATCH", &path, "application/apply-patch+yaml", body)
    };

    // Apply creates (YAML), the manager owns what it named.
    let created = apply(
        "a",
        false,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {x: '1', y: '2'}\n",
    );
    assert_eq!(created["data"]["x"], "1", "{created}");
    assert_eq!(created["metadata"]["managedFields"][0]["manager"], "a");
    assert_eq!(
        created["metadata"]["managedFields"][0]["fieldsV1"],
        serde_json::json!({"f:data": {"f:x": {}, "f:y": {}}})
    );

    // An update records its manager from the User-Agent and takes the field.
    let updated = server.send(
        "PATCH",
        &format!("{cms}/c"),
        "application/merge-patch+json",
        r#"{"data":{"x":"9"}}"#,
    );
    let managers: Vec<&str> = updated["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["manager"].as_str().unwrap())
        .collect();
    assert_eq!(managers, ["a", "curl-test"], "{updated}");

    // Applying another value conflicts: 409 with upstream's cause.
    let conflict = apply(
        "a",
        false,
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"},"data":{"x":"1","y":"2"}}"#,
    );
    assert_eq!(conflict["code"], 409, "{conflict}");
    assert_eq!(conflict["reason"], "Conflict");
    assert_eq!(
        conflict["message"],
        "Apply failed with 1 conflict: conflict with \"curl-test\" using v1: .data.x"
    );
    assert_eq!(
        conflict["details"]["causes"][0]["reason"],
        "FieldManagerConflict"
    );
    assert_eq!(conflict["details"]["causes"][0]["field"], ".data.x");

    // Forced; then omitting y removes it.
    let forced = apply(
        "a",
        true,
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"},"data":{"x":"1"}}"#,
    );
    assert_eq!(forced["data"], serde_json::json!({"x": "1"}), "{forced}");

    // Invalid managedFields in an update are ignored; the stored ones stay.
    let mut obj = forced.clone();
    obj["metadata"]["managedFields"] =
        serde_json::json!([{"manager": "evil", "operation": "Bogus"}]);
    obj["data"]["z"] = "3".into();
    let put = server.send(
        "PUT",
        &format!("{cms}/c"),
        "application/json",
        &obj.to_string(),
    );
    let managers: Vec<&str> = put["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["manager"].as_str().unwrap())
        .collect();
    assert_eq!(managers, ["a", "curl-test"], "{put}");

    // Option and body errors.
    let no_manager = server.send(
        "PATCH",
        &format!("{cms}/c"),
        "application/apply-patch+yaml",
        "{}",
    );
    assert_eq!(no_manager["code"], 422);
    assert_eq!(
        no_manager["message"],
        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
    );
    let force_merge = server.send(
        "PATCH",
        &format!("{cms}/c?force=true"),
        "application/merge-patch+json",
        "{}",
    );
    assert_eq!(force_merge["code"], 422);
    assert!(
        force_merge["message"]
            .as_str()
            .unwrap()
            .contains("force: Forbidden: may not be specified for non-apply patch")
    );
    let with_managed = apply(
        "a",
        false,
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c","managedFields":[]}}"#,
    );
    assert_eq!(with_managed["code"], 400);
    assert_eq!(
        with_managed["message"],
        "metadata.managedFields must be nil"
    );
    let wrong_version = apply(
        "a",
        false,
        r#"{"apiVersion":"v2","kind":"ConfigMap","metadata":{"name":"c"}}"#,
    );
    assert_eq!(wrong_version["code"], 400, "{wrong_version}");
    let unknown = apply(
        "a",
        false,
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"},"bogus":1}"#,
    );
    assert_eq!(unknown["code"], 400, "{unknown}");

    // A resourceVersion in the configuration is a precondition.
    let stale = apply(
        "a",
        false,
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c","resourceVersion":"1"},"data":{"x":"2"}}"#,
    );
    assert_eq!(stale["code"], 409, "{stale}");
    assert!(
        stale["message"]
            .as_str()
            .unwrap()
            .contains("the object has been modified"),
        "{stale}"
    );

    // dryRun=All answers the result without storing it.
    let dry = server.send(
        "PATCH",
        &format!("{cms}/d?fieldManager=a&dryRun=All"),
        "application/apply-patch+yaml",
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"d"},"data":{"k":"v"}}"#,
    );
    assert_eq!(dry["data"]["k"], "v", "{dry}");
    let missing = json(&server.curl(&[&format!("{cms}/d")], true));
    assert_eq!(missing["code"], 404);

    // Status is applied through /status only, and recorded with the subresource.
    let deploys = "/apis/apps/v1/namespaces/default/deployments";
    let body = serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "w"},
        "spec": {"selector": {"matchLabels": {"a": "b"}},
                 "template": {"metadata": {"labels": {"a": "b"}},
                              "spec": {"containers": [{"name": "c", "image": "i"}]}}},
        "status": {"replicas": 7}});
    let created = server.send(
        "PATCH",
        &format!("{deploys}/w?fieldManager=m"),
        "application/apply-patch+yaml",
        &body.to_string(),
    );
    assert!(created["status"].get("replicas").is_none(), "{created}");
    let status = serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "w"}, "status": {"replicas": 7}});
    let after = server.send(
        "PATCH",
        &format!("{deploys}/w/status?fieldManager=s"),
        "application/apply-patch+yaml",
        &status.to_string(),
    );
    assert_eq!(after["status"]["replicas"], 7, "{after}");
    let entry = after["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["manager"] == "s")
        .unwrap()
        .clone();
    assert_eq!(entry["subresource"], "status");
    assert_eq!(
        entry["fieldsV1"],
        serde_json::json!({"f:status": {"f:replicas": {}}})
    );
}

#[test]
fn scale_applies_own_replicas_of_the_object() {
    let server = Apiserver::start();
    let deploys = "/apis/apps/v1/namespaces/default/deployments";
    let body = serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "w"},
        "spec": {"selector": {"matchLabels": {"a": "b"}},
                 "template": {"metadata": {"labels": {"a": "b"}},
                              "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
    let created = server.send(
        "PATCH",
        &format!("{deploys}/w?fieldManager=m"),
        "application/apply-patch+yaml",
        &body.to_string(),
    );
    assert_eq!(created["spec"]["replicas"], 1, "{created}");
    let scale = server.send(
        "PATCH",
        &format!("{deploys}/w/scale?fieldManager=autoscaler"),
        "application/apply-patch+yaml",
        "apiVersion: autoscaling/v1\nkind: Scale\nmetadata: {name: w}\nspec: {replicas: 3}\n",
    );
    assert_eq!(scale["kind"], "Scale", "{scale}");
    assert_eq!(scale["spec"]["replicas"], 3);
    let obj = json(&server.curl(&[&format!("{deploys}/w")], true));
    assert_eq!(obj["spec"]["replicas"], 3);
    let owner = obj["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["manager"] == "autoscaler")
        .cloned()
        .unwrap_or_else(|| panic!("{obj}"));
    assert_eq!(
        (
            &owner["operation"],
            &owner["subresource"],
            &owner["apiVersion"]
        ),
        (&"Apply".into(), &"scale".into(), &"apps/v1".into())
    );
    assert_eq!(
        owner["fieldsV1"],
        serde_json::json!({"f:spec": {"f:replicas": {}}})
    );
    // The resource's applier now conflicts on replicas.
    let mut with_replicas = body.clone();
    with_replicas["spec"]["replicas"] = 5.into();
    let conflict = server.send(
        "PATCH",
        &format!("{deploys}/w?fieldManager=m"),
        "application/apply-patch+yaml",
        &with_replicas.to_string(),
    );
    assert_eq!(conflict["code"], 409, "{conflict}");
    assert_eq!(
        conflict["message"],
        "Apply failed with 1 conflict: conflict with \"autoscaler\" with subresource \"scale\": .spec.replicas"
    );
    // Scale applies need a field manager like any apply.
    let missing = server.send(
        "PATCH",
        &format!("{deploys}/w/scale"),
        "application/apply-patch+yaml",
        "{}",
    );
    assert_eq!(missing["code"], 422, "{missing}");
}
