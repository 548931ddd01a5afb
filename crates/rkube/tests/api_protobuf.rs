//! End-to-end: Kubernetes' protobuf encoding, as client-go's typed clients use it. kubectl's
//! `create <kind>` generators send protobuf bodies and prefer protobuf answers.

mod common;

use std::process::Output;

use common::{Apiserver, json, kubectl, kubectls};
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

fn get(server: &Apiserver, bin: &std::path::Path, ns: &str, what: &str) -> Value {
    let out = kubectl(
        bin,
        &server.kubeconfig(),
        &["-n", ns, "get", what, "-o", "json"],
    );
    json(&out)
}

#[test]
fn kubectl_create_generators_work_over_protobuf_with_and_without_server_dry_run() {
    let server = Apiserver::start();
    let kc = server.kubeconfig();
    let file = server.dir.path().join("settings.conf");
    std::fs::write(&file, "mode=fast\n").unwrap();
    let from_file = format!("--from-file={}", file.display());
    for (i, bin) in kubectls().into_iter().enumerate() {
        let ns = format!("pb{i}");
        let yaml = ok(kubectl(
            &bin,
            &kc,
            &["create", "namespace", &ns, "--dry-run=server", "-o", "yaml"],
        ));
        let dry: Value = serde_yaml_from(&yaml);
        assert_eq!(dry["status"]["phase"], "Active", "{yaml}");
        assert!(
            !kubectl(&bin, &kc, &["get", "namespace", &ns])
                .status
                .success()
        );
        ok(kubectl(&bin, &kc, &["create", "namespace", &ns]));
        let creates: Vec<(Vec<&str>, &str)> = vec![
            (
                vec!["configmap", "cm", "--from-literal=a=b", &from_file],
                "configmap/cm",
            ),
            (
                vec![
                    "secret",
                    "generic",
                    "sec",
                    "--from-literal=password=hunter2",
                ],
                "secret/sec",
            ),
            (
                vec![
                    "deployment",
                    "web",
                    "--image=nginx:1.27",
                    "--replicas=3",
                    "--port=80",
                ],
                "deployment/web",
            ),
            (
                vec!["job", "once", "--image=busybox", "--", "echo", "hi"],
                "job/once",
            ),
            (
                vec![
                    "cronjob",
                    "tick",
                    "--image=busybox",
                    "--schedule=*/5 * * * *",
                ],
                "cronjob/tick",
            ),
            (
                vec!["role", "reader", "--verb=get,list", "--resource=pods"],
                "role/reader",
            ),
            (
                vec!["rolebinding", "readers", "--role=reader", "--user=alice"],
                "rolebinding/readers",
            ),
            (
                vec!["service", "clusterip", "front", "--tcp=80:8080"],
                "service/front",
            ),
        ];
        for (args, name) in &creates {
            // Server-side dry run first: the object comes back, nothing is stored.
            let mut dry = vec!["-n", ns.as_str(), "create"];
            dry.extend(args.iter().copied());
            // Before a `--`, where the job's command starts.
            let at = dry.iter().position(|a| *a == "--").unwrap_or(dry.len());
            dry.splice(at..at, ["--dry-run=server", "-o", "yaml"]);
            let yaml = ok(kubectl(&bin, &kc, &dry));
            let obj: Value = serde_yaml_from(&yaml);
            assert_eq!(obj["metadata"]["namespace"], ns.as_str(), "{name}: {yaml}");
            assert!(obj["metadata"]["uid"].is_string(), "{name}: {yaml}");
            let missing = kubectl(&bin, &kc, &["-n", &ns, "get", name]);
            assert!(!missing.status.success(), "{name} was stored by a dry run");

            let mut real = vec!["-n", ns.as_str(), "create"];
            real.extend(args.iter().copied());
            let out = ok(kubectl(&bin, &kc, &real));
            assert!(out.contains("created"), "{out}");
        }
        let cm = get(&server, &bin, &ns, "configmap/cm");
        assert_eq!(cm["data"]["a"], "b");
        assert_eq!(cm["data"]["settings.conf"], "mode=fast\n");
        let secret = get(&server, &bin, &ns, "secret/sec");
        assert_eq!(secret["data"]["password"], "aHVudGVyMg==");
        assert_eq!(secret["type"], "Opaque");
        let web = get(&server, &bin, &ns, "deployment/web");
        assert_eq!(web["spec"]["replicas"], 3);
        let container = &web["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["image"], "nginx:1.27");
        assert_eq!(container["ports"][0]["containerPort"], 80);
        assert_eq!(web["metadata"]["generation"], 1);
        let job = get(&server, &bin, &ns, "job/once");
        assert_eq!(
            job["spec"]["template"]["spec"]["containers"][0]["command"],
            serde_json::json!(["echo", "hi"])
        );
        let cron = get(&server, &bin, &ns, "cronjob/tick");
        assert_eq!(cron["spec"]["schedule"], "*/5 * * * *");
        let role = get(&server, &bin, &ns, "role/reader");
        assert_eq!(
            role["rules"][0]["verbs"],
            serde_json::json!(["get", "list"])
        );
        let binding = get(&server, &bin, &ns, "rolebinding/readers");
        assert_eq!(binding["subjects"][0]["name"], "alice");
        assert_eq!(binding["roleRef"]["apiGroup"], "rbac.authorization.k8s.io");
        let svc = get(&server, &bin, &ns, "service/front");
        assert_eq!(svc["spec"]["ports"][0]["port"], 80);
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080);

        // Typed deletes send protobuf DeleteOptions.
        let out = ok(kubectl(
            &bin,
            &kc,
            &["-n", &ns, "delete", "configmap", "cm"],
        ));
        assert!(out.contains("deleted"), "{out}");
    }
}

fn serde_yaml_from(text: &str) -> Value {
    serde_yaml::from_str(text).unwrap_or_else(|e| panic!("not YAML ({e}): {text}"))
}

#[test]
fn protobuf_answers_lists_and_watches_when_asked_first() {
    let server = Apiserver::start();
    let created = server.curl(
        &[
            "/api/v1/namespaces/default/configmaps",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"},"data":{"k":"v"}}"#,
        ],
        true,
    );
    assert_eq!(json(&created)["metadata"]["name"], "c");
    let proto = "Accept: application/vnd.kubernetes.protobuf,application/json";
    let one = server.curl(
        &["/api/v1/namespaces/default/configmaps/c", "-H", proto, "-i"],
        true,
    );
    let text = String::from_utf8_lossy(&one.stdout);
    assert!(
        text.to_ascii_lowercase()
            .contains("content-type: application/vnd.kubernetes.protobuf"),
        "{text}"
    );
    let body_at = one
        .stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap()
        + 4;
    assert!(one.stdout[body_at..].starts_with(b"k8s\0"), "{text}");

    // A list, and JSON when only JSON is accepted.
    let list = server.curl(
        &["/api/v1/namespaces/default/configmaps", "-H", proto],
        true,
    );
    assert!(list.stdout.starts_with(b"k8s\0"));
    let plain = server.curl(&["/api/v1/namespaces/default/configmaps"], true);
    assert_eq!(json(&plain)["kind"], "ConfigMapList");

    // A watch is a stream of length-prefixed frames.
    let watch = server.curl(
        &[
            "/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=1",
            "-H",
            proto,
            "-i",
        ],
        true,
    );
    let text = String::from_utf8_lossy(&watch.stdout);
    assert!(
        text.to_ascii_lowercase()
            .contains("content-type: application/vnd.kubernetes.protobuf;stream=watch"),
        "{text}"
    );
    let body_at = watch
        .stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap()
        + 4;
    let body = &watch.stdout[body_at..];
    let len = u32::from_be_bytes(body[..4].try_into().unwrap()) as usize;
    assert_eq!(body.len(), 4 + len, "one ADDED event, then the timeout");
    assert!(body.windows(5).any(|w| w == b"ADDED"), "{body:?}");

    // A broken protobuf body is a 400, not a crash.
    let bad = server.curl(
        &[
            "/api/v1/namespaces/default/configmaps",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/vnd.kubernetes.protobuf",
            "--data-binary",
            "k8s\u{1}garbage",
        ],
        true,
    );
    let status = json(&bad);
    assert_eq!(status["code"], 400, "{status}");
}
