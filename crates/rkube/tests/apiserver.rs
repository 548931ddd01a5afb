//! End-to-end tests of `rkube apiserver`: the real binary, real HTTPS, and the real `kubectl`
//! (fetched by `scripts/clients`; CI requires it, a developer run without it skips that part).

mod common;

use std::process::Command;

use common::{Apiserver, json, kubectl, kubectls};

#[test]
fn version_and_health_are_open_and_everything_else_needs_credentials() {
    let server = Apiserver::start();
    let version = json(&server.curl(&["/version"], false));
    assert_eq!(version["major"], "1");
    assert!(
        version["gitVersion"].as_str().unwrap().starts_with("v1."),
        "{version}"
    );

    let verbose = server.curl(&["/readyz?verbose"], false);
    let text = String::from_utf8_lossy(&verbose.stdout);
    assert!(
        text.contains("[+]etcd ok") && text.contains("readyz check passed"),
        "{text}"
    );

    let status = json(&server.curl(&["/api"], false));
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["code"], 401);
    assert_eq!(status["reason"], "Unauthorized");

    // Authenticated: resources are served, unknown ones are an honest NotFound.
    let list = json(&server.curl(&["/api/v1/pods"], true));
    assert_eq!(list["kind"], "PodList");
    let status = json(&server.curl(&["/api/v1/nothings"], true));
    assert_eq!(status["code"], 404);
    assert_eq!(status["reason"], "NotFound");
}

#[test]
fn a_restart_reuses_the_certificates_and_old_kubeconfigs_keep_working() {
    let mut server = Apiserver::start();
    let ca = std::fs::read(server.tls("server-ca.crt")).unwrap();
    let admin = std::fs::read(server.tls("client-admin.crt")).unwrap();
    server.restart();
    assert_eq!(std::fs::read(server.tls("server-ca.crt")).unwrap(), ca);
    assert_eq!(
        std::fs::read(server.tls("client-admin.crt")).unwrap(),
        admin
    );
    let ns = json(&server.curl(&["/api/v1/namespaces/kube-system"], true));
    assert_eq!(ns["status"]["phase"], "Active");
}

#[test]
fn real_kubectl_talks_to_it_with_the_admin_kubeconfig() {
    let server = Apiserver::start();
    for bin in kubectls() {
        let out = kubectl(&bin, &server.kubeconfig(), &["version", "-o", "json"]);
        let version = json(&out);
        assert_eq!(
            version["serverVersion"]["major"],
            "1",
            "{} version: {version}",
            bin.display()
        );
        let out = kubectl(&bin, &server.kubeconfig(), &["get", "--raw", "/readyz"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, b"ok");
    }
}

#[test]
fn a_port_in_use_is_one_clear_error_line() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rkube"))
        .args(["apiserver", "--bind-address", "127.0.0.1"])
        .arg("--https-port")
        .arg(port.to_string())
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--write-kubeconfig")
        .arg(dir.path().join("kc.yaml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{err}"
    );
}
