//! The container runtime benchmarks of issue 5 (`bench/runtime`), each beside its peer measured
//! in the same run, rounds of the two sides interleaved so that load drift hits both:
//!
//! 1. create + start + wait for exit + remove of a busybox container running `true`: rkube's
//!    library API (`rkube_runtime::Runtime`, with the `rkube-shim` executable `rkube` embeds
//!    creating the container and staying as its monitor, as in production) against Debian's
//!    `runc` driven directly on the same OCI spec (the `config.json` rkube wrote for such a
//!    container: the same sandbox namespaces joined, the same seccomp profile, mounts and cgroup
//!    parent) and the same kind of root: an overlay of the same unpacked layer with a fresh
//!    upper dir, mounted, unmounted and discarded by the same functions (`rootfs::mount`,
//!    `rootfs::unmount_root`, `Trash::discard`, which deletes directories in the background on
//!    both sides). runc's side is timed as mount + `config.json` + `runc run` (create, start,
//!    wait, delete) + unmount + discard. rkube's rounds are also timed by phase, to show where
//!    the time goes.
//! 2. a pod sandbox and one container (`sleep 3600`) until `ContainerStatus` says RUNNING:
//!    `rkube runtime` against containerd + runc, through the same CRI client, the image pulled
//!    beforehand; teardown is not timed. Pods get their own network namespace: containerd's
//!    time includes its CNI plugins (the test plugin and loopback), rkube's only bringing up
//!    loopback (its networking hook does no more yet).
//! 3. memory: the RSS of `rkube runtime` idle (after start, and after figure 2's pods are gone)
//!    and of a running container's shim (`rkube-shim shim-monitor`, the small executable `rkube`
//!    embeds and writes under its data directory) and pod holder (`rkube-shim pause`),
//!    beside containerd's and its `containerd-shim-runc-v2`'s.
//!
//! Needs root, Debian's runc, containerd, docker-registry, skopeo, busybox-static and
//! containernetworking-plugins (scripts/deps installs them).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_cri::v1 as cri;
use rkube_runtime::cri::client::CriClient;
use rkube_runtime::image::pull::{Puller, RegistriesConfig, this_platform};
use rkube_runtime::rootfs::{self, LayerStore};
use rkube_runtime::trash::Trash;
use rkube_runtime::{ContainerConfig, ContainerState, Runtime, RuntimeConfig, SandboxConfig};
use rkube_testsupport::containerd::Containerd;
use rkube_testsupport::registry::{Layout, Registry, busybox_entries, push_pause_image};

/// The binary under test; also the runtime's `shim` (container creation).
const RKUBE: &str = env!("CARGO_BIN_EXE_rkube");
/// The small executable `rkube` embeds (its build script builds it): the runtime's shim monitor
/// and pod holder. `rkube runtime` runs its copy under the data directory; figure 1 runs it here.
const RKUBE_SHIM: &str = env!("RKUBE_SHIM_EXE");
/// Debian's runc, which containerd also uses.
const RUNC: &str = "/usr/sbin/runc";
/// Rounds of figure 1, per side.
const CONTAINER_ROUNDS: usize = 20;
/// Rounds of figure 2, per side.
const POD_ROUNDS: usize = 10;
/// How long a container or pod may take before the benchmark gives up rather than hang.
const PATIENCE: Duration = Duration::from_secs(60);

fn main() {
    assert!(
        fs::read_to_string("/proc/self/status")
            .is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:\t0\t"))),
        "the runtime benchmark needs root (mounts, namespaces, cgroups)"
    );
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let registry = Registry::start();
    // Overlay upper dirs need a real filesystem (not tmpfs); state goes on /run's tmpfs, as in
    // production (rkube's `/run/rkube/runtime`, runc's `/run/runc`).
    let work = tempfile::tempdir_in("/var/tmp").expect("work dir");
    let state = tempfile::tempdir_in("/run").expect("state dir");
    let images = push_images(&registry, work.path());

    let (ours, phases, runc) = containers(&tokio, &registry, &images, work.path(), state.path());
    let cri = tokio.block_on(pods(&registry, &images, work.path(), state.path()));
    remove_cgroups(&cgroup_root());

    println!("| figure | rkube | peer | ratio rkube/peer | goal | met? |");
    println!("|---|---:|---:|---:|---|---|");
    let row = |figure: &str, a: Duration, b: Duration, goal: Option<f64>| {
        let ratio = a.as_secs_f64() / b.as_secs_f64();
        println!(
            "| {figure} | {:.1} ms | {:.1} ms | {ratio:.2} | {} | {} |",
            ms(a),
            ms(b),
            goal.map(|g| format!("≤ {g}×")).unwrap_or_default(),
            goal.map(|g| if ratio <= g { "yes" } else { "no" })
                .unwrap_or_default(),
        );
    };
    let (mut ours_sorted, mut runc_sorted) = (ours.clone(), runc.clone());
    row(
        &format!(
            "1. container create+start+wait+remove (`true`), median of {CONTAINER_ROUNDS}, vs runc"
        ),
        percentile(&mut ours_sorted, 50),
        percentile(&mut runc_sorted, 50),
        Some(0.3),
    );
    row(
        "1. same, p90",
        percentile(&mut ours_sorted, 90),
        percentile(&mut runc_sorted, 90),
        None,
    );
    let (mut a, mut b) = (cri.ours.clone(), cri.theirs.clone());
    row(
        &format!("2. CRI sandbox + container to RUNNING, median of {POD_ROUNDS}, vs containerd"),
        percentile(&mut a, 50),
        percentile(&mut b, 50),
        Some(0.5),
    );
    row(
        "2. same, p90",
        percentile(&mut a, 90),
        percentile(&mut b, 90),
        None,
    );
    let mem = &cri.memory;
    let mem_row = |figure: &str, a: &Rss, b: Option<&Rss>, goal_mib: Option<f64>| {
        println!(
            "| {figure} | {a} | {} | {} | {} | {} |",
            b.map(Rss::to_string).unwrap_or_else(|| "—".into()),
            b.map(|b| format!("{:.2}", a.total_kib as f64 / b.total_kib as f64))
                .unwrap_or_default(),
            goal_mib.map(|g| format!("≤ {g} MiB")).unwrap_or_default(),
            goal_mib
                .map(|g| if a.mib() <= g { "yes" } else { "no" })
                .unwrap_or_default(),
        );
    };
    mem_row(
        "3. runtime RSS idle, after start (peer: containerd)",
        &mem.rkube_started,
        Some(&mem.containerd_started),
        Some(15.0),
    );
    mem_row(
        "3. runtime RSS idle, after the pods of 2 are gone",
        &mem.rkube_after,
        Some(&mem.containerd_after),
        Some(15.0),
    );
    mem_row(
        "3. shim of a running container (peer: containerd-shim-runc-v2)",
        &mem.rkube_shim,
        Some(&mem.containerd_shim),
        Some(2.0),
    );
    mem_row(
        "3. pod holder (`rkube-shim pause`)",
        &mem.rkube_holder,
        None,
        None,
    );

    let all = |times: &[Duration]| {
        times
            .iter()
            .map(|t| format!("{:.1}", ms(*t)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("\nrounds, in the order run (ms):");
    println!("1. rkube: {}", all(&ours));
    println!("1. runc: {}", all(&runc));
    let phase_medians: Vec<String> = PHASES
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut times: Vec<Duration> = phases.iter().map(|p| p[i]).collect();
            format!("{name} {:.1}", ms(percentile(&mut times, 50)))
        })
        .collect();
    println!(
        "1. rkube's phases, medians (ms): {}",
        phase_medians.join(", ")
    );
    println!("2. rkube: {}", all(&cri.ours));
    println!("2. containerd: {}", all(&cri.theirs));
}

/// The cgroup every container, pod and sandbox of this run goes under.
fn cgroup_root() -> String {
    format!("/rkube-bench-{}", std::process::id())
}

/// Removes the benchmark's cgroup tree from every hierarchy: the runtimes leave the parents they
/// were given, and runc also makes its cgroups in the named `systemd` and the v2 `unified`
/// hierarchies, which rkube's cgroup driver does not use.
fn remove_cgroups(root: &str) {
    fn remove_tree(dir: &Path) {
        for child in fs::read_dir(dir).into_iter().flatten().flatten() {
            if child.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&child.path());
            }
        }
        let _ = fs::remove_dir(dir);
    }
    for hierarchy in fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        remove_tree(&hierarchy.path().join(root.trim_start_matches('/')));
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The `p`th percentile (nearest rank) of `times`, which it sorts.
fn percentile(times: &mut [Duration], p: usize) -> Duration {
    times.sort();
    times[(times.len() * p).div_ceil(100).clamp(1, times.len()) - 1]
}

/// The names (in `registry`) of the two images: busybox with `true` and `sleep`, and a pause
/// image for containerd's sandboxes (rkube needs none).
struct Images {
    busybox: String,
    pause: String,
}

fn push_images(registry: &Registry, dir: &Path) -> Images {
    let arch = this_platform().1;
    let mut layout = Layout::new(&dir.join("busybox"));
    let layer = layout.layer(&busybox_entries(&["sh", "true", "sleep"]));
    layout.image(
        arch,
        &[layer],
        serde_json::json!({"Env": ["PATH=/bin"], "Cmd": ["sh"]}),
    );
    registry.push(&layout.finish(), "bench/busybox:1");
    push_pause_image(registry, dir, arch, "bench/pause:1");
    Images {
        busybox: format!("{}/bench/busybox:1", registry.host()),
        pause: format!("{}/bench/pause:1", registry.host()),
    }
}

/// A registries config that reaches the test registry over plain HTTP.
fn registries_yaml(registry: &Registry) -> String {
    format!(
        "mirrors:\n  \"{host}\":\n    endpoint: [\"http://{host}\"]\n",
        host = registry.host()
    )
}

// ---- figure 1 ----

/// A library runtime that removes its sandboxes and containers when dropped, so a failed run
/// leaves no process or mount behind.
struct LibRuntime(Runtime);

impl Drop for LibRuntime {
    fn drop(&mut self) {
        for c in self.0.list().unwrap_or_default() {
            let _ = self.0.remove(&c.id);
        }
        for s in self.0.list_sandboxes().unwrap_or_default() {
            let _ = self.0.remove_sandbox(&s.id);
        }
    }
}

/// The phases of an rkube round in figure 1, timed apart to show where the time goes.
const PHASES: [&str; 4] = ["create", "start", "wait for exit", "remove"];

/// Figure 1: the rounds of rkube (totals and phases) and of runc, in the order run.
fn containers(
    tokio: &tokio::runtime::Runtime,
    registry: &Registry,
    images: &Images,
    work: &Path,
    state: &Path,
) -> (Vec<Duration>, Vec<[Duration; 4]>, Vec<Duration>) {
    let root = work.join("lib");
    let mut config = RuntimeConfig::new(&root, Path::new(RKUBE));
    config.lean_helper = PathBuf::from(RKUBE_SHIM);
    config.state_dir = state.join("lib");
    config.cgroup_root = format!("{}/lib", cgroup_root());
    let runtime = LibRuntime(Runtime::open(config).expect("open the runtime"));
    let rt = &runtime.0;
    let mut registries = RegistriesConfig::parse(&registries_yaml(registry)).expect("registries");
    registries.disable_default_endpoint = true;
    let puller = Puller::new(rt.images().clone(), registries).expect("puller");
    let pulled = tokio
        .block_on(puller.pull(&images.busybox, None))
        .expect("pull busybox");
    let sandbox = rt
        .run_sandbox(SandboxConfig {
            name: "bench".into(),
            namespace: "default".into(),
            uid: "bench".into(),
            ..Default::default()
        })
        .expect("run sandbox");
    let config = ContainerConfig {
        name: "true".into(),
        image: images.busybox.clone(),
        command: vec!["true".into()],
        ..Default::default()
    };

    // Warm-up, not timed: unpacks the layer, and leaves the spec rkube wrote for runc to run.
    let id = rt
        .create_container(&sandbox, config.clone())
        .expect("create");
    let spec_path = root.join("containers").join(&id).join("config.json");
    let spec: serde_json::Value =
        serde_json::from_slice(&fs::read(&spec_path).expect("rkube's config.json")).expect("spec");
    rt.start(&id).expect("start");
    wait_exited(rt, &id);
    rt.remove(&id).expect("remove");
    let lowers = LayerStore::open(&root.join("layers"))
        .and_then(|layers| layers.prepare(rt.images(), &pulled.manifest))
        .expect("the unpacked layer");
    let pod_cgroup = rt.sandbox_status(&sandbox).expect("sandbox").cgroup;
    let runc = Runc {
        spec,
        lowers,
        root: state.join("runc"),
        bundles: work.join("runc"),
        pod_cgroup,
        trash: Trash::open(&work.join("runc-trash")).expect("trash"),
    };
    runc.round("warm-up");

    let (mut ours, mut phases, mut theirs) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..CONTAINER_ROUNDS {
        let started = Instant::now();
        let id = rt
            .create_container(&sandbox, config.clone())
            .expect("create");
        let created = Instant::now();
        rt.start(&id).expect("start");
        let running = Instant::now();
        let exit = wait_exited(rt, &id);
        let exited = Instant::now();
        rt.remove(&id).expect("remove");
        let removed = Instant::now();
        ours.push(removed - started);
        phases.push([
            created - started,
            running - created,
            exited - running,
            removed - exited,
        ]);
        assert_eq!(exit, Some(0), "rkube: `true` failed");
        theirs.push(runc.round(&format!("bench-{round}")));
        eprintln!(
            "  container round {round}: rkube {:.1} ms, runc {:.1} ms",
            ms(ours[round]),
            ms(theirs[round])
        );
    }
    rt.remove_sandbox(&sandbox).expect("remove sandbox");
    (ours, phases, theirs)
}

/// Polls the container's status until it exited (every 100 µs: a poll's delay must stay small
/// beside a figure of a few milliseconds; `runc run` waits for its child directly); returns its
/// exit code.
fn wait_exited(rt: &Runtime, id: &str) -> Option<i32> {
    let started = Instant::now();
    loop {
        let status = rt.status(id).expect("status");
        if status.state == ContainerState::Exited {
            return status.exit_code;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "{id} did not exit: {status:?}"
        );
        std::thread::sleep(Duration::from_micros(100));
    }
}

/// runc on rkube's spec and layer: each round is a bundle of its own.
struct Runc {
    /// rkube's `config.json` for the same container.
    spec: serde_json::Value,
    /// The unpacked image layer(s), overlay lower dirs.
    lowers: Vec<PathBuf>,
    /// runc's state directory (`--root`).
    root: PathBuf,
    /// Where the bundles go.
    bundles: PathBuf,
    /// The sandbox's cgroup: each container's goes under it, as rkube's does.
    pod_cgroup: String,
    /// Removed bundles go here and are deleted in the background, as rkube's container
    /// directories are (the same code).
    trash: Trash,
}

impl Runc {
    /// One timed round: overlay root, `config.json`, `runc run` (create, start, wait for exit,
    /// delete), unmount and remove.
    fn round(&self, id: &str) -> Duration {
        let bundle = self.bundles.join(id);
        let mut spec = self.spec.clone();
        spec["root"]["path"] = "rootfs".into();
        spec["linux"]["cgroupsPath"] = format!("{}/{id}", self.pod_cgroup).into();
        let started = Instant::now();
        fs::create_dir_all(&bundle).expect("bundle dir");
        rootfs::mount(&self.lowers, &bundle).expect("overlay root");
        fs::write(
            bundle.join("config.json"),
            serde_json::to_vec(&spec).expect("spec"),
        )
        .expect("config.json");
        let out = Command::new(RUNC)
            .arg("--root")
            .arg(&self.root)
            .args(["run", "--bundle"])
            .arg(&bundle)
            .arg(id)
            .stdin(Stdio::null())
            .output()
            .expect("run runc");
        rootfs::unmount_root(&bundle).expect("unmount");
        self.trash.discard(&bundle).expect("remove bundle");
        let took = started.elapsed();
        assert!(
            out.status.success(),
            "runc run: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        took
    }
}

// ---- figures 2 and 3 ----

/// Figure 2's rounds, in the order run, and figure 3.
struct CriFigures {
    ours: Vec<Duration>,
    theirs: Vec<Duration>,
    memory: Memory,
}

struct Memory {
    rkube_started: Rss,
    rkube_after: Rss,
    rkube_shim: Rss,
    rkube_holder: Rss,
    containerd_started: Rss,
    containerd_after: Rss,
    containerd_shim: Rss,
}

/// `rkube runtime` on a socket of its own, with its own data, state and cgroup root.
struct RkubeRuntime {
    child: Child,
    data: PathBuf,
    socket: PathBuf,
}

impl RkubeRuntime {
    fn start(registry: &Registry, work: &Path, state: &Path) -> RkubeRuntime {
        let data = work.join("rkube-data");
        fs::create_dir_all(&data).expect("data dir");
        fs::write(data.join("registries.yaml"), registries_yaml(registry)).expect("registries");
        let socket = work.join("rkube-cri.sock");
        let child = Command::new(RKUBE)
            .arg("runtime")
            .arg("--data-dir")
            .arg(&data)
            .arg("--address")
            .arg(format!("unix://{}", socket.display()))
            .arg("--state-dir")
            .arg(state.join("cri"))
            .arg("--cgroup-root")
            .arg(format!("{}/cri", cgroup_root()))
            .stdout(Stdio::null())
            .stderr(fs::File::create(work.join("rkube-runtime.log")).expect("log"))
            .spawn()
            .expect("start rkube runtime");
        let started = Instant::now();
        while !socket.exists() {
            assert!(started.elapsed() < PATIENCE, "rkube runtime did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        RkubeRuntime {
            child,
            data,
            socket,
        }
    }
}

impl Drop for RkubeRuntime {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CRI runtime under test and what the benchmark needs to know about it.
struct Peer {
    name: &'static str,
    client: CriClient,
    /// Pods get cgroups under here (a kubelet gives each pod its own parent).
    cgroup_parent: String,
    logs: PathBuf,
}

async fn pods(registry: &Registry, images: &Images, work: &Path, state: &Path) -> CriFigures {
    let rkube = RkubeRuntime::start(registry, work, state);
    let mut ours = Peer {
        name: "rkube",
        client: CriClient::connect(&rkube.socket).await.expect("connect"),
        cgroup_parent: format!("{}/cri-rkube", cgroup_root()),
        logs: work.join("logs-rkube"),
    };
    version(&mut ours).await;
    settle().await;
    let rkube_started = Rss::of(rkube.child.id());

    let containerd = Containerd::start_for_pods(&[registry.host()], &images.pause);
    let containerd_pid = find_process(|args| {
        args.first().is_some_and(|a| a.ends_with("/containerd"))
            && args
                .iter()
                .any(|a| a.starts_with(&*containerd.dir().to_string_lossy()))
    })
    .expect("the containerd process");
    let mut theirs = Peer {
        name: "containerd",
        client: CriClient::connect(containerd.socket())
            .await
            .expect("connect"),
        cgroup_parent: format!("{}/cri-containerd", cgroup_root()),
        logs: work.join("logs-containerd"),
    };
    version(&mut theirs).await;
    settle().await;
    let containerd_started = Rss::of(containerd_pid);

    for peer in [&mut ours, &mut theirs] {
        pull(peer, &images.busybox).await;
    }
    // containerd's sandbox image, pulled beforehand as a node would have it.
    pull(&mut theirs, &images.pause).await;
    // A warm-up pod each, not timed.
    for peer in [&mut ours, &mut theirs] {
        let pod = Pod::run(peer, &images.busybox, "warm-up").await;
        pod.remove(peer).await;
    }

    let mut figures = CriFigures {
        ours: Vec::new(),
        theirs: Vec::new(),
        memory: Memory {
            rkube_started,
            containerd_started,
            rkube_after: Rss::default(),
            rkube_shim: Rss::default(),
            rkube_holder: Rss::default(),
            containerd_after: Rss::default(),
            containerd_shim: Rss::default(),
        },
    };
    for round in 0..POD_ROUNDS {
        let name = format!("pod-{round}");
        for (peer, times) in [
            (&mut ours, &mut figures.ours),
            (&mut theirs, &mut figures.theirs),
        ] {
            let pod = Pod::run(peer, &images.busybox, &name).await;
            times.push(pod.took);
            pod.remove(peer).await;
        }
        eprintln!(
            "  pod round {round}: rkube {:.1} ms, containerd {:.1} ms",
            ms(figures.ours[round]),
            ms(figures.theirs[round])
        );
    }

    // Memory with one pod running on each.
    let pod = Pod::run(&mut ours, &images.busybox, "memory").await;
    settle().await;
    let shim = find_process(|args| {
        args.get(1).is_some_and(|a| a == "shim-monitor")
            && args.get(2).is_some_and(|a| a.ends_with(&pod.container))
    })
    .expect("the container's shim-monitor");
    figures.memory.rkube_shim = Rss::of(shim);
    figures.memory.rkube_holder = Rss::of(holder_pid(&rkube.data, &pod.container));
    pod.remove(&mut ours).await;
    let pod = Pod::run(&mut theirs, &images.busybox, "memory").await;
    settle().await;
    let shim = find_process(|args| {
        args.first()
            .is_some_and(|a| a.ends_with("containerd-shim-runc-v2"))
            && args
                .windows(2)
                .any(|w| w[0] == "-id" && w[1] == pod.sandbox)
    })
    .expect("the pod's containerd-shim-runc-v2");
    figures.memory.containerd_shim = Rss::of(shim);
    pod.remove(&mut theirs).await;

    settle().await;
    figures.memory.rkube_after = Rss::of(rkube.child.id());
    figures.memory.containerd_after = Rss::of(containerd_pid);
    figures
}

/// Lets a just-started process or pod finish what it does in the background before its memory
/// is read.
async fn settle() {
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// The first CRI call: the runtime answers, so it is up.
async fn version(peer: &mut Peer) {
    peer.client
        .runtime
        .version(cri::VersionRequest {
            version: "v1".into(),
        })
        .await
        .unwrap_or_else(|e| panic!("{}: version: {e}", peer.name));
}

async fn pull(peer: &mut Peer, image: &str) {
    peer.client
        .images
        .pull_image(cri::PullImageRequest {
            image: Some(image_spec(image)),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{}: pull {image}: {e}", peer.name));
}

fn image_spec(image: &str) -> cri::ImageSpec {
    cri::ImageSpec {
        image: image.to_owned(),
        ..Default::default()
    }
}

/// The pod's own network and IPC namespaces; each container its own PID namespace (rkube has
/// no pod-wide one yet).
fn namespaces() -> Option<cri::NamespaceOption> {
    Some(cri::NamespaceOption {
        network: cri::NamespaceMode::Pod as i32,
        pid: cri::NamespaceMode::Container as i32,
        ipc: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    })
}

/// A pod with one running `sleep 3600` container.
struct Pod {
    sandbox: String,
    container: String,
    /// From the `RunPodSandbox` call to the status saying RUNNING.
    took: Duration,
}

impl Pod {
    async fn run(peer: &mut Peer, image: &str, name: &str) -> Pod {
        let who = peer.name;
        let config = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: name.into(),
                uid: format!("uid-{name}"),
                namespace: "default".into(),
                attempt: 0,
            }),
            hostname: "bench".into(),
            log_directory: peer.logs.join(name).display().to_string(),
            linux: Some(cri::LinuxPodSandboxConfig {
                cgroup_parent: format!("{}/{name}", peer.cgroup_parent),
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: namespaces(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let container = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: "sleep".into(),
                attempt: 0,
            }),
            image: Some(image_spec(image)),
            command: vec!["sleep".into(), "3600".into()],
            log_path: "sleep/0.log".into(),
            linux: Some(cri::LinuxContainerConfig {
                security_context: Some(cri::LinuxContainerSecurityContext {
                    namespace_options: namespaces(),
                    ..Default::default()
                }),
                resources: None,
            }),
            ..Default::default()
        };
        let rt = &mut peer.client.runtime;
        let started = Instant::now();
        let sandbox = rt
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .unwrap_or_else(|e| panic!("{who}: run sandbox: {e}"))
            .into_inner()
            .pod_sandbox_id;
        let id = rt
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: sandbox.clone(),
                config: Some(container),
                sandbox_config: Some(config),
            })
            .await
            .unwrap_or_else(|e| panic!("{who}: create container: {e}"))
            .into_inner()
            .container_id;
        rt.start_container(cri::StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("{who}: start container: {e}"));
        loop {
            let status = rt
                .container_status(cri::ContainerStatusRequest {
                    container_id: id.clone(),
                    verbose: false,
                })
                .await
                .unwrap_or_else(|e| panic!("{who}: container status: {e}"))
                .into_inner()
                .status
                .expect("a status");
            if status.state == cri::ContainerState::ContainerRunning as i32 {
                break;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "{who}: not running: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Pod {
            took: started.elapsed(),
            sandbox,
            container: id,
        }
    }

    /// Stops the container at once (SIGKILL), then stops and removes the sandbox.
    async fn remove(self, peer: &mut Peer) {
        let (who, rt) = (peer.name, &mut peer.client.runtime);
        rt.stop_container(cri::StopContainerRequest {
            container_id: self.container,
            timeout: 0,
        })
        .await
        .unwrap_or_else(|e| panic!("{who}: stop container: {e}"));
        rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: self.sandbox.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("{who}: stop sandbox: {e}"));
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: self.sandbox,
        })
        .await
        .unwrap_or_else(|e| panic!("{who}: remove sandbox: {e}"));
    }
}

/// The pid of the pod holder whose network namespace the container joined (from the spec
/// rkube wrote for it).
fn holder_pid(data: &Path, container: &str) -> u32 {
    let spec_path = data
        .join("agent/containers")
        .join(container)
        .join("config.json");
    let spec: serde_json::Value =
        serde_json::from_slice(&fs::read(&spec_path).expect("the container's spec")).expect("spec");
    spec["linux"]["namespaces"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|ns| ns["type"] == "network")
        .find_map(|ns| {
            ns["path"]
                .as_str()?
                .strip_prefix("/proc/")?
                .split('/')
                .next()?
                .parse()
                .ok()
        })
        .expect("the holder's network namespace in the spec")
}

/// The first process whose command line satisfies `matches`.
fn find_process(matches: impl Fn(&[String]) -> bool) -> Option<u32> {
    fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let cmdline = fs::read(entry.path().join("cmdline")).ok()?;
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        matches(&args).then_some(pid)
    })
}

/// A process's resident memory, from `/proc/<pid>/status`, and the part of it no other process
/// shares (`smaps_rollup`'s private pages): file pages of a binary that other processes also map
/// count in every one's RSS, but only once in the machine's memory.
#[derive(Default)]
struct Rss {
    total_kib: u64,
    anon_kib: u64,
    file_kib: u64,
    private_kib: u64,
}

impl Rss {
    fn of(pid: u32) -> Rss {
        let read = |file: &str| {
            fs::read_to_string(format!("/proc/{pid}/{file}"))
                .unwrap_or_else(|e| panic!("process {pid}: {e}"))
        };
        let (status, smaps) = (read("status"), read("smaps_rollup"));
        let kib = |text: &str, key: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
                .unwrap_or(0)
        };
        Rss {
            total_kib: kib(&status, "VmRSS:"),
            anon_kib: kib(&status, "RssAnon:"),
            file_kib: kib(&status, "RssFile:") + kib(&status, "RssShmem:"),
            private_kib: kib(&smaps, "Private_Clean:") + kib(&smaps, "Private_Dirty:"),
        }
    }

    fn mib(&self) -> f64 {
        self.total_kib as f64 / 1024.0
    }
}

impl std::fmt::Display for Rss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.1} MiB ({:.1} anon + {:.1} file; {:.1} private)",
            self.mib(),
            self.anon_kib as f64 / 1024.0,
            self.file_kib as f64 / 1024.0,
            self.private_kib as f64 / 1024.0
        )
    }
}
