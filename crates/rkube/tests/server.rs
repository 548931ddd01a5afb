//! End-to-end: `rkube server` (control plane only for now), its start-up time, the join token
//! and bearer-token authentication with the real kubectl.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{kubectl, kubectls, rkube_bin};

struct Server {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, extra)
    }

    fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Server {
        let port = rkube_testsupport::free_port();
        let _ = std::fs::remove_file(dir.path().join("kubeconfig.yaml"));
        let started = Instant::now();
        let child = Command::new(rkube_bin())
            .args(["server", "--bind-address", "127.0.0.1"])
            .arg("--https-port")
            .arg(port.to_string())
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--write-kubeconfig")
            .arg(dir.path().join("kubeconfig.yaml"))
            // The embedded runtime's socket and state in the test's directory, not /run/rkube.
            .arg("--cri-address")
            .arg(format!("unix://{}", dir.path().join("cri.sock").display()))
            .arg("--state-dir")
            .arg(dir.path().join("runtime-state"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("server.log")).unwrap())
            .spawn()
            .expect("start rkube server");
        let server = Server { child, dir, port };
        // Polled tightly; the time is printed, never asserted (the machine is shared).
        loop {
            if server.curl(&["/readyz"], None).stdout == b"ok" {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "not ready: {}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        eprintln!(
            "rkube server {extra:?}: /readyz ok {:?} after the process started",
            started.elapsed()
        );
        server
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn ca(&self) -> std::path::PathBuf {
        self.dir.path().join("data/server/tls/server-ca.crt")
    }

    fn token(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("data/server/token"))
            .unwrap()
            .trim()
            .to_owned()
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn curl(&self, args: &[&str], bearer: Option<&str>) -> Output {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "5", "--cacert"])
            .arg(self.ca());
        if let Some(token) = bearer {
            cmd.arg("-H").arg(format!("Authorization: Bearer {token}"));
        }
        let (path, rest) = args.split_first().unwrap();
        cmd.args(rest).arg(format!("{}{path}", self.url()));
        cmd.output().expect("run curl")
    }

    /// kubectl with a bearer token and no client certificate.
    fn kubectl_token(&self, bin: &Path, token: &str, args: &[&str]) -> Output {
        Command::new(bin)
            .arg("--kubeconfig=/dev/null")
            .arg(format!("--server={}", self.url()))
            .arg(format!("--certificate-authority={}", self.ca().display()))
            .arg(format!("--token={token}"))
            .args(args)
            .output()
            .expect("run kubectl")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn rkube_server_says_what_it_runs_and_where_its_files_are() {
    let server = Server::start(&[]);
    let log = server.log();
    let socket = server.dir.path().join("cri.sock");
    assert!(
        log.contains(&format!(
            "the container runtime serves CRI on unix://{}; the kubelet and networking are not available yet",
            socket.display()
        )),
        "{log}"
    );
    // The embedded runtime answers CRI, and keeps its state under the data directory.
    let out = Command::new(rkube_bin())
        .args(["crictl", "-r"])
        .arg(format!("unix://{}", socket.display()))
        .arg("version")
        .output()
        .unwrap();
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(version.contains("RuntimeName:  rkube"), "{version}");
    assert!(server.dir.path().join("data/agent/images").is_dir());
    assert!(log.contains("admin kubeconfig written to"), "{log}");
    assert!(log.contains("join token in"), "{log}");
    for bin in kubectls() {
        let kc = server.dir.path().join("kubeconfig.yaml");
        let out = kubectl(&bin, &kc, &["get", "namespaces", "-o", "name"]);
        assert!(String::from_utf8_lossy(&out.stdout).contains("namespace/kube-system"));
        // The controllers run in-process: deleting a namespace empties it and it goes
        // (kubectl waits for that).
        for args in [
            &["create", "namespace", "scratch"][..],
            &["create", "configmap", "c", "-n", "scratch"],
            &["delete", "namespace", "scratch", "--timeout=60s"],
        ] {
            let out = kubectl(&bin, &kc, args);
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let quiet = Server::start(&["--disable-agent", "--disable-controller-manager"]);
    assert!(
        !quiet.log().contains("not available yet"),
        "{}",
        quiet.log()
    );
    assert!(!quiet.dir.path().join("cri.sock").exists(), "no runtime");

    let help = Command::new(rkube_bin())
        .args(["server", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--data-dir",
        "--datastore-endpoint",
        "--https-port",
        "--bind-address",
        "--node-name",
        "--cluster-cidr",
        "--service-cidr",
        "--cluster-dns",
        "--write-kubeconfig",
        "--disable-agent",
        "--token",
        "/etc/rkube/rkube.yaml",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}

#[test]
fn bad_flags_are_one_clear_error() {
    for (flag, value, expected) in [
        ("--cluster-cidr", "10.42.0.0", "--cluster-cidr"),
        (
            "--service-cidr",
            "fd00::/108",
            "IPv6 service ranges are not supported yet",
        ),
        ("--node-name", "Not_A_Name", "is not a valid node name"),
        (
            "--token",
            "K10abc::server:x",
            "it was made for another cluster's CA",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(rkube_bin())
            .args(["server", "--https-port", "0", "--bind-address", "127.0.0.1"])
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--write-kubeconfig")
            .arg(dir.path().join("kc"))
            .arg("--cri-address")
            .arg(format!("unix://{}", dir.path().join("cri.sock").display()))
            .arg("--state-dir")
            .arg(dir.path().join("runtime-state"))
            .args([flag, value])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{flag} {value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("error: ") && last.contains(expected),
            "{flag}: {stderr}"
        );
    }
}

#[test]
fn the_join_token_is_made_once_and_authenticates_as_an_administrator() {
    let mut server = Server::start(&["--disable-agent"]);
    let token = server.token();
    let (prefix, secret) = token
        .split_once("::server:")
        .expect("K10<hash>::server:<secret>");
    assert!(
        prefix.starts_with("K10") && prefix.len() == 3 + 64,
        "{token}"
    );
    assert_eq!(secret.len(), 32);

    for bin in kubectls() {
        for t in [token.as_str(), secret] {
            let out = server.kubectl_token(&bin, t, &["get", "namespaces", "-o", "name"]);
            assert!(
                String::from_utf8_lossy(&out.stdout).contains("namespace/default"),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let out = server.kubectl_token(&bin, t, &["create", "configmap", "by-token"]);
            let _ = out; // created once; the second round sees AlreadyExists
        }
        let out = server.kubectl_token(&bin, "wrong", &["get", "namespaces"]);
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Unauthorized"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A wrong token is refused even where anonymous requests are allowed.
    let health = server.curl(
        &["/version", "-w", "%{http_code}", "-o", "/dev/null"],
        Some("wrong"),
    );
    assert_eq!(String::from_utf8_lossy(&health.stdout), "401");
    let anon = server.curl(&["/api", "-w", "%{http_code}", "-o", "/dev/null"], None);
    assert_eq!(String::from_utf8_lossy(&anon.stdout), "401");

    // Kept across restarts.
    let _ = server.child.kill();
    let _ = server.child.wait();
    let dir = std::mem::replace(&mut server.dir, tempfile::tempdir().unwrap());
    let server = Server::start_in(dir, &["--disable-agent"]);
    assert_eq!(server.token(), token);
    let ok = server.curl(
        &["/api/v1/namespaces/default/configmaps/by-token"],
        Some(secret),
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("\"by-token\""));
}

#[test]
fn the_token_flag_replaces_the_secret() {
    let server = Server::start(&["--disable-agent", "--token", "s3cret-value"]);
    assert!(
        server.token().ends_with("::server:s3cret-value"),
        "{}",
        server.token()
    );
    for bin in kubectls() {
        let out = server.kubectl_token(&bin, "s3cret-value", &["get", "namespaces", "-o", "name"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
