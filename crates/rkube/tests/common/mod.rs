//! Shared helpers of the end-to-end tests: start `rkube apiserver`, curl it, run real kubectl.
#![allow(dead_code)] // each test file uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Writes `text` to `dir/name`; returns the path as a string, for command lines.
pub fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

/// The binary under test: `RKUBE_BIN` when set (a copy that a concurrent build in a shared
/// target directory cannot replace mid-run), else the one cargo built.
pub fn rkube_bin() -> PathBuf {
    std::env::var_os("RKUBE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_rkube")))
}

pub fn spawn(dir: &Path) -> (Child, u16) {
    spawn_with(dir, &[])
}

/// [`spawn`] with extra `rkube apiserver` arguments (e.g. `--datastore-endpoint`).
pub fn spawn_with(dir: &Path, extra: &[String]) -> (Child, u16) {
    let port = rkube_testsupport::free_port();
    (spawn_on(dir, port, extra), port)
}

/// Starts `rkube apiserver` on `port` (a restart keeps its clients' address).
pub fn spawn_on(dir: &Path, port: u16, extra: &[String]) -> Child {
    Command::new(rkube_bin())
        .args(["apiserver", "--bind-address", "127.0.0.1"])
        .args(extra)
        .arg("--https-port")
        .arg(port.to_string())
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--write-kubeconfig")
        .arg(dir.join("kubeconfig.yaml"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("apiserver.log")).unwrap())
        .spawn()
        .expect("start rkube apiserver")
}

pub struct Apiserver {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
}

impl Apiserver {
    pub fn start() -> Apiserver {
        Self::start_with(&[])
    }

    /// [`Apiserver::start`] with extra `rkube apiserver` arguments.
    pub fn start_with(extra: &[String]) -> Apiserver {
        let dir = tempfile::tempdir().unwrap();
        let (child, port) = spawn_with(dir.path(), extra);
        let server = Apiserver { child, dir, port };
        server.wait_ready();
        server
    }

    /// Stops the server and starts a new process on the same data dir (on a new port).
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(self.kubeconfig());
        let (child, port) = spawn(self.dir.path());
        self.child = child;
        self.port = port;
        self.wait_ready();
    }

    pub fn wait_ready(&self) {
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

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig.yaml")
    }

    pub fn tls(&self, file: &str) -> PathBuf {
        self.dir.path().join("data/server/tls").join(file)
    }

    /// `curl` to a path, as the admin (client certificate) or anonymously.
    pub fn curl(&self, args: &[&str], admin: bool) -> Output {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "20", "--cacert"])
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

    /// A request with a body, as the admin; the JSON answer. The User-Agent is fixed, so the
    /// field manager a write records is known (`curl-test`).
    pub fn send(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &str,
    ) -> serde_json::Value {
        json(&self.curl(
            &[
                path,
                "-X",
                method,
                "-H",
                &format!("Content-Type: {content_type}"),
                "-H",
                "User-Agent: curl-test/1.0",
                "--data-binary",
                body,
            ],
            true,
        ))
    }
}

impl Drop for Apiserver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}{} ({})",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            out.status
        )
    })
}

/// The real kubectl binaries, when fetched.
pub fn kubectls() -> Vec<PathBuf> {
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

/// The real helm, when fetched (`scripts/clients` puts it beside kubectl).
pub fn helm_bin() -> Option<PathBuf> {
    let dir = std::env::var_os("RKUBE_CLIENTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/rkube-ci/clients"));
    let path = dir.join("helm");
    if !path.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have fetched helm into {} (scripts/clients)",
            dir.display()
        );
    }
    path.exists().then_some(path)
}

pub fn kubectl(kubectl: &Path, kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("run kubectl")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A failure is one line on stderr starting with `error:` that names every expected part, a
/// non-zero exit, and no panic.
pub fn assert_clean_failure(out: &Output, expected: &[&str]) {
    let err = stderr(out);
    assert!(
        !out.status.success(),
        "expected failure, got success: {err}"
    );
    assert!(!err.contains("panicked"), "rkube panicked: {err}");
    let lines: Vec<_> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {err}");
    assert!(lines[0].starts_with("error: "), "not an error line: {err}");
    for needle in expected {
        assert!(
            err.contains(needle),
            "error line should mention {needle:?}: {err}"
        );
    }
}

/// `rkube runtime` on a socket in a temp dir, allowed to pull from `registry` over HTTP.
pub struct RkubeRuntime {
    pub child: Child,
    pub dir: tempfile::TempDir,
}

impl RkubeRuntime {
    pub fn start(registry: &rkube_testsupport::registry::Registry) -> RkubeRuntime {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let host = registry.host();
        std::fs::write(
            data.join("registries.yaml"),
            format!("mirrors:\n  \"{host}\":\n    endpoint: [\"http://{host}\"]\n"),
        )
        .unwrap();
        let child = Command::new(rkube_bin())
            .arg("runtime")
            .arg("--data-dir")
            .arg(&data)
            .arg("--address")
            .arg(format!("unix://{}", dir.path().join("cri.sock").display()))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("runtime.log")).unwrap())
            .spawn()
            .expect("start rkube runtime");
        let runtime = RkubeRuntime { child, dir };
        let started = Instant::now();
        while !runtime.socket().exists() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "no CRI socket in 10 s: {}",
                std::fs::read_to_string(runtime.dir.path().join("runtime.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        runtime
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("cri.sock")
    }
}

impl Drop for RkubeRuntime {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
