//! Processes and mounts a failed test may leave behind, found through `/proc`, so test
//! fixtures (containerd, rkube's runtime) can kill and unmount what is theirs on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Whether process `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat[stat.rfind(')')? + 2..].chars().next()?;
            Some(state != 'Z')
        })
        .unwrap_or(false)
}

/// The processes whose parent PID and command line (arguments joined by spaces) `select`.
pub fn processes(select: impl Fn(u32, &str) -> bool) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Fields after the command name, which may hold spaces: state, ppid, ...
            let ppid = stat
                .rfind(')')
                .and_then(|end| stat[end + 2..].split(' ').nth(1)?.parse().ok());
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            ppid.is_some_and(|ppid| select(ppid, &cmdline))
        })
        .collect()
}

/// Live processes (not this one) whose command line names `path` or something under it.
pub fn processes_naming(path: &Path) -> Vec<u32> {
    let needle = path.display().to_string();
    processes(|_, cmdline| cmdline.contains(&needle))
        .into_iter()
        .filter(|&pid| pid != std::process::id() && alive(pid))
        .collect()
}

/// Sends SIGKILL to every process in `pids` (gone ones are no error).
pub fn kill_all(pids: &[u32]) {
    if !pids.is_empty() {
        let _ = Command::new("kill")
            .arg("-KILL")
            .args(pids.iter().map(u32::to_string))
            .stderr(Stdio::null())
            .status();
    }
}

/// Mount points at or under `dir`, in mount order.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(PathBuf::from))
        .filter(|m| m.starts_with(dir))
        .collect()
}

/// Detaches every mount at or under `dir`, the last mounted first (so children before the
/// mounts they sit on).
pub fn unmount_all_under(dir: &Path) {
    for mount in mounts_under(dir).iter().rev() {
        let _ = Command::new("umount")
            .arg("--lazy")
            .arg(mount)
            .stderr(Stdio::null())
            .status();
    }
}
