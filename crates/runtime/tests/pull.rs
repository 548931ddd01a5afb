//! Pulls from a real registry (Debian's `docker-registry` on loopback), with images built at test
//! time from Debian's `busybox-static` and pushed by `skopeo`.

use std::sync::Arc;

use rkube_runtime::image::archive::ImageStore;
use rkube_runtime::image::pull::{PullError, Puller, RegistriesConfig, this_platform};
use rkube_testsupport::registry::{Entry, Layout, Registry, busybox_entries};

struct Fixture {
    registry: Registry,
    _images: tempfile::TempDir,
    busybox_layer: String,
    amd64_manifest: String,
    arm64_manifest: String,
}

/// A registry holding `library/busybox:latest`, `library/layered:v1` (two layers, the second
/// deleting a file of the first) and `library/multi:latest` (an index for two platforms).
fn fixture() -> Fixture {
    let registry = Registry::start();
    let images = tempfile::tempdir().unwrap();

    let mut busybox = Layout::new(&images.path().join("busybox"));
    let layer = busybox.layer(&busybox_entries(&["sh", "echo", "cat", "true"]));
    let busybox_layer = layer.0.digest.clone();
    busybox.image(
        this_platform().1,
        std::slice::from_ref(&layer),
        serde_json::json!({"Env": ["PATH=/bin", "GREETING=hello"], "Cmd": ["sh"], "WorkingDir": "/tmp"}),
    );
    registry.push(&busybox.finish(), "library/busybox:latest");

    let mut layered = Layout::new(&images.path().join("layered"));
    let base = layered.layer(&[
        Entry::Dir("etc/"),
        Entry::File("etc/keep".into(), b"kept".to_vec(), 0o644),
        Entry::File("etc/gone".into(), b"deleted later".to_vec(), 0o644),
    ]);
    let top = layered.layer(&[Entry::File("etc/.wh.gone".into(), Vec::new(), 0o644)]);
    layered.image(this_platform().1, &[base, top], serde_json::json!({}));
    registry.push(&layered.finish(), "library/layered:v1");

    let mut multi = Layout::new(&images.path().join("multi"));
    let other_arch = if this_platform().1 == "amd64" {
        "arm64"
    } else {
        "amd64"
    };
    let ours = multi.layer(&[Entry::File("arch".into(), b"this one".to_vec(), 0o644)]);
    let theirs = multi.layer(&[Entry::File("arch".into(), b"the other".to_vec(), 0o644)]);
    let amd64_manifest = multi
        .image(this_platform().1, &[ours], serde_json::json!({}))
        .digest;
    let arm64_manifest = multi
        .image(other_arch, &[theirs], serde_json::json!({}))
        .digest;
    registry.push(&multi.finish(), "library/multi:latest");

    Fixture {
        registry,
        _images: images,
        busybox_layer,
        amd64_manifest,
        arm64_manifest,
    }
}

/// A puller whose `docker.io` mirror is the test registry (over HTTP, as registries.yaml allows),
/// never falling back to the real Docker Hub: tests stay on loopback.
fn puller(store_dir: &std::path::Path, registry: &Registry) -> Arc<Puller> {
    let mut config = RegistriesConfig::parse(&format!(
        "mirrors:\n  docker.io:\n    endpoint:\n      - http://{host}\n  {host}:\n    endpoint:\n      - http://{host}\n",
        host = registry.host()
    ))
    .unwrap();
    config.disable_default_endpoint = true;
    Puller::new(Arc::new(ImageStore::open(store_dir).unwrap()), config).unwrap()
}

#[tokio::test]
async fn pulls_through_a_mirror_pick_this_platform_and_share_one_download() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let puller = puller(dir.path(), &f.registry);

    // `busybox` is docker.io/library/busybox:latest, served by the mirror.
    let pulled = puller.pull("busybox", None).await.unwrap();
    assert_eq!(pulled.name, "docker.io/library/busybox:latest");
    let store = puller.store();
    assert_eq!(
        store.resolve("busybox").unwrap(),
        Some(pulled.manifest.clone())
    );
    let config = store.config(&pulled.manifest).unwrap();
    assert_eq!(config.cmd, ["sh"]);
    assert_eq!(config.env, ["PATH=/bin", "GREETING=hello"]);
    assert_eq!(config.working_dir.as_deref(), Some("/tmp"));
    assert!(
        pulled.size > 500_000,
        "busybox is in the layer: {}",
        pulled.size
    );

    // Eight pulls at once of another image: one download of each blob.
    let layered = (0..8).map(|_| {
        let puller = puller.clone();
        tokio::spawn(async move { puller.pull("layered:v1", None).await })
    });
    let results = futures::future::join_all(layered).await;
    let first = results[0].as_ref().unwrap().as_ref().unwrap().clone();
    for result in &results {
        assert_eq!(result.as_ref().unwrap().as_ref().unwrap(), &first);
    }
    let manifest = store.manifest(&first.manifest).unwrap();
    assert_eq!(manifest.layers().len(), 2);
    for layer in manifest.layers() {
        assert_eq!(
            f.registry.blob_gets(layer.digest().as_ref()),
            1,
            "{}",
            f.registry.log()
        );
    }

    // A pull by the registry's own host: blobs already stored are not fetched again.
    let direct = format!("{}/library/busybox:latest", f.registry.host());
    let again = puller.pull(&direct, None).await.unwrap();
    assert_eq!(again.manifest, pulled.manifest);
    assert_eq!(f.registry.blob_gets(&f.busybox_layer), 1);

    // From an index, this platform's manifest.
    let multi = puller.pull("multi", None).await.unwrap();
    assert_eq!(multi.manifest.as_str(), f.amd64_manifest);
    assert_ne!(multi.manifest.as_str(), f.arm64_manifest);
    let names = store.images().unwrap();
    assert!(
        names.contains_key("docker.io/library/multi:latest"),
        "{names:?}"
    );
}

#[tokio::test]
async fn failed_pulls_say_why_and_leave_nothing_visible() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let puller = puller(dir.path(), &f.registry);

    // Missing image: the error names it and the endpoints tried.
    let err = puller.pull("no-such-image:1", None).await.unwrap_err();
    assert!(matches!(*err, PullError::NotFound { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("docker.io/library/no-such-image:1") && text.contains(&f.registry.host()),
        "{text}"
    );

    // A registry nothing listens on, configured as plain HTTP.
    let dead = format!("127.0.0.1:{}", rkube_testsupport::free_port());
    let config = RegistriesConfig::parse(&format!(
        "mirrors:\n  {dead}:\n    endpoint: [\"http://{dead}\"]\n"
    ))
    .unwrap();
    let dead_puller = Puller::new(puller.store().clone(), config).unwrap();
    let err = dead_puller
        .pull(&format!("{dead}/app:1"), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unreachable"), "{err}");

    // HTTP is used only where registries.yaml says so: without it, the test registry is asked
    // over HTTPS, which it does not speak.
    let strict = Puller::new(puller.store().clone(), RegistriesConfig::default()).unwrap();
    let err = strict
        .pull(
            &format!("{}/library/busybox:latest", f.registry.host()),
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(*err, PullError::Registry { .. }), "{err}");
    assert!(err.to_string().contains("https://"), "{err}");

    // A registry serving a layer whose bytes do not match its digest.
    let data = f.registry.blob_file(&f.busybox_layer);
    let mut bytes = std::fs::read(&data).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();
    let err = puller.pull("busybox", None).await.unwrap_err();
    let text = format!("{err}: {:?}", std::error::Error::source(&*err));
    assert!(
        text.contains("digest") || text.contains("mismatch"),
        "{text}"
    );
    let store = puller.store();
    assert_eq!(
        store.resolve("busybox").unwrap(),
        None,
        "no half image is visible"
    );
    let layer = rkube_runtime::image::blobs::Digest::parse(&f.busybox_layer).unwrap();
    assert!(!store.blobs().has(&layer), "the bad blob is not stored");
}

/// Unmounts on drop.
struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test]
async fn a_full_disk_or_a_truncated_layer_fails_cleanly() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();

    // A store on a filesystem too small for the busybox layer.
    let small = dir.path().join("small");
    std::fs::create_dir_all(&small).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&small)
        .status()
        .expect("mount");
    assert!(mounted.success(), "mounting a tmpfs needs root");
    let _unmount = Tmpfs(small.clone());
    let full = puller(&small, &f.registry);
    let err = full.pull("busybox", None).await.unwrap_err();
    let text = rkube_runtime::error_chain(&*err);
    assert!(text.contains("No space left on device"), "{text}");
    assert_eq!(full.store().resolve("busybox").unwrap(), None);
    let leftovers: Vec<_> = std::fs::read_dir(small.join("blobs/tmp"))
        .unwrap()
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary blobs left behind: {leftovers:?}"
    );

    // A registry whose stored layer was cut short: the download is shorter than its descriptor.
    let puller = puller(&dir.path().join("store"), &f.registry);
    let data = f.registry.blob_file(&f.busybox_layer);
    let bytes = std::fs::read(&data).unwrap();
    std::fs::write(&data, &bytes[..bytes.len() / 2]).unwrap();
    let err = puller.pull("busybox", None).await.unwrap_err();
    let text = rkube_runtime::error_chain(&*err);
    assert!(
        text.contains("short") || text.contains("digest") || text.contains("size"),
        "{text}"
    );
    assert_eq!(puller.store().resolve("busybox").unwrap(), None);
}
