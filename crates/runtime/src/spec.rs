//! Building the OCI runtime spec (`config.json`) for a container from its image config, the
//! container config the caller (later: the CRI server) gives, and the sandbox it joins.
//!
//! This is pure: no file is written and no process started, so every rule (what overrides what,
//! which capabilities, which namespaces are joined) is unit-tested here without root. The one
//! input read from disk is the container's own `/etc/passwd` and `/etc/group`, passed in as text.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use oci_spec::OciSpecError;
use oci_spec::runtime::{
    Arch, Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxMemoryBuilder,
    LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResourcesBuilder, LinuxSeccomp,
    LinuxSeccompAction, LinuxSeccompBuilder, LinuxSyscallBuilder, Mount, MountBuilder,
    ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

use crate::image::archive::ImageConfig;

/// The PATH a container gets when neither the image nor the config sets one (containerd's).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The capabilities a non-privileged container gets: containerd's (and Docker's) default set.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Syscalls the runtime-default seccomp profile refuses with `EPERM`: the ones containerd's
/// default profile leaves out of its allow list for a container without extra capabilities
/// (kernel modules, keyrings, namespaces and mounts, clocks, tracing, reboot, swap, bpf...).
/// Written as a deny list so a syscall newer than this list still works, as in Docker's profile.
pub const SECCOMP_DENIED: &[&str] = &[
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "get_kernel_syms",
    "init_module",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mount",
    "mount_setattr",
    "move_mount",
    "move_pages",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "pivot_root",
    "query_module",
    "quotactl",
    "reboot",
    "request_key",
    "setns",
    "settimeofday",
    "stime",
    "swapoff",
    "swapon",
    "_sysctl",
    "syslog",
    "umount",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
    "vm86",
    "vm86old",
];

/// Errors from building a spec: each names what in the config is wrong.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Neither the config nor the image gives a command to run.
    #[error(
        "container {name:?} has no command: the image sets no entrypoint or cmd and the config gives none"
    )]
    MissingCommand {
        /// The container's name.
        name: String,
    },
    /// A mount's destination is not an absolute path.
    #[error("mount destination {destination:?} is not an absolute path")]
    RelativeMountDestination {
        /// The destination given.
        destination: String,
    },
    /// The user named in the image or config is not in the container's `/etc/passwd`.
    #[error("user {user:?} is not in the container's /etc/passwd")]
    UnknownUser {
        /// The user.
        user: String,
    },
    /// The group named in the image or config is not in the container's `/etc/group`.
    #[error("group {group:?} is not in the container's /etc/group")]
    UnknownGroup {
        /// The group.
        group: String,
    },
    /// A capability name is not one Linux has.
    #[error("unknown capability {name:?}")]
    UnknownCapability {
        /// The name given.
        name: String,
    },
    /// A working directory that is not absolute.
    #[error("working directory {dir:?} is not an absolute path")]
    RelativeWorkingDir {
        /// The directory given.
        dir: String,
    },
    /// An environment variable without a name.
    #[error("environment variable with an empty name")]
    EmptyEnvName,
    /// oci-spec refused a value while building the spec.
    #[error("building the OCI spec")]
    Build(#[source] OciSpecError),
}

/// How changes to mounts under a bind mount propagate (CRI's `MountPropagation`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Propagation {
    /// No propagation either way (`rprivate`).
    #[default]
    Private,
    /// Host mounts appear in the container (`rslave`).
    HostToContainer,
    /// Both ways (`rshared`); needs a privileged container in Kubernetes.
    Bidirectional,
}

/// A bind mount of a host path into the container.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BindMount {
    /// The host path; must exist.
    pub host_path: PathBuf,
    /// Where it appears in the container (absolute).
    pub container_path: String,
    /// Mounted read-only.
    pub readonly: bool,
    /// Mount propagation.
    pub propagation: Propagation,
}

/// CPU and memory limits (CRI's `LinuxContainerResources`); zero means unset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Resources {
    /// CFS period in microseconds.
    pub cpu_period: u64,
    /// CFS quota in microseconds per period (the CPU limit).
    pub cpu_quota: i64,
    /// CPU shares (the CPU request).
    pub cpu_shares: u64,
    /// Memory limit in bytes.
    pub memory_limit_bytes: i64,
}

/// The seccomp profile a container runs under.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SeccompProfile {
    /// The runtime's default profile ([`SECCOMP_DENIED`]), as Kubernetes' `RuntimeDefault`.
    #[default]
    RuntimeDefault,
    /// No filter.
    Unconfined,
}

/// What the caller wants for one container; the image fills in what is left unset.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ContainerConfig {
    /// The container's name within its sandbox.
    pub name: String,
    /// How many times a container of this name was created in the sandbox before (CRI's
    /// metadata attempt; the kubelet's restart count).
    #[serde(default)]
    pub attempt: u32,
    /// The image: a reference the image store resolves, or a manifest digest.
    pub image: String,
    /// Replaces the image's entrypoint (Kubernetes' `command`); the image's cmd is then ignored.
    pub command: Vec<String>,
    /// Replaces the image's cmd (Kubernetes' `args`).
    pub args: Vec<String>,
    /// Environment, applied over the image's (same name: this wins).
    pub env: Vec<(String, String)>,
    /// Working directory; the image's, else `/`.
    pub working_dir: Option<String>,
    /// Numeric user to run as; replaces the image's user.
    pub run_as_user: Option<u32>,
    /// User name to run as (looked up in the container's `/etc/passwd`).
    pub run_as_username: Option<String>,
    /// Primary group to run as.
    pub run_as_group: Option<u32>,
    /// Extra groups.
    pub supplemental_groups: Vec<u32>,
    /// Bind mounts.
    pub mounts: Vec<BindMount>,
    /// CPU and memory limits.
    pub resources: Resources,
    /// All capabilities, every device-free path writable, no seccomp.
    pub privileged: bool,
    /// The root filesystem is mounted read-only.
    pub readonly_rootfs: bool,
    /// Capabilities to add to the default set (`CAP_` prefix optional).
    pub add_capabilities: Vec<String>,
    /// Capabilities to drop from it (`ALL` drops every one).
    pub drop_capabilities: Vec<String>,
    /// Sets `no_new_privs` (Kubernetes' `allowPrivilegeEscalation: false`).
    pub no_new_privileges: bool,
    /// The seccomp profile.
    pub seccomp: SeccompProfile,
    /// Where the CRI log goes; default `<container dir>/container.log`.
    pub log_path: Option<PathBuf>,
    /// Labels, kept and reported back.
    pub labels: BTreeMap<String, String>,
    /// Annotations, kept and reported back.
    pub annotations: BTreeMap<String, String>,
}

/// What the spec needs to know about the sandbox a container joins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxContext {
    /// The pod's hostname (also `HOSTNAME` in the environment).
    pub hostname: String,
    /// `/proc/<pid>/ns/` of the holder process, or `None` to use the host's.
    pub network_ns: Option<PathBuf>,
    /// The holder's IPC namespace, or `None` for the host's.
    pub ipc_ns: Option<PathBuf>,
    /// The holder's UTS namespace, or `None` for the host's.
    pub uts_ns: Option<PathBuf>,
    /// Share the host's PID namespace.
    pub host_pid: bool,
    /// Files bind-mounted over the container's `/etc/hosts`, `/etc/resolv.conf`,
    /// `/etc/hostname`, and the pod's shared `/dev/shm` directory.
    pub etc_hosts: PathBuf,
    /// See `etc_hosts`.
    pub resolv_conf: PathBuf,
    /// See `etc_hosts`.
    pub etc_hostname: PathBuf,
    /// See `etc_hosts`.
    pub shm_dir: Option<PathBuf>,
}

/// The user a container runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    /// User ID.
    pub uid: u32,
    /// Primary group ID.
    pub gid: u32,
    /// Supplementary groups (from `/etc/group` membership and the config).
    pub additional_gids: Vec<u32>,
}

/// Everything [`build_spec`] needs.
pub struct SpecInputs<'a> {
    /// The container config.
    pub config: &'a ContainerConfig,
    /// The image's start-up config.
    pub image: &'a ImageConfig,
    /// The sandbox.
    pub sandbox: &'a SandboxContext,
    /// The mounted root filesystem (`root.path`).
    pub rootfs: &'a Path,
    /// The cgroup path (`linux.cgroupsPath`).
    pub cgroups_path: &'a Path,
    /// The container's `/etc/passwd`, if it has one.
    pub passwd: Option<&'a str>,
    /// The container's `/etc/group`, if it has one.
    pub group: Option<&'a str>,
}

/// The process arguments: Kubernetes' rules for command/args over entrypoint/cmd.
pub fn resolve_args(
    config: &ContainerConfig,
    image: &ImageConfig,
) -> Result<Vec<String>, SpecError> {
    let args: Vec<String> = match (config.command.is_empty(), config.args.is_empty()) {
        (false, _) => config.command.iter().chain(&config.args).cloned().collect(),
        (true, false) => image
            .entrypoint
            .iter()
            .chain(&config.args)
            .cloned()
            .collect(),
        (true, true) => image.entrypoint.iter().chain(&image.cmd).cloned().collect(),
    };
    if args.is_empty() || args[0].is_empty() {
        return Err(SpecError::MissingCommand {
            name: config.name.clone(),
        });
    }
    Ok(args)
}

/// The environment: the image's, overridden by the config's, plus `PATH` and `HOSTNAME` when
/// missing. Order is kept (first definition's position, last definition's value).
pub fn resolve_env(
    config: &ContainerConfig,
    image: &ImageConfig,
    hostname: &str,
) -> Result<Vec<String>, SpecError> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |key: &str, value: &str| match env.iter_mut().find(|(k, _)| k == key) {
        Some(entry) => entry.1 = value.to_owned(),
        None => env.push((key.to_owned(), value.to_owned())),
    };
    for entry in &image.env {
        let (key, value) = entry.split_once('=').unwrap_or((entry, ""));
        if !key.is_empty() {
            set(key, value);
        }
    }
    for (key, value) in &config.env {
        if key.is_empty() {
            return Err(SpecError::EmptyEnvName);
        }
        set(key, value);
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.insert(0, ("PATH".to_owned(), DEFAULT_PATH.to_owned()));
    }
    if !env.iter().any(|(k, _)| k == "HOSTNAME") {
        env.push(("HOSTNAME".to_owned(), hostname.to_owned()));
    }
    Ok(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect())
}

/// The home directory of `uid` in the container's `/etc/passwd`, `/` if it has none.
fn home_of(passwd: Option<&str>, uid: u32) -> String {
    passwd
        .into_iter()
        .flat_map(str::lines)
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 7 && f[2].parse() == Ok(uid))
        .map(|f| f[5].to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "/".to_owned())
}

/// The user and groups: the config's numeric user or user name, else the image's `USER`
/// (`name`, `uid`, `name:group`, `uid:gid`), resolved against the container's own files.
pub fn resolve_user(
    config: &ContainerConfig,
    image: &ImageConfig,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<ResolvedUser, SpecError> {
    let (user_part, group_part): (Option<String>, Option<String>) =
        if let Some(uid) = config.run_as_user {
            (Some(uid.to_string()), None)
        } else if let Some(name) = &config.run_as_username {
            (Some(name.clone()), None)
        } else if let Some(user) = &image.user {
            match user.split_once(':') {
                Some((u, g)) => (Some(u.to_owned()), Some(g.to_owned())),
                None => (Some(user.clone()), None),
            }
        } else {
            (None, None)
        };
    let passwd_entries = parse_colon_file(passwd.unwrap_or(""));
    let group_entries = parse_colon_file(group.unwrap_or(""));
    let (uid, mut gid, username) = match user_part.as_deref() {
        None | Some("") => (0, 0, Some("root".to_owned())),
        Some(user) => {
            let entry = passwd_entries
                .iter()
                .find(|e| e.first().map(String::as_str) == Some(user));
            match (user.parse::<u32>(), entry) {
                (_, Some(e)) => (
                    e.get(2).and_then(|v| v.parse().ok()).unwrap_or(0),
                    e.get(3).and_then(|v| v.parse().ok()).unwrap_or(0),
                    Some(user.to_owned()),
                ),
                (Ok(uid), None) => {
                    // A numeric user: its passwd entry, if any, gives the primary group.
                    let entry = passwd_entries
                        .iter()
                        .find(|e| e.get(2).map(String::as_str) == Some(user));
                    (
                        uid,
                        entry
                            .and_then(|e| e.get(3))
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0),
                        entry.and_then(|e| e.first().cloned()),
                    )
                }
                (Err(_), None) => {
                    return Err(SpecError::UnknownUser {
                        user: user.to_owned(),
                    });
                }
            }
        }
    };
    if let Some(group) = group_part.as_deref().filter(|g| !g.is_empty()) {
        gid = match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group_entries
                .iter()
                .find(|e| e.first().map(String::as_str) == Some(group))
                .and_then(|e| e.get(2))
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| SpecError::UnknownGroup {
                    group: group.to_owned(),
                })?,
        };
    }
    if let Some(group) = config.run_as_group {
        gid = group;
    }
    let mut additional_gids = Vec::new();
    if let Some(name) = &username {
        for entry in &group_entries {
            let members = entry.get(3).map(String::as_str).unwrap_or("");
            if members.split(',').any(|m| m == name)
                && let Some(g) = entry.get(2).and_then(|v| v.parse::<u32>().ok())
                && g != gid
                && !additional_gids.contains(&g)
            {
                additional_gids.push(g);
            }
        }
    }
    for g in &config.supplemental_groups {
        if !additional_gids.contains(g) {
            additional_gids.push(*g);
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
    })
}

fn parse_colon_file(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').map(str::to_owned).collect())
        .collect()
}

/// Parses a capability name with or without its `CAP_` prefix.
pub fn parse_capability(name: &str) -> Result<Capability, SpecError> {
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    bare.parse::<Capability>()
        .map_err(|_| SpecError::UnknownCapability {
            name: name.to_owned(),
        })
}

/// The capability set: the default set plus `add` minus `drop`; privileged gets all.
pub fn resolve_capabilities(config: &ContainerConfig) -> Result<HashSet<Capability>, SpecError> {
    if config.privileged {
        return Ok(all_capabilities());
    }
    let mut caps: HashSet<Capability> = DEFAULT_CAPABILITIES
        .iter()
        .map(|c| parse_capability(c))
        .collect::<Result<_, _>>()?;
    for name in &config.add_capabilities {
        if name.eq_ignore_ascii_case("ALL") {
            caps = all_capabilities();
        } else {
            caps.insert(parse_capability(name)?);
        }
    }
    for name in &config.drop_capabilities {
        if name.eq_ignore_ascii_case("ALL") {
            caps.clear();
        } else {
            caps.remove(&parse_capability(name)?);
        }
    }
    Ok(caps)
}

fn all_capabilities() -> HashSet<Capability> {
    // The capabilities this kernel knows: the highest is in /proc/sys/kernel/cap_last_cap.
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40);
    ALL_CAPABILITY_NAMES
        .iter()
        .enumerate()
        .filter(|(i, _)| *i as u32 <= last)
        .filter_map(|(_, n)| n.parse::<Capability>().ok())
        .collect()
}

/// Capability names in kernel number order (CAP_CHOWN = 0 ...).
const ALL_CAPABILITY_NAMES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// The runtime-default seccomp filter.
pub fn default_seccomp() -> Result<LinuxSeccomp, SpecError> {
    let denied = LinuxSyscallBuilder::default()
        .names(
            SECCOMP_DENIED
                .iter()
                .map(|s| (*s).to_owned())
                .collect::<Vec<_>>(),
        )
        .action(LinuxSeccompAction::ScmpActErrno)
        .errno_ret(libc_eperm())
        .build()
        .map_err(SpecError::Build)?;
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .architectures(vec![
            Arch::ScmpArchX86_64,
            Arch::ScmpArchX86,
            Arch::ScmpArchX32,
        ])
        .syscalls(vec![denied])
        .build()
        .map_err(SpecError::Build)
}

fn libc_eperm() -> u32 {
    1 // EPERM
}

/// Builds the whole OCI runtime spec.
pub fn build_spec(inputs: &SpecInputs<'_>) -> Result<Spec, SpecError> {
    let SpecInputs {
        config,
        image,
        sandbox,
        rootfs,
        cgroups_path,
        passwd,
        group,
    } = inputs;
    let args = resolve_args(config, image)?;
    let env = resolve_env(config, image, &sandbox.hostname)?;
    let cwd = config
        .working_dir
        .clone()
        .filter(|w| !w.is_empty())
        .or_else(|| image.working_dir.clone())
        .unwrap_or_else(|| "/".to_owned());
    if !cwd.starts_with('/') {
        return Err(SpecError::RelativeWorkingDir { dir: cwd });
    }
    let user = resolve_user(config, image, *passwd, *group)?;
    // As runc: HOME from the user's passwd entry unless the image or config set it.
    let mut env = env;
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", home_of(*passwd, user.uid)));
    }
    let caps = resolve_capabilities(config)?;
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .build()
        .map_err(SpecError::Build)?;
    let mut process = ProcessBuilder::default()
        .terminal(false)
        .args(args)
        .env(env)
        .cwd(cwd)
        .user(
            UserBuilder::default()
                .uid(user.uid)
                .gid(user.gid)
                .additional_gids(user.additional_gids)
                .build()
                .map_err(SpecError::Build)?,
        )
        .capabilities(capabilities);
    // Only ever `Some(true)`: libcontainer 0.7 loads seccomp before dropping capabilities only
    // when the field is absent; `Some(false)` makes it load the filter after CAP_SYS_ADMIN is
    // gone and without no_new_privs, which the kernel refuses.
    if config.no_new_privileges {
        process = process.no_new_privileges(true);
    }
    let process = process.build().map_err(SpecError::Build)?;

    let mut namespaces = vec![namespace(LinuxNamespaceType::Mount, None)?];
    if !sandbox.host_pid {
        namespaces.push(namespace(LinuxNamespaceType::Pid, None)?);
    }
    for (typ, path) in [
        (LinuxNamespaceType::Network, &sandbox.network_ns),
        (LinuxNamespaceType::Ipc, &sandbox.ipc_ns),
        (LinuxNamespaceType::Uts, &sandbox.uts_ns),
    ] {
        if let Some(path) = path {
            namespaces.push(namespace(typ, Some(path.clone()))?);
        }
    }

    let mut resources = LinuxResourcesBuilder::default();
    let r = &config.resources;
    if r.memory_limit_bytes > 0 {
        resources = resources.memory(
            LinuxMemoryBuilder::default()
                .limit(r.memory_limit_bytes)
                .build()
                .map_err(SpecError::Build)?,
        );
    }
    if r.cpu_quota > 0 || r.cpu_shares > 0 || r.cpu_period > 0 {
        let mut cpu = LinuxCpuBuilder::default();
        if r.cpu_quota > 0 {
            cpu = cpu.quota(r.cpu_quota);
        }
        if r.cpu_period > 0 {
            cpu = cpu.period(r.cpu_period);
        }
        if r.cpu_shares > 0 {
            cpu = cpu.shares(r.cpu_shares);
        }
        resources = resources.cpu(cpu.build().map_err(SpecError::Build)?);
    }

    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .cgroups_path(cgroups_path.to_path_buf())
        .resources(resources.build().map_err(SpecError::Build)?)
        .rootfs_propagation("private");
    if config.privileged {
        // The builder starts from oci-spec's defaults, which mask paths: clear them.
        linux = linux.masked_paths(Vec::new()).readonly_paths(Vec::new());
    } else {
        linux = linux
            .masked_paths(oci_spec::runtime::get_default_maskedpaths())
            .readonly_paths(oci_spec::runtime::get_default_readonly_paths());
        if config.seccomp == SeccompProfile::RuntimeDefault {
            linux = linux.seccomp(default_seccomp()?);
        }
    }

    SpecBuilder::default()
        .version("1.0.2")
        .process(process)
        .root(
            RootBuilder::default()
                .path(rootfs.to_path_buf())
                .readonly(config.readonly_rootfs)
                .build()
                .map_err(SpecError::Build)?,
        )
        .mounts(build_mounts(config, sandbox)?)
        .linux(linux.build().map_err(SpecError::Build)?)
        .build()
        .map_err(SpecError::Build)
        .map(|mut spec| {
            // The builder's default names a hostname, which a container on the host's UTS
            // namespace (a hostNetwork pod) must not carry: the host's name is not ours to set.
            spec.set_hostname(sandbox.uts_ns.is_some().then(|| sandbox.hostname.clone()));
            spec
        })
}

fn namespace(typ: LinuxNamespaceType, path: Option<PathBuf>) -> Result<LinuxNamespace, SpecError> {
    let mut builder = LinuxNamespaceBuilder::default().typ(typ);
    if let Some(path) = path {
        builder = builder.path(path);
    }
    builder.build().map_err(SpecError::Build)
}

fn mount(
    destination: &str,
    typ: &str,
    source: &Path,
    options: &[&str],
) -> Result<Mount, SpecError> {
    MountBuilder::default()
        .destination(destination)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|o| (*o).to_owned()).collect::<Vec<_>>())
        .build()
        .map_err(SpecError::Build)
}

/// The kernel filesystems every container gets, the pod's files, then the config's binds.
fn build_mounts(
    config: &ContainerConfig,
    sandbox: &SandboxContext,
) -> Result<Vec<Mount>, SpecError> {
    let sys_mode = if config.privileged { "rw" } else { "ro" };
    let mut mounts = vec![
        mount(
            "/proc",
            "proc",
            Path::new("proc"),
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/dev",
            "tmpfs",
            Path::new("tmpfs"),
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            Path::new("devpts"),
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            Path::new("mqueue"),
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "sysfs",
            Path::new("sysfs"),
            &["nosuid", "noexec", "nodev", sys_mode],
        )?,
    ];
    match &sandbox.shm_dir {
        Some(dir) => mounts.push(mount(
            "/dev/shm",
            "bind",
            dir,
            &["rbind", "nosuid", "noexec", "nodev", "rw"],
        )?),
        None => mounts.push(mount(
            "/dev/shm",
            "tmpfs",
            Path::new("shm"),
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?),
    }
    let user_paths: HashSet<&str> = config
        .mounts
        .iter()
        .map(|m| m.container_path.trim_end_matches('/'))
        .collect();
    for (dest, source) in [
        ("/etc/hosts", &sandbox.etc_hosts),
        ("/etc/resolv.conf", &sandbox.resolv_conf),
        ("/etc/hostname", &sandbox.etc_hostname),
    ] {
        // A volume mounted over one of these wins, as in the kubelet.
        if !user_paths.contains(dest) {
            let mode = if config.readonly_rootfs { "ro" } else { "rw" };
            mounts.push(mount(dest, "bind", source, &["rbind", "rprivate", mode])?);
        }
    }
    for bind in &config.mounts {
        if !bind.container_path.starts_with('/') {
            return Err(SpecError::RelativeMountDestination {
                destination: bind.container_path.clone(),
            });
        }
        let propagation = match bind.propagation {
            Propagation::Private => "rprivate",
            Propagation::HostToContainer => "rslave",
            Propagation::Bidirectional => "rshared",
        };
        let mode = if bind.readonly { "ro" } else { "rw" };
        mounts.push(mount(
            &bind.container_path,
            "bind",
            &bind.host_path,
            &["rbind", propagation, mode],
        )?);
    }
    Ok(mounts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> ImageConfig {
        ImageConfig {
            entrypoint: vec!["/entry".into()],
            cmd: vec!["--serve".into()],
            env: vec!["PATH=/img/bin".into(), "A=image".into(), "B=image".into()],
            working_dir: Some("/srv".into()),
            user: Some("app:staff".into()),
            exposed_ports: vec![],
        }
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nstaff:x:50:app\napp:x:1000:\nwheel:x:10:root,app\n";

    fn sandbox() -> SandboxContext {
        SandboxContext {
            hostname: "pod-a".into(),
            network_ns: Some("/proc/10/ns/net".into()),
            ipc_ns: Some("/proc/10/ns/ipc".into()),
            uts_ns: Some("/proc/10/ns/uts".into()),
            host_pid: false,
            etc_hosts: "/sb/hosts".into(),
            resolv_conf: "/sb/resolv.conf".into(),
            etc_hostname: "/sb/hostname".into(),
            shm_dir: Some("/sb/shm".into()),
        }
    }

    fn build(config: &ContainerConfig, image: &ImageConfig) -> Result<Spec, SpecError> {
        build_spec(&SpecInputs {
            config,
            image,
            sandbox: &sandbox(),
            rootfs: Path::new("/rootfs"),
            cgroups_path: Path::new("/rkube/pod/ctr"),
            passwd: Some(PASSWD),
            group: Some(GROUP),
        })
    }

    #[test]
    fn command_and_args_follow_kubernetes_rules_over_entrypoint_and_cmd() {
        let image = image();
        let mut c = ContainerConfig::default();
        assert_eq!(resolve_args(&c, &image).unwrap(), ["/entry", "--serve"]);
        c.args = vec!["--other".into()];
        assert_eq!(resolve_args(&c, &image).unwrap(), ["/entry", "--other"]);
        c.command = vec!["/bin/sh".into()];
        assert_eq!(resolve_args(&c, &image).unwrap(), ["/bin/sh", "--other"]);
        c.args.clear();
        assert_eq!(
            resolve_args(&c, &image).unwrap(),
            ["/bin/sh"],
            "image cmd is dropped"
        );
    }

    #[test]
    fn a_container_on_the_hosts_uts_namespace_names_no_hostname() {
        let config = ContainerConfig {
            command: vec!["true".into()],
            ..ContainerConfig::default()
        };
        let image = ImageConfig::default();
        let pod = build(&config, &image).unwrap();
        assert_eq!(pod.hostname().as_deref(), Some("pod-a"));
        let host = SandboxContext {
            network_ns: None,
            uts_ns: None,
            ..sandbox()
        };
        let spec = build_spec(&SpecInputs {
            config: &config,
            image: &image,
            sandbox: &host,
            rootfs: Path::new("/rootfs"),
            cgroups_path: Path::new("/pod/c"),
            passwd: None,
            group: None,
        })
        .unwrap();
        assert_eq!(
            spec.hostname(),
            &None,
            "libcontainer refuses a hostname without a UTS namespace"
        );
    }

    #[test]
    fn no_command_anywhere_is_a_typed_error() {
        let c = ContainerConfig {
            name: "web".into(),
            ..Default::default()
        };
        let err = resolve_args(&c, &ImageConfig::default()).unwrap_err();
        assert!(
            matches!(err, SpecError::MissingCommand { ref name } if name == "web"),
            "{err}"
        );
        assert!(err.to_string().contains("no command"));
    }

    #[test]
    fn config_env_overrides_the_image_and_path_and_hostname_are_filled_in() {
        let c = ContainerConfig {
            env: vec![("B".into(), "config".into()), ("C".into(), "new".into())],
            ..Default::default()
        };
        let env = resolve_env(&c, &image(), "pod-a").unwrap();
        assert_eq!(
            env,
            [
                "PATH=/img/bin",
                "A=image",
                "B=config",
                "C=new",
                "HOSTNAME=pod-a"
            ]
        );
        let env = resolve_env(&ContainerConfig::default(), &ImageConfig::default(), "h").unwrap();
        assert_eq!(
            env,
            [format!("PATH={DEFAULT_PATH}"), "HOSTNAME=h".to_owned()]
        );
        let bad = ContainerConfig {
            env: vec![(String::new(), "x".into())],
            ..Default::default()
        };
        assert!(matches!(
            resolve_env(&bad, &image(), "h"),
            Err(SpecError::EmptyEnvName)
        ));
    }

    #[test]
    fn users_resolve_from_the_containers_own_passwd_and_group() {
        let img = image();
        let u = resolve_user(&ContainerConfig::default(), &img, Some(PASSWD), Some(GROUP)).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 50), "app:staff");
        assert_eq!(u.additional_gids, [10], "wheel lists app; staff is primary");

        let c = ContainerConfig {
            run_as_user: Some(1000),
            run_as_group: Some(7),
            supplemental_groups: vec![99],
            ..Default::default()
        };
        let u = resolve_user(&c, &img, Some(PASSWD), Some(GROUP)).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 7));
        assert_eq!(u.additional_gids, [50, 10, 99]);

        let c = ContainerConfig {
            run_as_user: Some(4242),
            ..Default::default()
        };
        let u = resolve_user(&c, &img, Some(PASSWD), Some(GROUP)).unwrap();
        assert_eq!((u.uid, u.gid), (4242, 0), "unknown numeric user: gid 0");

        let none = resolve_user(
            &ContainerConfig::default(),
            &ImageConfig::default(),
            None,
            None,
        )
        .unwrap();
        assert_eq!((none.uid, none.gid), (0, 0));

        let c = ContainerConfig {
            run_as_username: Some("nobody".into()),
            ..Default::default()
        };
        let err = resolve_user(&c, &img, Some(PASSWD), Some(GROUP)).unwrap_err();
        assert!(matches!(err, SpecError::UnknownUser { .. }), "{err}");
        let img = ImageConfig {
            user: Some("app:nogroup".into()),
            ..Default::default()
        };
        let err =
            resolve_user(&ContainerConfig::default(), &img, Some(PASSWD), Some(GROUP)).unwrap_err();
        assert!(matches!(err, SpecError::UnknownGroup { .. }), "{err}");
    }

    #[test]
    fn capabilities_default_to_containerds_set_with_add_drop_and_privileged() {
        let caps = resolve_capabilities(&ContainerConfig::default()).unwrap();
        assert_eq!(caps.len(), DEFAULT_CAPABILITIES.len());
        assert!(caps.contains(&Capability::NetBindService));
        assert!(!caps.contains(&Capability::SysAdmin));
        let c = ContainerConfig {
            add_capabilities: vec!["SYS_ADMIN".into()],
            drop_capabilities: vec!["CAP_NET_RAW".into()],
            ..Default::default()
        };
        let caps = resolve_capabilities(&c).unwrap();
        assert!(caps.contains(&Capability::SysAdmin) && !caps.contains(&Capability::NetRaw));
        let c = ContainerConfig {
            drop_capabilities: vec!["ALL".into()],
            ..Default::default()
        };
        assert!(resolve_capabilities(&c).unwrap().is_empty());
        let c = ContainerConfig {
            privileged: true,
            ..Default::default()
        };
        assert!(
            resolve_capabilities(&c)
                .unwrap()
                .contains(&Capability::SysAdmin)
        );
        let c = ContainerConfig {
            add_capabilities: vec!["CAP_FLY".into()],
            ..Default::default()
        };
        assert!(matches!(
            resolve_capabilities(&c),
            Err(SpecError::UnknownCapability { .. })
        ));
    }

    #[test]
    fn home_comes_from_the_users_passwd_entry_unless_set() {
        assert_eq!(home_of(Some(PASSWD), 1000), "/home/app");
        assert_eq!(home_of(Some(PASSWD), 0), "/root");
        assert_eq!(home_of(Some(PASSWD), 4242), "/");
        assert_eq!(home_of(None, 0), "/");
    }

    #[test]
    fn the_spec_joins_the_sandbox_namespaces_and_carries_limits_mounts_and_seccomp() {
        let c = ContainerConfig {
            name: "web".into(),
            resources: Resources {
                cpu_period: 100_000,
                cpu_quota: 50_000,
                cpu_shares: 512,
                memory_limit_bytes: 64 << 20,
            },
            mounts: vec![BindMount {
                host_path: "/data".into(),
                container_path: "/var/data".into(),
                readonly: true,
                propagation: Propagation::HostToContainer,
            }],
            readonly_rootfs: true,
            ..Default::default()
        };
        let spec = build(&c, &image()).unwrap();
        let linux = spec.linux().as_ref().unwrap();
        let ns = linux.namespaces().as_ref().unwrap();
        let find = |t| ns.iter().find(|n| n.typ() == t).cloned();
        assert!(
            find(LinuxNamespaceType::Pid).unwrap().path().is_none(),
            "own pid ns"
        );
        assert!(find(LinuxNamespaceType::Mount).unwrap().path().is_none());
        assert_eq!(
            find(LinuxNamespaceType::Network).unwrap().path().as_deref(),
            Some(Path::new("/proc/10/ns/net"))
        );
        assert!(find(LinuxNamespaceType::Ipc).unwrap().path().is_some());
        let res = linux.resources().as_ref().unwrap();
        assert_eq!(res.memory().unwrap().limit(), Some(64 << 20));
        assert_eq!(res.cpu().as_ref().unwrap().quota(), Some(50_000));
        assert_eq!(res.cpu().as_ref().unwrap().shares(), Some(512));
        assert!(linux.seccomp().is_some());
        assert_eq!(
            linux.cgroups_path().as_deref(),
            Some(Path::new("/rkube/pod/ctr"))
        );
        assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
        let mounts = spec.mounts().as_ref().unwrap();
        let data = mounts
            .iter()
            .find(|m| m.destination() == Path::new("/var/data"))
            .unwrap();
        assert_eq!(data.options().as_ref().unwrap(), &["rbind", "rslave", "ro"]);
        assert!(
            mounts
                .iter()
                .any(|m| m.destination() == Path::new("/etc/hosts"))
        );
        let shm = mounts
            .iter()
            .find(|m| m.destination() == Path::new("/dev/shm"))
            .unwrap();
        assert_eq!(shm.source().as_deref(), Some(Path::new("/sb/shm")));
        let process = spec.process().as_ref().unwrap();
        assert_eq!(process.cwd(), Path::new("/srv"));
        assert_eq!(process.user().uid(), 1000);
    }

    #[test]
    fn privileged_and_host_namespaces_drop_the_confinement() {
        let c = ContainerConfig {
            privileged: true,
            command: vec!["sh".into()],
            ..Default::default()
        };
        let mut sb = sandbox();
        sb.network_ns = None;
        sb.host_pid = true;
        let spec = build_spec(&SpecInputs {
            config: &c,
            image: &ImageConfig::default(),
            sandbox: &sb,
            rootfs: Path::new("/r"),
            cgroups_path: Path::new("/c"),
            passwd: None,
            group: None,
        })
        .unwrap();
        let linux = spec.linux().as_ref().unwrap();
        assert!(linux.seccomp().is_none());
        assert!(linux.masked_paths().as_ref().is_none_or(Vec::is_empty));
        assert!(linux.readonly_paths().as_ref().is_none_or(Vec::is_empty));
        let ns = linux.namespaces().as_ref().unwrap();
        assert!(!ns.iter().any(|n| n.typ() == LinuxNamespaceType::Pid));
        assert!(!ns.iter().any(|n| n.typ() == LinuxNamespaceType::Network));
    }

    #[test]
    fn a_relative_mount_destination_or_workdir_is_refused() {
        let c = ContainerConfig {
            command: vec!["sh".into()],
            mounts: vec![BindMount {
                host_path: "/data".into(),
                container_path: "data".into(),
                readonly: false,
                propagation: Propagation::Private,
            }],
            ..Default::default()
        };
        assert!(matches!(
            build(&c, &image()),
            Err(SpecError::RelativeMountDestination { .. })
        ));
        let c = ContainerConfig {
            working_dir: Some("rel".into()),
            ..Default::default()
        };
        assert!(matches!(
            build(&c, &image()),
            Err(SpecError::RelativeWorkingDir { .. })
        ));
    }
}
