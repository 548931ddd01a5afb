//! End-to-end: `/metrics` of the apiserver, read with kubectl and curl.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Apiserver, kubectl, kubectls};

fn metrics(server: &Apiserver) -> String {
    let out = server.curl(&["/metrics"], true);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of the first sample whose line starts with `name{` and has every label given.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn metrics_count_requests_time_them_and_track_watches_and_the_store() {
    let server = Apiserver::start();
    let anonymous = server.curl(
        &["/metrics", "-o", "/dev/null", "-w", "%{http_code}"],
        false,
    );
    assert_eq!(String::from_utf8_lossy(&anonymous.stdout), "401");

    let Some(bin) = kubectls().into_iter().next() else {
        return;
    };
    let kc = server.kubeconfig();
    for _ in 0..3 {
        kubectl(&bin, &kc, &["get", "namespaces"]);
    }
    kubectl(
        &bin,
        &kc,
        &["create", "configmap", "m", "--from-literal=a=b"],
    );
    kubectl(&bin, &kc, &["get", "configmap", "nope"]);
    let mut watch = Command::new(&bin)
        .arg("--kubeconfig")
        .arg(&kc)
        .args(["get", "configmaps", "--watch"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let wanted_watch = ["verb=\"WATCH\"", "resource=\"configmaps\""];
    let started = Instant::now();
    let text = loop {
        let text = metrics(&server);
        if sample(&text, "apiserver_longrunning_requests", &wanted_watch) == Some(1.0) {
            break text;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no open watch:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let lists = sample(
        &text,
        "apiserver_request_total",
        &[
            "verb=\"LIST\"",
            "resource=\"namespaces\"",
            "scope=\"cluster\"",
            "code=\"200\"",
        ],
    );
    assert!(lists.is_some_and(|n| n >= 3.0), "{text}");
    assert_eq!(
        sample(
            &text,
            "apiserver_request_total",
            &["verb=\"POST\"", "resource=\"configmaps\"", "code=\"201\""]
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        sample(
            &text,
            "apiserver_request_total",
            &["verb=\"GET\"", "resource=\"configmaps\"", "code=\"404\""]
        )
        .is_some(),
        "{text}"
    );
    assert!(
        sample(
            &text,
            "apiserver_request_duration_seconds_count",
            &["verb=\"LIST\"", "resource=\"namespaces\""]
        )
        .is_some_and(|n| n >= 3.0),
        "{text}"
    );
    assert!(
        text.contains("apiserver_request_duration_seconds_bucket{"),
        "{text}"
    );
    assert!(
        sample(
            &text,
            "etcd_request_duration_seconds_count",
            &["operation=\"create\"", "type=\"configmaps\""]
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );

    // The watch ends: the gauge goes back to zero.
    let _ = watch.kill();
    let _ = watch.wait();
    let started = Instant::now();
    loop {
        let text = metrics(&server);
        if sample(&text, "apiserver_longrunning_requests", &wanted_watch) == Some(0.0) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "watch still counted:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // kubectl reads it too.
    let raw = kubectl(&bin, &kc, &["get", "--raw", "/metrics"]);
    assert!(String::from_utf8_lossy(&raw.stdout).contains("apiserver_request_total{verb="));
}
