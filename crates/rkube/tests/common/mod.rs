//! Shared helpers of the end-to-end tests: start `rkube apiserver`, curl it, run real kubectl.
#![allow(dead_code)] // each test file uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rkube_testsupport::procs::{alive, kill_all, processes_naming, unmount_all_under};

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
    /// The arguments it was started with, for restarts.
    pub args: Vec<String>,
    /// The etcd it keeps its objects in, when the run asks for one (below).
    etcd: Option<rkube_testsupport::EtcdServer>,
}

/// Whether this run's apiservers keep their objects in a real etcd: `RKUBE_TEST_DATASTORE=etcd`
/// (the test script runs the kubectl suites a second time so).
fn etcd_wanted() -> bool {
    std::env::var("RKUBE_TEST_DATASTORE").as_deref() == Ok("etcd")
}

impl Apiserver {
    pub fn start() -> Apiserver {
        Self::start_with(&[])
    }

    /// [`Apiserver::start`] with extra `rkube apiserver` arguments.
    pub fn start_with(extra: &[String]) -> Apiserver {
        let dir = tempfile::tempdir().unwrap();
        let mut args = extra.to_vec();
        let mut etcd = None;
        if etcd_wanted() && !args.iter().any(|a| a == "--datastore-endpoint") {
            let server = rkube_testsupport::EtcdServer::start();
            args.extend(["--datastore-endpoint".into(), server.endpoint()]);
            etcd = Some(server);
        }
        let (child, port) = spawn_with(dir.path(), &args);
        let server = Apiserver {
            child,
            dir,
            port,
            args,
            etcd,
        };
        server.wait_ready();
        server
    }

    /// Whether the objects are in etcd rather than the embedded store.
    pub fn on_etcd(&self) -> bool {
        self.args.iter().any(|a| a == "--datastore-endpoint")
    }

    /// Stops the server and starts a new process on the same data dir (on a new port).
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(self.kubeconfig());
        let (child, port) = spawn_with(self.dir.path(), &self.args);
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

    /// The HTTP status code of a GET of `path`, as the admin.
    pub fn status_of(&self, path: &str) -> String {
        stdout(&self.curl(&[path, "-o", "/dev/null", "-w", "%{http_code}"], true))
    }

    /// Polls `path` until it answers 200 (true) or `limit` passes (false).
    pub fn served_within(&self, path: &str, limit: Duration) -> bool {
        let started = Instant::now();
        while started.elapsed() < limit {
            if self.status_of(path) == "200" {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
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

/// `rkube runtime` on a socket in a temp dir, allowed to pull from `registry` over HTTP, with
/// its own libcontainer state dir and cgroup root, so runtimes of parallel tests share neither.
/// Dropping it kills it and sweeps up whatever it left (see [`clean_up`]).
pub struct RkubeRuntime {
    pub child: Child,
    pub dir: tempfile::TempDir,
    /// `--cgroup-root`: where pods without a cgroup parent get their cgroups.
    pub cgroup_root: String,
}

impl RkubeRuntime {
    pub fn start(registry: &rkube_testsupport::registry::Registry) -> RkubeRuntime {
        Self::start_in(tempfile::tempdir().unwrap(), registry)
    }

    /// [`RkubeRuntime::start`] in a directory the caller prepared (e.g. with a small tmpfs
    /// mounted under `data/`).
    pub fn start_in(
        dir: tempfile::TempDir,
        registry: &rkube_testsupport::registry::Registry,
    ) -> RkubeRuntime {
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let host = registry.host();
        std::fs::write(
            data.join("registries.yaml"),
            format!("mirrors:\n  \"{host}\":\n    endpoint: [\"http://{host}\"]\n"),
        )
        .unwrap();
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let cgroup_root = format!("/rkube-e2e-{}-{n}", std::process::id());
        let child = Self::spawn(dir.path(), &cgroup_root);
        let runtime = RkubeRuntime {
            child,
            dir,
            cgroup_root,
        };
        runtime.wait_ready();
        runtime
    }

    fn spawn(dir: &Path, cgroup_root: &str) -> Child {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(dir.join("runtime.log"))
            .unwrap();
        Command::new(rkube_bin())
            .arg("runtime")
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--address")
            .arg(format!("unix://{}", dir.join("cri.sock").display()))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--cgroup-root")
            .arg(cgroup_root)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start rkube runtime")
    }

    /// Waits until the socket accepts connections: a killed runtime leaves its socket file.
    fn wait_ready(&self) {
        let started = Instant::now();
        while std::os::unix::net::UnixStream::connect(self.socket()).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "no CRI socket in 10 s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends the runtime `signal` (`KILL`, `TERM`) and waits up to 30 s for it to exit.
    pub fn stop(&mut self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal}");
        let started = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "rkube runtime still runs 30 s after SIG{signal}: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts a new runtime process on the same directories, socket and cgroup root.
    pub fn restart(&mut self) {
        self.child = Self::spawn(self.dir.path(), &self.cgroup_root);
        self.wait_ready();
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("cri.sock")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("runtime.log")).unwrap_or_default()
    }
}

impl Drop for RkubeRuntime {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        clean_up(self.dir.path(), &self.cgroup_root);
    }
}

/// Kills what a runtime under `dir` left running (processes in the cgroups under
/// `cgroup_root` and in its sandboxes' cgroups, shims naming `dir`), then removes the mounts
/// under `dir` and those cgroups, so a failed test leaves nothing behind.
fn clean_up(dir: &Path, cgroup_root: &str) {
    // Pods given a cgroup parent of their own have their cgroup outside the root.
    let mut cgroups = vec![cgroup_root.to_owned()];
    let sandboxes = std::fs::read_dir(dir.join("data/agent/sandboxes"));
    for sandbox in sandboxes.into_iter().flatten().flatten() {
        let record = std::fs::read(sandbox.path().join("sandbox.json")).unwrap_or_default();
        if let Ok(record) = serde_json::from_slice::<serde_json::Value>(&record)
            && let Some(cgroup) = record["cgroup"].as_str()
        {
            cgroups.push(cgroup.to_owned());
        }
    }
    let cgroup_dirs = || cgroups.iter().flat_map(|c| cgroup_dirs(c));
    let mut pids = processes_naming(dir);
    for cgroup in cgroup_dirs() {
        let procs = std::fs::read_to_string(cgroup.join("cgroup.procs")).unwrap_or_default();
        pids.extend(procs.lines().filter_map(|l| l.parse::<u32>().ok()));
    }
    if !pids.is_empty() {
        kill_all(&pids);
        let started = Instant::now();
        while pids.iter().any(|&p| alive(p)) && started.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    unmount_all_under(dir);
    for cgroup in cgroup_dirs() {
        let _ = std::fs::remove_dir(cgroup);
    }
}

/// The mount points of every cgroup hierarchy: each v1 controller's, named ones, and v2's.
fn cgroup_hierarchies() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| {
            l.split_once(" - ")
                .is_some_and(|(_, fs)| fs.starts_with("cgroup ") || fs.starts_with("cgroup2 "))
        })
        .filter_map(|l| l.split(' ').nth(4).map(PathBuf::from))
        .collect()
}

/// The directories of cgroup `path` and every cgroup below it, in every hierarchy, deepest
/// first.
pub fn cgroup_dirs(path: &str) -> Vec<PathBuf> {
    fn below(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                below(&entry.path(), out);
            }
        }
        out.push(dir.to_owned());
    }
    let mut out = Vec::new();
    for hierarchy in cgroup_hierarchies() {
        let dir = hierarchy.join(path.trim_start_matches('/'));
        if dir.is_dir() {
            below(&dir, &mut out);
        }
    }
    out
}

/// Polls `check` every 50 ms for up to 60 s.
pub async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "timed out: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
