//! Bad input and load that must not take the apiserver down: 10,000 idle watches (each still
//! gets the next event), a watcher that never reads while large objects are written (what the
//! server keeps for it stops growing; it keeps answering), and headers far too large.
//! Memory figures are printed, and only checked against generous bounds; nothing is timed.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::Apiserver;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;

/// An HTTP/2 connection to the server as the admin.
async fn connect(server: &Apiserver) -> http2::SendRequest<Full<Bytes>> {
    let config = rkube_testsupport::tls::admin_client_config(&server.tls(""));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(format!("https://127.0.0.1{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap()
}

fn post(path: &str, body: String) -> Request<Full<Bytes>> {
    Request::post(format!("https://127.0.0.1{path}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_watches_each_get_the_next_event() {
    const WATCHES: usize = 10_000;
    const PER_CONNECTION: usize = 100;
    let server = Apiserver::start();
    let pid = server.child.id();
    let idle = rss_mib(pid);

    let mut bodies = Vec::with_capacity(WATCHES);
    for _ in 0..WATCHES / PER_CONNECTION {
        let mut sender = connect(&server).await;
        for _ in 0..PER_CONNECTION {
            sender.ready().await.unwrap();
            let response = sender
                .send_request(get("/api/v1/namespaces/default/configmaps?watch=1"))
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            bodies.push(response.into_body());
        }
    }
    let loaded = rss_mib(pid);
    println!("apiserver RSS: {idle:.1} MiB idle, {loaded:.1} MiB with {WATCHES} watches");
    assert!(
        loaded - idle < 2048.0,
        "{WATCHES} idle watches took {:.0} MiB",
        loaded - idle
    );

    // One write reaches every watch.
    let out = server.curl(
        &[
            "/api/v1/namespaces/default/configmaps",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            r#"{"metadata":{"name":"fanout"}}"#,
        ],
        true,
    );
    assert!(out.status.success());
    let mut delivered = 0;
    for body in &mut bodies {
        let frame = tokio::time::timeout(Duration::from_secs(120), body.frame())
            .await
            .expect("a watch got nothing in 2 minutes")
            .expect("the watch ended")
            .expect("the watch failed");
        let data = frame.into_data().unwrap_or_default();
        assert!(
            String::from_utf8_lossy(&data).contains("fanout"),
            "{}",
            String::from_utf8_lossy(&data)
        );
        delivered += 1;
    }
    assert_eq!(delivered, WATCHES);
    println!("apiserver RSS after the fan-out: {:.1} MiB", rss_mib(pid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_never_reads_does_not_grow_the_server() {
    let server = Apiserver::start();
    let pid = server.child.id();
    // Opened on its own connection, never read.
    let mut watcher = connect(&server).await;
    let stalled = watcher
        .send_request(get("/api/v1/namespaces/default/configmaps?watch=1"))
        .await
        .unwrap();
    let mut writer = connect(&server).await;
    // Just under a ConfigMap's 1 MiB limit, with room for the counter written in front.
    let value = "x".repeat((1 << 20) - 16);
    // Ten 1 MiB objects, then changed over and over: what is stored stays ~10 MiB (the watch
    // cache holds stored objects, as upstream's does), so growth could only be changes kept
    // for the stalled watcher.
    for i in 0..10 {
        writer.ready().await.unwrap();
        let response = writer
            .send_request(post(
                "/api/v1/namespaces/default/configmaps",
                format!(r#"{{"metadata":{{"name":"big-{i}"}},"data":{{"v":"{value}"}}}}"#),
            ))
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "create {i}");
        let _ = response.into_body().collect().await;
    }
    let mut write_mib = async |from: usize, count: usize| {
        for i in from..from + count {
            writer.ready().await.unwrap();
            let request = Request::patch(format!(
                "https://127.0.0.1/api/v1/namespaces/default/configmaps/big-{}",
                i % 10
            ))
            .header("content-type", "application/merge-patch+json")
            .body(Full::new(Bytes::from(format!(
                r#"{{"data":{{"v":"{i}{value}"}}}}"#
            ))))
            .unwrap();
            let response = writer.send_request(request).await.unwrap();
            assert_eq!(response.status(), 200, "write {i}");
            let _ = response.into_body().collect().await;
        }
    };
    // Whatever the server keeps for a stalled watcher must stop growing: what 150 more MiB of
    // events add once it has seen 150 MiB is small.
    let before = rss_mib(pid);
    write_mib(0, 150).await;
    let middle = rss_mib(pid);
    write_mib(150, 150).await;
    let after = rss_mib(pid);
    println!(
        "apiserver RSS with a stalled watcher: {before:.1} MiB before, {middle:.1} MiB after 150 MiB of events, {after:.1} MiB after 300 MiB"
    );
    assert!(
        after - middle < 60.0,
        "the stalled watcher's events are being buffered: +{:.0} MiB for the second 150 MiB",
        after - middle
    );
    // The server still answers.
    let out = server.curl(&["/readyz"], false);
    assert_eq!(out.stdout, b"ok");
    drop(stalled);
}

#[test]
fn huge_headers_are_refused_not_a_crash() {
    let server = Apiserver::start();
    // curl reads headers from a file: a 1 MiB argument would exceed the argument list limit.
    let headers = server.dir.path().join("headers.txt");
    std::fs::write(&headers, format!("X-Big: {}\n", "a".repeat(1 << 20))).unwrap();
    let big = format!("@{}", headers.display());
    for extra in [&["--http1.1"][..], &["--http2"]] {
        let mut args = vec![
            "/api/v1/namespaces",
            "-H",
            &big,
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ];
        args.extend_from_slice(extra);
        let out = server.curl(&args, true);
        let code = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            code == "431" || code == "400" || code == "000",
            "a 1 MiB header got {code}"
        );
    }
    // And the server is fine afterwards.
    assert_eq!(server.curl(&["/readyz"], false).stdout, b"ok");
}
