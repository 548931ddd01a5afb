//! End-to-end tests of `rkube apiserver`: the real binary, real HTTPS, and the real `kubectl`
//! (fetched by `scripts/clients`; CI requires it, a developer run without it skips that part).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn spawn(dir: &Path) -> (Child, u16) {
    let port = rkube_testsupport::free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_rkube"))
        .args(["apiserver", "--bind-address", "127.0.0.1"])
        .arg("--https-port")
        .arg(port.to_string())
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--write-kubeconfig")
        .arg(dir.join("kubeconfig.yaml"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("apiserver.log")).unwrap())
        .spawn()
        .expect("start rkube apiserver");
    (child, port)
}

struct Apiserver {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Apiserver {
    fn start() -> Apiserver {
        let dir = tempfile::tempdir().unwrap();
        let (child, port) = spawn(dir.path());
        let server = Apiserver { child, dir, port };
        server.wait_ready();
        server
    }

    /// Stops the server and starts a new process on the same data dir (on a new port).
    fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(self.kubeconfig());
        let (child, port) = spawn(self.dir.path());
        self.child = child;
        self.port = port;
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let started = Instant::now();
        while !self.kubeconfig().exists() || self.curl(&["/readyz"], false).stdout != b"ok" {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "apiserver not ready in 10 s: {}",
                std::fs::read_to_string(self.dir.path().join("apiserver.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig.yaml")
    }

    fn tls(&self, file: &str) -> PathBuf {
        self.dir.path().join("data/server/tls").join(file)
    }

    /// `curl` to a path, as the admin (client certificate) or anonymously.
    fn curl(&self, args: &[&str], admin: bool) -> Output {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "--max-time", "5", "--cacert"])
            .arg(self.tls("server-ca.crt"));
        if admin {
            cmd.arg("--cert")
                .arg(self.tls("client-admin.crt"))
                .arg("--key")
                .arg(self.tls("client-admin.key"));
        }
        let (path, rest) = args.split_first().unwrap();
        cmd.args(rest)
            .arg(format!("https://127.0.0.1:{}{path}", self.port));
        cmd.output().expect("run curl")
    }
}

impl Drop for Apiserver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// The real kubectl binaries, when fetched.
fn kubectls() -> Vec<PathBuf> {
    let dir = std::env::var_os("RKUBE_CLIENTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/rkube-ci/clients"));
    let found: Vec<PathBuf> = ["kubectl-v1.33", "kubectl-v1.37"]
        .iter()
        .map(|name| dir.join(name))
        .filter(|path| path.exists())
        .collect();
    if found.is_empty() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have fetched kubectl into {} (scripts/clients)",
            dir.display()
        );
    }
    found
}

fn kubectl(kubectl: &Path, kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("run kubectl")
}

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

    // Authenticated, but not served yet: an honest NotFound, never a fake answer.
    let status = json(&server.curl(&["/api/v1/pods"], true));
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
    assert_eq!(json(&server.curl(&["/api/v1/pods"], true))["code"], 404);
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
