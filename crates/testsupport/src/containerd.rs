//! A real containerd (Debian's package, with its CRI plugin) as a peer runtime for CRI tests: the
//! same CRI scenario runs against it and against rkube's runtime, which also checks our CRI
//! client code against a runtime nobody here wrote.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A containerd with its own root, state and socket under a temporary directory. Killed (and its
/// mounts left for the kernel to drop with the directory) on drop.
pub struct Containerd {
    child: Child,
    dir: tempfile::TempDir,
}

impl Containerd {
    /// Starts containerd; `http_registries` are `host:port`s its CRI plugin may pull from over
    /// plain HTTP.
    pub fn start(http_registries: &[String]) -> Containerd {
        // Under /var/tmp rather than /tmp: containerd's overlay snapshots need a real filesystem.
        let dir = tempfile::Builder::new()
            .prefix("rkube-containerd-")
            .tempdir_in("/var/tmp")
            .expect("containerd tempdir");
        let mut mirrors = String::new();
        for host in http_registries {
            mirrors.push_str(&format!(
                "[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"{host}\"]\n  endpoint = [\"http://{host}\"]\n"
            ));
        }
        let config = format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n[grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{ttrpc}\"\n[debug]\n  level = \"info\"\n[metrics]\n  address = \"\"\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  disable_tcp_service = true\n  [plugins.\"io.containerd.grpc.v1.cri\".cni]\n    bin_dir = \"{cni}\"\n    conf_dir = \"{cni}\"\n{mirrors}",
            root = dir.path().join("root").display(),
            state = dir.path().join("state").display(),
            sock = dir.path().join("containerd.sock").display(),
            ttrpc = dir.path().join("containerd-ttrpc.sock").display(),
            cni = dir.path().join("cni").display(),
        );
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, config).expect("containerd config");
        let log = std::fs::File::create(dir.path().join("containerd.log")).expect("log");
        let child = Command::new(crate::SETPRIV)
            .args([
                "--pdeathsig",
                "KILL",
                "--",
                "/usr/bin/containerd",
                "--config",
            ])
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start containerd (Debian package containerd)");
        let containerd = Containerd { child, dir };
        let started = Instant::now();
        while !containerd.log().contains("containerd successfully booted") {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "containerd did not boot in 30 s: {}",
                containerd.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        containerd
    }

    /// The CRI socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    /// The directory containerd keeps everything in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What containerd logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Snapshots may still be mounted under the root; unmount before the directory goes.
        let _ = Command::new("umount")
            .args(["-R", "--lazy"])
            .arg(self.dir.path().join("root"))
            .stderr(Stdio::null())
            .status();
    }
}
