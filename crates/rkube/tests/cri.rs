//! The CRI scenario, run against `rkube runtime` and against Debian's containerd (a real peer):
//! the same calls through the same client must give the same answers from both, which checks our
//! server against the CRI contract and our client against a runtime nobody here wrote.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_cri::v1 as cri;
use rkube_runtime::cri::client::CriClient;
use rkube_testsupport::containerd::Containerd;
use rkube_testsupport::registry::{Entry, Layout, Registry, busybox_entries, push_pause_image};

mod common;
use common::{RkubeRuntime, eventually};
use rkube_runtime::cri::streaming::client::{Collected, Session};
use rkube_runtime::cri::streaming::protocol::{
    ERROR_CHANNEL, STDERR_CHANNEL, STDOUT_CHANNEL, TerminalSize, V4_PROTOCOL, V5_PROTOCOL,
    exit_code_of,
};

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

/// The applets the pod scenario's image needs.
const POD_APPLETS: &[&str] = &[
    "sh", "sleep", "readlink", "cat", "echo", "dd", "true", "touch", "test", "id", "pwd", "httpd",
    "wget", "stty", "tty",
];

/// Pushes the pod scenario's images: `library/busybox:pods` (Env, WorkingDir, User and Cmd from
/// its config) and `library/pause:1`, containerd's sandbox image (rkube needs none).
fn push_pod_images(registry: &Registry, dir: &Path) {
    let arch = rkube_runtime::image::pull::this_platform().1;
    let mut layout = Layout::new(&dir.join("pods"));
    let layer = layout.layer(&busybox_entries(POD_APPLETS));
    layout.image(
        arch,
        &[layer],
        serde_json::json!({
            "Env": ["PATH=/bin", "FROM_IMAGE=image"],
            "WorkingDir": "/tmp",
            "User": "1000",
            "Cmd": ["sh", "-c", "echo \"$FROM_IMAGE $FROM_SPEC $(pwd) $(id -u)\"; echo to-stderr >&2; exit 3"],
        }),
    );
    registry.push(&layout.finish(), "library/busybox:pods");
    push_pause_image(registry, dir, arch, "library/pause:1");
}

/// A pod sandbox config: its own network and IPC, a PID namespace per container, labelled
/// `app=<name>`, under `cgroup_parent`.
fn pod_config(
    name: &str,
    runtime: &str,
    logs: &Path,
    cgroup_parent: &str,
) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}-{runtime}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: logs.display().to_string(),
        labels: [("app".to_owned(), name.to_owned())].into(),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent.to_owned(),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: cri::NamespaceMode::Pod as i32,
                    pid: cri::NamespaceMode::Container as i32,
                    ipc: cri::NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// What one runtime showed in the pod scenario: the parts both runtimes must agree on.
#[derive(Debug, PartialEq)]
struct PodObservations {
    /// Exit code and reason of the container that printed and failed, and of the memory hog.
    exits: Vec<(String, i32, String)>,
    /// What the failing container wrote, by stream, from its CRI log.
    log: Vec<(String, String)>,
    /// Whether the two long-running containers share net, ipc, pid namespaces and a root.
    shared: Vec<(&'static str, bool)>,
    /// What one fetched from the other over localhost.
    localhost: String,
    /// ExecSync's stdout, stderr, exit code.
    exec: (String, String, i32),
    /// The code of an ExecSync past its timeout.
    exec_timeout: tonic::Code,
    /// The SIGTERM-ignoring container's exit code after a 1 s stop, and whether the stop waited.
    stubborn: (i32, bool),
    /// Container counts: all in the sandbox, running ones, after removal.
    counts: (usize, usize, usize),
}

fn run_as_root() -> Option<cri::LinuxContainerConfig> {
    Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            run_as_user: Some(cri::Int64Value { value: 0 }),
            namespace_options: Some(cri::NamespaceOption {
                pid: cri::NamespaceMode::Container as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        resources: None,
    })
}

fn sh_container(name: &str, image: &str, script: &str) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: spec(image),
        command: vec!["sh".into(), "-c".into(), script.into()],
        log_path: format!("{name}/0.log"),
        linux: run_as_root(),
        ..Default::default()
    }
}

type RuntimeClient =
    k8s_cri::v1::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>;

async fn exec_sh(
    rt: &mut RuntimeClient,
    id: &str,
    script: &str,
    timeout: i64,
) -> Result<cri::ExecSyncResponse, tonic::Status> {
    rt.exec_sync(cri::ExecSyncRequest {
        container_id: id.to_owned(),
        cmd: vec!["sh".into(), "-c".into(), script.into()],
        timeout,
    })
    .await
    .map(|r| r.into_inner())
}

async fn sandbox_status(
    rt: &mut RuntimeClient,
    id: &str,
) -> Result<cri::PodSandboxStatus, tonic::Status> {
    let response = rt
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.to_owned(),
            verbose: false,
        })
        .await?;
    Ok(response.into_inner().status.unwrap())
}

async fn container_status(rt: &mut RuntimeClient, id: &str) -> cri::ContainerStatus {
    rt.container_status(cri::ContainerStatusRequest {
        container_id: id.to_owned(),
        verbose: false,
    })
    .await
    .unwrap_or_else(|e| panic!("status of {id}: {e}"))
    .into_inner()
    .status
    .unwrap()
}

/// Creates and starts a container; returns its ID.
async fn start_container(
    rt: &mut RuntimeClient,
    sandbox: &str,
    sandbox_config: &cri::PodSandboxConfig,
    config: cri::ContainerConfig,
    runtime: &str,
) -> String {
    let name = config.metadata.as_ref().unwrap().name.clone();
    let id = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: sandbox.to_owned(),
            config: Some(config),
            sandbox_config: Some(sandbox_config.clone()),
        })
        .await
        .unwrap_or_else(|e| panic!("{runtime}: create {name}: {e}"))
        .into_inner()
        .container_id;
    rt.start_container(cri::StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap_or_else(|e| panic!("{runtime}: start {name}: {e}"));
    id
}

async fn count_containers(rt: &mut RuntimeClient, filter: cri::ContainerFilter) -> usize {
    rt.list_containers(cri::ListContainersRequest {
        filter: Some(filter),
    })
    .await
    .unwrap()
    .into_inner()
    .containers
    .len()
}

/// A running pod sandbox of the scenarios, with the pod image pulled.
struct ScenarioPod {
    client: CriClient,
    image: String,
    config: cri::PodSandboxConfig,
    id: String,
    cgroup_parent: String,
}

async fn scenario_pod(
    socket: &Path,
    registry: &Registry,
    runtime: &str,
    logs: &Path,
    name: &str,
) -> ScenarioPod {
    let mut client = CriClient::connect(socket).await.unwrap();
    let image = format!("{}/library/busybox:pods", registry.host());
    client
        .images
        .pull_image(cri::PullImageRequest {
            image: spec(&image),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{runtime}: pull: {e}"));
    let cgroup_parent = format!("/rkube-cri-test/{name}-{runtime}-{}", std::process::id());
    let config = pod_config(name, runtime, logs, &cgroup_parent);
    let id = client
        .runtime
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("{runtime}: run sandbox: {e}"))
        .into_inner()
        .pod_sandbox_id;
    ScenarioPod {
        client,
        image,
        config,
        id,
        cgroup_parent,
    }
}

/// The pod half of the CRI scenario: a sandbox, containers in it, exec, logs, stop, remove.
async fn pod_scenario(
    socket: &Path,
    registry: &Registry,
    runtime: &str,
    logs: &Path,
) -> PodObservations {
    let ScenarioPod {
        mut client,
        image,
        config: sandbox_config,
        id: sandbox,
        cgroup_parent,
    } = scenario_pod(socket, registry, runtime, logs, "scenario").await;
    let rt = &mut client.runtime;
    let status = sandbox_status(rt, &sandbox).await.unwrap();
    assert_eq!(
        status.state,
        cri::PodSandboxState::SandboxReady as i32,
        "{runtime}"
    );
    assert_eq!(status.metadata.unwrap().name, "scenario", "{runtime}");
    let listed = rt
        .list_pod_sandbox(cri::ListPodSandboxRequest {
            filter: Some(cri::PodSandboxFilter {
                label_selector: [("app".to_owned(), "scenario".to_owned())].into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(
        listed.iter().any(|s| s.id == sandbox),
        "{runtime}: {listed:?}"
    );

    let server = start_container(
        rt,
        &sandbox,
        &sandbox_config,
        sh_container(
            "server",
            &image,
            "echo hello > /tmp/x; exec httpd -f -p 127.0.0.1:7777 -h /tmp",
        ),
        runtime,
    )
    .await;
    let client_id = start_container(
        rt,
        &sandbox,
        &sandbox_config,
        sh_container("client", &image, "exec sleep 3600"),
        runtime,
    )
    .await;
    let mut env_config = cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: "env".into(),
            attempt: 0,
        }),
        image: spec(&image),
        envs: vec![cri::KeyValue {
            key: "FROM_SPEC".into(),
            value: "spec".into(),
        }],
        log_path: "env/0.log".into(),
        ..Default::default()
    };
    env_config.labels.insert("role".into(), "env".into());
    let env = start_container(rt, &sandbox, &sandbox_config, env_config, runtime).await;
    let mut hog_config = sh_container(
        "hog",
        &image,
        "dd if=/dev/zero of=/dev/null bs=256M count=1",
    );
    hog_config.linux.as_mut().unwrap().resources = Some(cri::LinuxContainerResources {
        memory_limit_in_bytes: 32 << 20,
        ..Default::default()
    });
    let hog = start_container(rt, &sandbox, &sandbox_config, hog_config, runtime).await;
    let stubborn = start_container(
        rt,
        &sandbox,
        &sandbox_config,
        sh_container(
            "stubborn",
            &image,
            "trap '' TERM; echo up; while true; do sleep 0.1; done",
        ),
        runtime,
    )
    .await;

    let ns_of = |out: cri::ExecSyncResponse| -> Vec<String> {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    };
    let script = "for ns in net ipc pid; do readlink /proc/self/ns/$ns; done";
    let server_ns = ns_of(
        eventually("the server runs", async || {
            exec_sh(rt, &server, script, 10)
                .await
                .ok()
                .filter(|out| out.exit_code == 0)
        })
        .await,
    );
    let client_ns = ns_of(exec_sh(rt, &client_id, script, 10).await.unwrap());
    assert_eq!(server_ns.len(), 3, "{runtime}: {server_ns:?}");
    let separate_root = exec_sh(
        rt,
        &client_id,
        "test -e /tmp/x && echo shared || echo separate",
        10,
    )
    .await
    .unwrap();
    let mut shared = vec![
        ("net", server_ns[0] == client_ns[0]),
        ("ipc", server_ns[1] == client_ns[1]),
        ("pid", server_ns[2] == client_ns[2]),
    ];
    shared.push((
        "root",
        String::from_utf8_lossy(&separate_root.stdout).trim() == "shared",
    ));
    let localhost = eventually("httpd answers", async || {
        let out = exec_sh(rt, &client_id, "wget -qO- http://127.0.0.1:7777/x", 10)
            .await
            .ok()?;
        (out.exit_code == 0).then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    })
    .await;
    let out = exec_sh(rt, &client_id, "echo out; echo err >&2; exit 4", 10)
        .await
        .unwrap();
    let exec_result = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.exit_code,
    );
    let exec_timeout = exec_sh(rt, &client_id, "sleep 5", 1)
        .await
        .unwrap_err()
        .code();

    // The two that end by themselves: status, reason, and the log of the one that printed.
    let mut exits = Vec::new();
    for (name, id) in [("env", &env), ("hog", &hog)] {
        let status = eventually(&format!("{name} exits"), async || {
            let s = container_status(rt, id).await;
            (s.state == cri::ContainerState::ContainerExited as i32).then_some(s)
        })
        .await;
        assert!(
            status.started_at > 0 && status.finished_at > 0,
            "{runtime}: {status:?}"
        );
        // containerd takes the start time after runc's start returns, so a container that ends
        // at once may finish microseconds "before" it started; rkube takes it before the start.
        if runtime == "rkube" {
            assert!(status.started_at <= status.finished_at, "{status:?}");
        }
        assert_eq!(status.metadata.as_ref().unwrap().name, name);
        assert_eq!(status.image.as_ref().unwrap().image, image, "{runtime}");
        assert!(
            status.image_ref.contains("@sha256:"),
            "{runtime}: {}",
            status.image_ref
        );
        exits.push((name.to_owned(), status.exit_code, status.reason.clone()));
    }
    let text = std::fs::read_to_string(logs.join("env/0.log"))
        .unwrap_or_else(|e| panic!("{runtime}: env log: {e}"));
    let mut log: Vec<(String, String)> = text
        .lines()
        .map(|line| {
            let mut parts = line.splitn(4, ' ');
            let _time = parts.next();
            let stream = parts.next().unwrap_or_default().to_owned();
            assert_eq!(parts.next(), Some("F"), "{runtime}: {line}");
            (stream, parts.next().unwrap_or_default().to_owned())
        })
        .collect();
    log.sort();

    let all = count_containers(
        rt,
        cri::ContainerFilter {
            pod_sandbox_id: sandbox.clone(),
            ..Default::default()
        },
    )
    .await;
    let running = count_containers(
        rt,
        cri::ContainerFilter {
            pod_sandbox_id: sandbox.clone(),
            state: Some(cri::ContainerStateValue {
                state: cri::ContainerState::ContainerRunning as i32,
            }),
            ..Default::default()
        },
    )
    .await;
    let by_label = rt
        .list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                label_selector: [("role".to_owned(), "env".to_owned())].into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(by_label.len(), 1, "{runtime}: {by_label:?}");
    assert_eq!(by_label[0].id, env);

    let stats = rt
        .container_stats(cri::ContainerStatsRequest {
            container_id: client_id.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("{runtime}: stats: {e}"))
        .into_inner()
        .stats
        .unwrap();
    let memory = stats.memory.unwrap();
    assert!(
        memory.working_set_bytes.is_some_and(|w| w.value > 0),
        "{runtime}: {memory:?}"
    );

    let started = Instant::now();
    rt.stop_container(cri::StopContainerRequest {
        container_id: stubborn.clone(),
        timeout: 1,
    })
    .await
    .unwrap_or_else(|e| panic!("{runtime}: stop: {e}"));
    let waited = started.elapsed() >= Duration::from_secs(1);
    let stopped = container_status(rt, &stubborn).await;
    assert_eq!(stopped.state, cri::ContainerState::ContainerExited as i32);

    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: sandbox.clone(),
    })
    .await
    .unwrap_or_else(|e| panic!("{runtime}: stop sandbox: {e}"));
    let status = sandbox_status(rt, &sandbox).await.unwrap();
    assert_eq!(
        status.state,
        cri::PodSandboxState::SandboxNotready as i32,
        "{runtime}"
    );
    for _ in 0..2 {
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: sandbox.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("{runtime}: remove sandbox: {e}"));
    }
    let after = count_containers(
        rt,
        cri::ContainerFilter {
            pod_sandbox_id: sandbox.clone(),
            ..Default::default()
        },
    )
    .await;
    let err = sandbox_status(rt, &sandbox).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{runtime}: {err:?}");
    remove_cgroup_parent(&cgroup_parent);

    PodObservations {
        exits,
        log,
        shared,
        localhost,
        exec: exec_result,
        exec_timeout,
        stubborn: (stopped.exit_code, waited),
        counts: (all, running, after),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pod_scenario_gives_the_same_answers_from_rkube_and_containerd() {
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    push_pod_images(&registry, work.path());

    let rkube = RkubeRuntime::start(&registry);
    let logs = work.path().join("logs-rkube");
    let ours = pod_scenario(&rkube.socket(), &registry, "rkube", &logs).await;
    let expected = PodObservations {
        exits: vec![
            ("env".into(), 3, "Error".into()),
            ("hog".into(), 137, "OOMKilled".into()),
        ],
        log: vec![
            ("stderr".into(), "to-stderr".into()),
            ("stdout".into(), "image spec /tmp 1000".into()),
        ],
        shared: vec![
            ("net", true),
            ("ipc", true),
            ("pid", false),
            ("root", false),
        ],
        localhost: "hello".into(),
        exec: ("out\n".into(), "err\n".into(), 4),
        exec_timeout: tonic::Code::DeadlineExceeded,
        stubborn: (137, true),
        counts: (5, 3, 0),
    };
    assert_eq!(ours, expected, "rkube");

    let pause = format!("{}/library/pause:1", registry.host());
    let containerd = Containerd::start_for_pods(&[registry.host()], &pause);
    let logs = work.path().join("logs-containerd");
    let theirs = pod_scenario(&containerd.socket(), &registry, "containerd", &logs).await;
    assert_eq!(
        theirs,
        ours,
        "containerd and rkube differ: {}",
        containerd.log()
    );
}

/// The runtimes leave the parent cgroup they were given; the test made it up, so it goes.
fn remove_cgroup_parent(cgroup_parent: &str) {
    for controller in [
        "cpu", "memory", "pids", "cpuset", "blkio", "devices", "freezer", "systemd", "unified",
    ] {
        let _ = std::fs::remove_dir(format!("/sys/fs/cgroup/{controller}{cgroup_parent}"));
    }
}

/// What one runtime's streaming server showed: the parts both runtimes must agree on.
#[derive(Debug, PartialEq)]
struct StreamObservations {
    /// Exec with stdin: stdout, stderr, exit code.
    exec_stdin: (String, String, Result<i32, String>),
    /// `id -u` in a container whose image says `User: 1000`.
    exec_user: (String, Result<i32, String>),
    /// Exec with a TTY: the size `stty` saw, whether `tty` named a pts, the exit code.
    exec_tty: (bool, bool, Result<i32, String>),
    /// Whether exec of a missing binary ended in a failure or a non-zero exit.
    exec_missing_fails: bool,
    /// Whether a used stream URL could be opened again.
    url_reusable: bool,
    /// Port-forward to the pod's loopback: what came back over HTTP (body), and whether a
    /// closed port reported an error on its error channel.
    port_forward: (bool, bool),
    /// Whether attach saw the container's running output.
    attach: bool,
    /// A running container's CFS quota and memory limit (from its cgroup, read on the host)
    /// before and after UpdateContainerResources.
    update: [(String, String); 2],
}

async fn exec_url(rt: &mut RuntimeClient, request: cri::ExecRequest) -> String {
    rt.exec(request)
        .await
        .unwrap_or_else(|e| panic!("exec: {e}"))
        .into_inner()
        .url
}

fn sh_exec(id: &str, script: &str, stdin: bool, tty: bool) -> cri::ExecRequest {
    cri::ExecRequest {
        container_id: id.to_owned(),
        cmd: vec!["sh".into(), "-c".into(), script.into()],
        stdin,
        stdout: true,
        stderr: !tty,
        tty,
    }
}

/// Reads a session's frames until its status arrives on channel 3 (v4 servers need not close
/// first), or it closes; bounded to a minute.
async fn until_status(mut session: Session) -> Collected {
    let mut collected = Collected::default();
    let read = async {
        while let Some(frame) = session.next().await {
            let (channel, data) = frame.unwrap();
            collected
                .channels
                .entry(channel)
                .or_default()
                .extend_from_slice(&data);
            if channel == ERROR_CHANNEL {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("the stream ended within a minute");
    collected
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The streaming half of the CRI scenario: exec with stdin and with a TTY, port-forward and
/// attach, through the URLs the runtime hands out, with the protocol a kubelet speaks.
async fn stream_scenario(
    socket: &Path,
    registry: &Registry,
    runtime: &str,
    logs: &Path,
) -> StreamObservations {
    let ScenarioPod {
        mut client,
        image,
        config: sandbox_config,
        id: sandbox,
        cgroup_parent,
    } = scenario_pod(socket, registry, runtime, logs, "streams").await;
    let rt = &mut client.runtime;
    let web = start_container(
        rt,
        &sandbox,
        &sandbox_config,
        sh_container(
            "web",
            &image,
            "echo hello > /tmp/x; exec httpd -f -p 127.0.0.1:7777 -h /tmp",
        ),
        runtime,
    )
    .await;
    let mut user_config = sh_container("user", &image, "exec sleep 3600");
    user_config.linux = None;
    let user = start_container(rt, &sandbox, &sandbox_config, user_config, runtime).await;
    let ticker = start_container(
        rt,
        &sandbox,
        &sandbox_config,
        sh_container(
            "ticker",
            &image,
            "while true; do echo tick; sleep 0.2; done",
        ),
        runtime,
    )
    .await;
    eventually("the web server runs", async || {
        exec_sh(rt, &web, "wget -q -O - http://127.0.0.1:7777/x", 10)
            .await
            .ok()
            .filter(|out| out.exit_code == 0)
    })
    .await;
    let protocols = [V5_PROTOCOL, V4_PROTOCOL];

    let url = exec_url(
        rt,
        sh_exec(
            &web,
            "read line; echo \"got $line\"; echo oops >&2; exit 3",
            true,
            false,
        ),
    )
    .await;
    let mut session = Session::open(&url, &protocols).await.unwrap();
    session.stdin(b"hello\n").await.unwrap();
    let out = until_status(session).await;
    let exec_stdin = (
        text(out.channel(STDOUT_CHANNEL)),
        text(out.channel(STDERR_CHANNEL)),
        exit_code_of(out.channel(ERROR_CHANNEL)),
    );
    let url_reusable = Session::open(&url, &protocols).await.is_ok();

    let url = exec_url(rt, sh_exec(&user, "id -u", false, false)).await;
    let out = until_status(Session::open(&url, &protocols).await.unwrap()).await;
    let exec_user = (
        text(out.channel(STDOUT_CHANNEL)),
        exit_code_of(out.channel(ERROR_CHANNEL)),
    );

    let url = exec_url(
        rt,
        cri::ExecRequest {
            cmd: vec!["sh".into()],
            ..sh_exec(&web, "", true, true)
        },
    )
    .await;
    let mut session = Session::open(&url, &protocols).await.unwrap();
    session
        .resize(TerminalSize {
            width: 100,
            height: 30,
        })
        .await
        .unwrap();
    // A resize and stdin travel apart in some servers: give the resize a head start.
    tokio::time::sleep(Duration::from_millis(300)).await;
    session.stdin(b"stty size; tty; exit 5\n").await.unwrap();
    let out = until_status(session).await;
    let screen = text(out.channel(STDOUT_CHANNEL));
    let exec_tty = (
        screen.contains("30 100"),
        screen.contains("/dev/pts/"),
        exit_code_of(out.channel(ERROR_CHANNEL)),
    );

    let url = exec_url(
        rt,
        cri::ExecRequest {
            cmd: vec!["/no/such/binary".into()],
            ..sh_exec(&web, "", false, false)
        },
    )
    .await;
    let out = until_status(Session::open(&url, &protocols).await.unwrap()).await;
    let exec_missing_fails = exit_code_of(out.channel(ERROR_CHANNEL)) != Ok(0);

    let forward = |port: i32| cri::PortForwardRequest {
        pod_sandbox_id: sandbox.clone(),
        port: vec![port],
    };
    let url = rt
        .port_forward(forward(7777))
        .await
        .unwrap()
        .into_inner()
        .url;
    let mut session = Session::open(&format!("{url}?port=7777"), &[V4_PROTOCOL])
        .await
        .unwrap();
    session
        .send(0, b"GET /x HTTP/1.0\r\nHost: pod\r\n\r\n")
        .await
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(60), session.collect())
        .await
        .expect("port-forward ended within a minute")
        .unwrap();
    let port = 7777u16.to_le_bytes();
    let data = out.channel(0);
    assert!(data.starts_with(&port), "{runtime}: {data:?}");
    let reply = text(&data[2..]);
    let fetched = reply.starts_with("HTTP/1.") && reply.ends_with("hello\n");
    assert!(fetched, "{runtime}: {reply}");
    let url = rt
        .port_forward(forward(7778))
        .await
        .unwrap()
        .into_inner()
        .url;
    let mut session = Session::open(&format!("{url}?port=7778"), &[V4_PROTOCOL])
        .await
        .unwrap();
    let closed_port_error = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(Ok((channel, data))) = session.next().await {
            if channel == 1 && !data.is_empty() && data[..] != 7778u16.to_le_bytes() {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);

    let url = rt
        .attach(cri::AttachRequest {
            container_id: ticker.clone(),
            stdout: true,
            stderr: true,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{runtime}: attach: {e}"))
        .into_inner()
        .url;
    let mut session = Session::open(&url, &protocols).await.unwrap();
    let attach = tokio::time::timeout(Duration::from_secs(30), async {
        let mut seen = Vec::new();
        while let Some(Ok((channel, data))) = session.next().await {
            if channel == STDOUT_CHANNEL {
                seen.extend_from_slice(&data);
                if text(&seen).contains("tick\n") {
                    return true;
                }
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    drop(session);

    // In-place resize: the container's own cgroup (found through an exec, which joins it).
    let cgroups = exec_sh(rt, &user, "cat /proc/self/cgroup", 10)
        .await
        .unwrap();
    let cgroups = text(&cgroups.stdout);
    let cgroup_of = |controller: &str| {
        cgroups
            .lines()
            .find_map(|l| {
                let mut parts = l.splitn(3, ':');
                let (_, names, path) = (parts.next()?, parts.next()?, parts.next()?);
                names
                    .split(',')
                    .any(|n| n == controller)
                    .then(|| format!("/sys/fs/cgroup/{controller}{path}"))
            })
            .unwrap_or_else(|| panic!("{runtime}: no {controller} cgroup in {cgroups}"))
    };
    let limits = || {
        let read = |file: String| {
            std::fs::read_to_string(&file)
                .unwrap_or_else(|e| panic!("{file}: {e}"))
                .trim()
                .to_owned()
        };
        (
            read(format!("{}/cpu.cfs_quota_us", cgroup_of("cpu"))),
            read(format!("{}/memory.limit_in_bytes", cgroup_of("memory"))),
        )
    };
    let before = limits();
    rt.update_container_resources(cri::UpdateContainerResourcesRequest {
        container_id: user.clone(),
        linux: Some(cri::LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 30_000,
            memory_limit_in_bytes: 96 << 20,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{runtime}: update: {e}"));
    let update = [before, limits()];

    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: sandbox.clone(),
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: sandbox,
    })
    .await
    .unwrap();
    remove_cgroup_parent(&cgroup_parent);
    StreamObservations {
        update,
        exec_stdin,
        exec_user,
        exec_tty,
        exec_missing_fails,
        url_reusable,
        port_forward: (fetched, closed_port_error),
        attach,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_scenario_gives_the_same_answers_from_rkube_and_containerd() {
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    push_pod_images(&registry, work.path());

    let rkube = RkubeRuntime::start(&registry);
    let logs = work.path().join("logs-rkube");
    let ours = stream_scenario(&rkube.socket(), &registry, "rkube", &logs).await;
    let expected = StreamObservations {
        exec_stdin: ("got hello\n".into(), "oops\n".into(), Ok(3)),
        exec_user: ("1000\n".into(), Ok(0)),
        exec_tty: (true, true, Ok(5)),
        exec_missing_fails: true,
        url_reusable: false,
        port_forward: (true, true),
        attach: true,
        update: [
            ("-1".into(), "9223372036854771712".into()),
            ("30000".into(), (96u64 << 20).to_string()),
        ],
    };
    assert_eq!(ours, expected, "rkube");

    let pause = format!("{}/library/pause:1", registry.host());
    let containerd = Containerd::start_for_pods(&[registry.host()], &pause);
    let logs = work.path().join("logs-containerd");
    let theirs = stream_scenario(&containerd.socket(), &registry, "containerd", &logs).await;
    assert_eq!(
        theirs,
        ours,
        "containerd and rkube differ: {}",
        containerd.log()
    );
}

/// Pushes `library/layered:v1` (busybox, then a layer with files and a directory, then one
/// deleting a file by whiteout and replacing the directory's contents by an opaque whiteout)
/// and `library/multi:latest` (an index of two platforms whose manifests differ in one file).
fn push_layered_images(registry: &Registry, dir: &Path) {
    let arch = rkube_runtime::image::pull::this_platform().1;
    let mut layout = Layout::new(&dir.join("layered"));
    let busybox = layout.layer(&busybox_entries(&[
        "sh", "sleep", "cat", "ls", "test", "echo",
    ]));
    let files = layout.layer(&[
        Entry::Dir("etc/"),
        Entry::File("etc/keep".into(), b"kept\n".to_vec(), 0o644),
        Entry::File("etc/gone".into(), b"deleted later\n".to_vec(), 0o644),
        Entry::Dir("opt/"),
        Entry::File("opt/old".into(), b"old\n".to_vec(), 0o644),
    ]);
    let deletions = layout.layer(&[
        Entry::Dir("etc/"),
        Entry::File("etc/.wh.gone".into(), Vec::new(), 0o644),
        Entry::Dir("opt/"),
        Entry::File("opt/.wh..wh..opq".into(), Vec::new(), 0o644),
        Entry::File("opt/new".into(), b"new\n".to_vec(), 0o644),
    ]);
    layout.image(
        arch,
        &[busybox.clone(), files, deletions],
        serde_json::json!({"Env": ["PATH=/bin"], "Cmd": ["sleep", "3600"]}),
    );
    registry.push(&layout.finish(), "library/layered:v1");

    let mut layout = Layout::new(&dir.join("multi"));
    let other = if arch == "amd64" { "arm64" } else { "amd64" };
    let ours = layout.layer(&[Entry::File("arch".into(), b"this one\n".to_vec(), 0o644)]);
    let theirs = layout.layer(&[Entry::File("arch".into(), b"the other\n".to_vec(), 0o644)]);
    let config = serde_json::json!({"Env": ["PATH=/bin"], "Cmd": ["sleep", "3600"]});
    layout.image(arch, &[busybox.clone(), ours], config.clone());
    layout.image(other, &[busybox, theirs], config);
    registry.push(&layout.finish(), "library/multi:latest");
}

/// Whiteouts, opaque directories and platform choice, seen from inside containers: what each
/// container's file system shows.
async fn layers_scenario(
    socket: &Path,
    registry: &Registry,
    runtime: &str,
    logs: &Path,
) -> Vec<String> {
    let ScenarioPod {
        mut client,
        config,
        id,
        cgroup_parent,
        ..
    } = scenario_pod(socket, registry, runtime, logs, "layers").await;
    let mut seen = Vec::new();
    for name in ["library/layered:v1", "library/multi:latest"] {
        let image = format!("{}/{name}", registry.host());
        client
            .images
            .pull_image(cri::PullImageRequest {
                image: spec(&image),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{runtime}: pull {name}: {e}"));
        let mut container = sh_container(name.split(['/', ':']).nth(1).unwrap(), &image, "");
        container.command = Vec::new();
        let rt = &mut client.runtime;
        let cid = start_container(rt, &id, &config, container, runtime).await;
        let out = eventually(&format!("{runtime}: {name} runs"), async || {
            exec_sh(
                rt,
                &cid,
                "test -e /etc/gone && echo gone-is-there; cat /etc/keep /arch 2>/dev/null; ls /opt 2>/dev/null; true",
                10,
            )
            .await
            .ok()
            .filter(|o| o.exit_code == 0)
        })
        .await;
        seen.push(text(&out.stdout));
    }
    let rt = &mut client.runtime;
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: id.clone(),
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id })
        .await
        .unwrap();
    remove_cgroup_parent(&cgroup_parent);
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whiteouts_and_platforms_give_the_same_file_systems_on_rkube_and_containerd() {
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    push_pod_images(&registry, work.path());
    push_layered_images(&registry, work.path());

    let rkube = RkubeRuntime::start(&registry);
    let ours = layers_scenario(&rkube.socket(), &registry, "rkube", &work.path().join("l1")).await;
    assert_eq!(ours, ["kept\nnew\n", "this one\n"], "rkube");

    let pause = format!("{}/library/pause:1", registry.host());
    let containerd = Containerd::start_for_pods(&[registry.host()], &pause);
    let theirs = layers_scenario(
        &containerd.socket(),
        &registry,
        "containerd",
        &work.path().join("l2"),
    )
    .await;
    assert_eq!(
        theirs,
        ours,
        "containerd and rkube differ: {}",
        containerd.log()
    );
}

/// What rkube cannot do yet it says so, and streams that cannot work are refused up front.
#[tokio::test]
async fn missing_runtime_calls_answer_unimplemented_and_bad_streams_are_refused() {
    let registry = Registry::start();
    let rkube = RkubeRuntime::start(&registry);
    let mut client = CriClient::connect(rkube.socket()).await.unwrap();
    let err = client
        .runtime
        .checkpoint_container(cri::CheckpointContainerRequest {
            container_id: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    assert!(err.message().contains("CheckpointContainer"), "{err:?}");
    let err = client
        .runtime
        .update_container_resources(cri::UpdateContainerResourcesRequest {
            container_id: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");

    let exec = |container_id: &str, stdout, tty, stderr| cri::ExecRequest {
        container_id: container_id.into(),
        cmd: vec!["sh".into()],
        stdout,
        tty,
        stderr,
        ..Default::default()
    };
    let err = client
        .runtime
        .exec(exec("x", true, false, false))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    let err = client
        .runtime
        .exec(exec("x", false, false, false))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("stdin, stdout, or stderr"),
        "{err:?}"
    );
    let err = client
        .runtime
        .exec(exec("x", true, true, true))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let err = client
        .runtime
        .port_forward(cri::PortForwardRequest {
            pod_sandbox_id: "nope".into(),
            port: vec![80],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");

    // The streaming server: a URL must be opened as a WebSocket with a known token; SPDY,
    // which upstream also speaks, is refused as not implemented.
    let url = {
        let log = std::fs::read_to_string(rkube.dir.path().join("runtime.log")).unwrap();
        let at = log
            .find("http://127.0.0.1:")
            .expect("the log names the stream URL");
        log[at..].split([' ', '"', '\n']).next().unwrap().to_owned()
    };
    let address = url.trim_start_matches("http://").to_owned();
    let ask = async |request: String| {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(&address).await.unwrap();
        tcp.write_all(request.as_bytes()).await.unwrap();
        // Up to the end of the headers: the server may keep the connection open.
        let mut reply = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&reply).contains("\r\n\r\n") {
            let n = tokio::time::timeout(Duration::from_secs(30), tcp.read(&mut buf))
                .await
                .expect("a reply within 30 s")
                .unwrap();
            assert!(
                n > 0,
                "closed before a reply: {}",
                String::from_utf8_lossy(&reply)
            );
            reply.extend_from_slice(&buf[..n]);
        }
        // The body (a one-line reason) follows in the same write or right after.
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(200), tcp.read(&mut buf)).await
        {
            reply.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&reply).into_owned()
    };
    let reply = ask("GET /exec/nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".into()).await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    let reply = ask(
        "GET /exec/nope HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n"
            .into(),
    )
    .await;
    assert!(
        reply.starts_with("HTTP/1.1 501") && reply.contains("SPDY"),
        "{reply}"
    );
    let reply = ask("GET /exec/nope HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: v4.channel.k8s.io\r\n\r\n".into()).await;
    assert!(reply.starts_with("HTTP/1.1 404"), "{reply}");
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

#[test]
fn crictl_runs_inspects_execs_logs_stops_and_removes_pods_and_containers() {
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    push_pod_images(&registry, work.path());
    let rkube = RkubeRuntime::start(&registry);
    let socket = format!("unix://{}", rkube.socket().display());
    let crictl = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_rkube"))
            .args(["crictl", "-r", &socket])
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr,
        )
    };
    let ok = |args: &[&str]| {
        let (code, stdout, stderr) = crictl(args);
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
        stdout
    };
    let image = format!("{}/library/busybox:pods", registry.host());
    ok(&["pull", &image]);

    // crictl's own file formats: a YAML pod config, a JSON container config.
    let logs = work.path().join("pod-logs");
    let pod_config = work.path().join("pod.yaml");
    std::fs::write(
        &pod_config,
        format!(
            "metadata:\n  name: crictl-pod\n  namespace: default\n  uid: crictl-uid\n  attempt: 1\nlog_directory: {}\nlinux: {{}}\n",
            logs.display()
        ),
    )
    .unwrap();
    let container_config = work.path().join("container.json");
    std::fs::write(
        &container_config,
        serde_json::json!({
            "metadata": {"name": "talker"},
            "image": {"image": image},
            "command": ["sh", "-c", "echo one; echo two >&2; echo three; exec sleep 3600"],
            "log_path": "talker.log",
            "linux": {"security_context": {"run_as_user": {"value": 0}}},
        })
        .to_string(),
    )
    .unwrap();

    let pod = ok(&["runp", pod_config.to_str().unwrap()])
        .trim()
        .to_owned();
    assert_eq!(pod.len(), 64, "{pod}");
    let pods = ok(&["pods"]);
    let mut lines = pods.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "POD",
            "ID",
            "CREATED",
            "STATE",
            "NAME",
            "NAMESPACE",
            "ATTEMPT",
            "RUNTIME"
        ]
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(row[0], &pod[..13]);
    assert!(
        row.contains(&"Ready") && row.contains(&"crictl-pod"),
        "{pods}"
    );
    assert_eq!(ok(&["pods", "-q", "--name", "crictl-pod"]).trim(), pod);
    assert_eq!(ok(&["pods", "-q", "--name", "other"]).trim(), "");

    let container = ok(&[
        "create",
        &pod[..12],
        container_config.to_str().unwrap(),
        pod_config.to_str().unwrap(),
    ])
    .trim()
    .to_owned();
    assert_eq!(ok(&["ps", "-q"]).trim(), "", "created is not running");
    assert_eq!(ok(&["ps", "-a", "-q"]).trim(), container);
    ok(&["start", &container[..12]]);
    let ps = ok(&["ps"]);
    assert!(
        ps.contains("Running") && ps.contains("talker") && ps.contains("crictl-pod"),
        "{ps}"
    );

    let (code, stdout, _) = crictl(&["exec", &container[..12], "sh", "-c", "echo hi; exit 5"]);
    assert_eq!((code, stdout.as_str()), (Some(5), "hi\n"));
    let (code, stdout, _) = crictl(&["exec", "-s", &container, "sh", "-c", "echo hi; exit 6"]);
    assert_eq!((code, stdout.as_str()), (Some(6), "hi\n"));
    // Streaming: stdin from a pipe (so no raw mode), with and without a TTY.
    let piped = |args: &[&str], input: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rkube"))
            .args(["crictl", "-r", &socket])
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = piped(&["exec", "-i", &container, "cat"], "piped\n");
    assert_eq!((code, stdout.as_str()), (Some(0), "piped\n"), "{stderr}");
    let (code, stdout, stderr) = piped(&["exec", "-it", &container, "sh"], "tty; exit 7\n");
    assert_eq!(code, Some(7), "{stdout} {stderr}");
    assert!(stdout.contains("/dev/pts/"), "{stdout}");

    let started = Instant::now();
    let out = loop {
        let out = Command::new(env!("CARGO_BIN_EXE_rkube"))
            .args(["crictl", "-r", &socket, "logs", &container])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).contains("three")
            || started.elapsed() > Duration::from_secs(30)
        {
            break out;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one\nthree\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "two\n");
    // The streams are separate pipes, so which of "two" and "three" is last is up to the shim.
    let (_, stdout, stderr) = crictl(&["logs", "--tail", "1", &container]);
    let last = format!("{stdout}{stderr}");
    assert!(last == "three\n" || last == "two\n", "{last:?}");

    let inspect: serde_json::Value = serde_json::from_str(&ok(&["inspect", &container])).unwrap();
    assert_eq!(inspect["status"]["metadata"]["name"], "talker");
    assert_eq!(inspect["status"]["state"], 1, "running");
    assert!(
        inspect["info"]["pid"].as_i64().is_some_and(|p| p > 0),
        "{inspect}"
    );
    let inspectp: serde_json::Value = serde_json::from_str(&ok(&["inspectp", &pod])).unwrap();
    assert_eq!(inspectp["status"]["metadata"]["uid"], "crictl-uid");

    let stats = ok(&["stats"]);
    assert!(
        stats.contains("talker") && stats.contains("CPU %"),
        "{stats}"
    );

    ok(&["stop", &container]);
    assert!(!ok(&["stats"]).contains("talker"), "running ones only");
    assert!(ok(&["stats", "-a"]).contains("talker"));
    let inspect: serde_json::Value = serde_json::from_str(&ok(&["inspect", &container])).unwrap();
    assert_eq!(inspect["status"]["state"], 2, "exited");
    assert_eq!(inspect["status"]["exit_code"], 137);
    ok(&["rm", &container]);
    assert_eq!(ok(&["ps", "-a", "-q"]).trim(), "");
    ok(&["stopp", &pod]);
    assert!(ok(&["pods"]).contains("NotReady"));
    ok(&["rmp", &pod]);
    assert_eq!(ok(&["pods", "-q"]).trim(), "");

    // Bad input: a clear message, no panic.
    let (code, _, stderr) = crictl(&["start", "feedface"]);
    assert!(
        code != Some(0) && stderr.contains("no container with ID"),
        "{stderr}"
    );
    std::fs::write(
        &container_config,
        r#"{"metadata": {"name": "x"}, "comand": ["top"]}"#,
    )
    .unwrap();
    let (code, _, stderr) = crictl(&[
        "run",
        container_config.to_str().unwrap(),
        pod_config.to_str().unwrap(),
    ]);
    assert!(code != Some(0) && stderr.contains("comand"), "{stderr}");
}
