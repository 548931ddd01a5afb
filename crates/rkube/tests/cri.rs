//! The CRI scenario, run against `rkube runtime` and against Debian's containerd (a real peer):
//! the same calls through the same client must give the same answers from both, which checks our
//! server against the CRI contract and our client against a runtime nobody here wrote.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_cri::v1 as cri;
use rkube_runtime::cri::client::CriClient;
use rkube_testsupport::containerd::Containerd;
use rkube_testsupport::registry::{Layout, Registry, busybox_entries};

/// `rkube runtime` on a socket in a temp dir, allowed to pull from `registry` over HTTP.
struct RkubeRuntime {
    child: Child,
    dir: tempfile::TempDir,
}

impl RkubeRuntime {
    fn start(registry: &Registry) -> RkubeRuntime {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let host = registry.host();
        std::fs::write(
            data.join("registries.yaml"),
            format!("mirrors:\n  \"{host}\":\n    endpoint: [\"http://{host}\"]\n"),
        )
        .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_rkube"))
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

    fn socket(&self) -> PathBuf {
        self.dir.path().join("cri.sock")
    }
}

impl Drop for RkubeRuntime {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spec(image: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec {
        image: image.to_owned(),
        ..Default::default()
    })
}

/// The image half of the CRI scenario. Returns what it saw of the pulled image, to compare.
async fn image_scenario(socket: &Path, registry: &Registry, runtime: &str) -> cri::Image {
    let mut client = CriClient::connect(socket).await.unwrap();
    let version = client
        .runtime
        .version(cri::VersionRequest {
            version: "v1".into(),
        })
        .await
        .unwrap_or_else(|e| panic!("{runtime}: version: {e}"))
        .into_inner();
    assert_eq!(version.runtime_api_version, "v1", "{runtime}: {version:?}");
    let status = client
        .runtime
        .status(cri::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    let conditions = status.status.unwrap().conditions;
    for kind in ["RuntimeReady", "NetworkReady"] {
        assert!(
            conditions.iter().any(|c| c.r#type == kind),
            "{runtime}: {kind} missing from {conditions:?}"
        );
    }
    let name = format!("{}/library/busybox:1.0", registry.host());

    // Pull, then the image is listed and has a status under its name, id and repo digest.
    let pulled = client
        .images
        .pull_image(cri::PullImageRequest {
            image: spec(&name),
            auth: None,
            sandbox_config: None,
        })
        .await
        .unwrap_or_else(|e| panic!("{runtime}: pull: {e}"))
        .into_inner();
    assert!(
        pulled.image_ref.starts_with("sha256:"),
        "{runtime}: {pulled:?}"
    );
    let listed = client
        .images
        .list_images(cri::ListImagesRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .images;
    let image = listed
        .iter()
        .find(|i| i.repo_tags.contains(&name))
        .unwrap_or_else(|| panic!("{runtime}: {name} not listed: {listed:?}"))
        .clone();
    assert_eq!(
        image.id, pulled.image_ref,
        "{runtime}: the id is the pulled ref"
    );
    assert!(image.size > 500_000, "{runtime}: size {}", image.size);
    assert_eq!(image.repo_digests.len(), 1, "{runtime}: {image:?}");
    for reference in [
        name.clone(),
        image.id.clone(),
        image.repo_digests[0].clone(),
    ] {
        let status = client
            .images
            .image_status(cri::ImageStatusRequest {
                image: spec(&reference),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            status.image.as_ref().map(|i| &i.id),
            Some(&image.id),
            "{runtime}: status by {reference}"
        );
    }
    let filtered = client
        .images
        .list_images(cri::ListImagesRequest {
            filter: Some(cri::ImageFilter { image: spec(&name) }),
        })
        .await
        .unwrap()
        .into_inner()
        .images;
    assert_eq!(filtered.len(), 1, "{runtime}: filter by name");

    let fs = client
        .images
        .image_fs_info(cri::ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    let usage = &fs.image_filesystems[0];
    assert!(
        usage.timestamp > 0 && usage.used_bytes.is_some(),
        "{runtime}: {fs:?}"
    );
    assert!(!usage.fs_id.as_ref().unwrap().mountpoint.is_empty());
    if runtime == "rkube" {
        // containerd samples its usage every few seconds, so only ours is current at once.
        assert!(usage.used_bytes.as_ref().unwrap().value > 0, "{fs:?}");
    }

    // A missing image: the pull fails, naming it; a status of it is empty, not an error.
    let missing = format!("{}/library/nothing-here:1", registry.host());
    let err = client
        .images
        .pull_image(cri::PullImageRequest {
            image: spec(&missing),
            auth: None,
            sandbox_config: None,
        })
        .await
        .unwrap_err();
    assert!(
        err.message().contains("nothing-here") && err.message().contains("not found"),
        "{runtime}: {err:?}"
    );
    let status = client
        .images
        .image_status(cri::ImageStatusRequest {
            image: spec(&missing),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(status.image.is_none(), "{runtime}");

    // Remove by id; removing again is not an error.
    for _ in 0..2 {
        client
            .images
            .remove_image(cri::RemoveImageRequest {
                image: spec(&image.id),
            })
            .await
            .unwrap_or_else(|e| panic!("{runtime}: remove: {e}"));
    }
    let status = client
        .images
        .image_status(cri::ImageStatusRequest {
            image: spec(&name),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(status.image.is_none(), "{runtime}: removed");
    image
}

fn push_busybox(registry: &Registry, dir: &Path) {
    let mut layout = Layout::new(&dir.join("busybox"));
    let layer = layout.layer(&busybox_entries(&["sh", "true", "echo"]));
    layout.image(
        rkube_runtime::image::pull::this_platform().1,
        &[layer],
        serde_json::json!({"Cmd": ["sh"], "User": "1000"}),
    );
    registry.push(&layout.finish(), "library/busybox:1.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_scenario_gives_the_same_answers_from_rkube_and_containerd() {
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    push_busybox(&registry, work.path());

    let rkube = RkubeRuntime::start(&registry);
    let ours = image_scenario(&rkube.socket(), &registry, "rkube").await;

    let containerd = Containerd::start(&[registry.host()]);
    let theirs = image_scenario(&containerd.socket(), &registry, "containerd").await;

    assert_eq!(ours.id, theirs.id, "same image id");
    assert_eq!(ours.repo_tags, theirs.repo_tags);
    assert_eq!(ours.repo_digests, theirs.repo_digests);
    assert_eq!(ours.uid, theirs.uid, "uid from the image config");
    assert_eq!(ours.username, theirs.username);
}

/// Sandboxes and containers are not implemented yet: rkube says so, it does not pretend.
#[tokio::test]
async fn missing_runtime_calls_answer_unimplemented_with_a_reason() {
    let registry = Registry::start();
    let rkube = RkubeRuntime::start(&registry);
    let mut client = CriClient::connect(rkube.socket()).await.unwrap();
    let err = client
        .runtime
        .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    assert!(err.message().contains("ListPodSandbox"), "{err:?}");
}

#[test]
fn crictl_lists_pulls_inspects_and_removes() {
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    push_busybox(&registry, work.path());
    let rkube = RkubeRuntime::start(&registry);
    let crictl = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_rkube"))
            .arg("crictl")
            .arg("-r")
            .arg(format!("unix://{}", rkube.socket().display()))
            .args(args)
            .output()
            .unwrap()
    };
    let name = format!("{}/library/busybox:1.0", registry.host());
    let out = crictl(&["pull", &name]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("Image is up to date for sha256:"));

    let out = crictl(&["images"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["IMAGE", "TAG", "IMAGE", "ID", "SIZE"]);
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(row[0], format!("{}/library/busybox", registry.host()));
    assert_eq!(row[1], "1.0");
    assert_eq!(row[2].len(), 13);
    assert!(row[3].ends_with("MB") || row[3].ends_with("kB"), "{text}");

    let out = crictl(&["inspecti", &name]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["status"]["repo_tags"][0], name.as_str());
    assert_eq!(json["info"]["imageSpec"]["config"]["Cmd"][0], "sh");

    let out = crictl(&["rmi", &name]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("Deleted: {name}")));
    let out = crictl(&["rmi", &name]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no such image") && !err.contains("panicked"),
        "{err}"
    );

    let out = crictl(&["version"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("RuntimeName:  rkube") && text.contains("RuntimeApiVersion:  v1"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = crictl(&["info"]);
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["status"]["conditions"][0]["type"], "RuntimeReady");

    // A socket nobody serves: one clear line naming it.
    let out = Command::new(env!("CARGO_BIN_EXE_rkube"))
        .args(["crictl", "-r", "unix:///nonexistent/cri.sock", "images"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("/nonexistent/cri.sock"),
        "{err}"
    );
}
