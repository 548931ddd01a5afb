//! CRI `RuntimeService` over [`crate::Runtime`]: pod sandboxes, containers, `ExecSync`, log
//! reopening, stats, resource updates, container events ([`crate::cri::events`]), and
//! `Exec`/`Attach`/`PortForward` (validated here, then parked for the
//! [`crate::cri::streaming`] server). The calls still missing (checkpoints, metric
//! descriptors) answer gRPC `Unimplemented` with their name, never a fake success.
//!
//! The runtime's calls block on processes and the filesystem, so each runs on tokio's blocking
//! pool. Requests are translated here, field by field, into the runtime's own config types;
//! what a request asks for that the runtime cannot do (a TTY, devices, a `Localhost` seccomp
//! profile, a shared or target PID namespace mode the runtime lacks) is refused with a message
//! rather than silently dropped.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_server::RuntimeService;
use tonic::{Request, Response, Status};

use crate::cgroups::CgroupUsage;
use crate::cri::events::ContainerEvents;
use crate::cri::streaming::{Streams, TooManyPending};
use crate::runtime::{
    ContainerState, ContainerStatus, ContainerUsage, Runtime, RuntimeError, SandboxState,
    SandboxStatus,
};
use crate::sandbox::{DnsConfig, SandboxConfig};
use crate::spec::{BindMount, ContainerConfig, Propagation, Resources, SeccompProfile};

/// The CRI API version this runtime speaks.
pub const RUNTIME_API_VERSION: &str = "v1";
/// The runtime's name in `Version`.
pub const RUNTIME_NAME: &str = "rkube";

/// The `RuntimeService` implementation.
pub struct CriRuntime {
    runtime: Arc<Runtime>,
    /// The pod CIDR the kubelet last gave in `UpdateRuntimeConfig`, reported by `Status`.
    pod_cidr: Mutex<String>,
    /// Where `Exec`, `Attach` and `PortForward` park requests for the streaming server.
    streams: Option<Streams>,
    /// The `GetContainerEvents` feed.
    events: ContainerEvents,
}

impl CriRuntime {
    /// Serves `runtime`.
    pub fn new(runtime: Arc<Runtime>) -> Self {
        Self {
            runtime,
            pod_cidr: Mutex::new(String::new()),
            streams: None,
            events: ContainerEvents::default(),
        }
    }

    /// Serves `Exec`, `Attach` and `PortForward` through `streams` (without, they answer
    /// `Unimplemented`).
    pub fn with_streaming(mut self, streams: Streams) -> Self {
        self.streams = Some(streams);
        self
    }

    fn streams(&self) -> Result<&Streams, Status> {
        self.streams.as_ref().ok_or_else(|| {
            Status::unimplemented("this runtime was started without a streaming server")
        })
    }

    /// Checks that a container exists and runs, as a stream into it needs.
    async fn running_container(&self, id: &str) -> Result<(), Status> {
        let id = id.to_owned();
        let status = self.call(move |rt| rt.status(&id)).await?;
        if status.state != ContainerState::Running {
            return Err(Status::failed_precondition(format!(
                "container {} is not running (state {:?})",
                status.id, status.state
            )));
        }
        Ok(())
    }

    /// Runs a blocking runtime call on the blocking pool, mapping its error to a gRPC status.
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Runtime) -> Result<T, RuntimeError> + Send + 'static,
    ) -> Result<T, Status> {
        let runtime = self.runtime.clone();
        tokio::task::spawn_blocking(move || f(&runtime))
            .await
            .map_err(|e| Status::internal(format!("the runtime call panicked: {e}")))?
            .map_err(|e| status_of(&e))
    }
}

fn not_yet(what: &str) -> Status {
    Status::unimplemented(format!("{what} is not implemented by rkube's runtime yet"))
}

/// The gRPC code for a runtime error: what is missing is `NotFound`, bad requests are
/// `InvalidArgument`, calls in the wrong state `FailedPrecondition`, an exec past its timeout
/// `DeadlineExceeded` (the kubelet reads that as a probe timeout), a full disk
/// `ResourceExhausted`, the rest `Internal`.
pub fn status_of(err: &RuntimeError) -> Status {
    let message = crate::error_chain(err);
    match err {
        RuntimeError::SandboxNotFound { .. }
        | RuntimeError::ContainerNotFound { .. }
        | RuntimeError::ImageNotFound { .. } => Status::not_found(message),
        RuntimeError::SandboxConfig(_)
        | RuntimeError::Spec(_)
        | RuntimeError::BadMountSource { .. } => Status::invalid_argument(message),
        RuntimeError::WrongState { .. } | RuntimeError::SandboxNotReady { .. } => {
            Status::failed_precondition(message)
        }
        RuntimeError::ExecTimeout { .. } => Status::deadline_exceeded(message),
        _ if super::out_of_space(err) => Status::resource_exhausted(message),
        _ => Status::internal(message),
    }
}

fn sorted(map: &HashMap<String, String>) -> BTreeMap<String, String> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn unsorted(map: &BTreeMap<String, String>) -> HashMap<String, String> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Every `selector` pair is among `labels` (CRI's label filter).
fn selected(labels: &BTreeMap<String, String>, selector: &HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A filter's ID matches a full ID or a prefix of one, as containerd's does.
fn id_matches(id: &str, filter: &str) -> bool {
    filter.is_empty() || id.starts_with(filter)
}

/// A network or IPC namespace mode: `true` for the host's (`NODE`), `false` for the pod's
/// (`POD`; CRI defines nothing else for these two, so `CONTAINER` reads as the pod's too).
fn host_mode(mode: i32, what: &str) -> Result<bool, Status> {
    match cri::NamespaceMode::try_from(mode) {
        Ok(cri::NamespaceMode::Node) => Ok(true),
        Ok(cri::NamespaceMode::Pod | cri::NamespaceMode::Container) => Ok(false),
        Ok(cri::NamespaceMode::Target) => Err(Status::invalid_argument(format!(
            "the {what} namespace mode TARGET is only defined for pid"
        ))),
        Err(_) => Err(Status::invalid_argument(format!(
            "unknown {what} namespace mode {mode}"
        ))),
    }
}

/// The PID namespace mode: `true` for the host's (`NODE`), `false` for one per container
/// (`CONTAINER`, the kubelet's default). A pod-wide one (`shareProcessNamespace`) and `TARGET`
/// (ephemeral containers) are refused: the holder keeps no PID namespace to share.
fn host_pid_mode(mode: i32) -> Result<bool, Status> {
    match cri::NamespaceMode::try_from(mode) {
        Ok(cri::NamespaceMode::Node) => Ok(true),
        Ok(cri::NamespaceMode::Container) => Ok(false),
        Ok(cri::NamespaceMode::Pod | cri::NamespaceMode::Target) => Err(Status::unimplemented(
            "a PID namespace shared by the pod's containers (shareProcessNamespace, or TARGET) is not implemented by rkube's runtime yet",
        )),
        Err(_) => Err(Status::invalid_argument(format!(
            "unknown pid namespace mode {mode}"
        ))),
    }
}

/// Translates a CRI `PodSandboxConfig`.
pub fn sandbox_config(config: &cri::PodSandboxConfig) -> Result<SandboxConfig, Status> {
    let metadata = config
        .metadata
        .as_ref()
        .ok_or_else(|| Status::invalid_argument("the sandbox config has no metadata"))?;
    if metadata.name.is_empty() {
        return Err(Status::invalid_argument(
            "the sandbox config's metadata.name is empty",
        ));
    }
    if !config.port_mappings.is_empty() {
        // hostPort mappings belong to the pod network (the networking issue's hook).
        return Err(Status::unimplemented(
            "port mappings (hostPort) are not implemented by rkube's runtime yet",
        ));
    }
    let linux = config.linux.clone().unwrap_or_default();
    // Absent options mean the defaults: the pod's network and IPC, a PID namespace per container.
    let options = linux
        .security_context
        .as_ref()
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or(cri::NamespaceOption {
            pid: cri::NamespaceMode::Container as i32,
            ..Default::default()
        });
    Ok(SandboxConfig {
        name: metadata.name.clone(),
        namespace: metadata.namespace.clone(),
        uid: metadata.uid.clone(),
        attempt: metadata.attempt,
        hostname: config.hostname.clone(),
        host_network: host_mode(options.network, "network")?,
        host_pid: host_pid_mode(options.pid)?,
        host_ipc: host_mode(options.ipc, "ipc")?,
        sysctls: sorted(&linux.sysctls),
        dns: config.dns_config.as_ref().map(|d| DnsConfig {
            servers: d.servers.clone(),
            searches: d.searches.clone(),
            options: d.options.clone(),
        }),
        cgroup_parent: (!linux.cgroup_parent.is_empty()).then(|| linux.cgroup_parent.clone()),
        log_directory: (!config.log_directory.is_empty())
            .then(|| PathBuf::from(&config.log_directory)),
        labels: sorted(&config.labels),
        annotations: sorted(&config.annotations),
    })
}

fn non_negative(value: i64, what: &str) -> Result<u64, Status> {
    u64::try_from(value).map_err(|_| Status::invalid_argument(format!("{what} is negative")))
}

fn id_value(value: &Option<cri::Int64Value>, what: &str) -> Result<Option<u32>, Status> {
    value
        .as_ref()
        .map(|v| {
            u32::try_from(v.value).map_err(|_| {
                Status::invalid_argument(format!("{what} {} is out of range", v.value))
            })
        })
        .transpose()
}

/// Translates a CRI `LinuxContainerResources` (CPU and memory; the rest is refused when set).
fn resources(r: &cri::LinuxContainerResources) -> Result<Resources, Status> {
    if !r.cpuset_cpus.is_empty() || !r.cpuset_mems.is_empty() || !r.hugepage_limits.is_empty() {
        return Err(Status::unimplemented(
            "cpuset and hugepage limits are not implemented by rkube's runtime yet",
        ));
    }
    Ok(Resources {
        cpu_period: non_negative(r.cpu_period, "cpu_period")?,
        cpu_quota: r.cpu_quota,
        cpu_shares: non_negative(r.cpu_shares, "cpu_shares")?,
        memory_limit_bytes: r.memory_limit_in_bytes,
    })
}

/// Translates a CRI `ContainerConfig`.
pub fn container_config(config: &cri::ContainerConfig) -> Result<ContainerConfig, Status> {
    let metadata = config
        .metadata
        .as_ref()
        .ok_or_else(|| Status::invalid_argument("the container config has no metadata"))?;
    if metadata.name.is_empty() {
        return Err(Status::invalid_argument(
            "the container config's metadata.name is empty",
        ));
    }
    let image = config
        .image
        .as_ref()
        .map(|i| i.image.clone())
        .unwrap_or_default();
    if image.is_empty() {
        return Err(Status::invalid_argument(
            "the container config names no image",
        ));
    }
    if config.tty || config.stdin {
        return Err(Status::unimplemented(
            "containers with a TTY or stdin are not implemented by rkube's runtime yet (attach is not served)",
        ));
    }
    if !config.devices.is_empty() || !config.cdi_devices.is_empty() {
        return Err(Status::unimplemented(
            "devices are not implemented by rkube's runtime yet",
        ));
    }
    let mut mounts = Vec::with_capacity(config.mounts.len());
    for m in &config.mounts {
        if m.image.is_some() || !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty() {
            return Err(Status::unimplemented(
                "image volumes and id-mapped mounts are not implemented by rkube's runtime yet",
            ));
        }
        if m.host_path.is_empty() {
            return Err(Status::invalid_argument(format!(
                "the mount at {:?} has no host path",
                m.container_path
            )));
        }
        let propagation = match cri::MountPropagation::try_from(m.propagation) {
            Ok(cri::MountPropagation::PropagationPrivate) => Propagation::Private,
            Ok(cri::MountPropagation::PropagationHostToContainer) => Propagation::HostToContainer,
            Ok(cri::MountPropagation::PropagationBidirectional) => Propagation::Bidirectional,
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "unknown mount propagation {}",
                    m.propagation
                )));
            }
        };
        mounts.push(BindMount {
            host_path: PathBuf::from(&m.host_path),
            container_path: m.container_path.clone(),
            readonly: m.readonly,
            propagation,
        });
    }
    let linux = config.linux.clone().unwrap_or_default();
    let security = linux.security_context.unwrap_or_default();
    // The kubelet repeats the sandbox's namespace options here; the sandbox's are the ones the
    // container joins, so these are only checked for what the runtime cannot do.
    if let Some(options) = &security.namespace_options {
        host_pid_mode(options.pid)?;
    }
    let seccomp = match &security.seccomp {
        None => SeccompProfile::RuntimeDefault,
        Some(p) => match cri::security_profile::ProfileType::try_from(p.profile_type) {
            Ok(cri::security_profile::ProfileType::RuntimeDefault) => {
                SeccompProfile::RuntimeDefault
            }
            Ok(cri::security_profile::ProfileType::Unconfined) => SeccompProfile::Unconfined,
            _ => {
                return Err(Status::unimplemented(
                    "Localhost seccomp profiles are not implemented by rkube's runtime yet",
                ));
            }
        },
    };
    let capabilities = security.capabilities.unwrap_or_default();
    let supplemental_groups = security
        .supplemental_groups
        .iter()
        .map(|g| {
            u32::try_from(*g).map_err(|_| {
                Status::invalid_argument(format!("supplemental group {g} is out of range"))
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(ContainerConfig {
        name: metadata.name.clone(),
        attempt: metadata.attempt,
        image,
        command: config.command.clone(),
        args: config.args.clone(),
        env: config
            .envs
            .iter()
            .map(|kv| (kv.key.clone(), kv.value.clone()))
            .collect(),
        working_dir: (!config.working_dir.is_empty()).then(|| config.working_dir.clone()),
        run_as_user: id_value(&security.run_as_user, "run_as_user")?,
        run_as_username: (!security.run_as_username.is_empty())
            .then(|| security.run_as_username.clone()),
        run_as_group: id_value(&security.run_as_group, "run_as_group")?,
        supplemental_groups,
        mounts,
        resources: linux
            .resources
            .as_ref()
            .map(resources)
            .transpose()?
            .unwrap_or_default(),
        privileged: security.privileged,
        readonly_rootfs: security.readonly_rootfs,
        add_capabilities: capabilities.add_capabilities,
        drop_capabilities: capabilities.drop_capabilities,
        no_new_privileges: security.no_new_privs,
        seccomp,
        log_path: (!config.log_path.is_empty()).then(|| PathBuf::from(&config.log_path)),
        labels: sorted(&config.labels),
        annotations: sorted(&config.annotations),
    })
}

fn sandbox_metadata(config: &SandboxConfig) -> cri::PodSandboxMetadata {
    cri::PodSandboxMetadata {
        name: config.name.clone(),
        uid: config.uid.clone(),
        namespace: config.namespace.clone(),
        attempt: config.attempt,
    }
}

fn sandbox_state(state: SandboxState) -> i32 {
    match state {
        SandboxState::Ready => cri::PodSandboxState::SandboxReady as i32,
        SandboxState::NotReady => cri::PodSandboxState::SandboxNotready as i32,
    }
}

fn mode(host: bool) -> i32 {
    if host {
        cri::NamespaceMode::Node as i32
    } else {
        cri::NamespaceMode::Pod as i32
    }
}

pub(crate) fn pod_sandbox_status(s: &SandboxStatus) -> cri::PodSandboxStatus {
    let mut ips = s.ips.iter().map(|ip| ip.to_string());
    let network = (!s.config.host_network).then(|| cri::PodSandboxNetworkStatus {
        ip: ips.next().unwrap_or_default(),
        additional_ips: ips.map(|ip| cri::PodIp { ip }).collect(),
    });
    cri::PodSandboxStatus {
        id: s.id.clone(),
        metadata: Some(sandbox_metadata(&s.config)),
        state: sandbox_state(s.state),
        created_at: s.created_at_ns as i64,
        network,
        linux: Some(cri::LinuxPodSandboxStatus {
            namespaces: Some(cri::Namespace {
                options: Some(cri::NamespaceOption {
                    network: mode(s.config.host_network),
                    pid: if s.config.host_pid {
                        cri::NamespaceMode::Node as i32
                    } else {
                        cri::NamespaceMode::Container as i32
                    },
                    ipc: mode(s.config.host_ipc),
                    ..Default::default()
                }),
            }),
        }),
        labels: unsorted(&s.config.labels),
        annotations: unsorted(&s.config.annotations),
        runtime_handler: String::new(),
    }
}

fn container_state(state: ContainerState) -> i32 {
    (match state {
        ContainerState::Created => cri::ContainerState::ContainerCreated,
        ContainerState::Running => cri::ContainerState::ContainerRunning,
        ContainerState::Exited => cri::ContainerState::ContainerExited,
        ContainerState::Unknown => cri::ContainerState::ContainerUnknown,
    }) as i32
}

/// `repository@digest` for an image named by reference, as containerd's `image_ref`; the bare
/// digest when the container was created from one.
fn image_ref(image: &str, digest: &str) -> String {
    if image.starts_with("sha256:") {
        return digest.to_owned();
    }
    let name = image.split('@').next().unwrap_or(image);
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let repository = match name[last_slash..].rfind(':') {
        Some(colon) => &name[..last_slash + colon],
        None => name,
    };
    format!("{repository}@{digest}")
}

fn container_metadata(config: &ContainerConfig) -> cri::ContainerMetadata {
    cri::ContainerMetadata {
        name: config.name.clone(),
        attempt: config.attempt,
    }
}

fn image_spec(image: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec {
        image: image.to_owned(),
        ..Default::default()
    })
}

fn container(c: &ContainerStatus) -> cri::Container {
    cri::Container {
        id: c.id.clone(),
        pod_sandbox_id: c.sandbox_id.clone(),
        metadata: Some(container_metadata(&c.config)),
        image: image_spec(&c.config.image),
        image_ref: image_ref(&c.config.image, &c.image_digest),
        state: container_state(c.state),
        created_at: c.created_at_ns as i64,
        labels: unsorted(&c.config.labels),
        annotations: unsorted(&c.config.annotations),
        image_id: c.image_digest.clone(),
    }
}

pub(crate) fn container_status(c: &ContainerStatus) -> cri::ContainerStatus {
    let r = &c.config.resources;
    cri::ContainerStatus {
        id: c.id.clone(),
        metadata: Some(container_metadata(&c.config)),
        state: container_state(c.state),
        created_at: c.created_at_ns as i64,
        started_at: c.started_at_ns.unwrap_or(0) as i64,
        finished_at: c.finished_at_ns.unwrap_or(0) as i64,
        exit_code: c.exit_code.unwrap_or(0),
        image: image_spec(&c.config.image),
        image_ref: image_ref(&c.config.image, &c.image_digest),
        reason: c.reason.clone(),
        message: String::new(),
        labels: unsorted(&c.config.labels),
        annotations: unsorted(&c.config.annotations),
        mounts: c
            .config
            .mounts
            .iter()
            .map(|m| cri::Mount {
                container_path: m.container_path.clone(),
                host_path: m.host_path.to_string_lossy().into_owned(),
                readonly: m.readonly,
                propagation: match m.propagation {
                    Propagation::Private => cri::MountPropagation::PropagationPrivate,
                    Propagation::HostToContainer => {
                        cri::MountPropagation::PropagationHostToContainer
                    }
                    Propagation::Bidirectional => cri::MountPropagation::PropagationBidirectional,
                } as i32,
                ..Default::default()
            })
            .collect(),
        log_path: c.log_path.to_string_lossy().into_owned(),
        resources: Some(cri::ContainerResources {
            linux: Some(cri::LinuxContainerResources {
                cpu_period: r.cpu_period as i64,
                cpu_quota: r.cpu_quota,
                cpu_shares: r.cpu_shares as i64,
                memory_limit_in_bytes: r.memory_limit_bytes,
                ..Default::default()
            }),
            windows: None,
        }),
        image_id: c.image_digest.clone(),
        user: None,
    }
}

fn u64_value(value: u64) -> Option<cri::UInt64Value> {
    Some(cri::UInt64Value { value })
}

fn cpu_usage(timestamp: i64, u: &CgroupUsage) -> cri::CpuUsage {
    cri::CpuUsage {
        timestamp,
        usage_core_nano_seconds: u64_value(u.cpu_ns),
        // A rate needs two samples: the kubelet computes it from successive readings.
        usage_nano_cores: None,
    }
}

fn memory_usage(timestamp: i64, u: &CgroupUsage) -> cri::MemoryUsage {
    cri::MemoryUsage {
        timestamp,
        working_set_bytes: u64_value(u.working_set_bytes),
        available_bytes: None,
        usage_bytes: u64_value(u.memory_bytes),
        rss_bytes: u64_value(u.rss_bytes),
        page_faults: u64_value(u.page_faults),
        major_page_faults: u64_value(u.major_page_faults),
    }
}

fn container_stats(c: &ContainerStatus, usage: &ContainerUsage) -> cri::ContainerStats {
    let timestamp = usage.timestamp_ns as i64;
    cri::ContainerStats {
        attributes: Some(cri::ContainerAttributes {
            id: c.id.clone(),
            metadata: Some(container_metadata(&c.config)),
            labels: unsorted(&c.config.labels),
            annotations: unsorted(&c.config.annotations),
        }),
        cpu: Some(cpu_usage(timestamp, &usage.cgroup)),
        memory: Some(memory_usage(timestamp, &usage.cgroup)),
        writable_layer: Some(cri::FilesystemUsage {
            timestamp,
            fs_id: None,
            used_bytes: u64_value(usage.writable_layer_bytes),
            inodes_used: u64_value(usage.writable_layer_inodes),
        }),
        swap: None,
    }
}

/// Stats of the listed containers that still exist (one removed meanwhile is skipped).
fn stats_of(
    runtime: &Runtime,
    containers: Vec<ContainerStatus>,
) -> Result<Vec<cri::ContainerStats>, RuntimeError> {
    let mut out = Vec::with_capacity(containers.len());
    for c in containers {
        match runtime.container_usage(&c.id) {
            Ok(usage) => out.push(container_stats(&c, &usage)),
            Err(RuntimeError::ContainerNotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

fn sandbox_stats(
    runtime: &Runtime,
    sandbox: &SandboxStatus,
) -> Result<cri::PodSandboxStats, RuntimeError> {
    let usage = runtime.sandbox_usage(&sandbox.id)?;
    let timestamp = crate::shim::now_ns() as i64;
    let containers = runtime
        .list()?
        .into_iter()
        .filter(|c| c.sandbox_id == sandbox.id && c.state == ContainerState::Running)
        .collect();
    Ok(cri::PodSandboxStats {
        attributes: Some(cri::PodSandboxAttributes {
            id: sandbox.id.clone(),
            metadata: Some(sandbox_metadata(&sandbox.config)),
            labels: unsorted(&sandbox.config.labels),
            annotations: unsorted(&sandbox.config.annotations),
        }),
        linux: Some(cri::LinuxPodSandboxStats {
            cpu: Some(cpu_usage(timestamp, &usage)),
            memory: Some(memory_usage(timestamp, &usage)),
            network: None,
            process: None,
            containers: stats_of(runtime, containers)?,
        }),
        windows: None,
    })
}

fn too_many(err: TooManyPending) -> Status {
    Status::resource_exhausted(err.to_string())
}

fn json_info(value: serde_json::Value) -> HashMap<String, String> {
    HashMap::from([("info".to_owned(), value.to_string())])
}

fn timeout(seconds: i64) -> Option<Duration> {
    (seconds > 0).then(|| Duration::from_secs(seconds as u64))
}

/// Implements RPCs that are not there yet, each answering `Unimplemented` with its name. The
/// methods are written in the shape `async_trait` gives trait methods, because the attribute on
/// the impl block sees this macro before it is expanded.
macro_rules! not_implemented {
    ($($method:ident($request:ident) -> $response:ident: $what:literal;)*) => {
        $(
            fn $method<'life0, 'async_trait>(
                &'life0 self,
                _request: Request<cri::$request>,
            ) -> std::pin::Pin<
                Box<
                    dyn std::future::Future<Output = Result<Response<cri::$response>, Status>>
                        + Send
                        + 'async_trait,
                >,
            >
            where
                'life0: 'async_trait,
                Self: 'async_trait,
            {
                Box::pin(async move { Err(not_yet($what)) })
            }
        )*
    };
}

#[tonic::async_trait]
impl RuntimeService for CriRuntime {
    async fn version(
        &self,
        _request: Request<cri::VersionRequest>,
    ) -> Result<Response<cri::VersionResponse>, Status> {
        Ok(Response::new(cri::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: RUNTIME_NAME.into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: RUNTIME_API_VERSION.into(),
        }))
    }

    async fn status(
        &self,
        request: Request<cri::StatusRequest>,
    ) -> Result<Response<cri::StatusResponse>, Status> {
        let condition =
            |kind: &str, status: bool, reason: &str, message: &str| cri::RuntimeCondition {
                r#type: kind.into(),
                status,
                reason: reason.into(),
                message: message.into(),
            };
        // Pods get loopback only until the networking issue plugs its hook in: say so, so a
        // kubelet does not run pods that need a network on this node.
        let conditions = vec![
            condition("RuntimeReady", true, "", ""),
            condition(
                "NetworkReady",
                false,
                "NetworkPluginNotReady",
                "rkube's runtime gives pods loopback only: no pod network is set up yet",
            ),
        ];
        let info = if request.into_inner().verbose {
            let pod_cidr = self
                .pod_cidr
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            json_info(serde_json::json!({
                "cgroupLayout": format!("{:?}", self.runtime.cgroups().layout()),
                "podCIDR": pod_cidr,
            }))
        } else {
            HashMap::new()
        };
        Ok(Response::new(cri::StatusResponse {
            status: Some(cri::RuntimeStatus { conditions }),
            info,
            ..Default::default()
        }))
    }

    async fn runtime_config(
        &self,
        _request: Request<cri::RuntimeConfigRequest>,
    ) -> Result<Response<cri::RuntimeConfigResponse>, Status> {
        Ok(Response::new(cri::RuntimeConfigResponse {
            linux: Some(cri::LinuxRuntimeConfiguration {
                cgroup_driver: cri::CgroupDriver::Cgroupfs as i32,
            }),
        }))
    }

    async fn update_runtime_config(
        &self,
        request: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> Result<Response<cri::UpdateRuntimeConfigResponse>, Status> {
        let cidr = request
            .into_inner()
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
            .unwrap_or_default();
        *self.pod_cidr.lock().unwrap_or_else(|e| e.into_inner()) = cidr;
        Ok(Response::new(cri::UpdateRuntimeConfigResponse {}))
    }

    async fn run_pod_sandbox(
        &self,
        request: Request<cri::RunPodSandboxRequest>,
    ) -> Result<Response<cri::RunPodSandboxResponse>, Status> {
        let request = request.into_inner();
        if !request.runtime_handler.is_empty() {
            return Err(Status::invalid_argument(format!(
                "unknown runtime handler {:?}: rkube's runtime has only the default one",
                request.runtime_handler
            )));
        }
        let config = sandbox_config(
            request
                .config
                .as_ref()
                .ok_or_else(|| Status::invalid_argument("RunPodSandbox needs a config"))?,
        )?;
        let pod_sandbox_id = self.call(move |rt| rt.run_sandbox(config)).await?;
        Ok(Response::new(cri::RunPodSandboxResponse { pod_sandbox_id }))
    }

    async fn stop_pod_sandbox(
        &self,
        request: Request<cri::StopPodSandboxRequest>,
    ) -> Result<Response<cri::StopPodSandboxResponse>, Status> {
        let id = request.into_inner().pod_sandbox_id;
        // CRI: stopping a sandbox that is gone succeeds (the kubelet retries stops).
        self.call(move |rt| match rt.stop_sandbox(&id) {
            Err(RuntimeError::SandboxNotFound { .. }) => Ok(()),
            other => other,
        })
        .await?;
        Ok(Response::new(cri::StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        request: Request<cri::RemovePodSandboxRequest>,
    ) -> Result<Response<cri::RemovePodSandboxResponse>, Status> {
        let id = request.into_inner().pod_sandbox_id;
        // CRI: removing a sandbox that is already removed succeeds.
        self.call(move |rt| match rt.remove_sandbox(&id) {
            Err(RuntimeError::SandboxNotFound { .. }) => Ok(()),
            other => other,
        })
        .await?;
        Ok(Response::new(cri::RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        request: Request<cri::PodSandboxStatusRequest>,
    ) -> Result<Response<cri::PodSandboxStatusResponse>, Status> {
        let request = request.into_inner();
        let id = request.pod_sandbox_id;
        let status = self.call(move |rt| rt.sandbox_status(&id)).await?;
        let info = if request.verbose {
            json_info(serde_json::json!({
                "netns": status.netns,
                "cgroup": status.cgroup,
                "hostname": if status.config.hostname.is_empty() {
                    &status.config.name
                } else {
                    &status.config.hostname
                },
            }))
        } else {
            HashMap::new()
        };
        Ok(Response::new(cri::PodSandboxStatusResponse {
            status: Some(pod_sandbox_status(&status)),
            info,
            containers_statuses: Vec::new(),
            timestamp: crate::shim::now_ns() as i64,
        }))
    }

    async fn list_pod_sandbox(
        &self,
        request: Request<cri::ListPodSandboxRequest>,
    ) -> Result<Response<cri::ListPodSandboxResponse>, Status> {
        let filter = request.into_inner().filter.unwrap_or_default();
        let sandboxes = self.call(|rt| rt.list_sandboxes()).await?;
        let items = sandboxes
            .iter()
            .filter(|s| id_matches(&s.id, &filter.id))
            .filter(|s| {
                filter
                    .state
                    .as_ref()
                    .is_none_or(|f| f.state == sandbox_state(s.state))
            })
            .filter(|s| selected(&s.config.labels, &filter.label_selector))
            .map(|s| cri::PodSandbox {
                id: s.id.clone(),
                metadata: Some(sandbox_metadata(&s.config)),
                state: sandbox_state(s.state),
                created_at: s.created_at_ns as i64,
                labels: unsorted(&s.config.labels),
                annotations: unsorted(&s.config.annotations),
                runtime_handler: String::new(),
            })
            .collect();
        Ok(Response::new(cri::ListPodSandboxResponse { items }))
    }

    async fn create_container(
        &self,
        request: Request<cri::CreateContainerRequest>,
    ) -> Result<Response<cri::CreateContainerResponse>, Status> {
        let request = request.into_inner();
        let config = container_config(
            request
                .config
                .as_ref()
                .ok_or_else(|| Status::invalid_argument("CreateContainer needs a config"))?,
        )?;
        let sandbox = request.pod_sandbox_id;
        let container_id = self
            .call(move |rt| rt.create_container(&sandbox, config))
            .await?;
        Ok(Response::new(cri::CreateContainerResponse { container_id }))
    }

    async fn start_container(
        &self,
        request: Request<cri::StartContainerRequest>,
    ) -> Result<Response<cri::StartContainerResponse>, Status> {
        let id = request.into_inner().container_id;
        self.call(move |rt| rt.start(&id)).await?;
        Ok(Response::new(cri::StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        request: Request<cri::StopContainerRequest>,
    ) -> Result<Response<cri::StopContainerResponse>, Status> {
        let request = request.into_inner();
        let id = request.container_id;
        let grace = Duration::from_secs(request.timeout.max(0) as u64);
        self.call(move |rt| rt.stop(&id, grace)).await?;
        Ok(Response::new(cri::StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        request: Request<cri::RemoveContainerRequest>,
    ) -> Result<Response<cri::RemoveContainerResponse>, Status> {
        let id = request.into_inner().container_id;
        // CRI: removing a running container stops it first; a removed one is not an error.
        let stopping = id.clone();
        let exists = self
            .call(move |rt| match rt.status(&stopping) {
                Ok(s) if matches!(s.state, ContainerState::Running | ContainerState::Created) => {
                    rt.stop(&stopping, Duration::ZERO).map(|()| true)
                }
                Ok(_) => Ok(true),
                Err(RuntimeError::ContainerNotFound { .. }) => Ok(false),
                Err(e) => Err(e),
            })
            .await?;
        if exists {
            // Its stop is told before it vanishes, with the exit code.
            self.events.observe(self.runtime.clone(), &id).await;
            self.call(move |rt| rt.remove(&id)).await?;
        }
        Ok(Response::new(cri::RemoveContainerResponse {}))
    }

    async fn list_containers(
        &self,
        request: Request<cri::ListContainersRequest>,
    ) -> Result<Response<cri::ListContainersResponse>, Status> {
        let filter = request.into_inner().filter.unwrap_or_default();
        let all = self.call(|rt| rt.list()).await?;
        let containers = all
            .iter()
            .filter(|c| id_matches(&c.id, &filter.id))
            .filter(|c| id_matches(&c.sandbox_id, &filter.pod_sandbox_id))
            .filter(|c| {
                filter
                    .state
                    .as_ref()
                    .is_none_or(|f| f.state == container_state(c.state))
            })
            .filter(|c| selected(&c.config.labels, &filter.label_selector))
            .map(container)
            .collect();
        Ok(Response::new(cri::ListContainersResponse { containers }))
    }

    async fn container_status(
        &self,
        request: Request<cri::ContainerStatusRequest>,
    ) -> Result<Response<cri::ContainerStatusResponse>, Status> {
        let request = request.into_inner();
        let id = request.container_id;
        let status = self.call(move |rt| rt.status(&id)).await?;
        let info = if request.verbose {
            json_info(serde_json::json!({
                "sandboxID": status.sandbox_id,
                "pid": status.pid,
                "cgroup": status.cgroup,
                "config": {
                    "command": status.config.command,
                    "args": status.config.args,
                    "env": status.config.env,
                },
            }))
        } else {
            HashMap::new()
        };
        Ok(Response::new(cri::ContainerStatusResponse {
            status: Some(container_status(&status)),
            info,
        }))
    }

    async fn reopen_container_log(
        &self,
        request: Request<cri::ReopenContainerLogRequest>,
    ) -> Result<Response<cri::ReopenContainerLogResponse>, Status> {
        let id = request.into_inner().container_id;
        self.call(move |rt| rt.reopen_log(&id)).await?;
        Ok(Response::new(cri::ReopenContainerLogResponse {}))
    }

    async fn exec_sync(
        &self,
        request: Request<cri::ExecSyncRequest>,
    ) -> Result<Response<cri::ExecSyncResponse>, Status> {
        let request = request.into_inner();
        let id = request.container_id;
        let cmd = request.cmd;
        let limit = timeout(request.timeout);
        let result = self.call(move |rt| rt.exec_sync(&id, &cmd, limit)).await?;
        Ok(Response::new(cri::ExecSyncResponse {
            stdout: result.stdout,
            stderr: result.stderr,
            exit_code: result.exit_code,
        }))
    }

    async fn container_stats(
        &self,
        request: Request<cri::ContainerStatsRequest>,
    ) -> Result<Response<cri::ContainerStatsResponse>, Status> {
        let id = request.into_inner().container_id;
        let stats = self
            .call(move |rt| {
                let status = rt.status(&id)?;
                let usage = rt.container_usage(&id)?;
                Ok(container_stats(&status, &usage))
            })
            .await?;
        Ok(Response::new(cri::ContainerStatsResponse {
            stats: Some(stats),
        }))
    }

    async fn list_container_stats(
        &self,
        request: Request<cri::ListContainerStatsRequest>,
    ) -> Result<Response<cri::ListContainerStatsResponse>, Status> {
        let filter = request.into_inner().filter.unwrap_or_default();
        let stats = self
            .call(move |rt| {
                // Like containerd, stats are of running containers only.
                let chosen = rt
                    .list()?
                    .into_iter()
                    .filter(|c| c.state == ContainerState::Running)
                    .filter(|c| id_matches(&c.id, &filter.id))
                    .filter(|c| id_matches(&c.sandbox_id, &filter.pod_sandbox_id))
                    .filter(|c| selected(&c.config.labels, &filter.label_selector))
                    .collect();
                stats_of(rt, chosen)
            })
            .await?;
        Ok(Response::new(cri::ListContainerStatsResponse { stats }))
    }

    async fn pod_sandbox_stats(
        &self,
        request: Request<cri::PodSandboxStatsRequest>,
    ) -> Result<Response<cri::PodSandboxStatsResponse>, Status> {
        let id = request.into_inner().pod_sandbox_id;
        let stats = self
            .call(move |rt| sandbox_stats(rt, &rt.sandbox_status(&id)?))
            .await?;
        Ok(Response::new(cri::PodSandboxStatsResponse {
            stats: Some(stats),
        }))
    }

    async fn list_pod_sandbox_stats(
        &self,
        request: Request<cri::ListPodSandboxStatsRequest>,
    ) -> Result<Response<cri::ListPodSandboxStatsResponse>, Status> {
        let filter = request.into_inner().filter.unwrap_or_default();
        let stats = self
            .call(move |rt| {
                let mut out = Vec::new();
                for s in rt.list_sandboxes()? {
                    if s.state == SandboxState::Ready
                        && id_matches(&s.id, &filter.id)
                        && selected(&s.config.labels, &filter.label_selector)
                    {
                        match sandbox_stats(rt, &s) {
                            Ok(stats) => out.push(stats),
                            Err(RuntimeError::SandboxNotFound { .. }) => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
                Ok(out)
            })
            .await?;
        Ok(Response::new(cri::ListPodSandboxStatsResponse { stats }))
    }

    async fn update_container_resources(
        &self,
        request: Request<cri::UpdateContainerResourcesRequest>,
    ) -> Result<Response<cri::UpdateContainerResourcesResponse>, Status> {
        let request = request.into_inner();
        if request.windows.is_some() {
            return Err(Status::invalid_argument(
                "windows resources given to a Linux runtime",
            ));
        }
        let linux = request.linux.unwrap_or_default();
        if !linux.unified.is_empty() {
            return Err(Status::unimplemented(
                "unified (cgroup v2 key/value) resources are not implemented by rkube's runtime yet",
            ));
        }
        let wanted = resources(&linux)?;
        let id = request.container_id;
        self.call(move |rt| rt.update_resources(&id, &wanted))
            .await?;
        Ok(Response::new(cri::UpdateContainerResourcesResponse {}))
    }

    async fn exec(
        &self,
        request: Request<cri::ExecRequest>,
    ) -> Result<Response<cri::ExecResponse>, Status> {
        let request = request.into_inner();
        let streams = self.streams()?;
        if request.cmd.first().is_none_or(String::is_empty) {
            return Err(Status::invalid_argument("exec: no command given"));
        }
        if !(request.stdin || request.stdout || request.stderr) {
            return Err(Status::invalid_argument(
                "exec: one of stdin, stdout, or stderr must be set",
            ));
        }
        if request.tty && request.stderr {
            return Err(Status::invalid_argument(
                "exec: tty and stderr cannot both be true (a terminal has one output)",
            ));
        }
        self.running_container(&request.container_id).await?;
        let url = streams.exec(request).map_err(too_many)?;
        Ok(Response::new(cri::ExecResponse { url }))
    }

    async fn attach(
        &self,
        request: Request<cri::AttachRequest>,
    ) -> Result<Response<cri::AttachResponse>, Status> {
        let request = request.into_inner();
        let streams = self.streams()?;
        if request.stdin || request.tty {
            return Err(Status::unimplemented(
                "attach with stdin or a TTY: rkube's containers have neither (CreateContainer refuses stdin and tty)",
            ));
        }
        if !(request.stdout || request.stderr) {
            return Err(Status::invalid_argument(
                "attach: one of stdin, stdout, or stderr must be set",
            ));
        }
        self.running_container(&request.container_id).await?;
        let url = streams.attach(request).map_err(too_many)?;
        Ok(Response::new(cri::AttachResponse { url }))
    }

    async fn port_forward(
        &self,
        request: Request<cri::PortForwardRequest>,
    ) -> Result<Response<cri::PortForwardResponse>, Status> {
        let request = request.into_inner();
        let streams = self.streams()?;
        if let Some(bad) = request.port.iter().find(|p| !(1..=65535).contains(*p)) {
            return Err(Status::invalid_argument(format!(
                "port-forward: port {bad} is not between 1 and 65535"
            )));
        }
        let id = request.pod_sandbox_id.clone();
        let sandbox = self.call(move |rt| rt.sandbox_status(&id)).await?;
        if sandbox.state != SandboxState::Ready {
            return Err(Status::failed_precondition(format!(
                "pod sandbox {} is not ready",
                sandbox.id
            )));
        }
        let url = streams.port_forward(request).map_err(too_many)?;
        Ok(Response::new(cri::PortForwardResponse { url }))
    }

    type GetContainerEventsStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<cri::ContainerEventResponse, Status>> + Send>,
    >;

    async fn get_container_events(
        &self,
        _request: Request<cri::GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        use futures::StreamExt;
        let rx = self.events.subscribe(self.runtime.clone()).await;
        // A subscriber too slow for the backlog misses events; it relists, as the kubelet
        // does periodically anyway.
        let stream = tokio_stream::wrappers::BroadcastStream::new(rx)
            .filter_map(|event| std::future::ready(event.ok().map(Ok)));
        Ok(Response::new(Box::pin(stream)))
    }

    not_implemented! {
        checkpoint_container(CheckpointContainerRequest) -> CheckpointContainerResponse: "CheckpointContainer";
        list_metric_descriptors(ListMetricDescriptorsRequest) -> ListMetricDescriptorsResponse: "ListMetricDescriptors";
        list_pod_sandbox_metrics(ListPodSandboxMetricsRequest) -> ListPodSandboxMetricsResponse: "ListPodSandboxMetrics";
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_refs_name_the_repository_and_the_manifest_digest() {
        let d = "sha256:abc";
        assert_eq!(
            image_ref("127.0.0.1:5000/busybox:1.36", d),
            "127.0.0.1:5000/busybox@sha256:abc"
        );
        assert_eq!(image_ref("busybox", d), "busybox@sha256:abc");
        assert_eq!(
            image_ref("reg/busybox@sha256:old", d),
            "reg/busybox@sha256:abc"
        );
        assert_eq!(image_ref("sha256:abc", d), d);
    }

    #[test]
    fn sandbox_configs_translate_namespaces_and_refuse_what_is_missing() {
        let mut config = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: "web".into(),
                uid: "u1".into(),
                namespace: "default".into(),
                attempt: 2,
            }),
            linux: Some(cri::LinuxPodSandboxConfig {
                cgroup_parent: "/kubepods/pod-u1".into(),
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(cri::NamespaceOption {
                        network: cri::NamespaceMode::Node as i32,
                        pid: cri::NamespaceMode::Container as i32,
                        ipc: cri::NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let s = sandbox_config(&config).unwrap();
        assert!(s.host_network && !s.host_pid && !s.host_ipc);
        assert_eq!(s.attempt, 2);
        assert_eq!(s.cgroup_parent.as_deref(), Some("/kubepods/pod-u1"));
        assert_eq!(s.log_directory, None);

        config.port_mappings.push(cri::PortMapping::default());
        assert_eq!(
            sandbox_config(&config).unwrap_err().code(),
            tonic::Code::Unimplemented
        );
        config.port_mappings.clear();
        config.metadata = None;
        assert_eq!(
            sandbox_config(&config).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }

    #[test]
    fn container_configs_translate_and_refuse_bad_or_missing_features() {
        let base = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: "app".into(),
                attempt: 3,
            }),
            image: image_spec("busybox"),
            envs: vec![cri::KeyValue {
                key: "A".into(),
                value: "1".into(),
            }],
            mounts: vec![cri::Mount {
                container_path: "/data".into(),
                host_path: "/tmp".into(),
                readonly: true,
                propagation: cri::MountPropagation::PropagationHostToContainer as i32,
                ..Default::default()
            }],
            linux: Some(cri::LinuxContainerConfig {
                resources: Some(cri::LinuxContainerResources {
                    cpu_period: 100_000,
                    cpu_quota: 50_000,
                    memory_limit_in_bytes: 64 << 20,
                    ..Default::default()
                }),
                security_context: Some(cri::LinuxContainerSecurityContext {
                    run_as_user: Some(cri::Int64Value { value: 1000 }),
                    seccomp: Some(cri::SecurityProfile {
                        profile_type: cri::security_profile::ProfileType::Unconfined as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        };
        let c = container_config(&base).unwrap();
        assert_eq!((c.name.as_str(), c.attempt), ("app", 3));
        assert_eq!(c.env, [("A".to_owned(), "1".to_owned())]);
        assert_eq!(c.mounts[0].propagation, Propagation::HostToContainer);
        assert_eq!(c.resources.cpu_quota, 50_000);
        assert_eq!(c.run_as_user, Some(1000));
        assert_eq!(c.seccomp, SeccompProfile::Unconfined);

        let refused = |change: &dyn Fn(&mut cri::ContainerConfig)| {
            let mut config = base.clone();
            change(&mut config);
            container_config(&config).unwrap_err().code()
        };
        assert_eq!(refused(&|c| c.image = None), tonic::Code::InvalidArgument);
        assert_eq!(refused(&|c| c.tty = true), tonic::Code::Unimplemented);
        assert_eq!(
            refused(&|c| c.mounts[0].host_path.clear()),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            refused(&|c| c.mounts[0].propagation = 9),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            refused(&|c| {
                let sc = c.linux.as_mut().unwrap().security_context.as_mut().unwrap();
                sc.run_as_user = Some(cri::Int64Value { value: -1 });
            }),
            tonic::Code::InvalidArgument
        );
    }

    #[test]
    fn runtime_errors_map_to_the_codes_the_kubelet_reads() {
        let code = |e: RuntimeError| status_of(&e).code();
        assert_eq!(
            code(RuntimeError::ContainerNotFound { id: "x".into() }),
            tonic::Code::NotFound
        );
        assert_eq!(
            code(RuntimeError::ExecTimeout {
                id: "x".into(),
                timeout: Duration::from_secs(1)
            }),
            tonic::Code::DeadlineExceeded
        );
        assert_eq!(
            code(RuntimeError::SandboxNotReady { id: "x".into() }),
            tonic::Code::FailedPrecondition
        );
        assert_eq!(
            code(RuntimeError::Io {
                step: "writing",
                path: "/var/lib/rkube/agent/containers/x/config.json".into(),
                source: std::io::Error::new(std::io::ErrorKind::StorageFull, "full"),
            }),
            tonic::Code::ResourceExhausted
        );
    }
}
