//! Cgroups: which layout this machine has, and the pod-level cgroups the runtime owns itself.
//!
//! This module owns the layout detection (so the runtime and the shim know where files live),
//! the *pod* cgroup that contains the sandbox holder and is the parent of its containers'
//! cgroups, each container's cgroup with its limits and device rules (which the container's
//! init joins itself), and reading back values (OOM kills, CPU quota). On a v2-only machine a
//! container's cgroup is libcontainer's instead, because v2 limits devices with an eBPF
//! program ([`CgroupDriver::limit_devices`]).
//!
//! Three layouts exist: `Legacy` (v1 controllers only), `Hybrid` (v1 controllers plus an
//! empty v2 tree at `/sys/fs/cgroup/unified`, as on this project's machines) and `Unified`
//! (v2). Hybrid is driven exactly like Legacy: the v2 tree has no controllers, so limits can
//! only be set through v1. libcgroups (libcontainer's cgroup crate) makes the same choice, so
//! container cgroups and ours agree. [`Cgroups::detect`] picks the implementation once.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::spec::Resources;

/// Where cgroup filesystems are mounted on every distribution this runtime supports.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Errors from cgroup operations, each naming the path involved.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// `statfs` of the cgroup root failed.
    #[error("inspecting {path}")]
    Detect {
        /// The path inspected.
        path: PathBuf,
        /// The cause.
        #[source]
        source: nix::Error,
    },
    /// The cgroup root is neither a cgroup2 mount nor a tmpfs of v1 mounts.
    #[error("{path} is not a cgroup v1 or v2 mount")]
    NoCgroups {
        /// The path inspected.
        path: PathBuf,
    },
    /// Reading `/proc/self/mountinfo` failed.
    #[error("reading /proc/self/mountinfo")]
    MountInfo(#[source] io::Error),
    /// A cgroup path given by a caller is not absolute or climbs with `..`.
    #[error("invalid cgroup path {path:?}: it must be absolute, without '..'")]
    InvalidPath {
        /// The path given.
        path: String,
    },
    /// Creating a cgroup directory failed.
    #[error("creating cgroup {path}")]
    Create {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Writing a cgroup file failed.
    #[error("writing {value:?} to {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What was written.
        value: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Reading a cgroup file failed.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Removing a cgroup directory failed (processes still in it).
    #[error("removing cgroup {path}")]
    Remove {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// The cgroup layout of this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupLayout {
    /// cgroup v1 controllers only.
    Legacy,
    /// v1 controllers plus an empty v2 tree at `unified/`: driven as v1.
    Hybrid,
    /// cgroup v2.
    Unified,
}

/// Detects the layout under `root` (normally [`CGROUP_ROOT`]).
pub fn detect_layout(root: &Path) -> Result<CgroupLayout, CgroupError> {
    use nix::sys::statfs::{CGROUP2_SUPER_MAGIC, TMPFS_MAGIC, statfs};
    let stat = |p: &Path| {
        statfs(p).map_err(|source| CgroupError::Detect {
            path: p.to_owned(),
            source,
        })
    };
    let fs_type = stat(root)?.filesystem_type();
    if fs_type == CGROUP2_SUPER_MAGIC {
        return Ok(CgroupLayout::Unified);
    }
    if fs_type != TMPFS_MAGIC {
        return Err(CgroupError::NoCgroups {
            path: root.to_owned(),
        });
    }
    let unified = root.join("unified");
    if unified.is_dir() && stat(&unified)?.filesystem_type() == CGROUP2_SUPER_MAGIC {
        Ok(CgroupLayout::Hybrid)
    } else {
        Ok(CgroupLayout::Legacy)
    }
}

/// Checks a cgroup path (`/rkube/pod-x`): absolute, no `..`, and returns it without the `/`.
pub fn relative(path: &str) -> Result<PathBuf, CgroupError> {
    let invalid = || CgroupError::InvalidPath {
        path: path.to_owned(),
    };
    let rest = path.strip_prefix('/').ok_or_else(invalid)?;
    if rest.split('/').any(|p| p == ".." || p == ".") {
        return Err(invalid());
    }
    Ok(PathBuf::from(rest.trim_end_matches('/')))
}

/// One value read back from a container or pod cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupValue {
    /// The CFS quota in microseconds (`-1`/`max` = none is `None`) and period.
    CpuQuota,
    /// The memory limit in bytes.
    MemoryLimit,
}

/// The pod cgroups and read-backs, for one layout. Chosen once by [`Cgroups::detect`].
pub trait CgroupDriver: Send + Sync + std::fmt::Debug {
    /// The layout this driver serves.
    fn layout(&self) -> CgroupLayout;
    /// Creates the cgroup (and its parents) in every controller, ready to take processes.
    fn create(&self, path: &str) -> Result<(), CgroupError>;
    /// Moves a process into the cgroup.
    fn add_process(&self, path: &str, pid: u32) -> Result<(), CgroupError>;
    /// Removes the cgroup and any (empty) child cgroups left in it; absent is fine.
    fn remove(&self, path: &str) -> Result<(), CgroupError>;
    /// Whether the cgroup exists in any controller.
    fn exists(&self, path: &str) -> bool;
    /// The file whose `oom_kill N` line counts OOM kills in the cgroup.
    fn oom_events_file(&self, path: &str) -> Result<PathBuf, CgroupError>;
    /// Reads one value back (`None`: no limit set).
    fn read(&self, path: &str, value: CgroupValue) -> Result<Option<i64>, CgroupError>;
    /// CPU and memory used by the cgroup's processes, for CRI stats.
    fn usage(&self, path: &str) -> Result<CgroupUsage, CgroupError>;
    /// Changes the CPU and memory limits of a live cgroup: each value that is set (non-zero;
    /// a quota of -1 lifts the CPU limit) replaces the current one, the rest stay.
    fn update(&self, path: &str, resources: &Resources) -> Result<(), CgroupError>;
    /// The `cgroup.procs` file of the cgroup in every hierarchy: a process joins the cgroup by
    /// writing `0` (itself) to each, as a container's init does.
    fn procs_files(&self, path: &str) -> Result<Vec<PathBuf>, CgroupError>;
    /// The processes in the cgroup (not its children).
    fn pids(&self, path: &str) -> Result<Vec<i32>, CgroupError>;
    /// Whether [`CgroupDriver::limit_devices`] can: not on v2, which limits devices with an
    /// eBPF program, so the caller must leave that to libcontainer.
    fn limits_devices(&self) -> bool;
    /// Limits the devices the cgroup's processes may open or create: all for a privileged
    /// container, else the OCI runtime spec's defaults.
    fn limit_devices(&self, path: &str, privileged: bool) -> Result<(), CgroupError>;
}

/// The device rules of an unprivileged container, in v1 `devices.allow` syntax: any device
/// node may be created (`m`; opening is what matters), the OCI runtime spec's default devices
/// and pseudo-terminals may be used, as runc allows.
pub const DEFAULT_DEVICE_RULES: [&str; 11] = [
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:1 rwm",
    "c 5:2 rwm",
    "c 136:* rwm",
];

/// The pids listed in a `cgroup.procs` file.
fn parse_pids(text: &str) -> Vec<i32> {
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// cgroup v2's `cpu.weight` for v1's `cpu.shares` (2..262144 onto 1..10000), as runc maps it.
pub fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// What a cgroup's processes use (the counters CRI's `ContainerStats` reports).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupUsage {
    /// CPU time used since the cgroup was made, in nanoseconds.
    pub cpu_ns: u64,
    /// Memory charged to the cgroup, page cache included.
    pub memory_bytes: u64,
    /// The working set: usage minus inactive file pages (what the kubelet evicts on).
    pub working_set_bytes: u64,
    /// Anonymous memory (RSS).
    pub rss_bytes: u64,
    /// Page faults, minor and major.
    pub page_faults: u64,
    /// Major page faults.
    pub major_page_faults: u64,
}

/// A `key value` line's value from a `*.stat` file.
fn stat_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

impl CgroupUsage {
    /// From cgroup v1's `cpuacct.usage`, `memory.usage_in_bytes` and `memory.stat`.
    fn from_v1(cpuacct_usage: &str, memory_usage: &str, memory_stat: &str) -> Self {
        let memory_bytes: u64 = memory_usage.trim().parse().unwrap_or(0);
        let inactive = stat_value(memory_stat, "total_inactive_file").unwrap_or(0);
        Self {
            cpu_ns: cpuacct_usage.trim().parse().unwrap_or(0),
            memory_bytes,
            working_set_bytes: memory_bytes.saturating_sub(inactive),
            rss_bytes: stat_value(memory_stat, "total_rss").unwrap_or(0),
            page_faults: stat_value(memory_stat, "total_pgfault").unwrap_or(0),
            major_page_faults: stat_value(memory_stat, "total_pgmajfault").unwrap_or(0),
        }
    }

    /// From cgroup v2's `cpu.stat`, `memory.current` and `memory.stat`.
    fn from_v2(cpu_stat: &str, memory_current: &str, memory_stat: &str) -> Self {
        let memory_bytes: u64 = memory_current.trim().parse().unwrap_or(0);
        let inactive = stat_value(memory_stat, "inactive_file").unwrap_or(0);
        Self {
            cpu_ns: stat_value(cpu_stat, "usage_usec").unwrap_or(0) * 1000,
            memory_bytes,
            working_set_bytes: memory_bytes.saturating_sub(inactive),
            rss_bytes: stat_value(memory_stat, "anon").unwrap_or(0),
            page_faults: stat_value(memory_stat, "pgfault").unwrap_or(0),
            major_page_faults: stat_value(memory_stat, "pgmajfault").unwrap_or(0),
        }
    }
}

/// Parses the `oom_kill N` line of `memory.oom_control` (v1) or `memory.events` (v2); the shim
/// monitor (in `rkube-shim`) reads the same files with the same function.
pub use rkube_shim::parse_oom_kills;

/// Picks the driver for this machine.
pub struct Cgroups;

impl Cgroups {
    /// Detects the layout under [`CGROUP_ROOT`] and returns its driver.
    pub fn detect() -> Result<Box<dyn CgroupDriver>, CgroupError> {
        let root = Path::new(CGROUP_ROOT);
        Ok(match detect_layout(root)? {
            layout @ (CgroupLayout::Legacy | CgroupLayout::Hybrid) => {
                Box::new(V1::from_mountinfo(layout)?)
            }
            CgroupLayout::Unified => Box::new(V2 {
                root: root.to_owned(),
            }),
        })
    }
}

/// cgroup v1: one hierarchy per mount, each with its controllers.
#[derive(Debug)]
pub struct V1 {
    layout: CgroupLayout,
    /// Controller name → mount point (co-mounted controllers share one).
    controllers: BTreeMap<String, PathBuf>,
}

impl V1 {
    /// Finds the v1 controller mounts in `/proc/self/mountinfo`.
    pub fn from_mountinfo(layout: CgroupLayout) -> Result<Self, CgroupError> {
        let text = fs::read_to_string("/proc/self/mountinfo").map_err(CgroupError::MountInfo)?;
        Ok(Self {
            layout,
            controllers: parse_v1_mounts(&text),
        })
    }

    /// The distinct hierarchy mount points.
    fn hierarchies(&self) -> Vec<&PathBuf> {
        let mut mounts: Vec<&PathBuf> = self.controllers.values().collect();
        mounts.sort();
        mounts.dedup();
        mounts
    }

    /// A new cpuset cgroup starts with no CPUs or memory nodes and refuses tasks until given
    /// its parent's.
    fn inherit_cpuset(&self, mount: &Path, parent: &Path, dir: &Path) -> Result<(), CgroupError> {
        if self.controllers.get("cpuset").map(PathBuf::as_path) == Some(mount) {
            for file in ["cpuset.cpus", "cpuset.mems"] {
                let value = read_file(&parent.join(file))?;
                write_file(&dir.join(file), value.trim())?;
            }
        }
        Ok(())
    }

    fn dir(&self, controller: &str, path: &str) -> Result<Option<PathBuf>, CgroupError> {
        let rel = relative(path)?;
        Ok(self.controllers.get(controller).map(|m| m.join(rel)))
    }
}

/// Parses v1 controller mounts (`cgroup` type, super options naming controllers) from mountinfo.
fn parse_v1_mounts(mountinfo: &str) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut right = right.split(' ');
        if right.next() != Some("cgroup") {
            continue;
        }
        let Some(mount_point) = left.split(' ').nth(4) else {
            continue;
        };
        let options = right.nth(1).unwrap_or("");
        for opt in options.split(',') {
            if matches!(
                opt,
                "cpu"
                    | "cpuacct"
                    | "cpuset"
                    | "memory"
                    | "devices"
                    | "freezer"
                    | "blkio"
                    | "pids"
                    | "net_cls"
                    | "net_prio"
                    | "hugetlb"
                    | "perf_event"
                    | "rdma"
                    | "misc"
            ) {
                out.insert(opt.to_owned(), PathBuf::from(mount_point));
            }
        }
    }
    out
}

impl CgroupDriver for V1 {
    fn layout(&self) -> CgroupLayout {
        self.layout
    }

    fn create(&self, path: &str) -> Result<(), CgroupError> {
        let rel = relative(path)?;
        for mount in self.hierarchies() {
            // Usually only the last level is new (a container in its pod's cgroup): one mkdir,
            // not one per level.
            let leaf = mount.join(&rel);
            match (fs::create_dir(&leaf), leaf.parent()) {
                (Ok(()), Some(parent)) => {
                    self.inherit_cpuset(mount, parent, &leaf)?;
                    continue;
                }
                (Err(e), _) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                _ => {}
            }
            let mut dir = mount.clone();
            for part in rel.iter() {
                let parent = dir.clone();
                dir.push(part);
                match fs::create_dir(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                    Err(source) => return Err(CgroupError::Create { path: dir, source }),
                }
                self.inherit_cpuset(mount, &parent, &dir)?;
            }
        }
        Ok(())
    }

    fn add_process(&self, path: &str, pid: u32) -> Result<(), CgroupError> {
        let rel = relative(path)?;
        for mount in self.hierarchies() {
            write_file(&mount.join(&rel).join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    fn remove(&self, path: &str) -> Result<(), CgroupError> {
        let rel = relative(path)?;
        for mount in self.hierarchies() {
            remove_tree(&mount.join(&rel))?;
        }
        Ok(())
    }

    fn exists(&self, path: &str) -> bool {
        relative(path).is_ok_and(|rel| self.hierarchies().iter().any(|m| m.join(&rel).exists()))
    }

    fn oom_events_file(&self, path: &str) -> Result<PathBuf, CgroupError> {
        Ok(self
            .dir("memory", path)?
            .unwrap_or_else(|| PathBuf::from("/nonexistent"))
            .join("memory.oom_control"))
    }

    fn read(&self, path: &str, value: CgroupValue) -> Result<Option<i64>, CgroupError> {
        let (controller, file) = match value {
            CgroupValue::CpuQuota => ("cpu", "cpu.cfs_quota_us"),
            CgroupValue::MemoryLimit => ("memory", "memory.limit_in_bytes"),
        };
        let Some(dir) = self.dir(controller, path)? else {
            return Ok(None);
        };
        let text = read_file(&dir.join(file))?;
        let v: i64 = text.trim().parse().unwrap_or(-1);
        // v1 reports "no limit" as -1 (quota) or a page-rounded huge number (memory).
        Ok((0..i64::MAX / 2).contains(&v).then_some(v))
    }

    fn update(&self, path: &str, r: &Resources) -> Result<(), CgroupError> {
        if let Some(cpu) = self.dir("cpu", path)? {
            if r.cpu_period > 0 {
                write_file(&cpu.join("cpu.cfs_period_us"), &r.cpu_period.to_string())?;
            }
            if r.cpu_quota != 0 {
                write_file(
                    &cpu.join("cpu.cfs_quota_us"),
                    &r.cpu_quota.max(-1).to_string(),
                )?;
            }
            if r.cpu_shares > 0 {
                write_file(&cpu.join("cpu.shares"), &r.cpu_shares.to_string())?;
            }
        }
        if r.memory_limit_bytes > 0
            && let Some(memory) = self.dir("memory", path)?
        {
            write_file(
                &memory.join("memory.limit_in_bytes"),
                &r.memory_limit_bytes.to_string(),
            )?;
        }
        Ok(())
    }

    fn procs_files(&self, path: &str) -> Result<Vec<PathBuf>, CgroupError> {
        let rel = relative(path)?;
        Ok(self
            .hierarchies()
            .into_iter()
            .map(|m| m.join(&rel).join("cgroup.procs"))
            .collect())
    }

    fn pids(&self, path: &str) -> Result<Vec<i32>, CgroupError> {
        let rel = relative(path)?;
        let Some(mount) = self.hierarchies().into_iter().next() else {
            return Ok(Vec::new());
        };
        match fs::read_to_string(mount.join(rel).join("cgroup.procs")) {
            Ok(text) => Ok(parse_pids(&text)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(CgroupError::Read {
                path: mount.join(relative(path)?).join("cgroup.procs"),
                source,
            }),
        }
    }

    fn limits_devices(&self) -> bool {
        self.controllers.contains_key("devices")
    }

    fn limit_devices(&self, path: &str, privileged: bool) -> Result<(), CgroupError> {
        let Some(dir) = self.dir("devices", path)? else {
            return Err(CgroupError::Write {
                path: PathBuf::from(path),
                value: "devices".into(),
                source: io::Error::other("no devices controller is mounted"),
            });
        };
        if privileged {
            return write_file(&dir.join("devices.allow"), "a");
        }
        write_file(&dir.join("devices.deny"), "a")?;
        for rule in DEFAULT_DEVICE_RULES {
            write_file(&dir.join("devices.allow"), rule)?;
        }
        Ok(())
    }

    fn usage(&self, path: &str) -> Result<CgroupUsage, CgroupError> {
        let read = |controller: &str, file: &str| -> Result<String, CgroupError> {
            match self.dir(controller, path)? {
                Some(dir) => read_file(&dir.join(file)),
                None => Ok(String::new()),
            }
        };
        Ok(CgroupUsage::from_v1(
            &read("cpuacct", "cpuacct.usage")?,
            &read("memory", "memory.usage_in_bytes")?,
            &read("memory", "memory.stat")?,
        ))
    }
}

/// cgroup v2: one tree; controllers are enabled per level in `cgroup.subtree_control`.
#[derive(Debug)]
pub struct V2 {
    root: PathBuf,
}

impl CgroupDriver for V2 {
    fn layout(&self) -> CgroupLayout {
        CgroupLayout::Unified
    }

    fn create(&self, path: &str) -> Result<(), CgroupError> {
        let rel = relative(path)?;
        let mut dir = self.root.clone();
        for part in rel.iter() {
            // Children get the controllers only if each ancestor delegates them.
            let controllers = read_file(&dir.join("cgroup.controllers")).unwrap_or_default();
            let enable: Vec<String> = controllers
                .split_whitespace()
                .filter(|c| matches!(*c, "cpu" | "memory" | "pids" | "io" | "cpuset" | "hugetlb"))
                .map(|c| format!("+{c}"))
                .collect();
            if !enable.is_empty() {
                write_file(&dir.join("cgroup.subtree_control"), &enable.join(" "))?;
            }
            dir.push(part);
            match fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(source) => return Err(CgroupError::Create { path: dir, source }),
            }
        }
        Ok(())
    }

    fn add_process(&self, path: &str, pid: u32) -> Result<(), CgroupError> {
        write_file(
            &self.root.join(relative(path)?).join("cgroup.procs"),
            &pid.to_string(),
        )
    }

    fn procs_files(&self, path: &str) -> Result<Vec<PathBuf>, CgroupError> {
        Ok(vec![self.root.join(relative(path)?).join("cgroup.procs")])
    }

    fn pids(&self, path: &str) -> Result<Vec<i32>, CgroupError> {
        let file = self.root.join(relative(path)?).join("cgroup.procs");
        match fs::read_to_string(&file) {
            Ok(text) => Ok(parse_pids(&text)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(CgroupError::Read { path: file, source }),
        }
    }

    fn limits_devices(&self) -> bool {
        false
    }

    fn limit_devices(&self, path: &str, _privileged: bool) -> Result<(), CgroupError> {
        Err(CgroupError::Write {
            path: PathBuf::from(path),
            value: "devices".into(),
            source: io::Error::other("cgroup v2 limits devices with an eBPF program"),
        })
    }

    fn remove(&self, path: &str) -> Result<(), CgroupError> {
        remove_tree(&self.root.join(relative(path)?))
    }

    fn exists(&self, path: &str) -> bool {
        relative(path).is_ok_and(|rel| self.root.join(rel).exists())
    }

    fn oom_events_file(&self, path: &str) -> Result<PathBuf, CgroupError> {
        Ok(self.root.join(relative(path)?).join("memory.events"))
    }

    fn read(&self, path: &str, value: CgroupValue) -> Result<Option<i64>, CgroupError> {
        let dir = self.root.join(relative(path)?);
        let text = match value {
            CgroupValue::CpuQuota => read_file(&dir.join("cpu.max"))?
                .split_whitespace()
                .next()
                .unwrap_or("max")
                .to_owned(),
            CgroupValue::MemoryLimit => read_file(&dir.join("memory.max"))?,
        };
        Ok(text.trim().parse().ok())
    }

    fn update(&self, path: &str, r: &Resources) -> Result<(), CgroupError> {
        let dir = self.root.join(relative(path)?);
        if r.cpu_quota != 0 || r.cpu_period > 0 {
            let current = read_file(&dir.join("cpu.max"))?;
            let mut parts = current.split_whitespace();
            let (quota, period) = (
                parts.next().unwrap_or("max").to_owned(),
                parts.next().unwrap_or("100000").to_owned(),
            );
            let quota = match r.cpu_quota {
                0 => quota,
                q if q < 0 => "max".to_owned(),
                q => q.to_string(),
            };
            let period = if r.cpu_period > 0 {
                r.cpu_period.to_string()
            } else {
                period
            };
            write_file(&dir.join("cpu.max"), &format!("{quota} {period}"))?;
        }
        if r.cpu_shares > 0 {
            write_file(
                &dir.join("cpu.weight"),
                &shares_to_weight(r.cpu_shares).to_string(),
            )?;
        }
        if r.memory_limit_bytes > 0 {
            write_file(&dir.join("memory.max"), &r.memory_limit_bytes.to_string())?;
        }
        Ok(())
    }

    fn usage(&self, path: &str) -> Result<CgroupUsage, CgroupError> {
        let dir = self.root.join(relative(path)?);
        // A controller the parent does not delegate leaves its files out: that reads as zero.
        let optional = |file: &str| read_file(&dir.join(file)).unwrap_or_default();
        if !dir.exists() {
            return Err(CgroupError::Read {
                path: dir,
                source: io::Error::from(io::ErrorKind::NotFound),
            });
        }
        Ok(CgroupUsage::from_v2(
            &optional("cpu.stat"),
            &optional("memory.current"),
            &optional("memory.stat"),
        ))
    }
}

fn read_file(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_owned(),
        source,
    })
}

fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(|source| CgroupError::Write {
        path: path.to_owned(),
        value: value.to_owned(),
        source,
    })
}

/// Removes a cgroup directory, children first (cgroup dirs can only be `rmdir`ed, never
/// emptied of their control files).
fn remove_tree(dir: &Path) -> Result<(), CgroupError> {
    // Usually there are no children (a container's cgroup): one rmdir, no listing.
    match fs::remove_dir(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(_) => {}
    }
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(CgroupError::Remove {
                path: dir.to_owned(),
                source,
            });
        }
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&entry.path())?;
        }
    }
    match fs::remove_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(CgroupError::Remove {
            path: dir.to_owned(),
            source: e,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_reads_both_layouts_and_the_working_set_leaves_inactive_file_out() {
        let v1 = CgroupUsage::from_v1(
            "1500000\n",
            "10485760\n",
            "cache 1\ntotal_rss 4096\ntotal_inactive_file 1048576\ntotal_pgfault 7\ntotal_pgmajfault 2\n",
        );
        assert_eq!(v1.cpu_ns, 1_500_000);
        assert_eq!(v1.memory_bytes, 10 << 20);
        assert_eq!(v1.working_set_bytes, 9 << 20);
        assert_eq!(
            (v1.rss_bytes, v1.page_faults, v1.major_page_faults),
            (4096, 7, 2)
        );

        let v2 = CgroupUsage::from_v2(
            "usage_usec 250\nuser_usec 200\n",
            "2048\n",
            "anon 1024\ninactive_file 4096\npgfault 3\n",
        );
        assert_eq!(v2.cpu_ns, 250_000);
        assert_eq!(v2.working_set_bytes, 0, "never below zero");
        assert_eq!(
            (v2.rss_bytes, v2.page_faults, v2.major_page_faults),
            (1024, 3, 0)
        );
        assert_eq!(CgroupUsage::from_v1("", "", ""), CgroupUsage::default());
    }

    #[test]
    fn updates_change_only_the_values_given() {
        let tmp = tempfile::tempdir().unwrap();
        let (cpu, memory) = (
            tmp.path().join("cpu/pod/c"),
            tmp.path().join("memory/pod/c"),
        );
        fs::create_dir_all(&cpu).unwrap();
        fs::create_dir_all(&memory).unwrap();
        for (dir, file, value) in [
            (&cpu, "cpu.cfs_period_us", "100000"),
            (&cpu, "cpu.cfs_quota_us", "-1"),
            (&cpu, "cpu.shares", "1024"),
            (&memory, "memory.limit_in_bytes", "9223372036854771712"),
        ] {
            fs::write(dir.join(file), value).unwrap();
        }
        let v1 = V1 {
            layout: CgroupLayout::Legacy,
            controllers: [
                ("cpu".to_owned(), tmp.path().join("cpu")),
                ("memory".to_owned(), tmp.path().join("memory")),
            ]
            .into(),
        };
        let half_a_cpu = Resources {
            cpu_quota: 50_000,
            memory_limit_bytes: 64 << 20,
            ..Resources::default()
        };
        v1.update("/pod/c", &half_a_cpu).unwrap();
        let read = |dir: &Path, file| fs::read_to_string(dir.join(file)).unwrap();
        assert_eq!(read(&cpu, "cpu.cfs_quota_us"), "50000");
        assert_eq!(read(&cpu, "cpu.cfs_period_us"), "100000", "unset: kept");
        assert_eq!(read(&cpu, "cpu.shares"), "1024");
        assert_eq!(
            read(&memory, "memory.limit_in_bytes"),
            (64 << 20).to_string()
        );

        let pod = tmp.path().join("v2/pod/c");
        fs::create_dir_all(&pod).unwrap();
        fs::write(pod.join("cpu.max"), "max 100000\n").unwrap();
        let v2 = V2 {
            root: tmp.path().join("v2"),
        };
        v2.update("/pod/c", &half_a_cpu).unwrap();
        assert_eq!(read(&pod, "cpu.max"), "50000 100000");
        assert_eq!(read(&pod, "memory.max"), (64 << 20).to_string());
        let unlimited = Resources {
            cpu_quota: -1,
            cpu_period: 50_000,
            cpu_shares: 2,
            ..Resources::default()
        };
        v2.update("/pod/c", &unlimited).unwrap();
        assert_eq!(read(&pod, "cpu.max"), "max 50000");
        assert_eq!(read(&pod, "cpu.weight"), "1");
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }

    const MOUNTINFO: &str = "\
25 20 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
27 25 0:24 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
30 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
31 25 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
";

    #[test]
    fn v1_mounts_are_found_by_controller_and_named_hierarchies_are_skipped() {
        let mounts = parse_v1_mounts(MOUNTINFO);
        assert_eq!(
            mounts.get("cpu").map(PathBuf::as_path),
            Some(Path::new("/sys/fs/cgroup/cpu,cpuacct"))
        );
        assert_eq!(mounts.get("cpu"), mounts.get("cpuacct"));
        assert!(mounts.contains_key("memory"));
        assert_eq!(mounts.len(), 3);
        let v1 = V1 {
            layout: CgroupLayout::Hybrid,
            controllers: mounts,
        };
        assert_eq!(
            v1.hierarchies().len(),
            2,
            "co-mounted controllers share a hierarchy"
        );
    }

    #[test]
    fn cgroup_paths_must_be_absolute_without_dot_dot() {
        assert_eq!(relative("/rkube/pod-1/").unwrap(), Path::new("rkube/pod-1"));
        for bad in ["rkube", "/rkube/../etc", "/a/./b"] {
            assert!(
                matches!(relative(bad), Err(CgroupError::InvalidPath { .. })),
                "{bad}"
            );
        }
    }
}
