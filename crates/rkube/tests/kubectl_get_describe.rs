//! `kubectl get`'s output options and `kubectl describe` (with the object's Events) against
//! `rkube apiserver`, with real kubectl: `-o wide|yaml|json|name|jsonpath|custom-columns`,
//! `--show-labels`, `--sort-by`, `-A`, `--field-selector`, `-l` with set-based selectors,
//! `--chunk-size`; describe of a Deployment, Pod, Service and Node; `wait` for a condition,
//! a jsonpath value and a delete.

mod common;

use common::{Apiserver, json, kubectl, kubectls, stderr, stdout, write};

const OBJECTS: &str = r#"apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Node
metadata: {name: node-a, labels: {zone: z1}}
spec: {podCIDR: 10.42.1.0/24}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop, labels: {tier: front}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: c, image: busybox:1.36, command: [sleep, "3600"]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web, tier: front}}
spec:
  nodeName: node-a
  containers: [{name: c, image: busybox:1.36, command: [sleep, "3600"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: db-1, namespace: shop, labels: {app: db, tier: back}}
spec:
  containers: [{name: c, image: busybox:1.35}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}
"#;

/// Core events about `kind`/`name`, as a kubelet or controller would write them.
fn event(server: &Apiserver, namespace: &str, kind: &str, name: &str, uid: &str, reason: &str) {
    let body = serde_json::json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": format!("{name}.{reason}").to_lowercase(), "namespace": namespace},
        // A cluster-scoped object's reference has no namespace (the event still lives in one).
        "involvedObject": {"kind": kind, "name": name, "uid": uid,
            "namespace": if kind == "Node" { "" } else { namespace }},
        "reason": reason, "message": format!("{reason} happened to {name}"), "type": "Normal",
        "source": {"component": "test"}, "count": 1,
        "firstTimestamp": "2024-01-01T00:00:00Z", "lastTimestamp": "2024-01-01T00:00:00Z",
    });
    let created = server.send(
        "POST",
        &format!("/api/v1/namespaces/{namespace}/events"),
        "application/json",
        &body.to_string(),
    );
    assert_eq!(created["reason"], reason, "{created}");
}

#[test]
fn get_outputs_and_describe_with_events() {
    for bin in kubectls() {
        let server = Apiserver::start();
        let kc = server.kubeconfig();
        let who = bin.display().to_string();
        let k = |args: &[&str]| kubectl(&bin, &kc, args);
        let ok = |args: &[&str]| {
            let out = k(args);
            assert!(
                out.status.success(),
                "{who}: kubectl {args:?}: {}",
                stderr(&out)
            );
            stdout(&out)
        };
        let file = write(server.dir.path(), "objects.yaml", OBJECTS);
        ok(&["apply", "-f", &file]);

        // Output formats.
        let wide = ok(&["get", "pods", "-n", "shop", "-o", "wide"]);
        let header: Vec<&str> = wide.lines().next().unwrap().split_whitespace().collect();
        assert_eq!(
            header,
            [
                "NAME",
                "READY",
                "STATUS",
                "RESTARTS",
                "AGE",
                "IP",
                "NODE",
                "NOMINATED",
                "NODE",
                "READINESS",
                "GATES"
            ],
            "{who}: {wide}"
        );
        assert!(wide.contains("node-a"), "{who}: {wide}");
        let yaml = ok(&["get", "pod", "web-1", "-n", "shop", "-o", "yaml"]);
        assert!(
            yaml.contains("kind: Pod") && yaml.contains("nodeName: node-a"),
            "{who}: {yaml}"
        );
        let one: serde_json::Value =
            serde_json::from_str(&ok(&["get", "pod", "web-1", "-n", "shop", "-o", "json"]))
                .unwrap();
        assert_eq!(one["spec"]["nodeName"], "node-a");
        assert_eq!(
            ok(&["get", "pods", "-n", "shop", "-o", "name"]),
            "pod/db-1\npod/web-1\n",
            "{who}"
        );
        assert_eq!(
            ok(&[
                "get",
                "pods",
                "-n",
                "shop",
                "-o",
                "jsonpath={.items[*].spec.containers[0].image}"
            ]),
            "busybox:1.35 busybox:1.36",
            "{who}"
        );
        let columns = ok(&[
            "get",
            "pods",
            "-n",
            "shop",
            "-o",
            "custom-columns=NAME:.metadata.name,IMAGE:.spec.containers[0].image",
        ]);
        assert_eq!(
            columns
                .lines()
                .map(|l| l.split_whitespace().collect::<Vec<_>>())
                .collect::<Vec<_>>(),
            [
                vec!["NAME", "IMAGE"],
                vec!["db-1", "busybox:1.35"],
                vec!["web-1", "busybox:1.36"]
            ],
            "{who}: {columns}"
        );
        let labels = ok(&["get", "pods", "-n", "shop", "--show-labels"]);
        assert!(labels.contains("app=web,tier=front"), "{who}: {labels}");
        let sorted = ok(&[
            "get",
            "pods",
            "-n",
            "shop",
            "--sort-by=.spec.containers[0].image",
            "-o",
            "name",
        ]);
        assert_eq!(sorted, "pod/db-1\npod/web-1\n", "{who}");
        let sorted = ok(&[
            "get",
            "pods",
            "-n",
            "shop",
            "--sort-by=.metadata.labels.tier",
            "-o",
            "name",
        ]);
        assert_eq!(sorted, "pod/db-1\npod/web-1\n", "{who}");

        // Selection.
        let all = ok(&[
            "get",
            "pods",
            "-A",
            "--field-selector",
            "spec.nodeName=node-a",
            "-o",
            "name",
        ]);
        assert_eq!(all, "pod/web-1\n", "{who}");
        let set = ok(&[
            "get",
            "pods",
            "-n",
            "shop",
            "-l",
            "tier in (front,middle),app!=db",
            "-o",
            "name",
        ]);
        assert_eq!(set, "pod/web-1\n", "{who}");
        let none = ok(&["get", "pods", "-n", "shop", "-l", "!tier", "-o", "name"]);
        assert_eq!(none, "", "{who}");
        let chunked = ok(&["get", "pods", "-A", "--chunk-size=1", "-o", "name"]);
        assert_eq!(chunked, "pod/db-1\npod/web-1\n", "{who}");

        // describe, with the Events about each object.
        let pod = json(&server.curl(&["/api/v1/namespaces/shop/pods/web-1"], true));
        let svc = json(&server.curl(&["/api/v1/namespaces/shop/services/web"], true));
        let node = json(&server.curl(&["/api/v1/nodes/node-a"], true));
        let deploy = json(&server.curl(&["/apis/apps/v1/namespaces/shop/deployments/web"], true));
        let uid = |o: &serde_json::Value| o["metadata"]["uid"].as_str().unwrap().to_owned();
        event(&server, "shop", "Pod", "web-1", &uid(&pod), "Pulled");
        event(&server, "shop", "Service", "web", &uid(&svc), "Synced");
        event(
            &server,
            "default",
            "Node",
            "node-a",
            &uid(&node),
            "Rebooted",
        );
        event(
            &server,
            "shop",
            "Deployment",
            "web",
            &uid(&deploy),
            "ScalingReplicaSet",
        );
        for (args, expect) in [
            (
                vec!["describe", "pod", "web-1", "-n", "shop"],
                vec![
                    "Node:",
                    "node-a",
                    "busybox:1.36",
                    "Pulled",
                    "Pulled happened to web-1",
                ],
            ),
            (
                vec!["describe", "service", "web", "-n", "shop"],
                vec![
                    "Selector:",
                    "app=web",
                    "TargetPort:",
                    "8080/TCP",
                    "Synced happened to web",
                ],
            ),
            (
                vec!["describe", "node", "node-a"],
                vec![
                    "PodCIDR:",
                    "10.42.1.0/24",
                    "zone=z1",
                    "Rebooted happened to node-a",
                ],
            ),
            (
                vec!["describe", "deployment", "web", "-n", "shop"],
                vec![
                    "Replicas:",
                    "2 desired",
                    "ScalingReplicaSet happened to web",
                ],
            ),
        ] {
            let text = ok(&args);
            assert!(text.contains("Events:"), "{who}: {args:?}: {text}");
            for needle in expect {
                assert!(
                    text.contains(needle),
                    "{who}: {args:?} lacks {needle:?}: {text}"
                );
            }
        }

        // wait: a jsonpath value, a condition, a delete.
        ok(&[
            "patch",
            "deployment",
            "web",
            "-n",
            "shop",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"observedGeneration":1,"conditions":[{"type":"Available","status":"True","reason":"MinimumReplicasAvailable","message":"ok"}]}}"#,
        ]);
        ok(&[
            "wait",
            "deployment/web",
            "-n",
            "shop",
            "--for=condition=Available",
            "--timeout=10s",
        ]);
        ok(&[
            "wait",
            "deployment/web",
            "-n",
            "shop",
            "--for=jsonpath={.spec.replicas}=2",
            "--timeout=10s",
        ]);
        ok(&["delete", "pod", "db-1", "-n", "shop", "--wait=false"]);
        ok(&[
            "wait",
            "pod/db-1",
            "-n",
            "shop",
            "--for=delete",
            "--timeout=10s",
        ]);
    }
}
