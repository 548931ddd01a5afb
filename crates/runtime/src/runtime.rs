//! [`Runtime`]: pod sandboxes and containers on this node, the API the CRI server wraps.
//!
//! Everything the runtime knows is on disk, so a new `Runtime` (after a restart of the process)
//! re-adopts what the previous one left: a sandbox is `sandboxes/<id>/sandbox.json` plus its
//! holder process, a container is `containers/<id>/container.json` plus its shim, which writes
//! `exit.json` when the container ends. Status is computed from those files each time it is
//! asked for; nothing is cached that a restart could lose.
//!
//! ```text
//! <root>/images/                image store (blobs, names)
//! <root>/layers/<chain>/fs      unpacked layers, shared (see rootfs)
//! <root>/sandboxes/<id>/        sandbox.json, hosts, resolv.conf, hostname, shm/, pause.log
//! <root>/containers/<id>/       container.json, config.json (OCI bundle), shim.json,
//!                               exit.json, exec.fifo, upper/ work/ rootfs/, container.log,
//!                               shim.log
//! <root>/seccomp/<sha256>.bpf   compiled seccomp profiles
//! <root>/trash/                 removed containers' directories, being deleted
//! <state_dir>/<id>/             libcontainer's state, which its exec reads (under /run)
//! ```
//!
//! Calls block (they wait for processes and the filesystem); an async server wraps them in
//! `spawn_blocking`.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::net::IpAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::cgroups::{CgroupDriver, CgroupError, CgroupUsage, CgroupValue, Cgroups};
use crate::exec::{ExecArgs, ExecOutcome, read_outcome};
use crate::image::archive::{ArchiveError, ImageStore};
use crate::image::blobs::Digest;
use crate::rootfs::{self, LayerStore, RootfsError};
use crate::sandbox::{
    LoopbackOnly, NetworkHook, NetworkStatus, SandboxConfig, SandboxConfigError, SandboxNetwork,
    check_hostname, check_sysctls, hosts_file, pause_args, resolv_conf,
};
use crate::shim::{
    ExitRecord, ShimConfig, ShimReport, now_ns, read_exit, write_atomic, write_durable,
};
use crate::spec::{
    ContainerConfig, Resources, SandboxContext, SpecError, SpecInputs, build_spec, resolve_args,
};
use crate::trash::Trash;

/// How old a container directory without a record must be to be an orphan.
const ORPHAN_AGE: Duration = Duration::from_secs(60);

/// Serializes the libcontainer calls that change the process-wide working directory.
static CHDIR: Mutex<()> = Mutex::new(());

/// How long a killed container may take to be reported exited before `stop` gives up.
const KILL_WAIT: Duration = Duration::from_secs(30);

/// Errors from runtime operations, one variant per failed step.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A directory or file of the runtime's own could not be used.
    #[error("{step} {path}")]
    Io {
        /// What was being done.
        step: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A state file does not parse.
    #[error("state file {path} is corrupt")]
    CorruptState {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// Opening the image store failed.
    #[error("opening the image store")]
    Images(#[source] ArchiveError),
    /// Cgroup setup or teardown failed.
    #[error("cgroups")]
    Cgroup(#[source] CgroupError),
    /// No sandbox with this ID.
    #[error("pod sandbox {id} not found")]
    SandboxNotFound {
        /// The ID.
        id: String,
    },
    /// The sandbox's holder is gone (stopped, or died).
    #[error("pod sandbox {id} is not ready")]
    SandboxNotReady {
        /// The ID.
        id: String,
    },
    /// The sandbox config is invalid.
    #[error("invalid pod sandbox config")]
    SandboxConfig(#[source] SandboxConfigError),
    /// Starting the holder process failed.
    #[error("starting the sandbox holder {helper}")]
    HolderSpawn {
        /// The helper binary.
        helper: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The holder reported an error while setting up the namespaces.
    #[error("setting up the sandbox namespaces: {message}")]
    HolderSetup {
        /// What it said.
        message: String,
    },
    /// The network hook failed.
    #[error("setting up the pod network")]
    Network(#[source] crate::sandbox::HookError),
    /// No container with this ID.
    #[error("container {id} not found")]
    ContainerNotFound {
        /// The ID.
        id: String,
    },
    /// The image is not in the store.
    #[error("image {image:?} not found")]
    ImageNotFound {
        /// The reference given.
        image: String,
    },
    /// Reading the image failed.
    #[error("reading image {image:?}")]
    Image {
        /// The reference.
        image: String,
        /// The cause.
        #[source]
        source: ArchiveError,
    },
    /// A bind mount's host path does not exist.
    #[error("mount source {path} does not exist")]
    BadMountSource {
        /// The host path.
        path: PathBuf,
    },
    /// The container config is invalid.
    #[error("invalid container config")]
    Spec(#[source] SpecError),
    /// Preparing or removing the root filesystem failed.
    #[error("container root filesystem")]
    Rootfs(#[source] RootfsError),
    /// Starting the shim failed.
    #[error("starting the shim {helper}")]
    ShimSpawn {
        /// The helper binary.
        helper: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The shim could not create the container.
    #[error("creating container {id}: {message}")]
    CreateFailed {
        /// The container.
        id: String,
        /// The shim's message.
        message: String,
    },
    /// The operation needs another state.
    #[error("container {id} is {state:?}, cannot {action}")]
    WrongState {
        /// The container.
        id: String,
        /// Its state.
        state: ContainerState,
        /// What was asked.
        action: &'static str,
    },
    /// An operation on a container's processes failed: libcontainer's (start, kill, delete,
    /// the exec state) or the start through `rkube-shim`'s exec FIFO.
    #[error("{action} container {id}: {message}")]
    Libcontainer {
        /// What was asked.
        action: &'static str,
        /// The container.
        id: String,
        /// Why.
        message: String,
    },
    /// The container did not exit after SIGKILL.
    #[error("container {id} did not exit after SIGKILL")]
    StopTimeout {
        /// The container.
        id: String,
    },
    /// Starting the exec helper failed.
    #[error("starting exec in container {id}")]
    ExecSpawn {
        /// The container.
        id: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The exec'd command could not start.
    #[error("exec in container {id}: {message}")]
    ExecFailed {
        /// The container.
        id: String,
        /// Why.
        message: String,
    },
    /// The exec'd command ran past its timeout and was killed.
    #[error("exec in container {id} timed out after {timeout:?}")]
    ExecTimeout {
        /// The container.
        id: String,
        /// The timeout.
        timeout: Duration,
    },
}

type Result<T, E = RuntimeError> = std::result::Result<T, E>;

fn io_err<'a>(step: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> RuntimeError + 'a {
    move |source| RuntimeError::Io {
        step,
        path: path.to_owned(),
        source,
    }
}

/// Where the runtime keeps things and how it starts its helpers.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Persistent state: images, layers, sandboxes, containers.
    pub root: PathBuf,
    /// libcontainer's state (a tmpfs such as `/run/rkube/runtime` in production).
    pub state_dir: PathBuf,
    /// The binary that serves the `shim` (cgroup v2 only) and `exec` subcommands (the `rkube`
    /// binary): the short-lived helpers, which need libcontainer.
    pub helper: PathBuf,
    /// The executable that serves `create-container`, `shim-monitor` and `pause`, the helpers
    /// that live as long as a container or a pod: `rkube runtime` points it at the small `rkube-shim` it embeds and
    /// writes under its data directory, so that each of them keeps little memory resident.
    /// [`RuntimeConfig::new`] sets it to `helper`, which serves them too.
    pub lean_helper: PathBuf,
    /// The cgroup under which pod cgroups are made (`/rkube`).
    pub cgroup_root: String,
    /// Log rotation size (bytes, 0 = never) and file count.
    pub log_max_size: u64,
    /// See `log_max_size`.
    pub log_max_files: usize,
}

impl RuntimeConfig {
    /// Defaults under a root directory: state in `/run/rkube/runtime`, cgroups under `/rkube`,
    /// logs rotated at 10 MiB keeping 5 files (the kubelet's defaults).
    pub fn new(root: &Path, helper: &Path) -> Self {
        Self {
            root: root.to_owned(),
            state_dir: PathBuf::from("/run/rkube/runtime"),
            helper: helper.to_owned(),
            lean_helper: helper.to_owned(),
            cgroup_root: "/rkube".to_owned(),
            log_max_size: 10 << 20,
            log_max_files: 5,
        }
    }
}

/// A process identified by PID *and* start time, so a reused PID is never mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProcessRef {
    /// PID.
    pub pid: i32,
    /// Start time in clock ticks since boot (`/proc/<pid>/stat` field 22).
    pub start_time: u64,
}

impl ProcessRef {
    /// Reads the start time of a live process.
    pub fn of(pid: i32) -> Option<Self> {
        let (start_time, _) = proc_stat(pid)?;
        Some(Self { pid, start_time })
    }

    /// Whether the process is still running (not gone, not a zombie, not a reused PID).
    pub fn alive(&self) -> bool {
        proc_stat(self.pid).is_some_and(|(start, state)| start == self.start_time && state != 'Z')
    }
}

/// `(start time, state)` from `/proc/<pid>/stat`.
fn proc_stat(pid: i32) -> Option<(u64, char)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((start, state))
}

/// A sandbox as stored.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct SandboxRecord {
    id: String,
    config: SandboxConfig,
    hostname: String,
    created_at_ns: u64,
    cgroup: String,
    holder: Option<ProcessRef>,
    network: NetworkStatus,
    stopped: bool,
}

/// A sandbox's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum SandboxState {
    /// The holder runs: containers can be created.
    Ready,
    /// Stopped, or its holder died.
    NotReady,
}

/// What [`Runtime::sandbox_status`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxStatus {
    /// ID.
    pub id: String,
    /// The config it was created with.
    pub config: SandboxConfig,
    /// State.
    pub state: SandboxState,
    /// Creation time (ns since the epoch).
    pub created_at_ns: u64,
    /// The pod's IPs (from the network hook).
    pub ips: Vec<IpAddr>,
    /// The holder's network namespace, while it runs.
    pub netns: Option<PathBuf>,
    /// The pod cgroup.
    pub cgroup: String,
}

/// A container as stored.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct ContainerRecord {
    id: String,
    sandbox_id: String,
    config: ContainerConfig,
    image_digest: String,
    created_at_ns: u64,
    started_at_ns: Option<u64>,
    init: Option<ProcessRef>,
    log_path: PathBuf,
    cgroup: String,
    /// Created by `rkube-shim create-container` (started through its exec FIFO, no
    /// libcontainer state of its own); `false` for libcontainer's (and records written before).
    #[serde(default)]
    own_init: bool,
}

/// A container's state (CRI's `ContainerState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum ContainerState {
    /// Created, not started.
    Created,
    /// Running.
    Running,
    /// Exited; see the exit code and reason.
    Exited,
    /// Its processes are gone without an exit record (the shim died) or creation never ended.
    Unknown,
}

/// What [`Runtime::status`] reports (the fields of CRI's `ContainerStatus`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerStatus {
    /// ID.
    pub id: String,
    /// The sandbox it belongs to.
    pub sandbox_id: String,
    /// The config it was created with.
    pub config: ContainerConfig,
    /// The image's manifest digest.
    pub image_digest: String,
    /// State.
    pub state: ContainerState,
    /// Creation time (ns since the epoch).
    pub created_at_ns: u64,
    /// Start time, once started.
    pub started_at_ns: Option<u64>,
    /// Exit time, once exited.
    pub finished_at_ns: Option<u64>,
    /// Exit code, once exited.
    pub exit_code: Option<i32>,
    /// `OOMKilled`, `Completed` or `Error` once exited (as containerd reports), else empty.
    pub reason: String,
    /// The container's init PID while it runs.
    pub pid: Option<i32>,
    /// The CRI log file.
    pub log_path: PathBuf,
    /// The container's cgroup.
    pub cgroup: String,
}

/// What [`Runtime::exec_sync`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecResult {
    /// Everything written to stdout.
    pub stdout: Vec<u8>,
    /// Everything written to stderr.
    pub stderr: Vec<u8>,
    /// Exit code (128 + signal for a signal death).
    pub exit_code: i32,
}

/// An exec ready to start: the helper's command line and the files it needs, removed on drop.
pub struct PreparedExec {
    id: String,
    timeout: Option<Duration>,
    helper: PathBuf,
    args: Vec<std::ffi::OsString>,
    outcome: tempfile::TempPath,
    _process: tempfile::TempPath,
    console: Option<ConsoleSocket>,
}

/// The listening socket a TTY's master end arrives on, in its own temp directory.
struct ConsoleSocket {
    _dir: tempfile::TempDir,
    path: PathBuf,
    listener: Option<std::os::unix::net::UnixListener>,
}

impl PreparedExec {
    /// The helper to spawn, stdio not yet set; it passes its stdin, stdout and stderr to the
    /// process.
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.helper);
        command.args(&self.args);
        command
    }

    /// The console socket's listener (once), for an exec with a TTY: the helper connects to
    /// it and the process sends its terminal's master end (see [`crate::exec::receive_pty_master`]).
    pub fn take_console(&mut self) -> Option<std::os::unix::net::UnixListener> {
        self.console.as_mut().and_then(|c| c.listener.take())
    }

    /// The exit code, once the helper has ended with `status`; `stderr` is the helper's own
    /// (quoted when it died without saying why).
    pub fn finish(self, status: std::process::ExitStatus, stderr: &[u8]) -> Result<i32> {
        match read_outcome(&self.outcome) {
            Some(ExecOutcome::Exited { exit_code }) => Ok(exit_code),
            Some(ExecOutcome::TimedOut) => Err(RuntimeError::ExecTimeout {
                id: self.id,
                timeout: self.timeout.unwrap_or_default(),
            }),
            Some(ExecOutcome::Failed { message }) => Err(RuntimeError::ExecFailed {
                id: self.id,
                message,
            }),
            None => Err(RuntimeError::ExecFailed {
                id: self.id,
                message: format!(
                    "the exec helper ended ({status}) without an outcome: {}",
                    String::from_utf8_lossy(stderr).trim()
                ),
            }),
        }
    }
}

/// What [`Runtime::container_usage`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerUsage {
    /// When it was read (ns since the epoch).
    pub timestamp_ns: u64,
    /// The container cgroup's counters.
    pub cgroup: CgroupUsage,
    /// Bytes written to the container's copy-on-write layer.
    pub writable_layer_bytes: u64,
    /// Inodes in it.
    pub writable_layer_inodes: u64,
}

/// The node's container runtime.
pub struct Runtime {
    config: RuntimeConfig,
    images: Arc<ImageStore>,
    layers: LayerStore,
    cgroups: Box<dyn CgroupDriver>,
    network: Box<dyn NetworkHook>,
    /// Serialises sandbox/container record updates within this process.
    lock: Mutex<()>,
    /// Where removed containers' directories go to be deleted in the background.
    trash: Trash,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.config)
            .field("cgroups", &self.cgroups.layout())
            .finish_non_exhaustive()
    }
}

fn random_id() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| RuntimeError::CorruptState {
                    path: path.to_owned(),
                    source,
                })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(RuntimeError::Io {
            step: "reading",
            path: path.to_owned(),
            source,
        }),
    }
}

/// Whether a record must survive a machine crash ([`write_durable`]) or only a crash of this
/// process ([`write_atomic`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// Synced: the record's existence (a sandbox or container to list and clean up after a
    /// reboot).
    Durable,
    /// Not synced: what dies with the machine's processes anyway (a process ID, a start time,
    /// the shim's instructions). After a power cut the file may hold the previous version.
    Volatile,
}

fn write_json<T: serde::Serialize>(path: &Path, value: &T, durability: Durability) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| RuntimeError::Io {
        step: "encoding",
        path: path.to_owned(),
        source: e.into(),
    })?;
    match durability {
        Durability::Durable => write_durable(path, &bytes),
        Durability::Volatile => write_atomic(path, &bytes),
    }
    .map_err(io_err("writing", path))
}

/// Reaps a helper child in the background so it never lingers as a zombie of this process;
/// the helper itself keeps running when this process exits.
fn reap(mut child: std::process::Child) {
    let _ = std::thread::Builder::new()
        .name("rkube-reap".into())
        .spawn(move || child.wait());
}

/// A reference is an image name, or a manifest digest the store holds.
fn resolve_image(images: &ImageStore, image: &str) -> Result<Digest> {
    if image.starts_with("sha256:")
        && let Ok(digest) = Digest::parse(image)
        && images.blobs().has(&digest)
    {
        return Ok(digest);
    }
    match images.resolve(image) {
        Ok(Some(d)) => Ok(d),
        Ok(None) | Err(ArchiveError::InvalidReference { .. }) => Err(RuntimeError::ImageNotFound {
            image: image.to_owned(),
        }),
        Err(source) => Err(RuntimeError::Image {
            image: image.to_owned(),
            source,
        }),
    }
}

/// Reads a small file from the container's root, refusing a symlink (it could point at the
/// host's file, since the root is not chrooted here).
fn read_in_rootfs(rootfs: &Path, rel: &str) -> Option<String> {
    let path = rootfs.join(rel);
    let meta = fs::symlink_metadata(&path).ok()?;
    let parent_safe = fs::symlink_metadata(rootfs.join("etc")).is_ok_and(|m| m.is_dir());
    (meta.is_file() && parent_safe && meta.len() < (1 << 20))
        .then(|| fs::read_to_string(&path).ok())
        .flatten()
}

impl Runtime {
    /// Opens the runtime under `config.root` with the loopback-only network.
    pub fn open(config: RuntimeConfig) -> Result<Self> {
        Self::with_network(config, Box::new(LoopbackOnly))
    }

    /// Opens the runtime with a network hook, and its own image store under `<root>/images`.
    pub fn with_network(config: RuntimeConfig, network: Box<dyn NetworkHook>) -> Result<Self> {
        let images = ImageStore::open(&config.root.join("images")).map_err(RuntimeError::Images)?;
        Self::with_images(config, Arc::new(images), network)
    }

    /// Opens the runtime over an image store shared with the image service (one store per
    /// process, so its index lock covers every writer).
    pub fn with_images(
        config: RuntimeConfig,
        images: Arc<ImageStore>,
        network: Box<dyn NetworkHook>,
    ) -> Result<Self> {
        for dir in [
            config.root.clone(),
            config.root.join("sandboxes"),
            config.root.join("containers"),
            config.state_dir.clone(),
        ] {
            fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        }
        let layers = LayerStore::open(&config.root.join("layers")).map_err(RuntimeError::Rootfs)?;
        let cgroups = Cgroups::detect().map_err(RuntimeError::Cgroup)?;
        let trash_dir = config.root.join("trash");
        let trash = Trash::open(&trash_dir).map_err(io_err("opening", &trash_dir))?;
        let runtime = Self {
            config,
            images,
            layers,
            cgroups,
            network,
            lock: Mutex::new(()),
            trash,
        };
        runtime.discard_orphans()?;
        Ok(runtime)
    }

    /// Discards container directories without a record. A record is written without waiting
    /// for the disk (it describes processes that die with the machine), so after a power cut a
    /// container's directory may have lost it, or hold it cut short; with no shim running for
    /// it, such a directory is an orphan. One younger than a minute may be a create of a
    /// runtime still running: left alone.
    fn discard_orphans(&self) -> Result<()> {
        let containers = self.config.root.join("containers");
        for id in list_ids(&containers)? {
            let dir = containers.join(&id);
            // Missing or cut short only: a record this version cannot parse for another
            // reason (written by a newer one) may well describe a running container.
            let orphan = match read_json::<ContainerRecord>(&dir.join("container.json")) {
                Ok(None) => true,
                Err(RuntimeError::CorruptState { source, .. }) => source.is_eof(),
                _ => false,
            } && !self.shim_running(&id);
            let old = fs::metadata(&dir)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().unwrap_or_default() > ORPHAN_AGE);
            if orphan && old {
                tracing::warn!(container = %id, "discarding a container directory without a record");
                rootfs::unmount_root(&dir).map_err(RuntimeError::Rootfs)?;
                self.trash
                    .discard(&dir)
                    .map_err(io_err("discarding", &dir))?;
            }
        }
        Ok(())
    }

    /// The image store.
    pub fn images(&self) -> &Arc<ImageStore> {
        &self.images
    }

    /// The cgroup driver this machine got.
    pub fn cgroups(&self) -> &dyn CgroupDriver {
        self.cgroups.as_ref()
    }

    fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.config.root.join("sandboxes").join(id)
    }

    fn container_dir(&self, id: &str) -> PathBuf {
        self.config.root.join("containers").join(id)
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    // ---- sandboxes ----

    /// Creates and starts a pod sandbox; returns its ID. On failure nothing is left behind.
    pub fn run_sandbox(&self, config: SandboxConfig) -> Result<String> {
        check_sysctls(&config).map_err(RuntimeError::SandboxConfig)?;
        let hostname = if config.hostname.is_empty() {
            config.name.clone()
        } else {
            config.hostname.clone()
        };
        if !config.host_network {
            check_hostname(&hostname).map_err(RuntimeError::SandboxConfig)?;
        }
        let id = random_id();
        let dir = self.sandbox_dir(&id);
        fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        let cgroup = config
            .cgroup_parent
            .clone()
            .unwrap_or_else(|| format!("{}/{id}", self.config.cgroup_root.trim_end_matches('/')));
        let mut record = SandboxRecord {
            id: id.clone(),
            config,
            hostname,
            created_at_ns: now_ns(),
            cgroup,
            holder: None,
            network: NetworkStatus::default(),
            stopped: false,
        };
        write_json(&dir.join("sandbox.json"), &record, Durability::Durable)?;
        match self.setup_sandbox(&mut record, &dir) {
            Ok(()) => {
                write_json(&dir.join("sandbox.json"), &record, Durability::Volatile)?;
                Ok(id)
            }
            Err(e) => {
                let _ = self.teardown_sandbox(&mut record);
                let _ = self.cgroups.remove(&record.cgroup);
                let _ = fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    fn setup_sandbox(&self, record: &mut SandboxRecord, dir: &Path) -> Result<()> {
        let config = &record.config;
        self.cgroups
            .create(&record.cgroup)
            .map_err(RuntimeError::Cgroup)?;
        let hostname_file = dir.join("hostname");
        fs::write(&hostname_file, format!("{}\n", record.hostname))
            .map_err(io_err("writing", &hostname_file))?;
        let resolv = dir.join("resolv.conf");
        match &config.dns {
            Some(dns) => {
                fs::write(&resolv, resolv_conf(dns)).map_err(io_err("writing", &resolv))?
            }
            None => {
                let host = fs::read("/etc/resolv.conf").unwrap_or_default();
                fs::write(&resolv, host).map_err(io_err("writing", &resolv))?;
            }
        }
        let shm = dir.join("shm");
        fs::create_dir_all(&shm).map_err(io_err("creating", &shm))?;
        fs::set_permissions(&shm, std::os::unix::fs::PermissionsExt::from_mode(0o1777))
            .map_err(io_err("setting the mode of", &shm))?;

        let log = dir.join("pause.log");
        let log_file = fs::File::create(&log).map_err(io_err("creating", &log))?;
        let mut child = Command::new(&self.config.lean_helper)
            .args(pause_args(config, &record.hostname))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .process_group(0)
            .spawn()
            .map_err(|source| RuntimeError::HolderSpawn {
                helper: self.config.lean_helper.clone(),
                source,
            })?;
        let mut said = String::new();
        if let Some(mut out) = child.stdout.take() {
            let _ = out.read_to_string(&mut said);
        }
        let pid = child.id() as i32;
        let holder = ProcessRef::of(pid);
        if said.trim() != "ready" || holder.is_none() {
            let _ = child.kill();
            let _ = child.wait();
            let message = said
                .trim()
                .strip_prefix("error: ")
                .unwrap_or(if said.trim().is_empty() {
                    "the holder exited without reporting"
                } else {
                    said.trim()
                })
                .to_owned();
            return Err(RuntimeError::HolderSetup { message });
        }
        reap(child);
        record.holder = holder;
        self.cgroups
            .add_process(&record.cgroup, pid as u32)
            .map_err(RuntimeError::Cgroup)?;
        if !config.host_network {
            record.network = self
                .network
                .setup(&self.sandbox_network(record, pid))
                .map_err(RuntimeError::Network)?;
        }
        let hosts = dir.join("hosts");
        let text = if config.host_network {
            fs::read_to_string("/etc/hosts").unwrap_or_default()
        } else {
            hosts_file(&record.hostname, &record.network.ips)
        };
        fs::write(&hosts, text).map_err(io_err("writing", &hosts))
    }

    fn sandbox_network(&self, record: &SandboxRecord, pid: i32) -> SandboxNetwork {
        SandboxNetwork {
            id: record.id.clone(),
            name: record.config.name.clone(),
            namespace: record.config.namespace.clone(),
            netns: PathBuf::from(format!("/proc/{pid}/ns/net")),
        }
    }

    /// Network teardown and holder kill (idempotent).
    fn teardown_sandbox(&self, record: &mut SandboxRecord) -> Result<()> {
        if let Some(holder) = record.holder {
            if holder.alive() && !record.config.host_network {
                self.network
                    .teardown(&self.sandbox_network(record, holder.pid))
                    .map_err(RuntimeError::Network)?;
            }
            if holder.alive() {
                let _ = nix::sys::signal::kill(Pid::from_raw(holder.pid), Signal::SIGKILL);
            }
            wait_until(KILL_WAIT, || !holder.alive());
        }
        record.stopped = true;
        Ok(())
    }

    fn load_sandbox(&self, id: &str) -> Result<SandboxRecord> {
        if id.is_empty() || id.contains('/') || id.starts_with('.') {
            return Err(RuntimeError::SandboxNotFound { id: id.to_owned() });
        }
        read_json(&self.sandbox_dir(id).join("sandbox.json"))?
            .ok_or_else(|| RuntimeError::SandboxNotFound { id: id.to_owned() })
    }

    /// Stops a sandbox: kills its containers, tears its network down, stops the holder.
    pub fn stop_sandbox(&self, id: &str) -> Result<()> {
        let mut record = self.load_sandbox(id)?;
        for c in self.list()?.into_iter().filter(|c| c.sandbox_id == id) {
            if matches!(c.state, ContainerState::Running | ContainerState::Created) {
                self.stop(&c.id, Duration::ZERO)?;
            }
        }
        let _guard = self.guard();
        self.teardown_sandbox(&mut record)?;
        write_json(
            &self.sandbox_dir(id).join("sandbox.json"),
            &record,
            Durability::Volatile,
        )
    }

    /// Removes a sandbox and all its containers (stopping them first).
    pub fn remove_sandbox(&self, id: &str) -> Result<()> {
        self.stop_sandbox(id)?;
        for c in self.list()?.into_iter().filter(|c| c.sandbox_id == id) {
            self.remove(&c.id)?;
        }
        let record = self.load_sandbox(id)?;
        // The last process may need a moment to leave the cgroup after it was reaped.
        let mut removed = self.cgroups.remove(&record.cgroup);
        let deadline = Instant::now() + Duration::from_secs(5);
        while removed.is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            removed = self.cgroups.remove(&record.cgroup);
        }
        removed.map_err(RuntimeError::Cgroup)?;
        let dir = self.sandbox_dir(id);
        fs::remove_dir_all(&dir).map_err(io_err("removing", &dir))
    }

    /// A sandbox's status.
    pub fn sandbox_status(&self, id: &str) -> Result<SandboxStatus> {
        let record = self.load_sandbox(id)?;
        let alive = record.holder.is_some_and(|h| h.alive()) && !record.stopped;
        Ok(SandboxStatus {
            id: record.id.clone(),
            state: if alive {
                SandboxState::Ready
            } else {
                SandboxState::NotReady
            },
            created_at_ns: record.created_at_ns,
            ips: record.network.ips.clone(),
            netns: (alive && !record.config.host_network).then(|| {
                PathBuf::from(format!(
                    "/proc/{}/ns/net",
                    record.holder.map_or(0, |h| h.pid)
                ))
            }),
            cgroup: record.cgroup,
            config: record.config,
        })
    }

    /// Every sandbox.
    pub fn list_sandboxes(&self) -> Result<Vec<SandboxStatus>> {
        let mut out = Vec::new();
        for id in list_ids(&self.config.root.join("sandboxes"))? {
            match self.sandbox_status(&id) {
                Ok(s) => out.push(s),
                Err(RuntimeError::SandboxNotFound { .. }) => {} // removed meanwhile
                Err(e @ RuntimeError::CorruptState { .. }) => {
                    tracing::warn!(sandbox = %id, error = %e, "skipping an unreadable record");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    // ---- containers ----

    /// Creates a container in a sandbox (not started); returns its ID. Bad input is refused
    /// before anything is created, and a failure later removes what was made.
    pub fn create_container(&self, sandbox_id: &str, config: ContainerConfig) -> Result<String> {
        let sandbox = self.load_sandbox(sandbox_id)?;
        let holder = sandbox
            .holder
            .filter(|h| h.alive() && !sandbox.stopped)
            .ok_or_else(|| RuntimeError::SandboxNotReady {
                id: sandbox_id.to_owned(),
            })?;
        let digest = resolve_image(&self.images, &config.image)?;
        let image_config = self
            .images
            .config(&digest)
            .map_err(|source| RuntimeError::Image {
                image: config.image.clone(),
                source,
            })?;
        resolve_args(&config, &image_config).map_err(RuntimeError::Spec)?;
        for m in &config.mounts {
            if fs::symlink_metadata(&m.host_path).is_err() {
                return Err(RuntimeError::BadMountSource {
                    path: m.host_path.clone(),
                });
            }
        }

        let id = random_id();
        let dir = self.container_dir(&id);
        fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        let log_path = match (&config.log_path, &sandbox.config.log_directory) {
            (Some(p), Some(d)) if p.is_relative() => d.join(p),
            (Some(p), _) => p.clone(),
            (None, _) => dir.join("container.log"),
        };
        let record = ContainerRecord {
            id: id.clone(),
            sandbox_id: sandbox_id.to_owned(),
            cgroup: format!("{}/{id}", sandbox.cgroup.trim_end_matches('/')),
            config,
            image_digest: digest.as_str().to_owned(),
            created_at_ns: now_ns(),
            started_at_ns: None,
            init: None,
            log_path,
            own_init: false,
        };
        // Not synced: see `discard_orphans` for a directory whose record a power cut lost.
        write_json(&dir.join("container.json"), &record, Durability::Volatile)?;
        match self.create_in(record, &sandbox, holder, &digest, &image_config, &dir) {
            Ok(()) => Ok(id),
            Err(e) => {
                let _ = self.cleanup_container(&id);
                Err(e)
            }
        }
    }

    fn create_in(
        &self,
        mut record: ContainerRecord,
        sandbox: &SandboxRecord,
        holder: ProcessRef,
        digest: &Digest,
        image_config: &crate::image::archive::ImageConfig,
        dir: &Path,
    ) -> Result<()> {
        let lowers = self
            .layers
            .prepare(&self.images, digest)
            .map_err(RuntimeError::Rootfs)?;
        let rootfs = rootfs::mount(&lowers, dir).map_err(RuntimeError::Rootfs)?;
        let passwd = read_in_rootfs(&rootfs, "etc/passwd");
        let group = read_in_rootfs(&rootfs, "etc/group");
        let sandbox_dir = self.sandbox_dir(&sandbox.id);
        let ns = |kind: &str| Some(PathBuf::from(format!("/proc/{}/ns/{kind}", holder.pid)));
        let sc = &sandbox.config;
        let context = SandboxContext {
            hostname: sandbox.hostname.clone(),
            network_ns: if sc.host_network { None } else { ns("net") },
            ipc_ns: if sc.host_ipc { None } else { ns("ipc") },
            uts_ns: if sc.host_network { None } else { ns("uts") },
            host_pid: sc.host_pid,
            etc_hosts: sandbox_dir.join("hosts"),
            resolv_conf: sandbox_dir.join("resolv.conf"),
            etc_hostname: sandbox_dir.join("hostname"),
            shm_dir: (!sc.host_ipc).then(|| sandbox_dir.join("shm")),
        };
        let spec = build_spec(&SpecInputs {
            config: &record.config,
            image: image_config,
            sandbox: &context,
            rootfs: &rootfs,
            cgroups_path: Path::new(&record.cgroup),
            passwd: passwd.as_deref(),
            group: group.as_deref(),
        })
        .map_err(RuntimeError::Spec)?;
        let bundle_config = dir.join("config.json");
        spec.save(&bundle_config).map_err(|e| RuntimeError::Io {
            step: "writing",
            path: bundle_config.clone(),
            source: io::Error::other(e.to_string()),
        })?;
        // Where cgroup files can limit devices, `rkube-shim` creates the container and the
        // runtime makes its cgroup (limits, device rules) while that process starts; else
        // libcontainer does both from the spec.
        record.own_init = self.cgroups.limits_devices();
        let make_cgroup = |record: &ContainerRecord| {
            self.cgroups
                .create(&record.cgroup)
                .and_then(|()| {
                    self.cgroups
                        .update(&record.cgroup, &record.config.resources)
                })
                .and_then(|()| {
                    if record.own_init {
                        self.cgroups
                            .limit_devices(&record.cgroup, record.config.privileged)
                    } else {
                        Ok(())
                    }
                })
                .map_err(RuntimeError::Cgroup)
        };
        if !record.own_init {
            make_cgroup(&record)?;
        }
        let (cgroup_procs, seccomp_program) = if record.own_init {
            let procs = self
                .cgroups
                .procs_files(&record.cgroup)
                .map_err(RuntimeError::Cgroup)?;
            let program = match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
                Some(profile) => Some(
                    crate::seccomp::program(&self.config.root.join("seccomp"), profile).map_err(
                        |e| RuntimeError::CreateFailed {
                            id: record.id.clone(),
                            message: e.to_string(),
                        },
                    )?,
                ),
                None => None,
            };
            (procs, program)
        } else {
            (Vec::new(), None)
        };
        let shim_config = ShimConfig {
            id: record.id.clone(),
            bundle: dir.to_owned(),
            state_root: self.config.state_dir.clone(),
            log_path: record.log_path.clone(),
            log_max_size: self.config.log_max_size,
            log_max_files: self.config.log_max_files,
            exit_file: dir.join("exit.json"),
            oom_file: self.cgroups.oom_events_file(&record.cgroup).ok(),
            monitor: self.config.lean_helper.clone(),
            cgroup_procs,
            seccomp_program,
        };
        write_json(
            &crate::shim::config_path(dir),
            &shim_config,
            Durability::Volatile,
        )?;
        let shim_log = dir.join("shim.log");
        let shim_log_file = fs::File::create(&shim_log).map_err(io_err("creating", &shim_log))?;
        let mut command = if record.own_init {
            let mut c = Command::new(&self.config.lean_helper);
            c.arg("create-container");
            c
        } else {
            let mut c = Command::new(&self.config.helper);
            c.arg("shim");
            c
        };
        let mut child = command
            .arg(dir)
            .stdin(if record.own_init {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(shim_log_file)
            .process_group(0)
            .spawn()
            .map_err(|source| RuntimeError::ShimSpawn {
                helper: PathBuf::from(command.get_program()),
                source,
            })?;
        if let Some(mut go) = child.stdin.take() {
            // Without `go` (stdin closed) the shim gives up and reports so.
            let made = make_cgroup(&record);
            if made.is_ok() {
                use std::io::Write;
                let _ = go.write_all(b"go\n");
            }
            drop(go);
            if let Err(e) = made {
                if let Some(mut out) = child.stdout.take() {
                    let _ = out.read_to_string(&mut String::new());
                }
                reap(child);
                return Err(e);
            }
        }
        let mut said = String::new();
        if let Some(mut out) = child.stdout.take() {
            let _ = out.read_to_string(&mut said);
        }
        reap(child);
        let report: Option<ShimReport> = said
            .lines()
            .next()
            .and_then(|l| serde_json::from_str(l).ok());
        match report {
            Some(ShimReport::Created { pid }) => {
                record.init = ProcessRef::of(pid);
                let _guard = self.guard();
                write_json(&dir.join("container.json"), &record, Durability::Volatile)
            }
            Some(ShimReport::Error { message }) => Err(RuntimeError::CreateFailed {
                id: record.id.clone(),
                message,
            }),
            None => Err(RuntimeError::CreateFailed {
                id: record.id.clone(),
                message: format!(
                    "the shim exited without a report (see {})",
                    shim_log.display()
                ),
            }),
        }
    }

    /// The state libcontainer's exec (its tenant builder) reads to join a running container:
    /// written at the first exec into a container whose init is `rkube-shim`'s, which keeps no
    /// such state. The runtime's own records decide the container's state, so it is written as
    /// running.
    fn save_exec_state(&self, record: &ContainerRecord, pid: i32, bundle: &Path) -> Result<()> {
        use libcontainer::container::{ContainerStatus, State};
        let root = self.config.state_dir.join(&record.id);
        fs::create_dir_all(&root).map_err(io_err("creating", &root))?;
        State::new(
            &record.id,
            ContainerStatus::Running,
            Some(pid),
            bundle.to_owned(),
        )
        .save(&root)
        .map_err(|e| RuntimeError::Libcontainer {
            action: "save",
            id: record.id.clone(),
            message: e.to_string(),
        })
    }

    fn load_container(&self, id: &str) -> Result<ContainerRecord> {
        if id.is_empty() || id.contains('/') || id.starts_with('.') {
            return Err(RuntimeError::ContainerNotFound { id: id.to_owned() });
        }
        read_json(&self.container_dir(id).join("container.json"))?
            .ok_or_else(|| RuntimeError::ContainerNotFound { id: id.to_owned() })
    }

    fn libcontainer(
        &self,
        id: &str,
        action: &'static str,
    ) -> Result<libcontainer::container::Container> {
        libcontainer::container::Container::load(self.config.state_dir.join(id)).map_err(|e| {
            RuntimeError::Libcontainer {
                action,
                id: id.to_owned(),
                message: e.to_string(),
            }
        })
    }

    /// Starts a created container.
    ///
    /// libcontainer's start changes the process's working directory to reach the container's
    /// notify socket by a relative name, and back: two starts at once in one process (a threaded
    /// CRI server, or tests) would connect to each other's sockets, leaving a container waiting
    /// for a start that never comes. [`CHDIR`] makes those sections one at a time process-wide.
    pub fn start(&self, id: &str) -> Result<()> {
        let mut record = self.load_container(id)?;
        let status = self.status_of(&record);
        if status.state != ContainerState::Created {
            return Err(RuntimeError::WrongState {
                id: id.to_owned(),
                state: status.state,
                action: "start",
            });
        }
        // Taken before the start: a short container can exit (and its shim record the finish
        // time) before `start` returns, and a start time after the finish confuses the kubelet.
        let started_at = now_ns();
        if record.own_init {
            start_through_fifo(&self.container_dir(id).join(rkube_shim::create::EXEC_FIFO))
                .map_err(|e| RuntimeError::Libcontainer {
                    action: "start",
                    id: id.to_owned(),
                    message: e,
                })?;
        } else {
            let mut container = self.libcontainer(id, "start")?;
            let started = {
                let _cwd = CHDIR.lock().unwrap_or_else(|e| e.into_inner());
                container.start()
            };
            started.map_err(|e| RuntimeError::Libcontainer {
                action: "start",
                id: id.to_owned(),
                message: e.to_string(),
            })?;
        }
        record.started_at_ns = Some(started_at);
        let _guard = self.guard();
        write_json(
            &self.container_dir(id).join("container.json"),
            &record,
            Durability::Volatile,
        )
    }

    /// Stops a container: SIGTERM, then SIGKILL once `grace` has passed (at once for zero).
    /// Stopping an exited container does nothing.
    pub fn stop(&self, id: &str, grace: Duration) -> Result<()> {
        let record = self.load_container(id)?;
        let exit_file = self.container_dir(id).join("exit.json");
        let status = self.status_of(&record);
        let Some(init) = record.init.filter(|_| {
            matches!(
                status.state,
                ContainerState::Running | ContainerState::Created
            )
        }) else {
            return Ok(());
        };
        let pid = Pid::from_raw(init.pid);
        // Exited once the shim wrote the record, or (shim gone) once the init is gone.
        let done = || read_exit(&exit_file).is_some() || (!init.alive() && !self.shim_running(id));
        if status.state == ContainerState::Running && !grace.is_zero() {
            if init.alive() {
                let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
            }
            if wait_until(grace, done) {
                return Ok(());
            }
        }
        // Every process of the container, also those outside its PID namespace's init tree.
        if record.own_init {
            if init.alive() {
                let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            }
            self.kill_cgroup(&record.cgroup);
        } else {
            match self.libcontainer(id, "kill") {
                Ok(mut c) => {
                    if c.kill(Signal::SIGKILL, true).is_err() && init.alive() {
                        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                    }
                }
                Err(_) if init.alive() => {
                    let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                }
                Err(_) => {}
            }
        }
        if wait_until(KILL_WAIT, done) {
            Ok(())
        } else {
            Err(RuntimeError::StopTimeout { id: id.to_owned() })
        }
    }

    /// Sends SIGKILL to every process in the cgroup; whether there was any.
    fn kill_cgroup(&self, cgroup: &str) -> bool {
        let pids = self.cgroups.pids(cgroup).unwrap_or_default();
        for pid in &pids {
            let _ = nix::sys::signal::kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        !pids.is_empty()
    }

    /// Whether a shim for this container still runs (it writes the exit record last).
    fn shim_running(&self, id: &str) -> bool {
        let want = self.container_dir(id);
        let Ok(procs) = fs::read_dir("/proc") else {
            return false;
        };
        procs.flatten().any(|p| {
            fs::read(p.path().join("cmdline")).is_ok_and(|cmd| {
                let mut parts = cmd.split(|&b| b == 0);
                parts.next();
                parts.next() == Some(b"shim-monitor")
                    && parts.next() == Some(want.as_os_str().as_encoded_bytes())
            })
        })
    }

    /// Removes a container (killing it first if it runs): its libcontainer state and cgroup,
    /// its root filesystem mount and directories.
    pub fn remove(&self, id: &str) -> Result<()> {
        self.load_container(id)?;
        self.stop(id, Duration::ZERO)?;
        self.cleanup_container(id)
    }

    /// Removes whatever exists of a container; used by `remove` and by failed creates.
    fn cleanup_container(&self, id: &str) -> Result<()> {
        let record = self.load_container(id).ok();
        let own_init = record.as_ref().is_some_and(|r| r.own_init);
        if self.config.state_dir.join(id).exists() && !own_init {
            match self.libcontainer(id, "delete") {
                Ok(mut c) => {
                    if let Err(e) = c.delete(true) {
                        tracing::warn!(container = id, error = %e, "libcontainer delete failed");
                    }
                }
                Err(e) => tracing::warn!(container = id, error = %e, "loading libcontainer state"),
            }
        }
        let _ = fs::remove_dir_all(self.config.state_dir.join(id));
        if let Some(record) = &record {
            // Whatever still runs in the container's cgroup (an init whose create failed
            // after it was forked) goes first: a cgroup with processes cannot be removed.
            if self.kill_cgroup(&record.cgroup) {
                wait_until(KILL_WAIT, || {
                    self.cgroups
                        .pids(&record.cgroup)
                        .map_or(true, |p| p.is_empty())
                });
            }
            self.cgroups
                .remove(&record.cgroup)
                .map_err(RuntimeError::Cgroup)?;
        }
        let dir = self.container_dir(id);
        rootfs::unmount_root(&dir).map_err(RuntimeError::Rootfs)?;
        // A log outside the container directory is in the kubelet's log directory, which the
        // kubelet cleans; the default one goes with the directory.
        self.trash.discard(&dir).map_err(io_err("removing", &dir))
    }

    fn status_of(&self, record: &ContainerRecord) -> ContainerStatus {
        let exit = read_exit(&self.container_dir(&record.id).join("exit.json"));
        let alive = record.init.is_some_and(|i| i.alive());
        let state = match (&exit, alive, record.started_at_ns, record.init) {
            (Some(_), _, _, _) => ContainerState::Exited,
            (None, true, Some(_), _) => ContainerState::Running,
            (None, true, None, _) => ContainerState::Created,
            (None, false, _, _) => ContainerState::Unknown,
        };
        let (exit_code, finished, reason) = match &exit {
            Some(ExitRecord {
                exit_code,
                oom_killed,
                finished_at_ns,
                ..
            }) => (
                Some(*exit_code),
                Some(*finished_at_ns),
                if *oom_killed {
                    "OOMKilled"
                } else if *exit_code == 0 {
                    "Completed"
                } else {
                    "Error"
                }
                .to_owned(),
            ),
            None => (None, None, String::new()),
        };
        ContainerStatus {
            id: record.id.clone(),
            sandbox_id: record.sandbox_id.clone(),
            config: record.config.clone(),
            image_digest: record.image_digest.clone(),
            state,
            created_at_ns: record.created_at_ns,
            started_at_ns: record.started_at_ns,
            finished_at_ns: finished,
            exit_code,
            reason,
            pid: record.init.filter(|_| alive).map(|i| i.pid),
            log_path: record.log_path.clone(),
            cgroup: record.cgroup.clone(),
        }
    }

    /// A container's status.
    pub fn status(&self, id: &str) -> Result<ContainerStatus> {
        Ok(self.status_of(&self.load_container(id)?))
    }

    /// Every container.
    pub fn list(&self) -> Result<Vec<ContainerStatus>> {
        let mut out = Vec::new();
        for id in list_ids(&self.config.root.join("containers"))? {
            match self.load_container(&id) {
                Ok(r) => out.push(self.status_of(&r)),
                Err(RuntimeError::ContainerNotFound { .. }) => {}
                // A record torn by a power cut: one container unlisted, not the node.
                Err(e @ RuntimeError::CorruptState { .. }) => {
                    tracing::warn!(container = %id, error = %e, "skipping an unreadable record");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// The container's CRI log file.
    pub fn log_path(&self, id: &str) -> Result<PathBuf> {
        Ok(self.load_container(id)?.log_path)
    }

    /// Makes the shim reopen the log file (CRI `ReopenContainerLog`), after the caller moved it.
    pub fn reopen_log(&self, id: &str) -> Result<()> {
        let record = self.load_container(id)?;
        let status = self.status_of(&record);
        if status.state != ContainerState::Running {
            return Err(RuntimeError::WrongState {
                id: id.to_owned(),
                state: status.state,
                action: "reopen the log of",
            });
        }
        let dir = self.container_dir(id);
        let want = dir.as_os_str().as_encoded_bytes();
        for p in fs::read_dir("/proc")
            .map_err(io_err("reading", Path::new("/proc")))?
            .flatten()
        {
            let Ok(cmd) = fs::read(p.path().join("cmdline")) else {
                continue;
            };
            let mut parts = cmd.split(|&b| b == 0);
            parts.next();
            if parts.next() == Some(b"shim-monitor")
                && parts.next() == Some(want)
                && let Some(pid) = p.file_name().to_str().and_then(|s| s.parse().ok())
            {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGUSR1);
            }
        }
        Ok(())
    }

    /// The CPU quota (µs per period) the kernel enforces on a container, `None` if unlimited.
    pub fn cpu_quota(&self, id: &str) -> Result<Option<i64>> {
        let record = self.load_container(id)?;
        self.cgroups
            .read(&record.cgroup, CgroupValue::CpuQuota)
            .map_err(RuntimeError::Cgroup)
    }

    /// Changes a created or running container's CPU and memory limits in place (the kubelet's
    /// in-place resize): each value set in `resources` replaces the current one in the cgroup
    /// and in the container's record (which `status` reports); unset (zero) values stay.
    pub fn update_resources(&self, id: &str, resources: &Resources) -> Result<()> {
        let mut record = self.load_container(id)?;
        let status = self.status_of(&record);
        if !matches!(
            status.state,
            ContainerState::Created | ContainerState::Running
        ) {
            return Err(RuntimeError::WrongState {
                id: id.to_owned(),
                state: status.state,
                action: "update the resources of",
            });
        }
        self.cgroups
            .update(&record.cgroup, resources)
            .map_err(RuntimeError::Cgroup)?;
        let current = &mut record.config.resources;
        if resources.cpu_period > 0 {
            current.cpu_period = resources.cpu_period;
        }
        if resources.cpu_quota != 0 {
            current.cpu_quota = resources.cpu_quota.max(-1);
        }
        if resources.cpu_shares > 0 {
            current.cpu_shares = resources.cpu_shares;
        }
        if resources.memory_limit_bytes > 0 {
            current.memory_limit_bytes = resources.memory_limit_bytes;
        }
        let _guard = self.guard();
        write_json(
            &self.container_dir(id).join("container.json"),
            &record,
            Durability::Durable,
        )
    }

    /// Runs `cmd` in a running container, collecting its output; kills it after `timeout`.
    pub fn exec_sync(
        &self,
        id: &str,
        cmd: &[String],
        timeout: Option<Duration>,
    ) -> Result<ExecResult> {
        let exec = self.prepare_exec(id, cmd, timeout, false)?;
        let output = exec
            .command()
            .stdin(Stdio::null())
            .output()
            .map_err(|source| RuntimeError::ExecSpawn {
                id: id.to_owned(),
                source,
            })?;
        let exit_code = exec.finish(output.status, &output.stderr)?;
        Ok(ExecResult {
            stdout: output.stdout,
            stderr: output.stderr,
            exit_code,
        })
    }

    /// Prepares `cmd` to run in a running container, as the container's own user with its
    /// environment: the caller sets the helper's stdio (the process inherits it), spawns
    /// [`PreparedExec::command`], and hands its end to [`PreparedExec::finish`]. With `tty`
    /// the process gets a terminal whose master end arrives on [`PreparedExec::take_console`].
    pub fn prepare_exec(
        &self,
        id: &str,
        cmd: &[String],
        timeout: Option<Duration>,
        tty: bool,
    ) -> Result<PreparedExec> {
        let record = self.load_container(id)?;
        let status = self.status_of(&record);
        if status.state != ContainerState::Running {
            return Err(RuntimeError::WrongState {
                id: id.to_owned(),
                state: status.state,
                action: "exec in",
            });
        }
        if cmd.is_empty() || cmd[0].is_empty() {
            return Err(RuntimeError::ExecFailed {
                id: id.to_owned(),
                message: "no command given".to_owned(),
            });
        }
        let dir = self.container_dir(id);
        if let (true, Some(init)) = (record.own_init, record.init)
            && !self.config.state_dir.join(id).join("state.json").exists()
        {
            self.save_exec_state(&record, init.pid, &dir)?;
        }
        let bundle = dir.join("config.json");
        let spec = oci_spec::runtime::Spec::load(&bundle).map_err(|e| RuntimeError::Io {
            step: "reading",
            path: bundle.clone(),
            source: io::Error::other(e.to_string()),
        })?;
        let mut process = spec.process().clone().unwrap_or_default();
        process.set_args(Some(cmd.to_vec()));
        process.set_terminal(Some(tty));
        process.set_console_size(None);
        if tty {
            let mut env = process.env().clone().unwrap_or_default();
            if !env.iter().any(|e| e.starts_with("TERM=")) {
                env.push("TERM=xterm".to_owned());
            }
            process.set_env(Some(env));
        }
        let temp = |prefix: &str| {
            tempfile::Builder::new()
                .prefix(prefix)
                .suffix(".json")
                .tempfile_in(&dir)
                .map_err(io_err("creating an exec file in", &dir))
                .map(tempfile::NamedTempFile::into_temp_path)
        };
        let process_file = temp("exec-process-")?;
        let process_json = serde_json::to_vec(&process).map_err(|e| RuntimeError::ExecFailed {
            id: id.to_owned(),
            message: format!("encoding the process: {e}"),
        })?;
        fs::write(&process_file, process_json).map_err(io_err("writing", &process_file))?;
        let outcome = temp("exec-")?;
        // The console socket lives in a short temp path: unix socket paths are limited to
        // 108 bytes, and the container directory may be deep.
        let console = if tty {
            let socket_dir = tempfile::Builder::new()
                .prefix("rkube-console-")
                .tempdir()
                .map_err(io_err(
                    "creating a console socket directory in",
                    &std::env::temp_dir(),
                ))?;
            let path = socket_dir.path().join("sock");
            let listener = std::os::unix::net::UnixListener::bind(&path)
                .map_err(io_err("listening on", &path))?;
            Some(ConsoleSocket {
                _dir: socket_dir,
                path,
                listener: Some(listener),
            })
        } else {
            None
        };
        let args = ExecArgs {
            state_root: self.config.state_dir.clone(),
            id: id.to_owned(),
            timeout,
            outcome: outcome.to_path_buf(),
            process: process_file.to_path_buf(),
            console_socket: console.as_ref().map(|c| c.path.clone()),
        };
        Ok(PreparedExec {
            id: id.to_owned(),
            timeout,
            helper: self.config.helper.clone(),
            args: args.to_args(),
            outcome,
            _process: process_file,
            console,
        })
    }

    /// What a container uses now: its cgroup's counters and its writable layer. A container
    /// that is not running reports zero use (its processes, and maybe its cgroup, are gone).
    pub fn container_usage(&self, id: &str) -> Result<ContainerUsage> {
        let record = self.load_container(id)?;
        let running = self.status_of(&record).state == ContainerState::Running;
        let cgroup = match self.cgroups.usage(&record.cgroup) {
            Ok(usage) => usage,
            Err(_) if !running => CgroupUsage::default(),
            Err(e) => return Err(RuntimeError::Cgroup(e)),
        };
        let upper = self.container_dir(id).join("upper");
        let (bytes, inodes) = crate::image::disk_usage(&upper).unwrap_or((0, 0));
        Ok(ContainerUsage {
            timestamp_ns: now_ns(),
            cgroup,
            writable_layer_bytes: bytes,
            writable_layer_inodes: inodes,
        })
    }

    /// What a sandbox's pod cgroup (all its containers and the holder) uses now.
    pub fn sandbox_usage(&self, id: &str) -> Result<CgroupUsage> {
        let record = self.load_sandbox(id)?;
        match self.cgroups.usage(&record.cgroup) {
            Ok(usage) => Ok(usage),
            Err(_) if record.stopped => Ok(CgroupUsage::default()),
            Err(e) => Err(RuntimeError::Cgroup(e)),
        }
    }

    /// Lists what the sandboxes and containers directories hold, for leak checks.
    pub fn state_dirs(&self) -> Result<BTreeMap<&'static str, usize>> {
        let mut out = BTreeMap::new();
        out.insert(
            "sandboxes",
            list_ids(&self.config.root.join("sandboxes"))?.len(),
        );
        out.insert(
            "containers",
            list_ids(&self.config.root.join("containers"))?.len(),
        );
        out.insert("libcontainer", list_ids(&self.config.state_dir)?.len());
        let trash = self.config.root.join("trash");
        out.insert(
            "trash",
            self.trash.pending().map_err(io_err("reading", &trash))?,
        );
        Ok(out)
    }
}

/// Starts a container created by `rkube-shim create-container`: its init waits for one byte on
/// the exec FIFO. Opening without blocking fails at once when no init holds the other end.
fn start_through_fifo(fifo: &Path) -> std::result::Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(fifo)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENXIO) => "the container's init is gone".to_owned(),
            _ => format!("opening {}: {e}", fifo.display()),
        })?;
    file.write_all(&[0])
        .map_err(|e| format!("writing {}: {e}", fifo.display()))
}

fn list_ids(dir: &Path) -> Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(RuntimeError::Io {
                step: "reading",
                path: dir.to_owned(),
                source,
            });
        }
    };
    let mut ids: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.'))
        .collect();
    ids.sort();
    Ok(ids)
}

/// Polls `done` until it holds or `limit` passes; returns whether it held.
fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_ref_tells_a_live_process_from_a_reused_pid() {
        let me = ProcessRef::of(std::process::id() as i32).unwrap();
        assert!(me.alive());
        let other = ProcessRef {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!other.alive(), "same pid, other start time");
        assert!(ProcessRef::of(i32::MAX).is_none());
    }

    #[test]
    fn ids_with_path_characters_are_not_found() {
        let dir = tempfile::tempdir().unwrap();
        assert!(list_ids(&dir.path().join("missing")).unwrap().is_empty());
        fs::create_dir(dir.path().join(".hidden")).unwrap();
        fs::create_dir(dir.path().join("b")).unwrap();
        fs::create_dir(dir.path().join("a")).unwrap();
        assert_eq!(list_ids(dir.path()).unwrap(), ["a", "b"]);
    }
}
