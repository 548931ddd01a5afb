//! A real containerd (Debian's package, with its CRI plugin) as a peer runtime for CRI tests: the
//! same CRI scenario runs against it and against rkube's runtime, which also checks our CRI
//! client code against a runtime nobody here wrote.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::procs::{kill_all, processes, unmount_all_under};

/// A containerd with its own root, state and socket under a temporary directory. Killed on drop,
/// with the shims and containers a failed test left and their mounts.
pub struct Containerd {
    child: Child,
    dir: tempfile::TempDir,
}

impl Containerd {
    /// Starts containerd; `http_registries` are `host:port`s its CRI plugin may pull from over
    /// plain HTTP. Pods cannot run on it (no sandbox image, no pod network): see
    /// [`Containerd::start_for_pods`].
    pub fn start(http_registries: &[String]) -> Containerd {
        Self::start_with(http_registries, None)
    }

    /// Starts containerd able to run pod sandboxes: `sandbox_image` (in one of
    /// `http_registries`) is its pause image, and its pod network is [`TEST_CNI_PLUGIN`], which
    /// gives each pod an `eth0` that exists only inside the pod's namespace.
    pub fn start_for_pods(http_registries: &[String], sandbox_image: &str) -> Containerd {
        Self::start_with(http_registries, Some(sandbox_image))
    }

    fn start_with(http_registries: &[String], sandbox_image: Option<&str>) -> Containerd {
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
        let cni = dir.path().join("cni");
        std::fs::create_dir_all(&cni).expect("cni dir");
        if sandbox_image.is_some() {
            write_test_cni(&cni);
        }
        // restrict_oom_score_adj: this machine gives no CAP_SYS_RESOURCE, so the -998 containerd
        // asks for its sandboxes would fail in runc; restricted, it keeps containerd's own.
        let sandbox_line = sandbox_image
            .map(|image| format!("  sandbox_image = \"{image}\"\n"))
            .unwrap_or_default();
        let config = format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n[grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{ttrpc}\"\n[debug]\n  level = \"info\"\n[metrics]\n  address = \"\"\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  disable_tcp_service = true\n  restrict_oom_score_adj = true\n{sandbox_line}  [plugins.\"io.containerd.grpc.v1.cri\".cni]\n    bin_dir = \"{cni}\"\n    conf_dir = \"{cni}\"\n{mirrors}",
            root = dir.path().join("root").display(),
            state = dir.path().join("state").display(),
            sock = dir.path().join("containerd.sock").display(),
            ttrpc = dir.path().join("containerd-ttrpc.sock").display(),
            cni = cni.display(),
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

/// A CNI plugin for tests (a shell script): `ADD` makes `eth0` one end of a veth pair whose
/// both ends stay inside the pod's network namespace, with a TEST-NET-1 address, so containerd
/// has the pod IP it insists on while nothing is created on the host and no packet can leave.
/// (A veth rather than a dummy interface: this kernel has no dummy module.)
pub const TEST_CNI_PLUGIN: &str = r#"#!/bin/sh
set -e
cat >/dev/null
case "$CNI_COMMAND" in
ADD)
  nsenter --net="$CNI_NETNS" ip link add "$CNI_IFNAME" type veth peer name rkube-peer0
  nsenter --net="$CNI_NETNS" ip addr add 192.0.2.2/24 dev "$CNI_IFNAME"
  nsenter --net="$CNI_NETNS" ip link set "$CNI_IFNAME" up
  printf '{"cniVersion":"1.0.0","interfaces":[{"name":"%s","sandbox":"%s"}],"ips":[{"address":"192.0.2.2/24","interface":0}]}' "$CNI_IFNAME" "$CNI_NETNS"
  ;;
VERSION)
  printf '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}'
  ;;
esac
"#;

/// Writes the test plugin, a conflist naming it, and the loopback plugin containerd always runs
/// (from Debian's `containernetworking-plugins`) into `dir`.
fn write_test_cni(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let plugin = dir.join("rkube-test-net");
    std::fs::write(&plugin, TEST_CNI_PLUGIN).expect("write the test CNI plugin");
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::write(
        dir.join("10-rkube-test.conflist"),
        r#"{"cniVersion":"1.0.0","name":"rkube-test","plugins":[{"type":"rkube-test-net"}]}"#,
    )
    .expect("write the CNI config");
    let loopback = Path::new("/usr/lib/cni/loopback");
    assert!(
        loopback.exists(),
        "{} is missing (Debian package containernetworking-plugins)",
        loopback.display()
    );
    std::os::unix::fs::symlink(loopback, dir.join("loopback")).expect("link the loopback plugin");
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Shims outlive containerd: kill the containers they hold (their children), then them.
        let shims = processes(|_, cmdline| {
            cmdline.contains(&self.dir.path().display().to_string()) && cmdline.contains("shim")
        });
        let children = processes(|ppid, _| shims.contains(&ppid));
        kill_all(&children);
        kill_all(&shims);
        // Snapshots, root filesystems and /dev/shm of pods may still be mounted; unmount them
        // before the directory goes.
        unmount_all_under(self.dir.path());
    }
}
