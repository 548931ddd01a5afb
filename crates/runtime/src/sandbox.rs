//! Pod sandboxes: the holder process that owns a pod's network, IPC and UTS namespaces, and
//! the per-pod files (`/etc/hosts`, `/etc/resolv.conf`, `/etc/hostname`, shared `/dev/shm`).
//!
//! The holder needs no image: it is the small helper executable (`rkube-shim`, see
//! `RuntimeConfig::lean_helper`) started as `pause` with [`pause_args`]; its code is
//! `rkube_shim::pause`. It unshares the namespaces the pod does not take from the host, sets the
//! hostname, brings loopback up, applies the pod's sysctls (inside its own namespaces, so they
//! stay the pod's), reports `ready` on stdout, and then sleeps in `sigwait` until told to stop. Containers join its
//! namespaces through `/proc/<pid>/ns/*`. The pod's network beyond loopback is set up by a
//! [`NetworkHook`] once the holder exists (the networking issue plugs its bridge/veth setup in).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;

/// DNS settings for the pod's `/etc/resolv.conf` (CRI's `DNSConfig`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DnsConfig {
    /// Name servers.
    pub servers: Vec<String>,
    /// Search domains.
    pub searches: Vec<String>,
    /// Resolver options (`ndots:5`).
    pub options: Vec<String>,
}

/// What the caller wants for one pod sandbox (the parts of CRI's `PodSandboxConfig` a runtime
/// acts on).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SandboxConfig {
    /// Pod name.
    pub name: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod UID.
    pub uid: String,
    /// Attempt number (CRI).
    pub attempt: u32,
    /// Hostname; the pod name when empty.
    pub hostname: String,
    /// Use the host's network (and UTS) namespace.
    pub host_network: bool,
    /// Use the host's PID namespace.
    pub host_pid: bool,
    /// Use the host's IPC namespace.
    pub host_ipc: bool,
    /// Namespaced sysctls to set in the pod's namespaces.
    pub sysctls: BTreeMap<String, String>,
    /// DNS; when `None` the host's `/etc/resolv.conf` is copied.
    pub dns: Option<DnsConfig>,
    /// Parent cgroup (absolute cgroupfs path); default `<runtime cgroup root>/<sandbox id>`.
    pub cgroup_parent: Option<String>,
    /// Directory for container logs (CRI `log_directory`).
    pub log_directory: Option<PathBuf>,
    /// Labels, kept and reported back.
    pub labels: BTreeMap<String, String>,
    /// Annotations, kept and reported back.
    pub annotations: BTreeMap<String, String>,
}

/// Errors from sandbox setup that are about its config.
#[derive(Debug, thiserror::Error)]
pub enum SandboxConfigError {
    /// A sysctl that is not namespaced, or whose namespace the pod shares with the host.
    #[error("sysctl {name} cannot be set: {reason}")]
    Sysctl {
        /// The sysctl.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// A hostname that is not a valid DNS label.
    #[error("invalid hostname {hostname:?}")]
    Hostname {
        /// The hostname.
        hostname: String,
    },
}

/// Checks the pod's sysctls against its namespaces, as containerd/runc do: only namespaced
/// sysctls, and only in namespaces the pod owns.
pub fn check_sysctls(config: &SandboxConfig) -> Result<(), SandboxConfigError> {
    for name in config.sysctls.keys() {
        let ipc = name.starts_with("kernel.shm")
            || name.starts_with("kernel.msg")
            || name == "kernel.sem"
            || name.starts_with("fs.mqueue.");
        let net = name.starts_with("net.");
        let err = |reason| SandboxConfigError::Sysctl {
            name: name.clone(),
            reason,
        };
        if ipc && config.host_ipc {
            return Err(err("the pod shares the host's IPC namespace"));
        }
        if net && config.host_network {
            return Err(err("the pod shares the host's network namespace"));
        }
        if !ipc && !net {
            return Err(err("it is not namespaced"));
        }
        if name.contains("..") || name.contains('/') {
            return Err(err("invalid name"));
        }
    }
    Ok(())
}

/// Checks a hostname (at most 63 characters of `[a-z0-9-.]`, as Kubernetes allows).
pub fn check_hostname(hostname: &str) -> Result<(), SandboxConfigError> {
    let ok = !hostname.is_empty()
        && hostname.len() <= 253
        && hostname
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(SandboxConfigError::Hostname {
            hostname: hostname.to_owned(),
        })
    }
}

/// The pod's network namespace as the network hook sees it.
#[derive(Debug, Clone)]
pub struct SandboxNetwork {
    /// Sandbox ID.
    pub id: String,
    /// Pod name.
    pub name: String,
    /// Pod namespace.
    pub namespace: String,
    /// `/proc/<holder pid>/ns/net`.
    pub netns: PathBuf,
}

/// What the network hook set up.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetworkStatus {
    /// The pod's IP addresses, primary first.
    pub ips: Vec<IpAddr>,
}

/// The error a network hook returns.
pub type HookError = Box<dyn std::error::Error + Send + Sync>;

/// Sets up and tears down the pod network beyond loopback (the networking issue implements it).
pub trait NetworkHook: Send + Sync {
    /// Called once the holder owns the namespace, before any container starts.
    fn setup(&self, sandbox: &SandboxNetwork) -> Result<NetworkStatus, HookError>;
    /// Called when the sandbox stops; must tolerate a namespace that is already gone.
    fn teardown(&self, sandbox: &SandboxNetwork) -> Result<(), HookError>;
}

/// Loopback only: what a pod has before the networking issue lands.
#[derive(Debug, Default, Clone, Copy)]
pub struct LoopbackOnly;

impl NetworkHook for LoopbackOnly {
    fn setup(&self, _: &SandboxNetwork) -> Result<NetworkStatus, HookError> {
        Ok(NetworkStatus::default())
    }
    fn teardown(&self, _: &SandboxNetwork) -> Result<(), HookError> {
        Ok(())
    }
}

/// The kubelet-style `/etc/hosts` for a pod.
pub fn hosts_file(hostname: &str, ips: &[IpAddr]) -> String {
    let mut text = String::from(
        "# Kubernetes-managed hosts file.\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n",
    );
    for ip in ips {
        text.push_str(&format!("{ip}\t{hostname}\n"));
    }
    text
}

/// `/etc/resolv.conf` from the pod's DNS config.
pub fn resolv_conf(dns: &DnsConfig) -> String {
    let mut text = String::new();
    for server in &dns.servers {
        text.push_str(&format!("nameserver {server}\n"));
    }
    if !dns.searches.is_empty() {
        text.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    if !dns.options.is_empty() {
        text.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    text
}

/// Arguments of the `pause` helper, built by the runtime.
pub fn pause_args(config: &SandboxConfig, hostname: &str) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["pause".into()];
    if !config.host_network {
        args.push("--new-net".into());
        args.push("--hostname".into());
        args.push(hostname.into());
    }
    if !config.host_ipc {
        args.push("--new-ipc".into());
    }
    for (k, v) in &config.sysctls {
        args.push("--sysctl".into());
        args.push(format!("{k}={v}").into());
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctls_must_be_namespaced_and_in_a_namespace_the_pod_owns() {
        let mut c = SandboxConfig::default();
        c.sysctls
            .insert("net.ipv4.ip_unprivileged_port_start".into(), "0".into());
        c.sysctls
            .insert("kernel.shm_rmid_forced".into(), "1".into());
        check_sysctls(&c).unwrap();
        c.host_network = true;
        let err = check_sysctls(&c).unwrap_err();
        assert!(err.to_string().contains("host's network"), "{err}");
        c.host_network = false;
        c.sysctls.insert("vm.swappiness".into(), "1".into());
        assert!(
            check_sysctls(&c)
                .unwrap_err()
                .to_string()
                .contains("not namespaced")
        );
    }

    #[test]
    fn pod_files_look_like_the_kubelets() {
        let hosts = hosts_file("web-0", &["10.42.0.5".parse().unwrap()]);
        assert!(hosts.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"));
        assert!(hosts.ends_with("10.42.0.5\tweb-0\n"));
        let resolv = resolv_conf(&DnsConfig {
            servers: vec!["10.43.0.10".into()],
            searches: vec![
                "default.svc.cluster.local".into(),
                "svc.cluster.local".into(),
            ],
            options: vec!["ndots:5".into()],
        });
        assert_eq!(
            resolv,
            "nameserver 10.43.0.10\nsearch default.svc.cluster.local svc.cluster.local\noptions ndots:5\n"
        );
    }

    #[test]
    fn pause_arguments_follow_the_host_namespace_choices() {
        let c = SandboxConfig {
            host_network: true,
            host_ipc: true,
            ..Default::default()
        };
        assert_eq!(pause_args(&c, "h"), [OsString::from("pause")]);
        let c = SandboxConfig::default();
        let args = pause_args(&c, "h");
        assert!(args.contains(&"--new-net".into()) && args.contains(&"--new-ipc".into()));
        assert!(check_hostname("bad_name").is_err());
        check_hostname("web-0").unwrap();
    }
}
