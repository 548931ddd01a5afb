//! End-to-end tests of the REST API of `rkube apiserver`: the real binary driven by the real
//! kubectl (v1.33 and v1.37) and by curl with the admin client certificate.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};

use common::{Apiserver, json, kubectl, kubectls, write};
use serde_json::Value;

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "kubectl failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn kubectl_sees_the_resource_catalogue() {
    let server = Apiserver::start();
    for bin in kubectls() {
        let kc = server.kubeconfig();
        let out = ok(kubectl(
            &bin,
            &kc,
            &["api-resources", "-o", "wide", "--no-headers"],
        ));
        for expected in [
            ["configmaps", "cm", "v1", "true", "ConfigMap"],
            ["namespaces", "ns", "v1", "false", "Namespace"],
            ["deployments", "deploy", "apps/v1", "true", "Deployment"],
            [
                "customresourcedefinitions",
                "crd,crds",
                "apiextensions.k8s.io/v1",
                "false",
                "CustomResourceDefinition",
            ],
        ] {
            assert!(
                out.lines()
                    .any(|l| l.split_whitespace().take(5).eq(expected.iter().copied())),
                "{} api-resources lacks {expected:?}:\n{out}",
                bin.display()
            );
        }
        let pods = out.lines().find(|l| l.starts_with("pods ")).unwrap();
        assert!(pods.ends_with("all"), "{pods}");
        let secrets = out.lines().find(|l| l.starts_with("secrets ")).unwrap();
        assert_eq!(
            secrets.split_whitespace().nth(1),
            Some("v1"),
            "no short name: {secrets}"
        );
        let versions = ok(kubectl(&bin, &kc, &["api-versions"]));
        for v in [
            "v1",
            "apps/v1",
            "batch/v1",
            "coordination.k8s.io/v1",
            "rbac.authorization.k8s.io/v1",
        ] {
            assert!(versions.lines().any(|l| l == v), "{v} missing:\n{versions}");
        }
    }
}

const OBJECTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: team
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: team
  labels: {tier: "front"}
data:
  mode: fast
---
apiVersion: v1
kind: Secret
metadata:
  name: token
  namespace: team
stringData:
  password: hunter2
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: team
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.27
"#;

#[test]
fn kubectl_creates_reads_changes_and_deletes_objects() {
    for bin in kubectls() {
        // A fresh server each: the namespace this round deletes stays Terminating.
        let server = Apiserver::start();
        let kc = server.kubeconfig();
        let k = |args: &[&str]| kubectl(&bin, &kc, args);
        let file = write(server.dir.path(), "objects.yaml", OBJECTS);
        // --validate=false: the OpenAPI documents kubectl validates against come separately.
        let out = ok(k(&["create", "--validate=false", "-f", &file]));
        assert!(out.contains("deployment.apps/web created"), "{out}");

        let out = ok(k(&["get", "cm", "-n", "team"]));
        assert!(
            out.starts_with("NAME") && out.contains("DATA") && out.contains("settings"),
            "{out}"
        );
        let cm: Value = serde_json::from_str(&ok(k(&[
            "get", "cm", "settings", "-n", "team", "-o", "json",
        ])))
        .unwrap();
        assert_eq!(cm["data"]["mode"], "fast");
        assert!(cm["metadata"]["uid"].as_str().unwrap().len() == 36);
        let yaml = ok(k(&["get", "secret", "token", "-n", "team", "-o", "yaml"]));
        assert!(
            yaml.contains("password: aHVudGVyMg==") && yaml.contains("type: Opaque"),
            "{yaml}"
        );
        assert_eq!(
            ok(k(&["get", "deploy", "web", "-n", "team", "-o", "name"])).trim(),
            "deployment.apps/web"
        );
        let wide = ok(k(&["get", "deploy", "-n", "team", "-o", "wide"]));
        assert!(
            wide.contains("UP-TO-DATE") && wide.contains("nginx:1.27") && wide.contains("app=web"),
            "{wide}"
        );
        let deploy: Value = serde_json::from_str(&ok(k(&[
            "get", "deploy", "web", "-n", "team", "-o", "json",
        ])))
        .unwrap();
        assert_eq!(deploy["spec"]["replicas"], 1);
        assert_eq!(deploy["spec"]["strategy"]["type"], "RollingUpdate");
        assert_eq!(deploy["metadata"]["generation"], 1);
        let described = ok(k(&["describe", "deployment", "web", "-n", "team"]));
        assert!(
            described.contains("Selector:") && described.contains("app=web"),
            "{described}"
        );
        let ns = ok(k(&["get", "ns", "team"]));
        assert!(ns.contains("Active"), "{ns}");

        ok(k(&["label", "cm", "settings", "-n", "team", "owner=me"]));
        ok(k(&["annotate", "cm", "settings", "-n", "team", "note=hi"]));
        ok(k(&[
            "patch",
            "cm",
            "settings",
            "-n",
            "team",
            "--type=json",
            "-p",
            r#"[{"op":"add","path":"/data/extra","value":"1"}]"#,
        ]));
        ok(k(&[
            "patch",
            "deploy",
            "web",
            "-n",
            "team",
            "--type=merge",
            "-p",
            r#"{"spec":{"replicas":3}}"#,
        ]));
        let cm: Value = serde_json::from_str(&ok(k(&[
            "get", "cm", "settings", "-n", "team", "-o", "json",
        ])))
        .unwrap();
        assert_eq!(cm["metadata"]["labels"]["owner"], "me");
        assert_eq!(cm["metadata"]["annotations"]["note"], "hi");
        assert_eq!(cm["data"]["extra"], "1");
        let deploy: Value = serde_json::from_str(&ok(k(&[
            "get", "deploy", "web", "-n", "team", "-o", "json",
        ])))
        .unwrap();
        assert_eq!(deploy["spec"]["replicas"], 3);
        assert_eq!(deploy["metadata"]["generation"], 2);

        let mut replaced = cm.clone();
        replaced["data"] = serde_json::json!({"only": "this"});
        let file = write(server.dir.path(), "replaced.json", &replaced.to_string());
        ok(k(&["replace", "--validate=false", "-f", &file]));
        let cm: Value = serde_json::from_str(&ok(k(&[
            "get", "cm", "settings", "-n", "team", "-o", "json",
        ])))
        .unwrap();
        assert_eq!(cm["data"], serde_json::json!({"only": "this"}));
        // Replacing again with the now stale resourceVersion conflicts.
        let out = k(&["replace", "--validate=false", "-f", &file]);
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("the object has been modified"),
            "{out:?}"
        );

        ok(k(&["delete", "cm", "settings", "-n", "team"]));
        ok(k(&["delete", "deploy", "web", "-n", "team"]));
        ok(k(&["delete", "secret", "token", "-n", "team"]));
        let out = k(&["get", "cm", "settings", "-n", "team"]);
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(r#"configmaps "settings" not found"#),
            "{out:?}"
        );
        // A namespace delete marks it Terminating (its controller comes later), and nothing
        // new may be created in it.
        ok(k(&["delete", "ns", "team", "--wait=false"]));
        assert!(ok(k(&["get", "ns", "team"])).contains("Terminating"));
        let status = server.send(
            "POST",
            "/api/v1/namespaces/team/configmaps",
            "application/json",
            r#"{"metadata":{"name":"late"}}"#,
        );
        assert_eq!(status["code"], 403, "{status}");
        assert_eq!(
            status["message"],
            "configmaps \"late\" is forbidden: unable to create new content in namespace team because it is being terminated"
        );
        let fin = server.send("PUT",
            "/api/v1/namespaces/team/finalize",
            "application/json",
            r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"team"},"spec":{"finalizers":[]}}"#,
        );
        assert_eq!(fin["spec"]["finalizers"], serde_json::json!([]), "{fin}");
        assert_eq!(fin["status"]["phase"], "Terminating", "{fin}");
    }
}

#[test]
fn lists_select_page_and_span_namespaces() {
    let server = Apiserver::start();
    for (ns, name, tier) in [
        ("default", "a", "x"),
        ("default", "b", "y"),
        ("default", "c", "z"),
        ("kube-public", "d", "x"),
    ] {
        let body = format!(r#"{{"metadata":{{"name":"{name}","labels":{{"tier":"{tier}"}}}}}}"#);
        let created = server.send(
            "POST",
            &format!("/api/v1/namespaces/{ns}/configmaps"),
            "application/json",
            &body,
        );
        assert_eq!(created["metadata"]["name"], name, "{created}");
    }
    for bin in kubectls() {
        let kc = server.kubeconfig();
        let k = |args: &[&str]| ok(kubectl(&bin, &kc, args));
        let names = |out: String| out.lines().map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(
            names(k(&["get", "cm", "-l", "tier in (x,y)", "-o", "name"])),
            ["configmap/a", "configmap/b"]
        );
        assert_eq!(
            names(k(&["get", "cm", "-l", "tier notin (x,y)", "-o", "name"])),
            ["configmap/c"]
        );
        assert_eq!(
            names(k(&["get", "cm", "-l", "tier!=x,tier", "-o", "name"])),
            ["configmap/b", "configmap/c"]
        );
        assert_eq!(
            names(k(&[
                "get",
                "cm",
                "--field-selector",
                "metadata.name=b",
                "-o",
                "name"
            ])),
            ["configmap/b"]
        );
        let all = k(&["get", "cm", "-A", "--chunk-size=2", "-o", "name"]);
        assert_eq!(
            names(all),
            ["configmap/a", "configmap/b", "configmap/c", "configmap/d"]
        );
        let table = k(&["get", "cm", "-A", "--chunk-size=1", "-l", "tier=x"]);
        assert!(
            table.contains("kube-public") && table.contains("default"),
            "{table}"
        );
    }
    // The pages carry continue tokens; a garbage token is a 400.
    let page = json(&server.curl(&["/api/v1/configmaps?limit=3"], true));
    assert_eq!(page["items"].as_array().unwrap().len(), 3);
    let token = page["metadata"]["continue"].as_str().unwrap();
    let rest = json(&server.curl(
        &[&format!("/api/v1/configmaps?limit=3&continue={token}")],
        true,
    ));
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        rest["metadata"]["resourceVersion"],
        page["metadata"]["resourceVersion"]
    );
    let bad = json(&server.curl(&["/api/v1/configmaps?limit=3&continue=garbage"], true));
    assert_eq!(bad["code"], 400);
    let bad = json(&server.curl(&["/api/v1/configmaps?fieldSelector=data.x%3D1"], true));
    assert_eq!(bad["code"], 400);
    assert_eq!(bad["message"], "field label not supported: data.x");
}

#[test]
fn kubectl_watch_sees_another_process_change() {
    let server = Apiserver::start();
    for bin in kubectls() {
        let mut watch = Command::new(&bin)
            .arg("--kubeconfig")
            .arg(server.kubeconfig())
            .args([
                "get",
                "cm",
                "--watch",
                "-o",
                "name",
                "--request-timeout=60s",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
        let name = format!(
            "seen-{}",
            bin.file_name().unwrap().to_string_lossy().replace('.', "-")
        );
        // Keep writing until the watch has started and reports it (each write is a new event).
        let created = server.send(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "application/json",
            &format!(r#"{{"metadata":{{"name":"{name}"}}}}"#),
        );
        assert_eq!(created["metadata"]["name"], name.as_str());
        let mut seen = false;
        for i in 0..200 {
            let line = lines.next().expect("the watch ended").unwrap();
            if line == format!("configmap/{name}") {
                let patched = server.send(
                    "PATCH",
                    &format!("/api/v1/namespaces/default/configmaps/{name}"),
                    "application/merge-patch+json",
                    &format!(r#"{{"data":{{"i":"{i}"}}}}"#),
                );
                assert_eq!(patched["data"]["i"], i.to_string());
                if i > 0 {
                    seen = true;
                    break;
                }
            }
        }
        let _ = watch.kill();
        let _ = watch.wait();
        assert!(seen, "the watch never reported the change");
    }
}

#[test]
fn invalid_objects_and_conflicts_answer_like_upstream() {
    let server = Apiserver::start();
    let status = server.send("POST",
        "/apis/apps/v1/namespaces/default/deployments",
        "application/json",
        r#"{"metadata":{"name":"web"},"spec":{"selector":{"matchLabels":{"app":"web"}},
            "template":{"metadata":{"labels":{"app":"web"}},"spec":{"containers":[{"name":"c"},{"name":"c","image":"x"}]}}}}"#,
    );
    assert_eq!(status["code"], 422, "{status}");
    assert_eq!(status["reason"], "Invalid");
    assert_eq!(
        status["message"],
        "Deployment.apps \"web\" is invalid: [spec.template.spec.containers[0].image: Required value, spec.template.spec.containers[1].name: Duplicate value: \"c\"]"
    );
    assert_eq!(status["details"]["kind"], "Deployment");
    assert_eq!(status["details"]["group"], "apps");
    assert_eq!(
        status["details"]["causes"][0]["field"],
        "spec.template.spec.containers[0].image"
    );
    assert_eq!(
        status["details"]["causes"][0]["reason"],
        "FieldValueRequired"
    );

    let status = server.send("POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        r#"{"metadata":{"name":"Bad_Name","labels":{"k":"this-label-value-is-far-too-long-to-be-accepted-by-kubernetes-validation"}}}"#,
    );
    assert_eq!(status["code"], 422, "{status}");
    let fields: Vec<&str> = status["details"]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["metadata.name", "metadata.labels"]);
    assert!(status["message"].as_str().unwrap().starts_with("ConfigMap \"Bad_Name\" is invalid: [metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"), "{status}");

    for bin in kubectls() {
        let file = write(
            server.dir.path(),
            "bad.yaml",
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: x\ntype: kubernetes.io/tls\ndata: {}\n",
        );
        let out = kubectl(
            &bin,
            &server.kubeconfig(),
            &["create", "--validate=false", "-f", &file],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("The Secret \"x\" is invalid")
                && err.contains("data[tls.crt]: Required value"),
            "{err}"
        );
    }

    let created = server.send(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        r#"{"metadata":{"name":"c"}}"#,
    );
    let rv = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    let again = server.send(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        r#"{"metadata":{"name":"c"}}"#,
    );
    assert_eq!(
        (again["code"].clone(), again["reason"].clone()),
        (409.into(), "AlreadyExists".into())
    );
    let update =
        format!(r#"{{"metadata":{{"name":"c","resourceVersion":"{rv}"}},"data":{{"a":"1"}}}}"#);
    let first = server.send(
        "PUT",
        "/api/v1/namespaces/default/configmaps/c",
        "application/json",
        &update,
    );
    assert_eq!(first["data"]["a"], "1", "{first}");
    let stale = server.send(
        "PUT",
        "/api/v1/namespaces/default/configmaps/c",
        "application/json",
        &update,
    );
    assert_eq!(stale["code"], 409, "{stale}");
    assert_eq!(
        stale["message"],
        "Operation cannot be fulfilled on configmaps \"c\": the object has been modified; please apply your changes to the latest version and try again"
    );

    // dryRun=All validates and answers but stores nothing.
    let dry = server.send(
        "POST",
        "/api/v1/namespaces/default/configmaps?dryRun=All",
        "application/json",
        r#"{"metadata":{"name":"dry"}}"#,
    );
    assert_eq!(dry["metadata"]["name"], "dry");
    assert_eq!(
        json(&server.curl(&["/api/v1/namespaces/default/configmaps/dry"], true))["code"],
        404
    );
}

#[test]
fn bad_input_gets_the_right_status() {
    let server = Apiserver::start();
    let cms = "/api/v1/namespaces/default/configmaps";
    let code = |v: Value| v["code"].as_i64().unwrap_or(0);
    assert_eq!(
        code(server.send("POST", cms, "application/json", "{not json")),
        400
    );
    assert_eq!(
        code(server.send("POST", cms, "application/json", r#"{"metadata":{"name":"#)),
        400
    );
    assert_eq!(code(server.send("POST", cms, "text/plain", "{}")), 415);
    assert_eq!(
        code(server.send(
            "POST",
            cms,
            "application/json",
            r#"{"kind":"Secret","metadata":{"name":"a"}}"#
        )),
        400
    );
    assert_eq!(
        code(server.send("POST", cms, "application/json", &"[".repeat(100_000))),
        400
    );
    let big = write(
        server.dir.path(),
        "big.json",
        &format!(
            r#"{{"metadata":{{"name":"big"}},"data":{{"a":"{}"}}}}"#,
            "x".repeat(4 << 20)
        ),
    );
    let status = server.send("POST", cms, "application/json", &format!("@{big}"));
    assert_eq!(code(status.clone()), 413, "{status}");
    let ok = server.send(
        "POST",
        cms,
        "application/json",
        r#"{"metadata":{"name":"a"}}"#,
    );
    assert_eq!(ok["metadata"]["name"], "a");
    let status = server.send(
        "PUT",
        &format!("{cms}/a"),
        "application/json",
        r#"{"metadata":{"name":"b"}}"#,
    );
    assert_eq!(status["code"], 400);
    assert_eq!(
        status["message"],
        "the name of the object (b) does not match the name on the URL (a)"
    );
    let status = server.send(
        "POST",
        cms,
        "application/json",
        r#"{"metadata":{"name":"c","namespace":"kube-system"}}"#,
    );
    assert_eq!(status["code"], 400, "{status}");
    assert_eq!(
        code(json(
            &server.curl(&["/api/v1/namespaces/default/gadgets"], true)
        )),
        404
    );
    assert_eq!(
        code(server.send("POST", &format!("{cms}/a"), "application/json", "{}")),
        405
    );
    assert_eq!(
        code(server.send("DELETE", "/api/v1/namespaces", "application/json", "")),
        405
    );
    assert_eq!(
        code(server.send(
            "PATCH",
            &format!("{cms}/a"),
            "application/apply-patch+yaml",
            "{}"
        )),
        422,
        "server-side apply without fieldManager"
    );
    // A strategic merge patch that is not an object is a 400; a good one applies.
    assert_eq!(
        code(server.send(
            "PATCH",
            &format!("{cms}/a"),
            "application/strategic-merge-patch+json",
            "[1]"
        )),
        400
    );
    let patched = server.send(
        "PATCH",
        &format!("{cms}/a"),
        "application/strategic-merge-patch+json",
        r#"{"data":{"k":"v"}}"#,
    );
    assert_eq!(patched["data"]["k"], "v", "{patched}");
    let status = server.send(
        "POST",
        "/api/v1/namespaces/nowhere/configmaps",
        "application/json",
        r#"{"metadata":{"name":"a"}}"#,
    );
    assert_eq!(
        (status["code"].clone(), status["message"].clone()),
        (404.into(), "namespaces \"nowhere\" not found".into())
    );
    let yaml = server.send(
        "POST",
        cms,
        "application/yaml",
        "metadata:\n  name: from-yaml\n",
    );
    assert_eq!(yaml["metadata"]["name"], "from-yaml");
}
