//! Issue 5's acceptance tests of the container runtime, through CRI against the real
//! `rkube runtime` binary: containers outlive a restart of the runtime (their shim monitors and
//! the pod holder running the small `rkube-shim` it wrote under its data dir), a hundred
//! create/remove cycles leak nothing, bad input is a clear gRPC error that leaves the store
//! consistent, long and rapid output reaches the CRI log intact, and CPU limits reach the
//! container's cgroup. The image and pod basics, compared with containerd, are in `cri.rs`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use k8s_cri::v1 as cri;
use rkube_runtime::cri::client::CriClient;
use rkube_testsupport::registry::{Entry, Layout, Registry, busybox_entries};
use tonic::Code;

mod common;
use common::{RkubeRuntime, assert_clean_failure, eventually};
use rkube_testsupport::procs::{alive, mounts_under, processes_naming};

const APPLETS: &[&str] = &[
    "sh", "sleep", "true", "echo", "head", "tr", "seq", "cat", "test", "hostname", "readlink",
];

fn spec(image: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec {
        image: image.to_owned(),
        ..Default::default()
    })
}

/// Pushes `library/busybox:bare`, busybox with no entrypoint or cmd (so every container says
/// what it runs); returns its name.
fn push_busybox(registry: &Registry, dir: &Path) -> String {
    let mut layout = Layout::new(&dir.join("busybox"));
    let layer = layout.layer(&busybox_entries(APPLETS));
    layout.image(
        rkube_runtime::image::pull::this_platform().1,
        &[layer],
        serde_json::json!({"Env": ["PATH=/bin"]}),
    );
    registry.push(&layout.finish(), "library/busybox:bare");
    format!("{}/library/busybox:bare", registry.host())
}

/// How long any call to the runtime may take before the test fails rather than hangs.
const CALL_LIMIT: Duration = Duration::from_secs(120);

async fn connect(rkube: &RkubeRuntime) -> CriClient {
    CriClient::connect_with_timeout(rkube.socket(), CALL_LIMIT)
        .await
        .unwrap()
}

/// `rkube` with `args`, killed after [`CALL_LIMIT`].
fn rkube_command(args: &[&str]) -> Command {
    let mut command = Command::new("timeout");
    command
        .arg(CALL_LIMIT.as_secs().to_string())
        .arg(common::rkube_bin())
        .args(args);
    command
}

async fn pull(client: &mut CriClient, image: &str) -> Result<String, tonic::Status> {
    let response = client
        .images
        .pull_image(cri::PullImageRequest {
            image: spec(image),
            ..Default::default()
        })
        .await?;
    Ok(response.into_inner().image_ref)
}

/// Whether the store shows `image`, by ListImages and by ImageStatus.
async fn listed(client: &mut CriClient, image: &str) -> bool {
    let images = client
        .images
        .list_images(cri::ListImagesRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .images;
    let in_list = images
        .iter()
        .any(|i| i.repo_tags.iter().any(|t| t == image));
    let status = client
        .images
        .image_status(cri::ImageStatusRequest {
            image: spec(image),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(in_list, status.image.is_some(), "list and status disagree");
    in_list
}

/// A pod sandbox (loopback network, a PID namespace per container) with the bare busybox
/// pulled, and a client of its runtime.
struct Pod {
    client: CriClient,
    id: String,
    config: cri::PodSandboxConfig,
    image: String,
}

impl Pod {
    async fn run(rkube: &RkubeRuntime, image: &str) -> Pod {
        Pod::run_on(rkube, image, cri::NamespaceMode::Pod).await
    }

    /// A pod on its own network (`Pod`) or on the host's (`Node`: hostNetwork).
    async fn run_on(rkube: &RkubeRuntime, image: &str, network: cri::NamespaceMode) -> Pod {
        let mut client = connect(rkube).await;
        pull(&mut client, image).await.expect("pull");
        let config = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: "lifecycle".into(),
                uid: "uid-lifecycle".into(),
                namespace: "default".into(),
                attempt: 0,
            }),
            log_directory: rkube.dir.path().join("pod-logs").display().to_string(),
            linux: Some(cri::LinuxPodSandboxConfig {
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(cri::NamespaceOption {
                        pid: cri::NamespaceMode::Container as i32,
                        network: network as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let id = client
            .runtime
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .unwrap_or_else(|e| panic!("run sandbox: {e}: {}", rkube.log()))
            .into_inner()
            .pod_sandbox_id;
        Pod {
            client,
            id,
            config,
            image: image.to_owned(),
        }
    }

    fn sh(&self, name: &str, script: &str) -> cri::ContainerConfig {
        cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: spec(&self.image),
            command: vec!["sh".into(), "-c".into(), script.into()],
            log_path: format!("{name}.log"),
            ..Default::default()
        }
    }

    async fn create(&mut self, config: cri::ContainerConfig) -> Result<String, tonic::Status> {
        let response = self
            .client
            .runtime
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: self.id.clone(),
                config: Some(config),
                sandbox_config: Some(self.config.clone()),
            })
            .await?;
        Ok(response.into_inner().container_id)
    }

    /// Creates and starts a container; returns its ID.
    async fn start(&mut self, config: cri::ContainerConfig) -> String {
        let name = config.metadata.as_ref().unwrap().name.clone();
        let id = self
            .create(config)
            .await
            .unwrap_or_else(|e| panic!("create {name}: {e}"));
        self.client
            .runtime
            .start_container(cri::StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        id
    }

    /// A container's status and, while it runs, the PID of its process (from the verbose info).
    async fn status(&mut self, id: &str) -> (cri::ContainerStatus, Option<u32>) {
        let response = self
            .client
            .runtime
            .container_status(cri::ContainerStatusRequest {
                container_id: id.to_owned(),
                verbose: true,
            })
            .await
            .unwrap_or_else(|e| panic!("status of {id}: {e}"))
            .into_inner();
        let info: serde_json::Value = serde_json::from_str(&response.info["info"]).unwrap();
        let pid = info["pid"].as_u64().map(|p| p as u32);
        (response.status.unwrap(), pid)
    }

    async fn wait_exit(&mut self, id: &str) -> cri::ContainerStatus {
        eventually(&format!("container {id} exits"), async || {
            let (status, _) = self.status(id).await;
            (status.state == cri::ContainerState::ContainerExited as i32).then_some(status)
        })
        .await
    }

    /// Waits until a container runs; returns its PID.
    async fn wait_running(&mut self, id: &str) -> u32 {
        eventually(&format!("container {id} runs"), async || {
            let (status, pid) = self.status(id).await;
            (status.state == cri::ContainerState::ContainerRunning as i32)
                .then_some(pid)
                .flatten()
        })
        .await
    }

    async fn container_ids(&mut self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .client
            .runtime
            .list_containers(cri::ListContainersRequest { filter: None })
            .await
            .unwrap()
            .into_inner()
            .containers
            .into_iter()
            .map(|c| c.id)
            .collect();
        ids.sort();
        ids
    }

    async fn remove(&mut self) {
        self.client
            .runtime
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: self.id.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("remove sandbox: {e}"));
    }
}

/// `rkube crictl` against `rkube`'s socket; its stdout, asserting success.
fn crictl(rkube: &RkubeRuntime, args: &[&str]) -> String {
    let socket = format!("unix://{}", rkube.socket().display());
    let out = rkube_command(&["crictl", "-r", &socket])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "crictl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Waits for process `pid` to end.
async fn wait_gone(pid: u32) {
    eventually(&format!("process {pid} ends"), async || {
        (!alive(pid)).then_some(())
    })
    .await;
}

/// Stops the runtime with `signal` while a container runs and another is about to exit, and
/// starts a new runtime: it re-adopts both, reports the exit it did not see, and controls
/// the running one.
async fn containers_survive_a_restart(signal: &str) {
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let image = push_busybox(&registry, work.path());
    let mut rkube = RkubeRuntime::start(&registry);
    let mut pod = Pod::run(&rkube, &image).await;

    let flags = work.path().join("flags");
    std::fs::create_dir(&flags).unwrap();
    let mut waiter = pod.sh(
        "waiter",
        "until test -e /flags/go; do sleep 0.05; done; exit 7",
    );
    waiter.mounts = vec![cri::Mount {
        container_path: "/flags".into(),
        host_path: flags.display().to_string(),
        readonly: true,
        ..Default::default()
    }];
    let waiter = pod.start(waiter).await;
    // SIGTERM ends it with 42: proof that the new runtime's stop sent it.
    let polite = pod
        .start(pod.sh(
            "polite",
            "trap 'exit 42' TERM; while true; do sleep 0.1; done",
        ))
        .await;
    let waiter_pid = pod.wait_running(&waiter).await;
    let polite_pid = pod.wait_running(&polite).await;
    let helper = lean_helpers_run_from_the_data_dir(&rkube);

    rkube.stop(signal);
    assert!(
        alive(waiter_pid) && alive(polite_pid),
        "SIG{signal} to the runtime killed containers"
    );
    // The waiter exits while no runtime runs: only its shim sees it.
    std::fs::write(flags.join("go"), "").unwrap();
    wait_gone(waiter_pid).await;
    rkube.restart();
    let mut client = connect(&rkube).await;
    pod.client = client.clone();
    // The restarted runtime found its helper in place: the same file, not written again.
    assert_eq!(
        std::fs::metadata(&helper.0).unwrap().ino(),
        helper.1,
        "{}",
        helper.0.display()
    );

    let exited = pod.wait_exit(&waiter).await;
    assert_eq!((exited.exit_code, exited.reason.as_str()), (7, "Error"));
    assert!(
        exited.finished_at >= exited.started_at && exited.started_at > 0,
        "{exited:?}"
    );

    let (status, pid) = pod.status(&polite).await;
    assert_eq!(status.state, cri::ContainerState::ContainerRunning as i32);
    assert_eq!(pid, Some(polite_pid), "the same process");
    assert!(alive(polite_pid));
    let mut both = vec![waiter.clone(), polite.clone()];
    both.sort();
    assert_eq!(pod.container_ids().await, both);
    let sandboxes = client
        .runtime
        .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(sandboxes.len(), 1, "{sandboxes:?}");
    assert_eq!(
        (sandboxes[0].id.as_str(), sandboxes[0].state),
        (pod.id.as_str(), cri::PodSandboxState::SandboxReady as i32)
    );
    assert_eq!(crictl(&rkube, &["ps", "-q"]).trim(), polite);

    let exec = client
        .runtime
        .exec_sync(cri::ExecSyncRequest {
            container_id: polite.clone(),
            cmd: vec!["sh".into(), "-c".into(), "echo still here; exit 3".into()],
            timeout: 30,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (exec.stdout.as_slice(), exec.exit_code),
        (&b"still here\n"[..], 3)
    );

    client
        .runtime
        .stop_container(cri::StopContainerRequest {
            container_id: polite.clone(),
            timeout: 30,
        })
        .await
        .unwrap();
    let (stopped, _) = pod.status(&polite).await;
    assert_eq!(
        (stopped.state, stopped.exit_code),
        (cri::ContainerState::ContainerExited as i32, 42)
    );
    wait_gone(polite_pid).await;
    pod.remove().await;
}

/// Checks that every container's shim monitor and the pod's holder run the small `rkube-shim`
/// that `rkube runtime` wrote to `<data-dir>/data/<sha256>/bin/`, mode 0755, with bytes that
/// hash to that name; returns its path and inode.
fn lean_helpers_run_from_the_data_dir(rkube: &RkubeRuntime) -> (std::path::PathBuf, u64) {
    let data = rkube.data_dir();
    let mut seen = Vec::new();
    for pid in processes_naming(&data) {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let mut args = cmdline.split(|&b| b == 0);
        args.next();
        let Some(role @ (b"shim-monitor" | b"pause")) = args.next() else {
            continue;
        };
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        seen.push((String::from_utf8_lossy(role).into_owned(), exe));
    }
    seen.sort();
    let roles: Vec<&str> = seen.iter().map(|(role, _)| role.as_str()).collect();
    assert_eq!(roles, ["pause", "shim-monitor", "shim-monitor"], "{seen:?}");
    let exe = seen[0].1.clone();
    assert!(seen.iter().all(|(_, e)| *e == exe), "{seen:?}");
    let relative = exe
        .strip_prefix(&data)
        .unwrap_or_else(|_| panic!("{exe:?}"));
    let parts: Vec<_> = relative.iter().map(|p| p.to_str().unwrap()).collect();
    assert_eq!(
        (parts.len(), parts[0], parts[2], parts[3]),
        (4, "data", "bin", "rkube-shim"),
        "{exe:?}"
    );
    let bytes = std::fs::read(&exe).unwrap();
    let digest: String = sha256(&bytes);
    assert_eq!(parts[1], digest, "named by its sha256");
    let meta = std::fs::metadata(&exe).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o755);
    (exe, meta.ino())
}

/// The sha256 of `bytes` in lowercase hex, by the coreutils tool (nothing of ours).
fn sha256(bytes: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_survive_a_sigkill_of_the_runtime_and_are_readopted() {
    containers_survive_a_restart("KILL").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_survive_a_sigterm_of_the_runtime_and_are_readopted() {
    containers_survive_a_restart("TERM").await;
}

/// How many files the process `pid` has open.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_create_start_remove_cycles_leak_nothing() {
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let image = push_busybox(&registry, work.path());
    let rkube = RkubeRuntime::start(&registry);
    let mut pod = Pod::run(&rkube, &image).await;
    let sandbox = pod
        .client
        .runtime
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: pod.id.clone(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&sandbox.info["info"]).unwrap();
    // The holder's network namespace is /proc/<pid>/ns/net.
    let holder: u32 = info["netns"]
        .as_str()
        .unwrap()
        .split('/')
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    assert!(alive(holder));

    let mut fds_after_warm_up = 0;
    let mut ids = Vec::new();
    for i in 0..100 {
        let id = pod.start(pod.sh("cycle", "true")).await;
        let status = pod.wait_exit(&id).await;
        assert_eq!(status.exit_code, 0, "cycle {i}: {status:?}");
        // `true` ends at once: a start time recorded after the fact would be later.
        assert!(
            0 < status.started_at && status.started_at <= status.finished_at,
            "cycle {i}: started after it finished: {status:?}"
        );
        if i == 0 {
            // What the checks below look for is there while the container is.
            let cgroup = format!("{}/{}/{id}", rkube.cgroup_root, pod.id);
            assert!(
                !common::cgroup_dirs(&cgroup).is_empty(),
                "no cgroup {cgroup}"
            );
            assert!(!mounts_under(&rkube.data_dir()).is_empty(), "no root mount");
        }
        pod.client
            .runtime
            .remove_container(cri::RemoveContainerRequest {
                container_id: id.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("cycle {i}: remove: {e}"));
        ids.push(id);
        if i == 4 {
            fds_after_warm_up = open_fds(rkube.child.id());
        }
    }
    // The runtime deletes removed containers' directories in the background, holding a few
    // directory descriptors while it does: count once that is done (a leak does not go away).
    let settled = std::time::Instant::now();
    let mut fds = open_fds(rkube.child.id());
    while fds > fds_after_warm_up && settled.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        fds = open_fds(rkube.child.id());
    }
    assert!(
        fds <= fds_after_warm_up,
        "open files of the runtime grew from {fds_after_warm_up} to {fds}"
    );
    assert!(pod.container_ids().await.is_empty());
    for id in &ids {
        let err = pod
            .client
            .runtime
            .container_status(cri::ContainerStatusRequest {
                container_id: id.clone(),
                verbose: false,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{err:?}");
    }
    pod.remove().await;

    let data = rkube.data_dir();
    assert_eq!(mounts_under(&data), Vec::<std::path::PathBuf>::new());
    // Only the (empty) root the runtime was given may remain, in each hierarchy.
    let root = rkube.cgroup_root.trim_start_matches('/');
    let cgroups: Vec<_> = common::cgroup_dirs(&rkube.cgroup_root)
        .into_iter()
        .filter(|d| !d.ends_with(root))
        .collect();
    assert!(cgroups.is_empty(), "cgroups left: {cgroups:?}");
    // Removed containers' directories pass through the trash, which empties in the background.
    let trash = data.join("agent/trash");
    let emptying = std::time::Instant::now();
    while std::fs::read_dir(&trash).unwrap().next().is_some()
        && emptying.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for dir in [
        data.join("agent/containers"),
        data.join("agent/sandboxes"),
        trash,
        rkube.state_dir(),
    ] {
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "left in {}: {left:?}", dir.display());
    }
    assert_eq!(
        processes_naming(&data.join("agent/containers")),
        Vec::<u32>::new(),
        "shims left"
    );
    assert!(!alive(holder), "the sandbox holder {holder} still runs");
}

/// Pushes `name`, one layer holding a 256 KiB file of `fill` bytes (so its blob is its own);
/// returns the layer's digest.
fn push_one_layer(registry: &Registry, dir: &Path, name: &str, fill: u8) -> String {
    let mut layout = Layout::new(&dir.join(name.replace([':', '/'], "-")));
    let (layer, diff_id) =
        layout.layer(&[Entry::File("data".into(), vec![fill; 256 << 10], 0o644)]);
    layout.image(
        rkube_runtime::image::pull::this_platform().1,
        &[(layer.clone(), diff_id)],
        serde_json::json!({"Cmd": ["true"]}),
    );
    registry.push(&layout.finish(), name);
    layer.digest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_pulls_say_why_and_leave_no_half_image() {
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let rkube = RkubeRuntime::start(&registry);
    let mut client = connect(&rkube).await;
    let host = registry.host();

    // Missing: NotFound, naming the image and where it looked (the kubelet's ErrImagePull).
    let missing = format!("{host}/library/nothing-here:1");
    let err = pull(&mut client, &missing).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    for part in ["nothing-here", "not found", &format!("http://{host}")] {
        assert!(err.message().contains(part), "{part:?} not in {err:?}");
    }

    // A registry nothing listens on.
    let dead = format!("127.0.0.1:{}", rkube_testsupport::free_port());
    let err = pull(&mut client, &format!("{dead}/library/app:1"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    for part in ["unreachable", &dead] {
        assert!(err.message().contains(part), "{part:?} not in {err:?}");
    }

    // The registry's copy of a layer is changed (same size), then cut short.
    let victim = format!("{host}/library/victim:1");
    let layer = push_one_layer(&registry, work.path(), "library/victim:1", b'v');
    let blob = registry.blob_file(&layer);
    let original = std::fs::read(&blob).unwrap();
    let mut garbled = original.clone();
    let middle = garbled.len() / 2;
    garbled[middle] ^= 0xff;
    // Cut short, the registry serves what is left with its length: a digest mismatch again.
    for (what, content) in [
        ("garbled", &garbled[..]),
        ("truncated", &original[..middle]),
    ] {
        std::fs::write(&blob, content).unwrap();
        let err = pull(&mut client, &victim).await.unwrap_err();
        assert_eq!(err.code(), Code::DataLoss, "{what}: {err:?}");
        for part in ["digest mismatch", &layer, "victim"] {
            assert!(
                err.message().contains(part),
                "{what}: {part:?} not in {err:?}"
            );
        }
        assert!(
            !listed(&mut client, &victim).await,
            "{what}: a half image is listed"
        );
    }
    // The store took none of it: once the registry is right again, the pull works.
    std::fs::write(&blob, &original).unwrap();
    pull(&mut client, &victim).await.expect("pull after repair");
    assert!(listed(&mut client, &victim).await);
}

/// The layer digests of `repository:tag` as the registry serves its manifest.
fn registry_layers(registry: &Registry, repository: &str, tag: &str) -> Vec<String> {
    let out = Command::new("curl")
        .args(["-sSf", "--max-time", "20", "-H"])
        .arg("Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json")
        .arg(format!("http://{}/v2/{repository}/manifests/{tag}", registry.host()))
        .output()
        .unwrap();
    let manifest = common::json(&out);
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_that_is_not_a_tar_fails_create_container_with_a_clear_error() {
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let image = push_busybox(&registry, work.path());
    // The blob matches its digest, so the pull stores it; it is no gzip'd tar, though.
    let mut layout = Layout::new(&work.path().join("garbled"));
    let busybox = layout.layer(&busybox_entries(APPLETS));
    let junk = layout.blob(&b"not a tar ".repeat(1000));
    // skopeo gzips it on its way to the registry: a valid gzip holding no tar.
    let junk_layer = (junk.clone(), junk.digest);
    layout.image(
        rkube_runtime::image::pull::this_platform().1,
        &[busybox, junk_layer],
        serde_json::json!({"Env": ["PATH=/bin"]}),
    );
    registry.push(&layout.finish(), "library/garbled:1");
    let garbled = format!("{}/library/garbled:1", registry.host());

    let rkube = RkubeRuntime::start(&registry);
    let mut pod = Pod::run(&rkube, &image).await;
    let pulled = pull(&mut pod.client, &garbled).await;
    pulled.expect("the layer's digest is right: the pull stores it");
    let mut config = pod.sh("garbled", "true");
    config.image = spec(&garbled);
    let err = pod.create(config).await.unwrap_err();
    // The store holds what the registry served; the node cannot use it.
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    let layer = registry_layers(&registry, "library/garbled", "1")
        .pop()
        .unwrap();
    assert!(
        err.message().contains(&format!("unpacking layer {layer}")),
        "names the layer {layer}: {err:?}"
    );
    assert!(pod.container_ids().await.is_empty());
    let data = rkube.data_dir();
    assert!(mounts_under(&data.join("agent/containers")).is_empty());
    // Layers appear whole or not at all: no staging directory, nothing half unpacked.
    for entry in std::fs::read_dir(data.join("agent/layers"))
        .unwrap()
        .flatten()
    {
        let staging = entry.file_name().to_string_lossy().starts_with('.');
        assert!(
            !staging && entry.path().join("fs").is_dir(),
            "{}",
            entry.path().display()
        );
    }
    // The pod still works with a good image.
    let id = pod.start(pod.sh("good", "true")).await;
    assert_eq!(pod.wait_exit(&id).await.exit_code, 0);
}

/// Unmounts `path` when dropped, should the test fail before `RkubeRuntime` (whose drop
/// unmounts everything under its directory) owns the directory. Lazily: the runtime may still
/// hold files there.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .stderr(std::process::Stdio::null())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_onto_a_full_disk_says_so_and_leaves_no_half_image() {
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let small = push_busybox(&registry, work.path());
    // 6 MiB that gzip cannot shrink, for an image store of 4 MiB.
    let mut random = vec![0; 6 << 20];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").unwrap(),
        &mut random,
    )
    .unwrap();
    let mut layout = Layout::new(&work.path().join("big"));
    let layer = layout.layer(&[Entry::File("random".into(), random, 0o644)]);
    layout.image(
        rkube_runtime::image::pull::this_platform().1,
        &[layer],
        serde_json::json!({"Cmd": ["true"]}),
    );
    registry.push(&layout.finish(), "library/big:1");
    let big = format!("{}/library/big:1", registry.host());

    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("data/agent/images");
    std::fs::create_dir_all(&images).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&images)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount a tmpfs on {}", images.display());
    let _tmpfs = Mounted(images.clone());
    let rkube = RkubeRuntime::start_in(dir, &registry);
    let mut client = connect(&rkube).await;

    let err = pull(&mut client, &big).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("No space left on device") && err.message().contains(&big),
        "{err:?}"
    );
    assert!(!listed(&mut client, &big).await, "a half image is listed");
    // What the failed pull wrote is gone: a small image fits on the same 4 MiB.
    pull(&mut client, &small)
        .await
        .expect("pull after the failure");
    assert!(listed(&mut client, &small).await);

    // A store that cannot be written at all: the node's fault, said as the OS says it.
    let remounted = Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&images)
        .status()
        .unwrap();
    assert!(
        remounted.success(),
        "remount {} read-only",
        images.display()
    );
    let err = pull(&mut client, &big).await.unwrap_err();
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert!(
        err.message().contains("Read-only file system") && err.message().contains(&big),
        "{err:?}"
    );
    assert!(!listed(&mut client, &big).await && listed(&mut client, &small).await);
}

/// `rkube images import` against the data dir of a running `rkube runtime`.
fn import(rkube: &RkubeRuntime, archive: &Path) -> std::process::Output {
    rkube_command(&["images", "import"])
        .arg(archive)
        .arg("--data-dir")
        .arg(rkube.data_dir())
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn importing_a_bad_archive_fails_clearly_and_leaves_the_store_as_it_was() {
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(&work.path().join("layout"));
    let layer = layout.layer(&busybox_entries(APPLETS));
    let layer_bytes = std::fs::read(
        work.path()
            .join("layout/blobs/sha256")
            .join(layer.0.digest.trim_start_matches("sha256:")),
    )
    .unwrap();
    layout.image(
        rkube_runtime::image::pull::this_platform().1,
        &[layer],
        serde_json::json!({"Env": ["PATH=/bin"]}),
    );
    let name = "rkube.test/imported:1";
    let archive = work.path().join("good.tar");
    let copied = Command::new("skopeo")
        .args(["copy", "--quiet", "--insecure-policy"])
        .arg(format!("oci:{}", layout.finish().display()))
        .arg(format!("oci-archive:{}:{name}", archive.display()))
        .output()
        .unwrap();
    assert!(copied.status.success(), "{}", common::stderr(&copied));
    let good = std::fs::read(&archive).unwrap();

    // Cut short mid-layer; and whole, with one byte of the layer changed.
    let at = good
        .windows(layer_bytes.len())
        .position(|w| w == layer_bytes)
        .expect("the layer is stored as is in the tar");
    let truncated = work.path().join("truncated.tar");
    std::fs::write(&truncated, &good[..at + layer_bytes.len() / 2]).unwrap();
    let mut changed = good.clone();
    changed[at + layer_bytes.len() / 2] ^= 0xff;
    let tampered = work.path().join("tampered.tar");
    std::fs::write(&tampered, &changed).unwrap();

    let rkube = RkubeRuntime::start(&registry);
    let mut client = connect(&rkube).await;
    for (archive, expected) in [
        (&truncated, "it is truncated"),
        (&tampered, "digest mismatch"),
    ] {
        let out = import(&rkube, archive);
        assert_clean_failure(&out, &[archive.to_str().unwrap(), expected]);
        let err = common::stderr(&out);
        assert_eq!(err.matches(expected).count(), 1, "said once: {err}");
        assert!(
            !listed(&mut client, name).await,
            "{expected}: a half image is listed"
        );
    }
    let out = import(&rkube, &archive);
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert!(listed(&mut client, name).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_container_configs_are_refused_naming_the_problem() {
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let image = push_busybox(&registry, work.path());
    let rkube = RkubeRuntime::start(&registry);
    let mut pod = Pod::run(&rkube, &image).await;

    let mut no_command = pod.sh("no-command", "");
    no_command.command.clear();
    let mut no_source = pod.sh("no-source", "true");
    no_source.mounts = vec![cri::Mount {
        container_path: "/data".into(),
        host_path: "/no/such/dir".into(),
        ..Default::default()
    }];
    let mut not_pulled = pod.sh("not-pulled", "true");
    not_pulled.image = spec("rkube.test/never-pulled:1");
    for (config, code, expected) in [
        (no_command, Code::InvalidArgument, "has no command"),
        (
            no_source,
            Code::InvalidArgument,
            "/no/such/dir does not exist",
        ),
        (not_pulled, Code::NotFound, "rkube.test/never-pulled:1"),
    ] {
        let name = config.metadata.as_ref().unwrap().name.clone();
        let err = pod.create(config).await.unwrap_err();
        assert_eq!(err.code(), code, "{name}: {err:?}");
        assert!(err.message().contains(expected), "{name}: {err:?}");
    }
    assert!(pod.container_ids().await.is_empty());
    let containers = rkube.data_dir().join("agent/containers");
    assert_eq!(std::fs::read_dir(&containers).unwrap().count(), 0);
}

/// One record of a CRI log file: `<RFC 3339 time> <stream> <P|F> <text>`.
struct Record<'a> {
    /// (seconds part, nanoseconds), comparable.
    time: (&'a str, u32),
    stream: &'a str,
    partial: bool,
    text: &'a str,
}

/// Parses a record strictly; the time must be UTC with up to nine fractional digits.
fn record(line: &str) -> Result<Record<'_>, String> {
    let mut parts = line.splitn(4, ' ');
    let (Some(time), Some(stream), Some(tag), Some(text)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("not four fields: {:.80}", line));
    };
    let bad_time = || format!("not an RFC 3339 UTC time: {time:?}");
    let time = time.strip_suffix('Z').ok_or_else(bad_time)?;
    let (seconds, fraction) = time.split_once('.').unwrap_or((time, ""));
    let shape = seconds.bytes().enumerate().all(|(i, b)| match i {
        4 | 7 => b == b'-',
        10 => b == b'T',
        13 | 16 => b == b':',
        _ => b.is_ascii_digit(),
    });
    if seconds.len() != 19 || !shape || fraction.len() > 9 {
        return Err(bad_time());
    }
    let nanos = format!("{fraction:0<9}").parse().map_err(|_| bad_time())?;
    if !matches!(stream, "stdout" | "stderr") {
        return Err(format!("bad stream {stream:?}"));
    }
    let partial = match tag {
        "P" => true,
        "F" => false,
        _ => return Err(format!("bad tag {tag:?}")),
    };
    Ok(Record {
        time: (seconds, nanos),
        stream,
        partial,
        text,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_mib_line_and_ten_thousand_rapid_lines_reach_the_cri_log_intact() {
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let image = push_busybox(&registry, work.path());
    let rkube = RkubeRuntime::start(&registry);
    let mut pod = Pod::run(&rkube, &image).await;
    let id = pod
        .start(pod.sh(
            "talker",
            "head -c 1048576 /dev/zero | tr '\\0' a; echo; seq 1 10000",
        ))
        .await;
    let status = pod.wait_exit(&id).await;
    assert_eq!(status.exit_code, 0);

    let text = std::fs::read_to_string(&status.log_path).unwrap();
    let records: Vec<Record> = text
        .strip_suffix('\n')
        .expect("the log ends with a newline")
        .split('\n')
        .map(|l| record(l).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    assert!(records.iter().all(|r| r.stream == "stdout"));
    assert!(
        records.windows(2).all(|w| w[0].time <= w[1].time),
        "timestamps go back"
    );
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    let mut parts = 0;
    for r in &records {
        line.push_str(r.text);
        parts += 1;
        if !r.partial {
            if lines.is_empty() {
                assert!(parts > 1, "the 1 MiB line is in partial records");
            }
            lines.push(std::mem::take(&mut line));
        }
    }
    assert!(line.is_empty(), "the last record is partial");
    assert_eq!(lines.len(), 10_001);
    assert!(lines[0].len() == 1 << 20 && lines[0].bytes().all(|b| b == b'a'));
    assert!(
        lines[1..].iter().zip(1..).all(|(l, n)| *l == n.to_string()),
        "the 10,000 lines in order"
    );
    assert_eq!(crictl(&rkube, &["logs", "--tail", "1", &id]), "10000\n");
}

/// The value in `file` of the cgroup the process `pid` is in, for `controller` (`cpu`,
/// `memory`) on v1 or, when it has no v1 hierarchy, in the v2 tree.
fn cgroup_file(pid: u32, controller: &str, file: &str) -> String {
    let membership = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let v1 = membership.lines().find_map(|l| {
        let mut fields = l.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        controllers
            .split(',')
            .any(|c| c == controller)
            .then_some(path)
    });
    let (hierarchy, path) = match v1 {
        Some(path) => (format!("/sys/fs/cgroup/{controller}"), path),
        None => (
            "/sys/fs/cgroup/unified".to_owned(),
            membership
                .lines()
                .find_map(|l| l.strip_prefix("0::"))
                .unwrap(),
        ),
    };
    let file = Path::new(&hierarchy)
        .join(path.trim_start_matches('/'))
        .join(file);
    std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_and_memory_limits_reach_the_container_cgroup() {
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let image = push_busybox(&registry, work.path());
    let rkube = RkubeRuntime::start(&registry);
    let mut pod = Pod::run(&rkube, &image).await;
    let mut limited = pod.sh("limited", "exec sleep 3600");
    limited.linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            memory_limit_in_bytes: 64 << 20,
            ..Default::default()
        }),
        security_context: None,
    });
    let limited = pod.start(limited).await;
    let free = pod.start(pod.sh("free", "exec sleep 3600")).await;
    let pid = pod.wait_running(&limited).await;
    let free_pid = pod.wait_running(&free).await;

    let membership = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(
        membership.contains(&format!("{}/{}/{limited}", rkube.cgroup_root, pod.id)),
        "in <cgroup root>/<pod>/<container>: {membership}"
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&crictl(&rkube, &["inspect", &limited])).unwrap();
    assert_eq!(inspect["info"]["pid"], pid, "crictl inspect");
    if Path::new("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").exists() {
        assert_eq!(cgroup_file(pid, "cpu", "cpu.cfs_quota_us"), "50000");
        assert_eq!(cgroup_file(pid, "cpu", "cpu.cfs_period_us"), "100000");
        assert_eq!(cgroup_file(pid, "cpu", "cpu.shares"), "512");
        assert_eq!(
            cgroup_file(pid, "memory", "memory.limit_in_bytes"),
            (64 << 20).to_string()
        );
        assert_eq!(cgroup_file(free_pid, "cpu", "cpu.cfs_quota_us"), "-1");
    } else {
        assert_eq!(cgroup_file(pid, "cpu", "cpu.max"), "50000 100000");
        assert_eq!(
            cgroup_file(pid, "memory", "memory.max"),
            (64 << 20).to_string()
        );
        assert_eq!(cgroup_file(free_pid, "cpu", "cpu.max"), "max 100000");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_network_pod_shares_the_hosts_network_and_name() {
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let image = push_busybox(&registry, work.path());
    let rkube = RkubeRuntime::start(&registry);
    let mut pod = Pod::run_on(&rkube, &image, cri::NamespaceMode::Node).await;
    let id = pod.start(pod.sh("on-host", "exec sleep 3600")).await;
    pod.wait_running(&id).await;
    let out = pod
        .client
        .runtime
        .exec_sync(cri::ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec![
                "sh".into(),
                "-c".into(),
                "hostname; readlink /proc/self/ns/net; readlink /proc/self/ns/uts".into(),
            ],
            timeout: 10,
        })
        .await
        .unwrap_or_else(|e| panic!("exec: {e}: {}", rkube.log()))
        .into_inner();
    let seen = String::from_utf8_lossy(&out.stdout).into_owned();
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let link = |ns: &str| std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
    let expected = format!(
        "{}\n{}\n{}\n",
        host_name.trim(),
        link("net").display(),
        link("uts").display()
    );
    assert_eq!(seen, expected, "{}", String::from_utf8_lossy(&out.stderr));
    pod.client
        .runtime
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: pod.id.clone(),
        })
        .await
        .unwrap();
    pod.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_events_follow_a_container_through_its_life() {
    use futures::StreamExt;
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let image = push_busybox(&registry, work.path());
    let rkube = RkubeRuntime::start(&registry);
    let mut pod = Pod::run(&rkube, &image).await;
    let mut events = connect(&rkube)
        .await
        .runtime
        .get_container_events(cri::GetEventsRequest {})
        .await
        .unwrap()
        .into_inner();
    // It ends by itself: the stop event comes from the watcher, not from a call.
    let id = pod.start(pod.sh("brief", "sleep 1; exit 4")).await;
    pod.wait_exit(&id).await;
    pod.client
        .runtime
        .remove_container(cri::RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
    use cri::ContainerEventType as E;
    let mut seen = Vec::new();
    while seen.last() != Some(&E::ContainerDeletedEvent) {
        let event = tokio::time::timeout(Duration::from_secs(30), events.next())
            .await
            .unwrap_or_else(|_| panic!("no event in 30 s after {seen:?}"))
            .expect("the stream stays open")
            .unwrap();
        assert_eq!(event.container_id, id);
        let kind = E::try_from(event.container_event_type).unwrap();
        assert!(event.created_at > 0);
        match kind {
            E::ContainerStoppedEvent => {
                let status = event
                    .containers_statuses
                    .iter()
                    .find(|c| c.id == id)
                    .expect("the stopped container's status comes with the event");
                assert_eq!(status.exit_code, 4);
                assert_eq!(
                    event.pod_sandbox_status.as_ref().map(|s| s.id.as_str()),
                    Some(pod.id.as_str())
                );
            }
            E::ContainerDeletedEvent => {
                assert!(event.containers_statuses.iter().all(|c| c.id != id));
            }
            _ => {}
        }
        seen.push(kind);
    }
    // Created and started may share one listing (a quick start), but each comes once, in order.
    assert_eq!(
        seen,
        [
            E::ContainerCreatedEvent,
            E::ContainerStartedEvent,
            E::ContainerStoppedEvent,
            E::ContainerDeletedEvent
        ]
    );
    pod.remove().await;
}
