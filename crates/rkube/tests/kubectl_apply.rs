//! Real kubectl's apply family against `rkube apiserver`: client-side apply (which computes
//! strategic merge patches from the OpenAPI v3 documents), diff, set image, edit, explain, and
//! server-side field validation.

mod common;

use common::{Apiserver, kubectl, kubectls, stderr, stdout, write};

const MANIFEST: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: c, image: busybox, ports: [{containerPort: 80}], env: [{name: A, value: "1"}]}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {selector: {app: web}, ports: [{port: 80}]}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {a: "1"}
"#;

#[test]
fn apply_diff_set_image_edit_and_explain_work_with_real_kubectl() {
    for bin in kubectls() {
        let server = Apiserver::start();
        let kc = server.kubeconfig();
        let k = |args: &[&str]| kubectl(&bin, &kc, args);
        let dir = server.dir.path();
        let file = write(dir, "app.yaml", MANIFEST);

        let out = k(&["apply", "-f", &file]);
        assert!(out.status.success(), "{}: {}", bin.display(), stderr(&out));
        assert!(stdout(&out).contains("deployment.apps/web created"));
        let out = k(&["apply", "-f", &file]);
        assert_eq!(
            stdout(&out).matches("unchanged").count(),
            3,
            "{}: {}{}",
            bin.display(),
            stdout(&out),
            stderr(&out)
        );

        // A change: diff shows it (exit 1), apply configures it, list entries merge by key.
        let changed = MANIFEST
            .replace("replicas: 2", "replicas: 3")
            .replace("value: \"1\"", "value: \"2\"")
            .replace("a: \"1\"", "a: \"2\"");
        let file = write(dir, "app.yaml", &changed);
        let out = k(&["diff", "-f", &file]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(stdout(&out).contains("+  replicas: 3"), "{}", stdout(&out));
        let out = k(&["apply", "-f", &file]);
        assert!(
            stdout(&out).contains("deployment.apps/web configured"),
            "{}",
            stdout(&out)
        );
        assert!(stdout(&out).contains("configmap/cfg configured"));
        assert!(stdout(&out).contains("service/web unchanged"));
        let out = k(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].env[0].value} {.metadata.generation}",
        ]);
        assert_eq!(stdout(&out), "3 2 2");

        let out = k(&["set", "image", "deployment/web", "c=busybox:2"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let out = k(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ]);
        assert_eq!(stdout(&out), "busybox:2");

        // Non-interactive edit: kubectl sends the edit as a strategic merge patch.
        let editor = write(
            dir,
            "editor.sh",
            "#!/bin/sh\nsed -i 's/a: \"2\"/a: \"edited\"/' \"$1\"\n",
        );
        std::process::Command::new("chmod")
            .args(["+x", &editor])
            .status()
            .unwrap();
        let out = std::process::Command::new(&bin)
            .arg("--kubeconfig")
            .arg(&kc)
            .args(["edit", "configmap", "cfg"])
            .env("EDITOR", &editor)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let out = k(&["get", "cm", "cfg", "-o", "jsonpath={.data.a}"]);
        assert_eq!(stdout(&out), "edited");

        // Server-side field validation: Strict (kubectl's default) refuses, Warn warns.
        let bogus = write(
            dir,
            "bogus.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bogus}\nbogus: 1\ndata: {a: b}\n",
        );
        let out = k(&["create", "-f", &bogus]);
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains(r#"strict decoding error: unknown field "bogus""#),
            "{}",
            stderr(&out)
        );
        let out = k(&["create", "-f", &bogus, "--validate=warn"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            stderr(&out).contains(r#"unknown field "bogus""#),
            "{}",
            stderr(&out)
        );

        let out = k(&["explain", "deployment.spec.strategy"]);
        assert!(
            stdout(&out).contains("KIND:       Deployment")
                && stdout(&out).contains("rollingUpdate"),
            "{}",
            stdout(&out)
        );
        let out = k(&["explain", "pod", "--recursive"]);
        assert!(stdout(&out).contains("containers"), "{}", stderr(&out));
    }
}

/// `apply --prune`: objects that carry the label and were applied before, but are no longer in
/// the files, are deleted; others with the label that kubectl did not apply are left alone.
#[test]
fn apply_prune_deletes_what_left_the_manifest() {
    for bin in kubectls() {
        let server = Apiserver::start();
        let kc = server.kubeconfig();
        let k = |args: &[&str]| kubectl(&bin, &kc, args);
        let dir = server.dir.path();
        let both = r#"apiVersion: v1
kind: ConfigMap
metadata: {name: keep, labels: {set: pruned}}
data: {a: "1"}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: drop, labels: {set: pruned}}
data: {a: "1"}
"#;
        let file = write(dir, "set.yaml", both);
        let out = k(&["apply", "--prune", "-l", "set=pruned", "-f", &file]);
        assert!(out.status.success(), "{}: {}", bin.display(), stderr(&out));
        // Created by hand (no last-applied annotation): prune must not touch it.
        let out = k(&["create", "configmap", "manual", "--from-literal=a=1"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let out = k(&["label", "configmap", "manual", "set=pruned"]);
        assert!(out.status.success(), "{}", stderr(&out));

        let only_keep = both.split("---").next().unwrap();
        let file = write(dir, "set.yaml", only_keep);
        let out = k(&["apply", "--prune", "-l", "set=pruned", "-f", &file]);
        assert!(out.status.success(), "{}: {}", bin.display(), stderr(&out));
        assert!(
            stdout(&out).contains("configmap/drop pruned"),
            "{}: {}",
            bin.display(),
            stdout(&out)
        );
        let out = k(&["get", "configmaps", "-l", "set=pruned", "-o", "name"]);
        let mut names: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
        names.sort();
        assert_eq!(
            names,
            ["configmap/keep", "configmap/manual"],
            "{}",
            bin.display()
        );
    }
}
