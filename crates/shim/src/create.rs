//! `rkube-shim create-container <container dir>`: creates a container from its OCI bundle, then stays on as
//! its shim monitor.
//!
//! Why not libcontainer: creating a container through it meant starting the big `rkube` binary
//! (loading its shared libraries), libcontainer's intermediate and init processes, and its
//! cgroup manager re-reading the mount table once per controller; about 9 ms here, for work
//! the kernel does in about one. This is that work, in the small static executable the runtime
//! already runs as every container's monitor: one process started, one fork.
//!
//! The process the runtime starts (the shim) reads `shim.json` and the bundle's `config.json`,
//! makes the exec FIFO, enters or unshares the PID namespace for its children, waits for the
//! runtime's `go` on stdin (the runtime makes the container's cgroup meanwhile), and forks the
//! container's init. The init joins the container's cgroups (made and limited by the runtime
//! before), joins the sandbox's namespaces and unshares the others, builds the root (mounts,
//! devices, `pivot_root`, masked and read-only paths), finds the executable and the working
//! directory, says `ready` to the shim over a socket pair and waits on the exec FIFO. The shim
//! reports `{"created":{"pid":N}}` (or `{"error":...}`) on its stdout and executes itself as the
//! monitor (`shim-monitor`, [`crate::monitor`]) with the container's stdout and stderr pipes. The runtime's start
//! writes one byte to the FIFO; the init then loads seccomp, takes the user, groups and
//! capabilities, and executes the process, as runc's does.
//!
//! What `config.json` may ask for is what the runtime's spec builder writes; anything else it
//! refuses by name (a terminal, devices, a user namespace) rather than ignoring.

use std::collections::VecDeque;
use std::ffi::{CString, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};

use caps::{CapSet, Capability, CapsHashSet};
use nix::fcntl::OFlag;
use nix::mount::{MntFlags, MsFlags};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sched::CloneFlags;
use nix::sys::resource::Resource;
use nix::sys::socket::{AddressFamily, SockFlag, SockType};
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::{AccessFlags, ForkResult, Gid, Pid, Uid};

use crate::json::{self, Value};

/// The exec FIFO in a container directory: the runtime's start writes one byte to it.
pub const EXEC_FIFO: &str = "exec.fifo";

/// The search path when the process's environment has no `PATH` (runc's default).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How many symbolic links resolving one mount destination may follow.
const MAX_SYMLINKS: usize = 255;

/// The devices every container's `/dev` gets (the OCI runtime spec's list), as (name, major,
/// minor) character devices.
const DEFAULT_DEVICES: [(&str, u64, u64); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// The links every container's `/dev` gets.
const DEFAULT_LINKS: [(&str, &str); 5] = [
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
];

/// Runs the subcommand; returns the shim's exit code (as the monitor, once created).
pub fn main(dir: &Path) -> i32 {
    match create(dir) {
        Ok(created) => {
            report(&format!("{{\"created\":{{\"pid\":{}}}}}", created.pid));
            // Become the monitor: fd 0 = the container's stdout, fd 1 = its stderr. Replacing
            // fd 1 closes the report pipe, which tells the runtime the shim is done talking
            // (so the runtime goes on while this process executes itself afresh as
            // `shim-monitor`: the name the runtime knows its shims by, and none of the create
            // code resident for the container's life).
            let moved = nix::unistd::dup2(created.stdout.as_raw_fd(), 0)
                .and_then(|_| nix::unistd::dup2(created.stderr.as_raw_fd(), 1));
            drop(created.stdout);
            drop(created.stderr);
            if let Err(e) = moved {
                eprintln!("shim: moving the container's pipes: {e}");
                return 1;
            }
            let exe = std::env::current_exe().unwrap_or_else(|_| "/proc/self/exe".into());
            let err = std::process::Command::new(&exe)
                .arg("shim-monitor")
                .arg(dir)
                .arg(created.pid.as_raw().to_string())
                .exec();
            // exec returned: monitor from this process instead.
            eprintln!("shim: executing {} as monitor: {err}", exe.display());
            crate::monitor::main(dir, created.pid.as_raw())
        }
        Err(message) => {
            report(&format!(
                "{{\"error\":{{\"message\":{}}}}}",
                json::quote(&message)
            ));
            1
        }
    }
}

fn report(line: &str) {
    let mut out = io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

/// A created container: its init (waiting on the exec FIFO) and the read ends of its output.
struct Created {
    pid: Pid,
    stdout: OwnedFd,
    stderr: OwnedFd,
}

fn create(dir: &Path) -> Result<Created, String> {
    let plan = Plan::load(dir)?;
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| format!("becoming a child subreaper: {e}"))?;
    let fifo = dir.join(EXEC_FIFO);
    match nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
        Err(e) => return Err(format!("creating {}: {e}", fifo.display())),
    }
    // The init's PID namespace is set for this process's children: a new one (the init is
    // its PID 1), the sandbox's (a pod sharing its process namespace), or the host's.
    match &plan.pid_namespace {
        Some(Some(path)) => setns(path, CloneFlags::CLONE_NEWPID)?,
        Some(None) => nix::sched::unshare(CloneFlags::CLONE_NEWPID)
            .map_err(|e| format!("unsharing the PID namespace: {e}"))?,
        None => {}
    }
    let pipe = || nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("creating a pipe: {e}"));
    let (stdout_r, stdout_w) = pipe()?;
    let (stderr_r, stderr_w) = pipe()?;
    let (ours, theirs) = nix::sys::socket::socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| format!("creating a socket pair: {e}"))?;
    // The runtime makes the container's cgroup while this process starts; the init joins it
    // first thing, so it is forked only once the runtime says `go` on stdin.
    let mut go = String::new();
    io::stdin()
        .read_line(&mut go)
        .map_err(|e| format!("waiting for the runtime: {e}"))?;
    if go.trim_end() != "go" {
        return Err("the runtime gave up on this container before it was made".into());
    }
    match fork().map_err(|e| format!("forking the container's init: {e}"))? {
        ForkResult::Child => {
            // Until it executes the container's process, the init dies with the shim: a shim
            // killed mid-create must not leave an init waiting on the FIFO forever. (A shim
            // gone before this line is seen when `ready` finds the socket pair closed.)
            if nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).is_err() {
                std::process::exit(1);
            }
            drop(ours);
            drop(stdout_r);
            drop(stderr_r);
            init(&plan, dir, theirs, stdout_w, stderr_w)
        }
        ForkResult::Parent { child } => {
            drop(theirs);
            drop(stdout_w);
            drop(stderr_w);
            let said = read_line(ours);
            match said.strip_prefix("ready") {
                Some("") => Ok(Created {
                    pid: child,
                    stdout: stdout_r,
                    stderr: stderr_r,
                }),
                _ => {
                    let status = nix::sys::wait::waitpid(child, None);
                    Err(match said.strip_prefix("error ") {
                        Some(message) => message.to_owned(),
                        None => format!(
                            "the container's init ended before it was ready ({status:?}); see the container's log"
                        ),
                    })
                }
            }
        }
    }
}

/// Marks every descriptor above stderr close-on-exec: whatever the shim inherited from the
/// runtime (or a library opened without the flag) must not reach the container's process.
fn close_other_descriptors() -> Result<(), String> {
    let fds: Vec<i32> = fs::read_dir("/proc/self/fd")
        .map_err(|e| format!("listing /proc/self/fd: {e}"))?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        // The directory listing's own descriptor is closed by now: EBADF is fine.
        match nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        ) {
            Ok(_) | Err(nix::errno::Errno::EBADF) => {}
            Err(e) => return Err(format!("marking descriptor {fd} close-on-exec: {e}")),
        }
    }
    Ok(())
}

/// Opens a mount point (resolved inside `root`) without following a symbolic link in its last
/// part, and checks that the object opened is inside `root`: a path swapped for a link between
/// resolving and mounting (by a container sharing the volume it is in) is refused instead of
/// mounted on the host. The mount goes onto the returned `/proc/self/fd/N`, the opened object
/// itself, as runc does; keep the file open until then.
fn open_inside(root: &Path, target: &Path) -> Result<(File, PathBuf), String> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(target)
        .map_err(|e| format!("opening mount point {}: {e}", target.display()))?;
    let by_fd = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    let real = fs::read_link(&by_fd).map_err(|e| format!("resolving {}: {e}", by_fd.display()))?;
    let is_link = file.metadata().map(|m| m.file_type().is_symlink());
    if !real.starts_with(root) || !matches!(is_link, Ok(false)) {
        return Err(format!(
            "mount point {} changed while the container was made (now {})",
            target.display(),
            real.display()
        ));
    }
    Ok((file, by_fd))
}

/// Forks this process.
#[allow(unsafe_code)] // nix's fork is unsafe because a forked child of a threaded process may
// only call async-signal-safe functions; see the SAFETY note.
fn fork() -> nix::Result<ForkResult> {
    // SAFETY: the shim is single-threaded (started by the runtime, it spawns no thread before
    // this point), so the child is a full copy in which every lock is free and any function is
    // safe to call.
    unsafe { nix::unistd::fork() }
}

/// Loads a seccomp filter program (classic BPF, as libseccomp exports it) for this process.
#[allow(unsafe_code)] // seccomp(2) takes a pointer to the program; nix has no wrapper for it.
fn load_seccomp(program: &[libc::sock_filter]) -> io::Result<()> {
    let len = u16::try_from(program.len())
        .map_err(|_| io::Error::other("the seccomp program has more than 65535 instructions"))?;
    let fprog = libc::sock_fprog {
        len,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: `fprog` points at `program`'s `len` instructions, both alive for the call; the
    // kernel copies the program and writes nothing through the pointers.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &fprog as *const libc::sock_fprog,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reads one line (without its newline) from the init, or what came before it ended.
fn read_line(fd: OwnedFd) -> String {
    let mut file = File::from(fd);
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    while out.len() < 64 * 1024 {
        match file.read(&mut byte) {
            Ok(1) if byte[0] != b'\n' => out.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---- the container's init (the forked child) ----

/// The forked child: never returns.
fn init(plan: &Plan, dir: &Path, sync: OwnedFd, stdout: OwnedFd, stderr: OwnedFd) -> ! {
    let mut sync = File::from(sync);
    // As runc: files the container makes get 0644/0755 unless it asks otherwise. And not
    // dumpable until the exec (which resets it): nothing in the container may open this
    // process's memory or executable through /proc meanwhile.
    nix::sys::stat::umask(Mode::from_bits_truncate(0o022));
    let _ = nix::sys::prctl::set_dumpable(false);
    // The container's output from here on: also where this process says why it failed after
    // `ready` (then it is the container's log).
    let moved = nix::unistd::dup2(stdout.as_raw_fd(), 1)
        .and_then(|_| nix::unistd::dup2(stderr.as_raw_fd(), 2));
    drop(stdout);
    drop(stderr);
    let prepared = moved
        .map_err(|e| format!("moving the container's pipes: {e}"))
        .and_then(|_| prepare(plan, dir));
    let ready = match prepared {
        Ok(ready) => ready,
        Err(message) => {
            let _ = writeln!(sync, "error {}", message.replace('\n', " "));
            std::process::exit(1);
        }
    };
    if writeln!(sync, "ready").is_err() {
        std::process::exit(1);
    }
    drop(sync);
    let err = run(plan, ready);
    eprintln!("rkube-shim: {err}");
    std::process::exit(127)
}

/// What the init holds between `ready` and the exec.
struct Ready {
    fifo: File,
    null: File,
    executable: CString,
    seccomp: Option<Vec<libc::sock_filter>>,
}

/// Everything up to `ready`: cgroups, namespaces, the root filesystem, the checks.
fn prepare(plan: &Plan, dir: &Path) -> Result<Ready, String> {
    for procs in &plan.cgroup_procs {
        fs::write(procs, "0").map_err(|e| format!("joining cgroup {}: {e}", procs.display()))?;
    }
    // Opened on the host's side of pivot_root; the FIFO does not block a reader opening it.
    let fifo_path = dir.join(EXEC_FIFO);
    let fifo = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&fifo_path)
        .map_err(|e| format!("opening {}: {e}", fifo_path.display()))?;
    let null = File::open("/dev/null").map_err(|e| format!("opening /dev/null: {e}"))?;
    let seccomp = match &plan.seccomp {
        Some(path) => Some(read_bpf(path)?),
        None => None,
    };
    let mut unshare = CloneFlags::empty();
    for (flag, path) in &plan.namespaces {
        match path {
            Some(path) => setns(path, *flag)?,
            None => unshare |= *flag,
        }
    }
    nix::sched::unshare(unshare).map_err(|e| format!("unsharing namespaces: {e}"))?;
    if unshare.contains(CloneFlags::CLONE_NEWUTS)
        && let Some(hostname) = &plan.hostname
    {
        nix::unistd::sethostname(hostname).map_err(|e| format!("setting the hostname: {e}"))?;
    }
    build_root(plan)?;
    for (resource, soft, hard) in &plan.rlimits {
        nix::sys::resource::setrlimit(*resource, *soft, *hard)
            .map_err(|e| format!("setting {resource:?} to {soft}/{hard}: {e}"))?;
    }
    if let Some(adj) = plan.oom_score_adj {
        fs::write("/proc/self/oom_score_adj", adj.to_string())
            .map_err(|e| format!("setting oom_score_adj: {e}"))?;
    }
    // A relative executable (`./server`) is found from the working directory, as by runc; a
    // working directory this process (still root) cannot enter fails the create.
    nix::unistd::chdir(Path::new(&plan.cwd)).map_err(|e| {
        format!(
            "chdir to cwd (\"{}\") set in config.json failed: {e}",
            plan.cwd
        )
    })?;
    let executable = find_executable(&plan.args[0], &plan.env)?;
    let executable = CString::new(executable.as_os_str().as_bytes())
        .map_err(|_| "the executable's path holds a NUL byte".to_owned())?;
    Ok(Ready {
        fifo,
        null,
        executable,
        seccomp,
    })
}

/// After `ready`: waits for the start, then becomes the container's process. Returns only why
/// it could not.
fn run(plan: &Plan, ready: Ready) -> String {
    let mut fds = [PollFd::new(ready.fifo.as_fd(), PollFlags::POLLIN)];
    loop {
        match nix::poll::poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return format!("waiting for the start: {e}"),
        }
    }
    let mut byte = [0u8; 1];
    if !matches!((&ready.fifo).read(&mut byte), Ok(1)) {
        // The runtime opened the FIFO and closed it without a byte: not a start.
        std::process::exit(1);
    }
    // The FIFO (close-on-exec) closes with the exec.
    match become_process(plan, &ready) {
        Ok(never) => match never {},
        Err(message) => message,
    }
}

fn become_process(plan: &Plan, ready: &Ready) -> Result<std::convert::Infallible, String> {
    // Without no_new_privs the kernel takes a filter only from a process holding
    // CAP_SYS_ADMIN: load it before the capabilities go (the profile allows what follows).
    if let Some(program) = &ready.seccomp
        && !plan.no_new_privileges
    {
        load_seccomp(program).map_err(|e| format!("loading the seccomp profile: {e}"))?;
    }
    // What this kernel knows (`cap_last_cap`): dropping a newer capability is an error.
    let all = caps::runtime::thread_all_supported();
    for cap in all.difference(&plan.caps.bounding) {
        caps::drop(None, CapSet::Bounding, *cap)
            .map_err(|e| format!("dropping {cap} from the bounding set: {e}"))?;
    }
    nix::sys::prctl::set_keepcaps(true).map_err(|e| format!("keeping capabilities: {e}"))?;
    let gids: Vec<Gid> = plan
        .additional_gids
        .iter()
        .map(|g| Gid::from_raw(*g))
        .collect();
    nix::unistd::setgroups(&gids).map_err(|e| format!("setting groups {gids:?}: {e}"))?;
    let (uid, gid) = (Uid::from_raw(plan.uid), Gid::from_raw(plan.gid));
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| format!("setting gid {gid}: {e}"))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| format!("setting uid {uid}: {e}"))?;
    for (set, wanted) in [
        (CapSet::Effective, &plan.caps.effective),
        (CapSet::Permitted, &plan.caps.permitted),
        (CapSet::Inheritable, &plan.caps.inheritable),
        (CapSet::Ambient, &plan.caps.ambient),
    ] {
        caps::set(None, set, wanted).map_err(|e| format!("setting {set:?} capabilities: {e}"))?;
    }
    if plan.no_new_privileges {
        nix::sys::prctl::set_no_new_privs().map_err(|e| format!("setting no_new_privs: {e}"))?;
        if let Some(program) = &ready.seccomp {
            load_seccomp(program).map_err(|e| format!("loading the seccomp profile: {e}"))?;
        }
    }
    nix::unistd::chdir(Path::new(&plan.cwd)).map_err(|e| {
        format!(
            "chdir to cwd (\"{}\") set in config.json failed: {e}",
            plan.cwd
        )
    })?;
    nix::unistd::dup2(ready.null.as_raw_fd(), 0)
        .map_err(|e| format!("pointing stdin at /dev/null: {e}"))?;
    // From here the container lives on its own: its monitor may be restarted or die.
    nix::sys::prctl::set_pdeathsig(None).map_err(|e| format!("clearing pdeathsig: {e}"))?;
    close_other_descriptors()?;
    let args = cstrings(&plan.args)?;
    let env = cstrings(&plan.env)?;
    nix::unistd::execve(&ready.executable, &args, &env)
        .map_err(|e| format!("exec {:?}: {e}", plan.args[0]))
}

fn cstrings(items: &[String]) -> Result<Vec<CString>, String> {
    items
        .iter()
        .map(|s| CString::new(s.as_bytes()).map_err(|_| format!("{s:?} holds a NUL byte")))
        .collect()
}

fn setns(path: &Path, flag: CloneFlags) -> Result<(), String> {
    let file =
        File::open(path).map_err(|e| format!("opening namespace {}: {e}", path.display()))?;
    nix::sched::setns(file.as_fd(), flag)
        .map_err(|e| format!("joining namespace {}: {e}", path.display()))
}

/// Reads a classic BPF program: `struct sock_filter`s in this machine's byte order.
fn read_bpf(path: &Path) -> Result<Vec<libc::sock_filter>, String> {
    let bytes = fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    if bytes.is_empty() || !bytes.len().is_multiple_of(8) {
        return Err(format!(
            "{} is not a seccomp program ({} bytes)",
            path.display(),
            bytes.len()
        ));
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|i| libc::sock_filter {
            code: u16::from_ne_bytes([i[0], i[1]]),
            jt: i[2],
            jf: i[3],
            k: u32::from_ne_bytes([i[4], i[5], i[6], i[7]]),
        })
        .collect())
}

// ---- the root filesystem ----

fn build_root(plan: &Plan) -> Result<(), String> {
    // Canonical, so that what a mount point's descriptor resolves to can be compared with it.
    let root = &fs::canonicalize(&plan.rootfs)
        .map_err(|e| format!("resolving {}: {e}", plan.rootfs.display()))?;
    let mount = |source: Option<&Path>,
                 target: &Path,
                 fstype: Option<&str>,
                 flags: MsFlags,
                 data: Option<&str>| {
        nix::mount::mount(source, target, fstype, flags, data).map_err(|e| {
            format!(
                "mounting {} on {} ({}): {e}",
                source.map_or("-".into(), |s| s.display().to_string()),
                target.display(),
                fstype.unwrap_or("remount")
            )
        })
    };
    // Nothing mounted from here on propagates back to the host.
    mount(
        None,
        Path::new("/"),
        None,
        plan.root_propagation | MsFlags::MS_REC,
        None,
    )?;
    mount(
        Some(root),
        root,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )?;
    let mut dev = None;
    for m in &plan.mounts {
        let resolved = secure_join(root, &m.destination)?;
        let options = MountOptions::parse(&m.options);
        if options.bind {
            let source = Path::new(&m.source);
            let meta = fs::metadata(source)
                .map_err(|e| format!("bind mount source {}: {e}", source.display()))?;
            make_target(&resolved, meta.is_dir())?;
            let (_pinned, target) = open_inside(root, &resolved)?;
            let recursive = options.flags & MsFlags::MS_REC;
            mount(
                Some(source),
                &target,
                None,
                MsFlags::MS_BIND | recursive,
                None,
            )?;
            let rest = options.flags - MsFlags::MS_BIND - MsFlags::MS_REC;
            if !rest.is_empty() {
                // By path: the descriptor still names what is under the new mount.
                mount(
                    None,
                    &resolved,
                    None,
                    rest | MsFlags::MS_BIND | MsFlags::MS_REMOUNT,
                    None,
                )?;
            }
        } else {
            make_target(&resolved, true)?;
            let (_pinned, target) = open_inside(root, &resolved)?;
            let data = (!options.data.is_empty()).then_some(options.data.as_str());
            mount(
                Some(Path::new(&m.source)),
                &target,
                Some(&m.typ),
                options.flags,
                data,
            )?;
            if m.destination.trim_end_matches('/') == "/dev" {
                dev = Some(resolved.clone());
            }
        }
        if let Some(propagation) = options.propagation {
            mount(None, &resolved, None, propagation, None)?;
        }
    }
    if let Some(dev) = dev {
        make_devices(&dev)?;
    }

    nix::unistd::chdir(root).map_err(|e| format!("entering {}: {e}", root.display()))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
    // The old root is stacked under the new one at "."; detach it without letting the unmount
    // propagate to the host.
    mount(
        None,
        Path::new("."),
        None,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None,
    )?;
    nix::mount::umount2(".", MntFlags::MNT_DETACH)
        .map_err(|e| format!("detaching the old root: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| format!("entering /: {e}"))?;

    // Before /proc/sys turns read-only below.
    for (key, value) in &plan.sysctl {
        let path = Path::new("/proc/sys").join(key.replace('.', "/"));
        fs::write(&path, value).map_err(|e| format!("setting sysctl {key}: {e}"))?;
    }
    for path in &plan.masked_paths {
        let path = Path::new(path);
        match fs::metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("masking {}: {e}", path.display())),
            Ok(meta) if meta.is_dir() => mount(
                Some(Path::new("tmpfs")),
                path,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                None,
            )?,
            Ok(_) => mount(
                Some(Path::new("/dev/null")),
                path,
                None,
                MsFlags::MS_BIND,
                None,
            )?,
        }
    }
    for path in &plan.readonly_paths {
        let path = Path::new(path);
        if fs::symlink_metadata(path).is_err() {
            continue;
        }
        mount(
            Some(path),
            path,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?;
        remount_readonly(path)?;
    }
    // runc makes a missing working directory; it must exist before the root turns read-only.
    let cwd = Path::new(&plan.cwd);
    if !cwd.is_dir() {
        fs::create_dir_all(cwd).map_err(|e| format!("creating cwd {}: {e}", cwd.display()))?;
    }
    if plan.root_readonly {
        remount_readonly(Path::new("/"))?;
    }
    Ok(())
}

/// Remounts a bind mount read-only, keeping its nosuid, nodev and noexec.
fn remount_readonly(path: &Path) -> Result<(), String> {
    use nix::sys::statvfs::{FsFlags, statvfs};
    let kept = statvfs(path)
        .map(|s| s.flags())
        .map_err(|e| format!("inspecting {}: {e}", path.display()))?;
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    for (has, flag) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
    ] {
        if kept.contains(has) {
            flags |= flag;
        }
    }
    nix::mount::mount(None::<&str>, path, None::<&str>, flags, None::<&str>)
        .map_err(|e| format!("making {} read-only: {e}", path.display()))
}

/// Makes a mount point: a directory, or an empty file for a file's bind mount.
fn make_target(target: &Path, dir: bool) -> Result<(), String> {
    let made = if dir {
        fs::create_dir_all(target)
    } else {
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| format!("creating mount point {}: {e}", parent.display()))?;
        }
        match fs::symlink_metadata(target) {
            Ok(_) => Ok(()),
            Err(_) => OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(target)
                .map(drop),
        }
    };
    made.map_err(|e| format!("creating mount point {}: {e}", target.display()))
}

/// The default device nodes and links of a fresh `/dev`.
fn make_devices(dev: &Path) -> Result<(), String> {
    for (name, major, minor) in DEFAULT_DEVICES {
        let path = dev.join(name);
        nix::sys::stat::mknod(
            &path,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(major, minor),
        )
        .map_err(|e| format!("creating device {}: {e}", path.display()))?;
        // mknod's mode went through the umask.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666))
            .map_err(|e| format!("setting the mode of {}: {e}", path.display()))?;
    }
    for (name, target) in DEFAULT_LINKS {
        let path = dev.join(name);
        match std::os::unix::fs::symlink(target, &path) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(format!("linking {}: {e}", path.display()));
            }
            _ => {}
        }
    }
    if Path::new("/proc/kcore").exists() {
        let _ = std::os::unix::fs::symlink("/proc/kcore", dev.join("core"));
    }
    Ok(())
}

/// `path` (absolute, as the container sees it) under `root`, with every symbolic link on the
/// way resolved inside `root`: a link in the image cannot point a mount outside it.
fn secure_join(root: &Path, path: &str) -> Result<PathBuf, String> {
    let mut resolved: Vec<OsString> = Vec::new();
    let mut pending: VecDeque<OsString> = parts(Path::new(path)).collect();
    let mut links = 0;
    while let Some(part) = pending.pop_front() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(&resolved);
        candidate.push(&part);
        match fs::symlink_metadata(&candidate) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(format!("too many symbolic links resolving {path}"));
                }
                let target = fs::read_link(&candidate)
                    .map_err(|e| format!("reading link {}: {e}", candidate.display()))?;
                if target.is_absolute() {
                    resolved.clear();
                }
                for (i, p) in parts(&target).enumerate() {
                    pending.insert(i, p);
                }
            }
            _ => resolved.push(part),
        }
    }
    let mut out = root.to_path_buf();
    out.extend(&resolved);
    Ok(out)
}

/// A path's names and `..`s, without the root and `.`.
fn parts(path: &Path) -> impl Iterator<Item = OsString> + '_ {
    path.components().filter_map(|c| match c {
        Component::Normal(name) => Some(name.to_owned()),
        Component::ParentDir => Some(OsString::from("..")),
        Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
    })
}

/// An executable as `execvp` finds it, with the container's `PATH` (inside the new root).
fn find_executable(name: &str, env: &[String]) -> Result<PathBuf, String> {
    let executable = |path: &Path| {
        fs::metadata(path).is_ok_and(|m| m.is_file())
            && nix::unistd::access(path, AccessFlags::X_OK).is_ok()
    };
    if name.contains('/') {
        let path = PathBuf::from(name);
        return if executable(&path) {
            Ok(path)
        } else {
            Err(format!("exec: {name:?}: no such executable file"))
        };
    }
    let search = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    search
        .split(':')
        .map(|dir| Path::new(if dir.is_empty() { "." } else { dir }).join(name))
        .find(|p| executable(p))
        .ok_or_else(|| format!("exec: {name:?}: executable file not found in $PATH"))
}

// ---- config.json ----

/// The resource an OCI `rlimits[].type` names.
fn rlimit_resource(name: &str) -> Option<Resource> {
    Some(match name {
        "RLIMIT_AS" => Resource::RLIMIT_AS,
        "RLIMIT_CORE" => Resource::RLIMIT_CORE,
        "RLIMIT_CPU" => Resource::RLIMIT_CPU,
        "RLIMIT_DATA" => Resource::RLIMIT_DATA,
        "RLIMIT_FSIZE" => Resource::RLIMIT_FSIZE,
        "RLIMIT_LOCKS" => Resource::RLIMIT_LOCKS,
        "RLIMIT_MEMLOCK" => Resource::RLIMIT_MEMLOCK,
        "RLIMIT_MSGQUEUE" => Resource::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => Resource::RLIMIT_NICE,
        "RLIMIT_NOFILE" => Resource::RLIMIT_NOFILE,
        "RLIMIT_NPROC" => Resource::RLIMIT_NPROC,
        "RLIMIT_RSS" => Resource::RLIMIT_RSS,
        "RLIMIT_RTPRIO" => Resource::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => Resource::RLIMIT_RTTIME,
        "RLIMIT_SIGPENDING" => Resource::RLIMIT_SIGPENDING,
        "RLIMIT_STACK" => Resource::RLIMIT_STACK,
        _ => return None,
    })
}

/// One entry of `config.json`'s `mounts`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MountSpec {
    destination: String,
    typ: String,
    source: String,
    options: Vec<String>,
}

/// A mount's options as `mount(2)` takes them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MountOptions {
    flags: MsFlags,
    propagation: Option<MsFlags>,
    bind: bool,
    data: String,
}

impl MountOptions {
    fn parse(options: &[String]) -> Self {
        let mut out = MountOptions {
            flags: MsFlags::empty(),
            propagation: None,
            bind: false,
            data: String::new(),
        };
        for option in options {
            let set = match option.as_str() {
                "ro" => MsFlags::MS_RDONLY,
                "nosuid" => MsFlags::MS_NOSUID,
                "nodev" => MsFlags::MS_NODEV,
                "noexec" => MsFlags::MS_NOEXEC,
                "sync" => MsFlags::MS_SYNCHRONOUS,
                "dirsync" => MsFlags::MS_DIRSYNC,
                "noatime" => MsFlags::MS_NOATIME,
                "nodiratime" => MsFlags::MS_NODIRATIME,
                "relatime" => MsFlags::MS_RELATIME,
                "strictatime" => MsFlags::MS_STRICTATIME,
                "bind" => MsFlags::MS_BIND,
                "rbind" => MsFlags::MS_BIND | MsFlags::MS_REC,
                "rw" | "suid" | "dev" | "exec" | "async" | "atime" | "diratime" => MsFlags::empty(),
                other => {
                    let propagation = match other {
                        "private" => Some(MsFlags::MS_PRIVATE),
                        "rprivate" => Some(MsFlags::MS_PRIVATE | MsFlags::MS_REC),
                        "shared" => Some(MsFlags::MS_SHARED),
                        "rshared" => Some(MsFlags::MS_SHARED | MsFlags::MS_REC),
                        "slave" => Some(MsFlags::MS_SLAVE),
                        "rslave" => Some(MsFlags::MS_SLAVE | MsFlags::MS_REC),
                        "unbindable" => Some(MsFlags::MS_UNBINDABLE),
                        "runbindable" => Some(MsFlags::MS_UNBINDABLE | MsFlags::MS_REC),
                        _ => None,
                    };
                    match propagation {
                        Some(p) => out.propagation = Some(p),
                        None => {
                            if !out.data.is_empty() {
                                out.data.push(',');
                            }
                            out.data.push_str(other);
                        }
                    }
                    MsFlags::empty()
                }
            };
            out.flags |= set;
        }
        out.bind = out.flags.contains(MsFlags::MS_BIND);
        out
    }
}

/// The container's capability sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Caps {
    bounding: CapsHashSet,
    effective: CapsHashSet,
    permitted: CapsHashSet,
    inheritable: CapsHashSet,
    ambient: CapsHashSet,
}

/// What the init does, from `shim.json` and the bundle's `config.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Plan {
    rootfs: PathBuf,
    root_readonly: bool,
    root_propagation: MsFlags,
    args: Vec<String>,
    env: Vec<String>,
    cwd: String,
    uid: u32,
    gid: u32,
    additional_gids: Vec<u32>,
    caps: Caps,
    no_new_privileges: bool,
    oom_score_adj: Option<i64>,
    hostname: Option<String>,
    /// `None`: the host's; `Some(None)`: a new one; `Some(Some(path))`: that one.
    pid_namespace: Option<Option<PathBuf>>,
    /// The other namespaces: joined (a path) or new.
    namespaces: Vec<(CloneFlags, Option<PathBuf>)>,
    mounts: Vec<MountSpec>,
    masked_paths: Vec<String>,
    readonly_paths: Vec<String>,
    sysctl: Vec<(String, String)>,
    /// Resource limits: (resource, soft, hard).
    rlimits: Vec<(Resource, u64, u64)>,
    /// The `cgroup.procs` files the init writes itself into (`shim.json`).
    cgroup_procs: Vec<PathBuf>,
    /// The compiled seccomp program (`shim.json`).
    seccomp: Option<PathBuf>,
}

impl Plan {
    fn load(dir: &Path) -> Result<Plan, String> {
        let read = |path: &Path| -> Result<Value, String> {
            let text =
                fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
            json::parse(&text).map_err(|e| format!("parsing {}: {e}", path.display()))
        };
        let shim = read(&dir.join("shim.json"))?;
        let bundle = shim
            .get("bundle")
            .and_then(Value::as_str)
            .map_or_else(|| dir.to_path_buf(), PathBuf::from);
        let spec = read(&bundle.join("config.json"))?;
        Plan::from_values(&shim, &spec, &bundle)
    }

    fn from_values(shim: &Value, spec: &Value, bundle: &Path) -> Result<Plan, String> {
        let strings = |v: Option<&Value>, what: &str| -> Result<Vec<String>, String> {
            match v {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(v) => v
                    .as_array()
                    .ok_or_else(|| format!("{what} must be an array"))?
                    .iter()
                    .map(|s| {
                        s.as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| format!("{what} must hold strings"))
                    })
                    .collect(),
            }
        };
        let number = |v: Option<&Value>, what: &str| -> Result<u32, String> {
            v.and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| format!("{what} must be a 32-bit unsigned integer"))
        };
        let null = Value::Null;
        let process = spec.get("process").ok_or("config.json has no process")?;
        if process.get("terminal").and_then(Value::as_bool) == Some(true) {
            return Err("a terminal for the container's process is not supported".into());
        }
        let mut rlimits = Vec::new();
        for limit in process
            .get("rlimits")
            .and_then(Value::as_array)
            .unwrap_or_default()
        {
            let name = limit.get("type").and_then(Value::as_str).unwrap_or("");
            let resource =
                rlimit_resource(name).ok_or_else(|| format!("unknown rlimit type {name:?}"))?;
            let value = |key: &str| {
                limit
                    .get(key)
                    .and_then(Value::as_u64)
                    .ok_or_else(|| format!("rlimit {name}: {key} must be a non-negative integer"))
            };
            rlimits.push((resource, value("soft")?, value("hard")?));
        }
        let args = strings(process.get("args"), "process.args")?;
        if args.first().is_none_or(String::is_empty) {
            return Err("process.args must name a command".into());
        }
        let user = process.get("user").unwrap_or(&null);
        let additional_gids = match user.get("additionalGids") {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => v
                .as_array()
                .ok_or("process.user.additionalGids must be an array")?
                .iter()
                .map(|g| number(Some(g), "process.user.additionalGids"))
                .collect::<Result<_, _>>()?,
        };
        let caps_of = |key: &str| -> Result<CapsHashSet, String> {
            let what = format!("process.capabilities.{key}");
            strings(process.get("capabilities").and_then(|c| c.get(key)), &what)?
                .iter()
                .map(|name| {
                    name.parse::<Capability>()
                        .map_err(|_| format!("{what}: unknown capability {name}"))
                })
                .collect()
        };
        let caps = Caps {
            bounding: caps_of("bounding")?,
            effective: caps_of("effective")?,
            permitted: caps_of("permitted")?,
            inheritable: caps_of("inheritable")?,
            ambient: caps_of("ambient")?,
        };

        let root = spec.get("root").ok_or("config.json has no root")?;
        let root_path = root
            .get("path")
            .and_then(Value::as_str)
            .ok_or("root.path must be a string")?;
        let rootfs = bundle.join(root_path);

        let linux = spec.get("linux").unwrap_or(&null);
        for unsupported in ["devices", "uidMappings", "gidMappings"] {
            if linux
                .get(unsupported)
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty())
            {
                return Err(format!("linux.{unsupported} is not supported"));
            }
        }
        let mut pid_namespace = None;
        let mut namespaces = Vec::new();
        for ns in linux
            .get("namespaces")
            .and_then(Value::as_array)
            .unwrap_or_default()
        {
            let path = ns.get("path").and_then(Value::as_str).map(PathBuf::from);
            let flag = match ns.get("type").and_then(Value::as_str) {
                Some("pid") => {
                    pid_namespace = Some(path);
                    continue;
                }
                Some("network") => CloneFlags::CLONE_NEWNET,
                Some("mount") => CloneFlags::CLONE_NEWNS,
                Some("ipc") => CloneFlags::CLONE_NEWIPC,
                Some("uts") => CloneFlags::CLONE_NEWUTS,
                Some("cgroup") => CloneFlags::CLONE_NEWCGROUP,
                other => return Err(format!("namespace type {other:?} is not supported")),
            };
            namespaces.push((flag, path));
        }
        // Join the sandbox's namespaces before making new ones (a new mount namespace last).
        namespaces.sort_by_key(|(flag, path)| (path.is_none(), *flag == CloneFlags::CLONE_NEWNS));
        let root_propagation = match linux.get("rootfsPropagation").and_then(Value::as_str) {
            None | Some("" | "slave" | "rslave") => MsFlags::MS_SLAVE,
            Some("private" | "rprivate") => MsFlags::MS_PRIVATE,
            Some("shared" | "rshared") => MsFlags::MS_SHARED,
            Some(other) => return Err(format!("rootfsPropagation {other:?} is not supported")),
        };
        let mut mounts = Vec::new();
        for m in spec
            .get("mounts")
            .and_then(Value::as_array)
            .unwrap_or_default()
        {
            let field = |key: &str| m.get(key).and_then(Value::as_str).unwrap_or("").to_owned();
            let destination = field("destination");
            if !destination.starts_with('/') {
                return Err(format!(
                    "mount destination {destination:?} must be an absolute path"
                ));
            }
            mounts.push(MountSpec {
                destination,
                typ: field("type"),
                source: field("source"),
                options: strings(m.get("options"), "mounts[].options")?,
            });
        }
        let sysctl = match linux.get("sysctl") {
            Some(Value::Object(members)) => members
                .iter()
                .map(|(k, v)| {
                    v.as_str()
                        .map(|v| (k.clone(), v.to_owned()))
                        .ok_or_else(|| format!("linux.sysctl.{k} must be a string"))
                })
                .collect::<Result<_, _>>()?,
            _ => Vec::new(),
        };
        let seccomp = match shim.get("seccomp_program") {
            None | Some(Value::Null) => None,
            Some(v) => Some(PathBuf::from(
                v.as_str().ok_or("seccomp_program must be a string")?,
            )),
        };
        if seccomp.is_none() && linux.get("seccomp").is_some_and(|v| v != &null) {
            return Err("config.json has a seccomp profile but shim.json no program for it".into());
        }
        Ok(Plan {
            rootfs,
            root_readonly: root.get("readonly").and_then(Value::as_bool) == Some(true),
            root_propagation,
            args,
            env: strings(process.get("env"), "process.env")?,
            cwd: process
                .get("cwd")
                .and_then(Value::as_str)
                .unwrap_or("/")
                .to_owned(),
            uid: number(user.get("uid"), "process.user.uid")?,
            gid: number(user.get("gid"), "process.user.gid")?,
            additional_gids,
            caps,
            no_new_privileges: process.get("noNewPrivileges").and_then(Value::as_bool)
                == Some(true),
            oom_score_adj: process.get("oomScoreAdj").and_then(Value::as_i64),
            hostname: spec
                .get("hostname")
                .and_then(Value::as_str)
                .map(str::to_owned),
            pid_namespace,
            namespaces,
            mounts,
            masked_paths: strings(linux.get("maskedPaths"), "linux.maskedPaths")?,
            readonly_paths: strings(linux.get("readonlyPaths"), "linux.readonlyPaths")?,
            sysctl,
            rlimits,
            cgroup_procs: strings(shim.get("cgroup_procs"), "cgroup_procs")?
                .into_iter()
                .map(PathBuf::from)
                .collect(),
            seccomp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Value {
        json::parse(
            r#"{
              "ociVersion": "1.0.2",
              "process": {
                "terminal": false,
                "user": {"uid": 1000, "gid": 50, "additionalGids": [10, 1000]},
                "args": ["sh", "-c", "true"],
                "env": ["PATH=/bin", "A=1"],
                "cwd": "/srv",
                "capabilities": {"bounding": ["CAP_CHOWN", "CAP_KILL"], "effective": ["CAP_CHOWN"],
                                 "permitted": ["CAP_CHOWN"]},
                "noNewPrivileges": true,
                "oomScoreAdj": -998
              },
              "root": {"path": "rootfs", "readonly": true},
              "hostname": "pod-a",
              "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                {"destination": "/etc/hosts", "type": "bind", "source": "/sb/hosts", "options": ["rbind", "rprivate", "ro"]}
              ],
              "linux": {
                "namespaces": [{"type": "mount"}, {"type": "pid"}, {"type": "network", "path": "/proc/10/ns/net"},
                               {"type": "ipc", "path": "/proc/10/ns/ipc"}],
                "cgroupsPath": "/pods/a/c",
                "rootfsPropagation": "private",
                "maskedPaths": ["/proc/kcore"],
                "readonlyPaths": ["/proc/sys"],
                "seccomp": {"defaultAction": "SCMP_ACT_ALLOW"}
              }
            }"#,
        )
        .unwrap()
    }

    fn shim() -> Value {
        json::parse(
            r#"{"bundle": "/b", "cgroup_procs": ["/sys/fs/cgroup/memory/pods/a/c/cgroup.procs"],
                "seccomp_program": "/r/seccomp/abc.bpf"}"#,
        )
        .unwrap()
    }

    #[test]
    fn the_plan_carries_what_the_runtimes_spec_asks_for() {
        let plan = Plan::from_values(&shim(), &spec(), Path::new("/b")).unwrap();
        assert_eq!(plan.rootfs, Path::new("/b/rootfs"));
        assert!(plan.root_readonly);
        assert_eq!(plan.root_propagation, MsFlags::MS_PRIVATE);
        assert_eq!(plan.args, ["sh", "-c", "true"]);
        assert_eq!((plan.uid, plan.gid), (1000, 50));
        assert_eq!(plan.additional_gids, [10, 1000]);
        assert_eq!(plan.cwd, "/srv");
        assert!(plan.no_new_privileges);
        assert_eq!(plan.oom_score_adj, Some(-998));
        assert!(plan.caps.bounding.contains(&Capability::CAP_KILL));
        assert_eq!(plan.caps.effective.len(), 1);
        assert!(plan.caps.ambient.is_empty());
        assert_eq!(plan.pid_namespace, Some(None));
        // Joined namespaces first, the new mount namespace last.
        assert_eq!(
            plan.namespaces,
            [
                (
                    CloneFlags::CLONE_NEWNET,
                    Some(PathBuf::from("/proc/10/ns/net"))
                ),
                (
                    CloneFlags::CLONE_NEWIPC,
                    Some(PathBuf::from("/proc/10/ns/ipc"))
                ),
                (CloneFlags::CLONE_NEWNS, None),
            ]
        );
        assert_eq!(plan.mounts.len(), 3);
        assert_eq!(plan.masked_paths, ["/proc/kcore"]);
        assert_eq!(plan.seccomp, Some(PathBuf::from("/r/seccomp/abc.bpf")));
        assert_eq!(
            plan.cgroup_procs,
            [PathBuf::from("/sys/fs/cgroup/memory/pods/a/c/cgroup.procs")]
        );
    }

    #[test]
    fn what_the_init_cannot_do_is_refused_by_name() {
        let with = |path: &[&str], value: &str| {
            let mut text = String::new();
            let mut spec = spec();
            let mut target = &mut spec;
            for key in path {
                let Value::Object(members) = target else {
                    panic!()
                };
                if !members.iter().any(|(k, _)| k == key) {
                    members.push(((*key).to_owned(), Value::Null));
                }
                target = &mut members.iter_mut().find(|(k, _)| k == key).unwrap().1;
            }
            *target = json::parse(value).unwrap();
            text.push_str(&Plan::from_values(&shim(), &spec, Path::new("/b")).unwrap_err());
            text
        };
        assert!(with(&["process", "terminal"], "true").contains("terminal"));
        assert!(with(&["process", "args"], "[]").contains("process.args"));
        assert!(with(&["process", "rlimits"], "[{}]").contains("rlimit type"));
        assert!(
            with(
                &["process", "rlimits"],
                r#"[{"type": "RLIMIT_NOFILE", "soft": -1}]"#
            )
            .contains("RLIMIT_NOFILE: soft")
        );
        assert!(with(&["linux", "devices"], "[{}]").contains("linux.devices"));
        assert!(with(&["linux", "namespaces"], r#"[{"type": "user"}]"#).contains("\"user\""));
        assert!(
            with(&["process", "capabilities", "bounding"], r#"["CAP_NOPE"]"#).contains("CAP_NOPE")
        );
        assert!(with(&["mounts"], r#"[{"destination": "etc"}]"#).contains("absolute"));
        let no_program = json::parse(r#"{"bundle": "/b"}"#).unwrap();
        assert!(
            Plan::from_values(&no_program, &spec(), Path::new("/b"))
                .unwrap_err()
                .contains("seccomp")
        );
    }

    #[test]
    fn mount_options_split_into_flags_propagation_and_data() {
        let o = |opts: &[&str]| {
            MountOptions::parse(&opts.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        };
        let dev = o(&["nosuid", "strictatime", "mode=755", "size=65536k"]);
        assert_eq!(dev.flags, MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME);
        assert_eq!(dev.data, "mode=755,size=65536k");
        assert!(!dev.bind);
        let bind = o(&["rbind", "rslave", "ro"]);
        assert!(bind.bind);
        assert_eq!(
            bind.flags,
            MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY
        );
        assert_eq!(bind.propagation, Some(MsFlags::MS_SLAVE | MsFlags::MS_REC));
        assert_eq!(o(&["rw"]).flags, MsFlags::empty());
    }

    #[test]
    fn mount_destinations_resolve_links_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        fs::create_dir_all(r.join("usr/etc")).unwrap();
        std::os::unix::fs::symlink("/usr/etc", r.join("etc")).unwrap();
        std::os::unix::fs::symlink("../../../../../host", r.join("usr/escape")).unwrap();
        std::os::unix::fs::symlink("loop", r.join("loop")).unwrap();
        assert_eq!(
            secure_join(r, "/etc/hosts").unwrap(),
            r.join("usr/etc/hosts")
        );
        assert_eq!(secure_join(r, "/usr/escape/x").unwrap(), r.join("host/x"));
        assert_eq!(secure_join(r, "/../../a/./b").unwrap(), r.join("a/b"));
        assert!(secure_join(r, "/loop/x").unwrap_err().contains("too many"));
    }

    #[test]
    fn executables_are_found_on_the_containers_path() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        fs::create_dir(&bin).unwrap();
        fs::write(bin.join("tool"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(bin.join("tool"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(bin.join("data"), "").unwrap();
        let env = [format!("PATH=/nonexistent:{}", bin.display())];
        assert_eq!(find_executable("tool", &env).unwrap(), bin.join("tool"));
        assert!(
            find_executable("data", &env)
                .unwrap_err()
                .contains("executable file not found in $PATH")
        );
        let absolute = bin.join("tool").display().to_string();
        assert_eq!(find_executable(&absolute, &[]).unwrap(), bin.join("tool"));
        assert!(find_executable("/nonexistent/x", &[]).is_err());
    }

    #[test]
    fn seccomp_programs_are_read_in_whole_instructions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.bpf");
        // BPF_RET | BPF_K, SECCOMP_RET_ALLOW.
        let mut bytes = 0x06u16.to_ne_bytes().to_vec();
        bytes.extend([0, 0]);
        bytes.extend(0x7fff_0000u32.to_ne_bytes());
        fs::write(&path, &bytes).unwrap();
        let program = read_bpf(&path).unwrap();
        assert_eq!(program.len(), 1);
        assert_eq!((program[0].code, program[0].k), (6, 0x7fff_0000));
        fs::write(&path, &bytes[..5]).unwrap();
        assert!(
            read_bpf(&path)
                .unwrap_err()
                .contains("not a seccomp program")
        );
    }
}
