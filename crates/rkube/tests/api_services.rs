//! End-to-end: Service cluster IPs and node ports, the `kubernetes` Service, with the real
//! kubectl.

mod common;

use std::path::Path;
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

fn failed(out: Output) -> String {
    assert!(
        !out.status.success(),
        "kubectl should have failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn svc(server: &Apiserver, bin: &Path, name: &str) -> Value {
    json(&kubectl(
        bin,
        &server.kubeconfig(),
        &["get", "service", name, "-o", "json"],
    ))
}

fn apply(server: &Apiserver, bin: &Path, yaml: &str) -> Output {
    let path = server.dir.path().join("svc.yaml");
    std::fs::write(&path, yaml).unwrap();
    kubectl(
        bin,
        &server.kubeconfig(),
        &["create", "--validate=false", "-f", path.to_str().unwrap()],
    )
}

fn service_yaml(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  ports:\n  - port: 80{extra}\n"
    )
}

#[test]
fn the_kubernetes_service_points_at_the_apiserver() {
    let mut server = Apiserver::start();
    for bin in kubectls() {
        let kc = server.kubeconfig();
        let k8s = svc(&server, &bin, "kubernetes");
        assert_eq!(k8s["spec"]["clusterIP"], "10.43.0.1");
        assert_eq!(k8s["spec"]["ports"][0]["port"], 443);
        let ep = json(&kubectl(
            &bin,
            &kc,
            &["get", "endpoints", "kubernetes", "-o", "json"],
        ));
        assert_eq!(ep["subsets"][0]["addresses"][0]["ip"], "127.0.0.1");
        assert_eq!(ep["subsets"][0]["ports"][0]["port"], server.port);
        let slice = json(&kubectl(
            &bin,
            &kc,
            &["get", "endpointslices", "kubernetes", "-o", "json"],
        ));
        assert_eq!(slice["endpoints"][0]["addresses"][0], "127.0.0.1");
        assert_eq!(slice["ports"][0]["port"], server.port);
    }
    // A restart on another port moves the endpoints, keeps the Service.
    let uid = svc(&server, &kubectls()[0], "kubernetes")["metadata"]["uid"].clone();
    server.restart();
    for bin in kubectls() {
        let ep = json(&kubectl(
            &bin,
            &server.kubeconfig(),
            &["get", "endpoints", "kubernetes", "-o", "json"],
        ));
        assert_eq!(ep["subsets"][0]["ports"][0]["port"], server.port);
        assert_eq!(svc(&server, &bin, "kubernetes")["metadata"]["uid"], uid);
    }
}

#[test]
fn cluster_ips_and_node_ports_are_allocated_checked_and_released() {
    for bin in kubectls() {
        let mut server = Apiserver::start();
        let kc = server.kubeconfig();
        ok(kubectl(
            &bin,
            &kc,
            &["create", "service", "clusterip", "a", "--tcp=80"],
        ));
        ok(kubectl(
            &bin,
            &kc,
            &["create", "service", "nodeport", "b", "--tcp=80"],
        ));
        ok(kubectl(
            &bin,
            &kc,
            &["create", "service", "clusterip", "h", "--clusterip=None"],
        ));
        ok(kubectl(
            &bin,
            &kc,
            &[
                "create",
                "service",
                "externalname",
                "x",
                "--external-name=example.com",
            ],
        ));
        let a = svc(&server, &bin, "a");
        let a_ip = a["spec"]["clusterIP"].as_str().unwrap().to_owned();
        assert!(a_ip.starts_with("10.43.") && a_ip != "10.43.0.1", "{a_ip}");
        assert_eq!(a["spec"]["clusterIPs"], serde_json::json!([a_ip]));
        assert_eq!(a["spec"]["ipFamilies"], serde_json::json!(["IPv4"]));
        let b = svc(&server, &bin, "b");
        let b_port = b["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
        assert!((30000..=32767).contains(&b_port), "{b_port}");
        assert_eq!(svc(&server, &bin, "h")["spec"]["clusterIP"], "None");
        assert!(svc(&server, &bin, "x")["spec"].get("clusterIP").is_none());

        // Requested values are honoured; taken ones are refused as upstream words it.
        ok(apply(
            &server,
            &bin,
            &service_yaml("c", "\n  clusterIP: 10.43.0.50"),
        ));
        assert_eq!(svc(&server, &bin, "c")["spec"]["clusterIP"], "10.43.0.50");
        let err = failed(apply(
            &server,
            &bin,
            &service_yaml("d", "\n  clusterIP: 10.43.0.50"),
        ));
        assert!(
            err.contains("spec.clusterIPs: Invalid value: [\"10.43.0.50\"]: failed to allocate IP 10.43.0.50: provided IP is already allocated"),
            "{err}"
        );
        let err = failed(apply(
            &server,
            &bin,
            &service_yaml("d", "\n  clusterIP: 10.99.0.1"),
        ));
        assert!(err.contains("is not in the valid range"), "{err}");
        let taken = format!("\n    nodePort: {b_port}\n  type: NodePort");
        let err = failed(apply(&server, &bin, &service_yaml("d", &taken)));
        assert!(
            err.contains(&format!(
                "spec.ports[0].nodePort: Invalid value: {b_port}: provided port is already allocated"
            )),
            "{err}"
        );

        // Delete releases; a type change releases what the new type does not use.
        ok(kubectl(&bin, &kc, &["delete", "service", "a"]));
        ok(apply(
            &server,
            &bin,
            &service_yaml("a2", &format!("\n  clusterIP: {a_ip}")),
        ));
        ok(kubectl(
            &bin,
            &kc,
            &[
                "patch",
                "service",
                "b",
                "--type=merge",
                "-p",
                r#"{"spec":{"type":"ClusterIP"}}"#,
            ],
        ));
        let b = svc(&server, &bin, "b");
        assert!(b["spec"]["ports"][0].get("nodePort").is_none(), "{b}");
        let b_ip = b["spec"]["clusterIP"].as_str().unwrap().to_owned();
        ok(apply(&server, &bin, &service_yaml("d", &taken)));
        ok(kubectl(
            &bin,
            &kc,
            &[
                "patch",
                "service",
                "b",
                "--type=merge",
                "-p",
                r#"{"spec":{"type":"ExternalName","externalName":"example.org"}}"#,
            ],
        ));
        assert!(svc(&server, &bin, "b")["spec"].get("clusterIP").is_none());
        ok(apply(
            &server,
            &bin,
            &service_yaml("e", &format!("\n  clusterIP: {b_ip}")),
        ));
        // A replace that leaves the IP out keeps it.
        let e = svc(&server, &bin, "e");
        let path = server.dir.path().join("replace.yaml");
        std::fs::write(&path, service_yaml("e", "")).unwrap();
        ok(kubectl(
            &bin,
            &kc,
            &["replace", "--validate=false", "-f", path.to_str().unwrap()],
        ));
        assert_eq!(
            svc(&server, &bin, "e")["spec"]["clusterIP"],
            e["spec"]["clusterIP"]
        );

        // Allocations survive a restart.
        server.restart();
        let err = failed(apply(
            &server,
            &bin,
            &service_yaml("f", "\n  clusterIP: 10.43.0.50"),
        ));
        assert!(err.contains("provided IP is already allocated"), "{err}");
    }
}

#[test]
fn concurrent_creates_get_distinct_addresses() {
    let server = Apiserver::start();
    let Some(bin) = kubectls().into_iter().next() else {
        return;
    };
    let kc = server.kubeconfig();
    std::thread::scope(|scope| {
        for i in 0..12 {
            let (bin, kc) = (bin.clone(), kc.clone());
            scope.spawn(move || {
                ok(kubectl(
                    &bin,
                    &kc,
                    &[
                        "create",
                        "service",
                        "nodeport",
                        &format!("s{i}"),
                        "--tcp=80",
                    ],
                ));
            });
        }
    });
    let list = json(&kubectl(&bin, &kc, &["get", "services", "-o", "json"]));
    let mut ips = std::collections::HashSet::new();
    let mut ports = std::collections::HashSet::new();
    for item in list["items"].as_array().unwrap() {
        assert!(ips.insert(item["spec"]["clusterIP"].to_string()), "{item}");
        if let Some(p) = item["spec"]["ports"][0].get("nodePort") {
            assert!(ports.insert(p.to_string()), "{item}");
        }
    }
    assert_eq!(ips.len(), 13, "12 Services and kubernetes");
    assert_eq!(ports.len(), 12);
}
