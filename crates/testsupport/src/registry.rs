//! A real OCI registry (Debian's `docker-registry`, the CNCF distribution registry) on loopback,
//! and images built at test time to put in it: a busybox image from Debian's `busybox-static`, a
//! two-layer image with a deletion, and a two-platform index. Images are written as OCI layouts
//! and pushed with `skopeo`, so the registry holds exactly what a real push produces.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flate2::Compression;
use flate2::write::GzEncoder;
use sha2::{Digest as _, Sha256};

/// The registry binary: `$RKUBE_DOCKER_REGISTRY` or Debian's `/usr/bin/docker-registry`.
pub fn registry_binary() -> PathBuf {
    std::env::var_os("RKUBE_DOCKER_REGISTRY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/docker-registry"))
}

/// A registry on `127.0.0.1:<free port>`, plain HTTP, storing under a temporary directory.
/// Killed on drop.
pub struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Registry {
    /// Starts a registry and waits until it answers.
    pub fn start() -> Registry {
        let dir = tempfile::tempdir().expect("registry tempdir");
        let port = crate::free_port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            ),
        )
        .expect("registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("registry log");
        let child = Command::new(crate::SETPRIV)
            .args(["--pdeathsig", "KILL", "--"])
            .arg(registry_binary())
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start docker-registry (Debian package docker-registry)");
        let registry = Registry { child, dir, port };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "docker-registry did not listen in 30 s: {}",
                registry.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// What the registry logged (one line per request, among others).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// How many blob downloads (GET) of `digest` the registry served.
    pub fn blob_gets(&self, digest: &str) -> usize {
        self.log()
            .lines()
            .filter(|l| {
                l.contains("response completed")
                    && l.contains("http.request.method=GET")
                    && l.contains(&format!("/blobs/{digest}"))
            })
            .count()
    }

    /// The file the registry stores blob `digest` in (tests corrupt it on purpose).
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Pushes the OCI layout at `layout` (all of its index) as `<host>/<name>`.
    pub fn push(&self, layout: &Path, name: &str) {
        let out = Command::new("skopeo")
            .args([
                "copy",
                "--all",
                "--quiet",
                "--dest-tls-verify=false",
                "--insecure-policy",
            ])
            .arg(format!("oci:{}", layout.display()))
            .arg(format!("docker://{}/{name}", self.host()))
            .output()
            .expect("run skopeo (Debian package skopeo)");
        assert!(
            out.status.success(),
            "skopeo copy to {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A file in a layer.
pub enum Entry {
    /// A directory.
    Dir(&'static str),
    /// A regular file with its content and mode.
    File(String, Vec<u8>, u32),
    /// A symlink and its target.
    Symlink(String, String),
}

/// A blob in an OCI layout being built.
#[derive(Clone, Debug)]
pub struct Blob {
    /// `sha256:<hex>`.
    pub digest: String,
    /// Its size.
    pub size: u64,
}

/// Builds OCI image layouts.
pub struct Layout {
    dir: PathBuf,
    manifests: Vec<serde_json::Value>,
}

impl Layout {
    /// An empty layout in `dir`.
    pub fn new(dir: &Path) -> Layout {
        std::fs::create_dir_all(dir.join("blobs/sha256")).expect("layout dir");
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
            .expect("oci-layout");
        Layout {
            dir: dir.to_owned(),
            manifests: Vec::new(),
        }
    }

    /// Stores `bytes` as a blob.
    pub fn blob(&self, bytes: &[u8]) -> Blob {
        let hex = hex::encode(Sha256::digest(bytes));
        std::fs::write(self.dir.join("blobs/sha256").join(&hex), bytes).expect("blob");
        Blob {
            digest: format!("sha256:{hex}"),
            size: bytes.len() as u64,
        }
    }

    /// A gzip-compressed layer of `entries`; returns the blob and its diff id.
    pub fn layer(&self, entries: &[Entry]) -> (Blob, String) {
        let mut tar = tar::Builder::new(Vec::new());
        for entry in entries {
            let mut header = tar::Header::new_gnu();
            header.set_mtime(1_700_000_000);
            match entry {
                Entry::Dir(path) => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(0o755);
                    header.set_size(0);
                    tar.append_data(&mut header, path, std::io::empty())
                }
                Entry::File(path, data, mode) => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(*mode);
                    header.set_size(data.len() as u64);
                    tar.append_data(&mut header, path, &data[..])
                }
                Entry::Symlink(path, target) => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_mode(0o777);
                    header.set_size(0);
                    tar.append_link(&mut header, path, target)
                }
            }
            .expect("tar entry");
        }
        let tar = tar.into_inner().expect("tar");
        let diff_id = format!("sha256:{}", hex::encode(Sha256::digest(&tar)));
        let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
        gz.write_all(&tar).expect("gzip");
        (self.blob(&gz.finish().expect("gzip")), diff_id)
    }

    /// Adds an image of `layers` (blob, diff id) with config `config` (the `config` object of an
    /// OCI image config: Env, Cmd, ...) for `arch`; returns its manifest blob.
    pub fn image(
        &mut self,
        arch: &str,
        layers: &[(Blob, String)],
        config: serde_json::Value,
    ) -> Blob {
        let image_config = serde_json::json!({
            "architecture": arch,
            "os": "linux",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>()},
        });
        let config_blob = self.blob(&serde_json::to_vec(&image_config).expect("config json"));
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_blob.digest, "size": config_blob.size},
            "layers": layers.iter().map(|(b, _)| serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": b.digest, "size": b.size,
            })).collect::<Vec<_>>(),
        });
        let manifest_blob = self.blob(&serde_json::to_vec(&manifest).expect("manifest json"));
        self.manifests.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_blob.digest,
            "size": manifest_blob.size,
            "platform": {"architecture": arch, "os": "linux"},
        }));
        manifest_blob
    }

    /// Writes `index.json`. With one image it lists that manifest; with more, it lists one
    /// nested image index of them all, which pushing turns into a multi-platform index.
    pub fn finish(self) -> PathBuf {
        let index = |manifests: Vec<serde_json::Value>| {
            serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": manifests,
            })
        };
        let top = if self.manifests.len() > 1 {
            let nested =
                self.blob(&serde_json::to_vec(&index(self.manifests.clone())).expect("index json"));
            index(vec![serde_json::json!({
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": nested.digest,
                "size": nested.size,
            })])
        } else {
            index(self.manifests.clone())
        };
        std::fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&top).expect("index json"),
        )
        .expect("index.json");
        self.dir
    }
}

/// Pushes `name`: a pod sandbox ("pause") image for containerd, a busybox shell that sleeps
/// until SIGTERM or SIGINT (rkube needs no such image). `dir` holds the layout.
pub fn push_pause_image(registry: &Registry, dir: &Path, arch: &str, name: &str) {
    let mut layout = Layout::new(&dir.join("pause"));
    let layer = layout.layer(&busybox_entries(&["sh", "sleep"]));
    layout.image(
        arch,
        &[layer],
        serde_json::json!({
            "Env": ["PATH=/bin"],
            "Entrypoint": ["sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 1; done"],
        }),
    );
    registry.push(&layout.finish(), name);
}

/// The entries of a busybox root filesystem: `/bin/busybox` from Debian's `busybox-static` and a
/// symlink per applet in `applets`.
pub fn busybox_entries(applets: &[&str]) -> Vec<Entry> {
    let busybox =
        std::fs::read("/bin/busybox").expect("/bin/busybox (Debian package busybox-static)");
    let mut entries = vec![
        Entry::Dir("bin/"),
        Entry::Dir("etc/"),
        Entry::Dir("tmp/"),
        Entry::File("bin/busybox".into(), busybox, 0o755),
    ];
    for applet in applets {
        entries.push(Entry::Symlink(format!("bin/{applet}"), "busybox".into()));
    }
    entries
}
