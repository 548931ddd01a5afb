//! Shared set-up for the runtime's end-to-end tests: a busybox image built from Debian's
//! `busybox-static`, and a runtime in a temporary directory using the crate's helper binary.

#![allow(dead_code)] // each test file uses a different subset

use std::io::Write;
use std::path::{Path, PathBuf};

use rkube_runtime::{Runtime, RuntimeConfig, SandboxConfig};
use sha2::{Digest as _, Sha256};

/// The image name the tests import.
pub const BUSYBOX: &str = "rkube.test/busybox:latest";

/// True when running as root; otherwise prints why the test is skipped.
pub fn is_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("SKIPPED {test}: needs root (mounts, namespaces, cgroups)");
    false
}

/// Applets the tests use, as symlinks to /bin/busybox.
const APPLETS: &[&str] = &[
    "sh", "cat", "echo", "sleep", "nc", "id", "pwd", "env", "readlink", "head", "dd", "true",
    "false", "ls", "printf", "yes", "tr", "hostname", "unshare", "mkdir", "touch", "test", "wc",
    "ps", "kill", "sysctl", "seq", "tail",
];

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Builds an OCI image-layout archive: one layer with busybox, its applets and /etc files.
pub fn busybox_archive() -> Vec<u8> {
    let busybox =
        std::fs::read("/bin/busybox").expect("busybox-static is installed (scripts/deps)");
    let mut layer = tar::Builder::new(Vec::new());
    let dir = |b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(mode);
        h.set_size(0);
        h.set_uid(0);
        h.set_gid(0);
        b.append_data(&mut h, path, &[][..]).unwrap();
    };
    let file = |b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_uid(0);
        h.set_gid(0);
        b.append_data(&mut h, path, data).unwrap();
    };
    for d in ["bin", "etc", "tmp", "home", "home/app", "data"] {
        dir(&mut layer, d, if d == "tmp" { 0o1777 } else { 0o755 });
    }
    file(&mut layer, "bin/busybox", 0o755, &busybox);
    for applet in APPLETS {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        layer
            .append_link(&mut h, format!("bin/{applet}"), "busybox")
            .unwrap();
    }
    file(
        &mut layer,
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
    );
    file(
        &mut layer,
        "etc/group",
        0o644,
        b"root:x:0:\napp:x:1000:\nextra:x:2000:app\n",
    );
    let layer = layer.into_inner().unwrap();
    let layer_digest = sha(&layer);
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/bin", "FROM_IMAGE=yes", "OVERRIDE=image"],
            "Cmd": ["sh", "-c", "echo default-cmd"],
            "WorkingDir": "/home/app",
        },
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]},
    });
    let config = serde_json::to_vec(&config).unwrap();
    let config_digest = sha(&config);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{config_digest}"), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": format!("sha256:{layer_digest}"), "size": layer.len()}],
    });
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let manifest_digest = sha(&manifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": format!("sha256:{manifest_digest}"), "size": manifest.len(),
                       "annotations": {"io.containerd.image.name": BUSYBOX}}],
    });
    let mut archive = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        archive.append_data(&mut h, path, data).unwrap();
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    add("index.json", &serde_json::to_vec(&index).unwrap());
    add(&format!("blobs/sha256/{layer_digest}"), &layer);
    add(&format!("blobs/sha256/{config_digest}"), &config);
    add(&format!("blobs/sha256/{manifest_digest}"), &manifest);
    let mut out = archive.into_inner().unwrap();
    out.flush().unwrap();
    out
}

/// Waits (up to 30 s) until the runtime's background deletion of removed containers'
/// directories is done.
pub fn wait_for_empty_trash(runtime: &Runtime) {
    let started = std::time::Instant::now();
    while runtime.state_dirs().unwrap()["trash"] > 0 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "the trash was not emptied"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// A runtime in a temporary directory, with the busybox image imported.
pub struct TestRuntime {
    pub dir: tempfile::TempDir,
    pub config: RuntimeConfig,
    pub runtime: Runtime,
}

impl TestRuntime {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = RuntimeConfig::new(
            &dir.path().join("root"),
            Path::new(env!("CARGO_BIN_EXE_rkube-runtime-helper")),
        );
        config.state_dir = dir.path().join("state");
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        config.cgroup_root = format!("/rkube-test-{}-{n}", std::process::id());
        let runtime = Runtime::open(config.clone()).expect("open runtime");
        runtime
            .images()
            .import(&busybox_archive()[..])
            .expect("import busybox");
        Self {
            dir,
            config,
            runtime,
        }
    }

    /// Opens a second `Runtime` on the same directories, as a restarted process would.
    pub fn reopen(&self) -> Runtime {
        Runtime::open(self.config.clone()).expect("reopen runtime")
    }

    pub fn sandbox(&self, name: &str) -> String {
        self.runtime
            .run_sandbox(SandboxConfig {
                name: name.into(),
                namespace: "default".into(),
                uid: format!("uid-{name}"),
                ..Default::default()
            })
            .expect("run sandbox")
    }

    pub fn root(&self) -> PathBuf {
        self.config.root.clone()
    }
}

impl Drop for TestRuntime {
    /// Removes every sandbox and container, so a failed test leaves no process, mount or
    /// cgroup behind.
    fn drop(&mut self) {
        if let Ok(containers) = self.runtime.list() {
            for c in containers {
                let _ = self.runtime.remove(&c.id);
            }
        }
        if let Ok(sandboxes) = self.runtime.list_sandboxes() {
            for s in sandboxes {
                let _ = self.runtime.remove_sandbox(&s.id);
            }
        }
        let _ = self.runtime.cgroups().remove(&self.config.cgroup_root);
    }
}

/// A container config running `sh -c script` in busybox.
pub fn sh(name: &str, script: &str) -> rkube_runtime::ContainerConfig {
    rkube_runtime::ContainerConfig {
        name: name.into(),
        image: BUSYBOX.into(),
        command: vec!["sh".into(), "-c".into(), script.into()],
        ..Default::default()
    }
}

/// Waits (without a time limit of its own: the test harness's is the limit) until `done`.
/// Polls `done` until it holds; fails the test after two minutes rather than hang CI.
pub fn wait_for(mut done: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !done() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "waited two minutes for a condition"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Waits for a container to exit and returns its status.
pub fn wait_exit(rt: &Runtime, id: &str) -> rkube_runtime::ContainerStatus {
    let started = std::time::Instant::now();
    loop {
        let s = rt.status(id).expect("status");
        if s.state == rkube_runtime::ContainerState::Exited {
            return s;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "container {id} did not exit in two minutes: {s:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// The joined CRI log lines of a container.
pub fn log_lines(rt: &Runtime, id: &str) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(rt.log_path(id).unwrap()).unwrap_or_default();
    let records = rkube_runtime::logs::parse_records(&bytes).expect("valid CRI log");
    rkube_runtime::logs::join_lines(&records)
}

pub fn stdout_text(rt: &Runtime, id: &str) -> String {
    log_lines(rt, id)
        .into_iter()
        .filter(|(s, _)| s == "stdout")
        .map(|(_, l)| String::from_utf8_lossy(&l).into_owned() + "\n")
        .collect()
}
