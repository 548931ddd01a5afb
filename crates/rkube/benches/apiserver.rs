//! The apiserver benchmark of issue 4 (`bench/apiserver`): the real `rkube apiserver` binary
//! (built with the bench profile) on the embedded store, driven over HTTPS/HTTP/2 with client
//! certificates, as client-go drives it. Prints a markdown table, each figure beside its goal.
//!
//! Workloads (`--only 1,3` picks some):
//! 1. creates of small ConfigMaps by 64 concurrent clients (8 connections × 8 streams);
//! 2. single-object writes (creates and merge patches) at a steady 1,000/s, latency measured
//!    from each request's scheduled start (no coordinated omission);
//! 3. LIST of 10,000 ~2 KiB pods as JSON and as Table, and RSS with them stored and 100 watches;
//! 4. 1,000 watchers of pods: write-to-delivery latency of pod updates.
//!
//! RSS idle is measured first; workloads 3 and 4 run on a second, fresh server. The client
//! shares the machine's cores with the server.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::sync::Mutex;

type Sender = http2::SendRequest<Full<Bytes>>;

struct Server {
    child: std::process::Child,
    dir: tempfile::TempDir,
    port: u16,
    tls: Arc<rustls::ClientConfig>,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let port = rkube_testsupport::free_port();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_rkube"))
            .args(["apiserver", "--bind-address", "127.0.0.1", "--https-port"])
            .arg(port.to_string())
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--write-kubeconfig")
            .arg(dir.path().join("kubeconfig.yaml"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("apiserver.log")).unwrap())
            .spawn()
            .expect("start rkube apiserver");
        let tls_dir = dir.path().join("data/server/tls");
        let started = Instant::now();
        while !tls_dir.join("client-admin.key").exists()
            || !dir.path().join("kubeconfig.yaml").exists()
        {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "apiserver did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let config = rkube_testsupport::tls::admin_client_config(&tls_dir);
        Server {
            child,
            dir,
            port,
            tls: config,
        }
    }

    async fn connect(&self) -> Sender {
        let started = Instant::now();
        loop {
            match self.try_connect().await {
                Ok(s) => return s,
                Err(e) if started.elapsed() < Duration::from_secs(20) => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("cannot connect: {e}"),
            }
        }
    }

    async fn try_connect(&self) -> Result<Sender, Box<dyn std::error::Error>> {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
        tcp.set_nodelay(true)?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(ServerName::try_from("127.0.0.1")?, tcp)
            .await?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .initial_stream_window_size(4 << 20)
            .initial_connection_window_size(16 << 20)
            .handshake(TokioIo::new(tls))
            .await?;
        tokio::spawn(conn);
        Ok(sender)
    }

    fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = &self.dir;
    }
}

fn request(
    method: &str,
    path: &str,
    body: Option<String>,
    content_type: &str,
) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(format!("https://127.0.0.1{path}"))
        .header("content-type", content_type)
        .header("accept", "application/json")
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .unwrap()
}

/// Sends one request and reads the whole answer; returns the status and body.
async fn send(sender: &mut Sender, req: Request<Full<Bytes>>) -> (u16, Bytes) {
    sender.ready().await.expect("connection ready");
    let response = sender.send_request(req).await.expect("request sent");
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, body)
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// A ~2 KiB pod as a controller would write it.
fn pod(name: &str, ns: &str, extra_annotation: &str) -> String {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns,
            "labels": {"app": "bench", "tier": "web", "pod-template-hash": "5d8f7c9b6"},
            "annotations": {"bench/sent": extra_annotation,
                "kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"}},
        "spec": {"containers": [{"name": "web", "image": "registry.local/bench/web:1.2.3",
            "command": ["/bin/server", "--port=8080", "--log-level=info"],
            "env": (0..12).map(|i| serde_json::json!({"name": format!("ENV_{i}"), "value": format!("value-number-{i}-for-the-benchmark")})).collect::<Vec<_>>(),
            "ports": [{"containerPort": 8080, "name": "http"}],
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}},
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 5},
            "volumeMounts": [{"name": "config", "mountPath": "/etc/bench"}]}],
            "volumes": [{"name": "config", "configMap": {"name": "bench-config"}}],
            "nodeName": "node-1"}
    })
    .to_string()
}

async fn create_namespace(s: &mut Sender, name: &str) {
    let (code, body) = send(
        s,
        request(
            "POST",
            "/api/v1/namespaces",
            Some(format!(r#"{{"metadata":{{"name":"{name}"}}}}"#)),
            "application/json",
        ),
    )
    .await;
    assert!(
        code == 201 || code == 409,
        "{code} {}",
        String::from_utf8_lossy(&body)
    );
}

/// Workload 1: 64 clients creating small ConfigMaps as fast as they can.
async fn creates(server: &Server, rows: &mut Vec<[String; 3]>) {
    const CONNECTIONS: usize = 8;
    const STREAMS: usize = 8;
    const DURATION: Duration = Duration::from_secs(10);
    let mut s = server.connect().await;
    create_namespace(&mut s, "creates").await;
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new(3).unwrap()));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CONNECTIONS {
        let sender = server.connect().await;
        for t in 0..STREAMS {
            let (mut sender, hist, done) = (sender.clone(), hist.clone(), done.clone());
            tasks.push(tokio::spawn(async move {
                let mut local = Histogram::<u64>::new(3).unwrap();
                let mut i = 0;
                while start.elapsed() < DURATION {
                    let body = format!(
                        r#"{{"metadata":{{"name":"cm-{c}-{t}-{i}"}},"data":{{"key":"value-{i}"}}}}"#
                    );
                    let t0 = Instant::now();
                    let (code, _) = send(
                        &mut sender,
                        request(
                            "POST",
                            "/api/v1/namespaces/creates/configmaps",
                            Some(body),
                            "application/json",
                        ),
                    )
                    .await;
                    assert_eq!(code, 201);
                    local.record(t0.elapsed().as_micros() as u64).unwrap();
                    i += 1;
                }
                done.fetch_add(i, Ordering::Relaxed);
                hist.lock().await.add(&local).unwrap();
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    let h = hist.lock().await;
    rows.push([
        "creates, 64 concurrent clients, small ConfigMaps".into(),
        format!(
            "{:.0}/s (p50 {:.1} ms, p99 {:.1} ms, {n} in {elapsed:.1} s)",
            n as f64 / elapsed,
            ms(&h, 0.5),
            ms(&h, 0.99)
        ),
        "≥ 5,000/s".into(),
    ]);
}

/// Workload 2: creates and merge patches at a steady 1,000/s.
async fn steady(server: &Server, rows: &mut Vec<[String; 3]>) {
    const RATE: u64 = 1000;
    const DURATION: Duration = Duration::from_secs(10);
    const CONNECTIONS: usize = 4;
    let mut s = server.connect().await;
    create_namespace(&mut s, "steady").await;
    for i in 0..100 {
        let (code, _) = send(
            &mut s,
            request(
                "POST",
                "/api/v1/namespaces/steady/configmaps",
                Some(format!(
                    r#"{{"metadata":{{"name":"p-{i}"}},"data":{{"n":"0"}}}}"#
                )),
                "application/json",
            ),
        )
        .await;
        assert_eq!(code, 201);
    }
    let mut senders = Vec::new();
    for _ in 0..CONNECTIONS {
        senders.push(server.connect().await);
    }
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new(3).unwrap()));
    let total = RATE * DURATION.as_secs();
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = start + Duration::from_nanos(i * 1_000_000_000 / RATE);
        tokio::time::sleep_until(due.into()).await;
        let mut sender = senders[(i as usize) % CONNECTIONS].clone();
        let hist = hist.clone();
        tasks.push(tokio::spawn(async move {
            let req = if i % 2 == 0 {
                request(
                    "POST",
                    "/api/v1/namespaces/steady/configmaps",
                    Some(format!(
                        r#"{{"metadata":{{"name":"s-{i}"}},"data":{{"n":"{i}"}}}}"#
                    )),
                    "application/json",
                )
            } else {
                request(
                    "PATCH",
                    &format!("/api/v1/namespaces/steady/configmaps/p-{}", i % 100),
                    Some(format!(r#"{{"data":{{"n":"{i}"}}}}"#)),
                    "application/merge-patch+json",
                )
            };
            let (code, body) = send(&mut sender, req).await;
            assert!(
                code == 200 || code == 201,
                "{code} {}",
                String::from_utf8_lossy(&body)
            );
            // From the scheduled start: a late send counts against the server.
            hist.lock()
                .await
                .record(due.elapsed().as_micros() as u64)
                .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let h = hist.lock().await;
    rows.push([
        "single-object writes at a steady 1,000/s (creates + merge patches)".into(),
        format!(
            "p99 {:.1} ms (p50 {:.1} ms, max {:.1} ms, {} writes)",
            ms(&h, 0.99),
            ms(&h, 0.5),
            h.max() as f64 / 1000.0,
            h.len()
        ),
        "p99 ≤ 25 ms".into(),
    ]);
}

/// Workload 3: 10,000 stored pods: LIST as JSON and as Table; RSS with 100 watches.
async fn lists(server: &Server, rows: &mut Vec<[String; 3]>) {
    const PODS: usize = 10_000;
    let mut s = server.connect().await;
    create_namespace(&mut s, "pods").await;
    let mut tasks = Vec::new();
    for c in 0..8 {
        let mut sender = server.connect().await;
        tasks.push(tokio::spawn(async move {
            for i in (c..PODS).step_by(8) {
                let (code, body) = send(
                    &mut sender,
                    request(
                        "POST",
                        "/api/v1/namespaces/pods/pods",
                        Some(pod(&format!("pod-{i}"), "pods", "0")),
                        "application/json",
                    ),
                )
                .await;
                assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    eprintln!(
        "   RSS with {PODS} pods stored: {:.0} MiB",
        server.rss_mib()
    );
    for (label, accept) in [
        ("JSON", "application/json"),
        ("Table", "application/json;as=Table;v=v1;g=meta.k8s.io"),
    ] {
        let mut h = Histogram::<u64>::new(3).unwrap();
        let mut bytes = 0;
        for _ in 0..15 {
            let mut req = request(
                "GET",
                "/api/v1/namespaces/pods/pods",
                None,
                "application/json",
            );
            req.headers_mut().insert("accept", accept.parse().unwrap());
            let t0 = Instant::now();
            let (code, body) = send(&mut s, req).await;
            h.record(t0.elapsed().as_micros() as u64).unwrap();
            assert_eq!(code, 200);
            bytes = body.len();
        }
        rows.push([
            format!("LIST 10,000 pods (~2 KiB each) as {label}"),
            format!(
                "p50 {:.0} ms (p90 {:.0} ms, {:.1} MiB answer)",
                ms(&h, 0.5),
                ms(&h, 0.9),
                bytes as f64 / (1 << 20) as f64
            ),
            "p50 ≤ 100 ms".into(),
        ]);
    }
    eprintln!("   RSS after the lists: {:.0} MiB", server.rss_mib());
    let mut watches = Vec::new();
    let mut w = server.connect().await;
    for _ in 0..100 {
        w.ready().await.unwrap();
        let response = w
            .send_request(request(
                "GET",
                "/api/v1/namespaces/pods/pods?watch=1&resourceVersion=0&allowWatchBookmarks=true",
                None,
                "application/json",
            ))
            .await
            .unwrap();
        watches.push(response.into_body());
    }
    // Let the initial events flow and the server settle.
    let drains: Vec<_> = watches
        .into_iter()
        .map(|mut b| {
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(15);
                while Instant::now() < deadline {
                    match tokio::time::timeout(Duration::from_secs(2), b.frame()).await {
                        Ok(Some(Ok(_))) => {}
                        _ => break,
                    }
                }
                b
            })
        })
        .collect();
    let mut kept = Vec::new();
    for d in drains {
        kept.push(d.await.unwrap());
    }
    rows.push([
        "RSS with 10,000 pods stored and 100 watches".into(),
        format!("{:.0} MiB", server.rss_mib()),
        "≤ 300 MiB".into(),
    ]);
    drop(kept);
}

/// Workload 4: 1,000 watchers of pods; latency from each write to each delivery.
async fn watchers(server: &Server, rows: &mut Vec<[String; 3]>) {
    const WATCHERS: usize = 1000;
    const PER_CONNECTION: usize = 100;
    const WRITES: usize = 100;
    let mut s = server.connect().await;
    create_namespace(&mut s, "watched").await;
    for i in 0..10 {
        let (code, _) = send(
            &mut s,
            request(
                "POST",
                "/api/v1/namespaces/watched/pods",
                Some(pod(&format!("w-{i}"), "watched", "0")),
                "application/json",
            ),
        )
        .await;
        assert_eq!(code, 201);
    }
    let (_, list) = send(
        &mut s,
        request(
            "GET",
            "/api/v1/namespaces/watched/pods?limit=1",
            None,
            "application/json",
        ),
    )
    .await;
    let rv: serde_json::Value = serde_json::from_slice(&list).unwrap();
    let rv = rv["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new(3).unwrap()));
    let mut readers = Vec::new();
    for _ in 0..WATCHERS / PER_CONNECTION {
        let mut w = server.connect().await;
        for _ in 0..PER_CONNECTION {
            w.ready().await.unwrap();
            let response = w
                .send_request(request(
                    "GET",
                    &format!("/api/v1/namespaces/watched/pods?watch=1&resourceVersion={rv}"),
                    None,
                    "application/json",
                ))
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            let mut body = response.into_body();
            let hist = hist.clone();
            readers.push(tokio::spawn(async move {
                let mut local = Histogram::<u64>::new(3).unwrap();
                let mut seen = 0;
                let marker = b"\"bench/sent\":\"";
                let mut pending: Vec<u8> = Vec::new();
                while seen < WRITES {
                    let frame =
                        match tokio::time::timeout(Duration::from_secs(30), body.frame()).await {
                            Ok(Some(Ok(f))) => f,
                            _ => break,
                        };
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    let arrived = now_ns();
                    pending.extend_from_slice(&data);
                    while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = pending.drain(..=end).collect();
                        if let Some(at) = line.windows(marker.len()).position(|w| w == marker) {
                            let rest = &line[at + marker.len()..];
                            let stop = rest.iter().position(|b| *b == b'"').unwrap_or(0);
                            if let Ok(sent) = std::str::from_utf8(&rest[..stop])
                                .unwrap_or("0")
                                .parse::<u128>()
                                && sent > 0
                            {
                                local
                                    .record(((arrived.saturating_sub(sent)) / 1000) as u64)
                                    .unwrap();
                                seen += 1;
                            }
                        }
                    }
                }
                hist.lock().await.add(&local).unwrap();
                seen
            }));
        }
    }
    // Writes at 20/s, each carrying its send time.
    for i in 0..WRITES {
        let patch = format!(
            r#"{{"metadata":{{"annotations":{{"bench/sent":"{}"}}}}}}"#,
            now_ns()
        );
        let (code, _) = send(
            &mut s,
            request(
                "PATCH",
                &format!("/api/v1/namespaces/watched/pods/w-{}", i % 10),
                Some(patch),
                "application/merge-patch+json",
            ),
        )
        .await;
        assert_eq!(code, 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut delivered = 0;
    for r in readers {
        delivered += r.await.unwrap();
    }
    let h = hist.lock().await;
    rows.push([
        "1,000 pod watchers: write to delivery".into(),
        format!(
            "p99 {:.1} ms (p50 {:.1} ms, {delivered} of {} deliveries)",
            ms(&h, 0.99),
            ms(&h, 0.5),
            WATCHERS * WRITES
        ),
        "p99 ≤ 50 ms".into(),
    ]);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let only: Option<Vec<u32>> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect());
    let on = |n: u32| only.as_ref().is_none_or(|o| o.contains(&n));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let server = Server::start();
        let _ = server.connect().await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut rows = vec![[
            "RSS idle (after start)".to_owned(),
            format!("{:.1} MiB", server.rss_mib()),
            "≤ 50 MiB".to_owned(),
        ]];
        if on(1) {
            eprintln!("1: creates by 64 clients ...");
            creates(&server, &mut rows).await;
        }
        if on(2) {
            eprintln!("2: steady 1,000 writes/s ...");
            steady(&server, &mut rows).await;
        }
        // The pod workloads get a server of their own: its memory is that of 10,000 pods, not
        // of what workloads 1 and 2 left behind.
        drop(server);
        let server = Server::start();
        let _ = server.connect().await;
        if on(3) {
            eprintln!("3: 10,000 pods: LIST, RSS ...");
            lists(&server, &mut rows).await;
        }
        if on(4) {
            eprintln!("4: 1,000 watchers ...");
            watchers(&server, &mut rows).await;
        }
        println!("| workload | rkube | goal |");
        println!("|---|---|---|");
        for [a, b, c] in rows {
            println!("| {a} | {b} | {c} |");
        }
    });
}
