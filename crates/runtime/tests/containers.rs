//! End-to-end: real containers from a busybox image built from Debian's `busybox-static`, as
//! root. Each test skips (saying so) when not root.

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use rkube_runtime::spec::{BindMount, Propagation, Resources};
use rkube_runtime::{ContainerState, RuntimeError};

fn exec(t: &TestRuntime, id: &str, script: &str) -> String {
    let r = t
        .runtime
        .exec_sync(
            id,
            &["sh".into(), "-c".into(), script.into()],
            Some(Duration::from_secs(60)),
        )
        .expect("exec_sync");
    assert_eq!(
        r.exit_code,
        0,
        "{script}: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    String::from_utf8(r.stdout).unwrap().trim().to_owned()
}

#[test]
fn a_container_runs_and_its_output_and_exit_code_are_kept() {
    if !is_root("a_container_runs_and_its_output_and_exit_code_are_kept") {
        return;
    }
    let t = TestRuntime::new();
    let sb = t.sandbox("smoke");
    let id = t
        .runtime
        .create_container(&sb, sh("c", "echo hello; echo oops >&2; exit 3"))
        .expect("create");
    assert_eq!(
        t.runtime.status(&id).unwrap().state,
        ContainerState::Created
    );
    t.runtime.start(&id).expect("start");
    let s = wait_exit(&t.runtime, &id);
    assert_eq!(s.exit_code, Some(3));
    assert_eq!(s.reason, "Error");
    assert!(s.started_at_ns.unwrap() <= s.finished_at_ns.unwrap());
    let lines = log_lines(&t.runtime, &id);
    assert!(
        lines.contains(&("stdout".into(), b"hello".to_vec())),
        "{lines:?}"
    );
    assert!(
        lines.contains(&("stderr".into(), b"oops".to_vec())),
        "{lines:?}"
    );
    assert!(matches!(
        t.runtime.start(&id),
        Err(RuntimeError::WrongState {
            state: ContainerState::Exited,
            ..
        })
    ));
    t.runtime.remove(&id).expect("remove");
    assert!(matches!(
        t.runtime.status(&id),
        Err(RuntimeError::ContainerNotFound { .. })
    ));
    t.runtime.remove_sandbox(&sb).expect("remove sandbox");
}

#[test]
fn two_containers_in_a_sandbox_share_network_and_ipc_but_not_pids_or_root_filesystems() {
    if !is_root(
        "two_containers_in_a_sandbox_share_network_and_ipc_but_not_pids_or_root_filesystems",
    ) {
        return;
    }
    let t = TestRuntime::new();
    let sb = t.sandbox("pair");
    let server = t
        .runtime
        .create_container(&sb, sh("server", "nc -l -p 8080; sleep 1000"))
        .unwrap();
    let client = t
        .runtime
        .create_container(
            &sb,
            sh(
                "client",
                "until echo ping | nc 127.0.0.1 8080; do sleep 0.1; done; sleep 1001",
            ),
        )
        .unwrap();
    t.runtime.start(&server).unwrap();
    t.runtime.start(&client).unwrap();
    // The client reached the server over the pod's loopback: its `until` loop ends only when
    // nc connects. (Not the server's log: busybox nc -l, its stdin at EOF, may close before it
    // reads the ping, so "ping" in the log is a race.)
    wait_for(|| exec(&t, &client, "cat /proc/1/cmdline | tr '\\0' ' '") == "sleep 1001");

    let ns = |id: &str, kind: &str| exec(&t, id, &format!("readlink /proc/self/ns/{kind}"));
    assert_eq!(ns(&server, "net"), ns(&client, "net"));
    assert_eq!(ns(&server, "ipc"), ns(&client, "ipc"));
    assert_eq!(ns(&server, "uts"), ns(&client, "uts"));
    assert_ne!(ns(&server, "pid"), ns(&client, "pid"));
    assert_ne!(
        ns(&server, "net"),
        fs::read_link("/proc/self/ns/net")
            .unwrap()
            .display()
            .to_string(),
        "not the host's network"
    );
    // Each has its own PID 1; the pod's hostname; a shared /dev/shm; separate roots.
    assert_eq!(
        exec(&t, &server, "cat /proc/1/cmdline | tr '\\0' ' '"),
        "sleep 1000"
    );
    assert!(
        !exec(&t, &server, "ps -o args").contains("sleep 1001"),
        "the client's processes are invisible"
    );
    assert_eq!(exec(&t, &client, "hostname"), "pair");
    exec(
        &t,
        &server,
        "echo shared > /dev/shm/x; touch /only-in-server",
    );
    assert_eq!(exec(&t, &client, "cat /dev/shm/x"), "shared");
    assert_eq!(
        exec(
            &t,
            &client,
            "test -e /only-in-server && echo same || echo separate"
        ),
        "separate"
    );
    assert!(exec(&t, &client, "cat /etc/hosts").contains("127.0.0.1\tlocalhost"));

    let status = t.runtime.sandbox_status(&sb).unwrap();
    assert_eq!(status.state, rkube_runtime::SandboxState::Ready);
    t.runtime.remove_sandbox(&sb).unwrap();
    assert!(
        t.runtime.list().unwrap().is_empty(),
        "removing the sandbox removed its containers"
    );
}

#[test]
fn env_args_workdir_and_user_come_from_the_image_unless_the_config_overrides_them() {
    if !is_root("env_args_workdir_and_user_come_from_the_image_unless_the_config_overrides_them") {
        return;
    }
    let t = TestRuntime::new();
    let sb = t.sandbox("env");
    // No command, no args: the image's cmd runs.
    let default = t
        .runtime
        .create_container(
            &sb,
            rkube_runtime::ContainerConfig {
                name: "default".into(),
                image: BUSYBOX.into(),
                ..Default::default()
            },
        )
        .unwrap();
    t.runtime.start(&default).unwrap();
    wait_exit(&t.runtime, &default);
    assert_eq!(stdout_text(&t.runtime, &default), "default-cmd\n");

    let script = "id -u; id -g; id -G; pwd; echo $FROM_IMAGE $OVERRIDE $ADDED $HOSTNAME $HOME";
    let mut config = sh("custom", script);
    config.env = vec![
        ("OVERRIDE".into(), "config".into()),
        ("ADDED".into(), "1".into()),
    ];
    config.run_as_username = Some("app".into());
    let id = t.runtime.create_container(&sb, config).unwrap();
    t.runtime.start(&id).unwrap();
    assert_eq!(wait_exit(&t.runtime, &id).exit_code, Some(0));
    assert_eq!(
        stdout_text(&t.runtime, &id),
        "1000\n1000\n1000 2000\n/home/app\nyes config 1 env /home/app\n",
        "user app from /etc/passwd with its groups and home, image workdir, merged env"
    );

    let mut config = sh("numeric", "id -u; id -g; pwd; echo $HOME");
    config.run_as_user = Some(4242);
    config.run_as_group = Some(4343);
    config.working_dir = Some("/tmp".into());
    let id = t.runtime.create_container(&sb, config).unwrap();
    t.runtime.start(&id).unwrap();
    wait_exit(&t.runtime, &id);
    assert_eq!(
        stdout_text(&t.runtime, &id),
        "4242\n4343\n/tmp\n/\n",
        "a user without a passwd entry gets HOME=/"
    );

    // A relative command is found from the working directory, as with runc.
    let mut config = sh("relative", "");
    config.command = vec!["./true".into()];
    config.working_dir = Some("/bin".into());
    let id = t.runtime.create_container(&sb, config).unwrap();
    t.runtime.start(&id).unwrap();
    assert_eq!(wait_exit(&t.runtime, &id).exit_code, Some(0));
}

#[test]
fn a_memory_limit_exceeded_is_reported_as_oomkilled_with_137_and_cpu_limits_reach_the_cgroup() {
    if !is_root(
        "a_memory_limit_exceeded_is_reported_as_oomkilled_with_137_and_cpu_limits_reach_the_cgroup",
    ) {
        return;
    }
    let t = TestRuntime::new();
    let sb = t.sandbox("limits");
    let mut config = sh("hog", "dd if=/dev/zero of=/dev/null bs=256M count=1");
    config.resources = Resources {
        memory_limit_bytes: 32 << 20,
        ..Default::default()
    };
    let id = t.runtime.create_container(&sb, config).unwrap();
    t.runtime.start(&id).unwrap();
    let s = wait_exit(&t.runtime, &id);
    assert_eq!(
        (s.exit_code, s.reason.as_str()),
        (Some(137), "OOMKilled"),
        "{s:?}"
    );

    let mut config = sh("cpu", "sleep 1000");
    config.resources = Resources {
        cpu_period: 100_000,
        cpu_quota: 50_000,
        cpu_shares: 512,
        ..Default::default()
    };
    let id = t.runtime.create_container(&sb, config).unwrap();
    t.runtime.start(&id).unwrap();
    assert_eq!(t.runtime.cpu_quota(&id).unwrap(), Some(50_000));
    let unlimited = t.runtime.create_container(&sb, sh("free", "true")).unwrap();
    assert_eq!(t.runtime.cpu_quota(&unlimited).unwrap(), None);
}

#[test]
fn stop_sends_sigterm_and_kills_a_process_that_ignores_it_after_the_grace_period() {
    if !is_root("stop_sends_sigterm_and_kills_a_process_that_ignores_it_after_the_grace_period") {
        return;
    }
    let t = TestRuntime::new();
    let sb = t.sandbox("stop");
    let polite = t
        .runtime
        .create_container(
            &sb,
            sh(
                "polite",
                "trap 'echo bye; exit 0' TERM; echo up; while true; do sleep 0.1; done",
            ),
        )
        .unwrap();
    let stubborn = t
        .runtime
        .create_container(
            &sb,
            sh(
                "stubborn",
                "trap '' TERM; echo up; while true; do sleep 0.1; done",
            ),
        )
        .unwrap();
    for id in [&polite, &stubborn] {
        t.runtime.start(id).unwrap();
        wait_for(|| stdout_text(&t.runtime, id).contains("up"));
    }
    t.runtime.stop(&polite, Duration::from_secs(60)).unwrap();
    let s = t.runtime.status(&polite).unwrap();
    assert_eq!((s.state, s.exit_code), (ContainerState::Exited, Some(0)));
    assert!(stdout_text(&t.runtime, &polite).contains("bye"));

    let grace = Duration::from_secs(1);
    let started = Instant::now();
    t.runtime.stop(&stubborn, grace).unwrap();
    assert!(started.elapsed() >= grace, "the grace period was honoured");
    let s = t.runtime.status(&stubborn).unwrap();
    assert_eq!(
        (s.state, s.exit_code, s.reason.as_str()),
        (ContainerState::Exited, Some(137), "Error")
    );
    t.runtime.stop(&stubborn, grace).unwrap(); // stopping an exited container is a no-op
}

#[test]
fn logs_hold_a_one_mib_line_as_partial_records_and_an_unterminated_last_line() {
    if !is_root("logs_hold_a_one_mib_line_as_partial_records_and_an_unterminated_last_line") {
        return;
    }
    let t = TestRuntime::new();
    let sb = t.sandbox("logs");
    let id = t
        .runtime
        .create_container(
            &sb,
            sh(
                "big",
                "head -c 1048576 /dev/zero | tr '\\0' a; echo; seq 1 1000; printf tail",
            ),
        )
        .unwrap();
    t.runtime.start(&id).unwrap();
    wait_exit(&t.runtime, &id);
    let bytes = fs::read(t.runtime.log_path(&id).unwrap()).unwrap();
    let records = rkube_runtime::logs::parse_records(&bytes).unwrap();
    assert!(
        records.iter().filter(|r| r.partial).count() >= 60,
        "16 KiB partial records"
    );
    assert!(
        records[0].time.ends_with('Z') && records[0].time.len() == 30,
        "{}",
        records[0].time
    );
    let lines = rkube_runtime::logs::join_lines(&records);
    assert_eq!(lines[0].1, vec![b'a'; 1 << 20]);
    let numbers: Vec<String> = lines[1..1001]
        .iter()
        .map(|l| String::from_utf8(l.1.clone()).unwrap())
        .collect();
    assert_eq!(
        numbers,
        (1..=1000).map(|i| i.to_string()).collect::<Vec<_>>(),
        "rapid output in order"
    );
    assert_eq!(lines.last().unwrap().1, b"tail");
}

#[test]
fn running_containers_survive_the_runtime_and_a_new_runtime_readopts_them() {
    if !is_root("running_containers_survive_the_runtime_and_a_new_runtime_readopts_them") {
        return;
    }
    let t = TestRuntime::new();
    let flag_dir = t.dir.path().join("flags");
    fs::create_dir(&flag_dir).unwrap();
    let sb = t.sandbox("readopt");
    let mut config = sh(
        "waiter",
        "echo started; until test -e /flags/go; do sleep 0.05; done; exit 7",
    );
    config.mounts = vec![BindMount {
        host_path: flag_dir.clone(),
        container_path: "/flags".into(),
        readonly: true,
        propagation: Propagation::Private,
    }];
    let waiter = t.runtime.create_container(&sb, config).unwrap();
    let sleeper = t
        .runtime
        .create_container(&sb, sh("sleeper", "sleep 1000"))
        .unwrap();
    t.runtime.start(&waiter).unwrap();
    t.runtime.start(&sleeper).unwrap();
    wait_for(|| stdout_text(&t.runtime, &waiter).contains("started"));

    // A second runtime on the same directories, as after a restart; the first is not used
    // again. The waiter exits while neither is looking: only its shim sees it.
    let second = t.reopen();
    fs::write(flag_dir.join("go"), "").unwrap();
    let exit_file = t.root().join("containers").join(&waiter).join("exit.json");
    wait_for(|| exit_file.exists());
    let s = second.status(&waiter).unwrap();
    assert_eq!((s.state, s.exit_code), (ContainerState::Exited, Some(7)));
    let s = second.status(&sleeper).unwrap();
    assert_eq!(s.state, ContainerState::Running);
    assert_eq!(second.list().unwrap().len(), 2);
    assert_eq!(
        second
            .exec_sync(&sleeper, &["true".into()], None)
            .unwrap()
            .exit_code,
        0
    );
    second.stop(&sleeper, Duration::ZERO).unwrap();
    assert_eq!(second.status(&sleeper).unwrap().exit_code, Some(137));
}

#[test]
fn exec_sync_returns_output_and_exit_code_and_times_out() {
    if !is_root("exec_sync_returns_output_and_exit_code_and_times_out") {
        return;
    }
    let t = TestRuntime::new();
    let sb = t.sandbox("exec");
    let id = t
        .runtime
        .create_container(&sb, sh("c", "sleep 1000"))
        .unwrap();
    assert!(matches!(
        t.runtime.exec_sync(&id, &["true".into()], None),
        Err(RuntimeError::WrongState {
            state: ContainerState::Created,
            ..
        })
    ));
    t.runtime.start(&id).unwrap();
    let r = t
        .runtime
        .exec_sync(
            &id,
            &[
                "sh".into(),
                "-c".into(),
                "echo out; echo err >&2; exit 4".into(),
            ],
            None,
        )
        .unwrap();
    assert_eq!(
        (r.stdout.as_slice(), r.stderr.as_slice(), r.exit_code),
        (&b"out\n"[..], &b"err\n"[..], 4)
    );
    let err = t
        .runtime
        .exec_sync(
            &id,
            &["sleep".into(), "1000".into()],
            Some(Duration::from_millis(300)),
        )
        .unwrap_err();
    assert!(matches!(err, RuntimeError::ExecTimeout { .. }), "{err}");
    let err = t
        .runtime
        .exec_sync(&id, &["/no/such/binary".into()], None)
        .unwrap_err();
    assert!(matches!(err, RuntimeError::ExecFailed { .. }), "{err}");
}

#[test]
fn the_default_seccomp_profile_refuses_namespace_creation_and_unconfined_allows_it() {
    if !is_root("the_default_seccomp_profile_refuses_namespace_creation_and_unconfined_allows_it") {
        return;
    }
    let t = TestRuntime::new();
    let sb = t.sandbox("seccomp");
    let confined = t
        .runtime
        .create_container(&sb, sh("c", "unshare -U true"))
        .unwrap();
    let mut config = sh("u", "unshare -U true");
    config.seccomp = rkube_runtime::spec::SeccompProfile::Unconfined;
    let unconfined = t.runtime.create_container(&sb, config).unwrap();
    for id in [&confined, &unconfined] {
        t.runtime.start(id).unwrap();
    }
    assert_ne!(wait_exit(&t.runtime, &confined).exit_code, Some(0));
    assert_eq!(wait_exit(&t.runtime, &unconfined).exit_code, Some(0));
}

/// Mount points under `dir`.
fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .filter(|m| m.starts_with(&prefix))
        .collect()
}

#[test]
fn bad_input_is_a_typed_error_and_leaves_nothing_behind() {
    if !is_root("bad_input_is_a_typed_error_and_leaves_nothing_behind") {
        return;
    }
    let t = TestRuntime::new();
    let sb = t.sandbox("bad");
    let mut missing_mount = sh("m", "true");
    missing_mount.mounts = vec![BindMount {
        host_path: "/no/such/dir".into(),
        container_path: "/data".into(),
        readonly: false,
        propagation: Propagation::Private,
    }];
    let err = t.runtime.create_container(&sb, missing_mount).unwrap_err();
    assert!(matches!(err, RuntimeError::BadMountSource { .. }), "{err}");
    assert!(err.to_string().contains("/no/such/dir"));

    let mut no_command = sh("n", "");
    no_command.command = vec![String::new()];
    let err = t.runtime.create_container(&sb, no_command).unwrap_err();
    assert!(
        matches!(
            err,
            RuntimeError::Spec(rkube_runtime::spec::SpecError::MissingCommand { .. })
        ),
        "{err}"
    );

    let mut no_image = sh("i", "true");
    no_image.image = "rkube.test/absent:1".into();
    let err = t.runtime.create_container(&sb, no_image).unwrap_err();
    assert!(matches!(err, RuntimeError::ImageNotFound { .. }), "{err}");

    let mut not_executable = sh("x", "");
    not_executable.command = vec!["/no/such/binary".into()];
    let err = t.runtime.create_container(&sb, not_executable).unwrap_err();
    assert!(matches!(err, RuntimeError::CreateFailed { .. }), "{err}");
    assert!(err.to_string().contains("/no/such/binary"), "{err}");

    let mut not_on_path = sh("p", "");
    not_on_path.command = vec!["no-such-tool".into()];
    let err = t.runtime.create_container(&sb, not_on_path).unwrap_err();
    assert!(
        err.to_string()
            .contains("\"no-such-tool\": executable file not found in $PATH"),
        "{err}"
    );

    let err = t
        .runtime
        .create_container("nope", sh("s", "true"))
        .unwrap_err();
    assert!(matches!(err, RuntimeError::SandboxNotFound { .. }), "{err}");
    assert!(matches!(
        t.runtime.start("../etc"),
        Err(RuntimeError::ContainerNotFound { .. })
    ));

    // Removed containers' directories are deleted in the background: soon.
    wait_for_empty_trash(&t.runtime);
    let dirs = t.runtime.state_dirs().unwrap();
    assert_eq!(
        (dirs["containers"], dirs["libcontainer"], dirs["trash"]),
        (0, 0, 0),
        "{dirs:?}"
    );
    assert!(mounts_under(t.dir.path()).is_empty());
}

#[test]
fn a_hundred_create_remove_cycles_leak_no_mounts_cgroups_or_directories() {
    if !is_root("a_hundred_create_remove_cycles_leak_no_mounts_cgroups_or_directories") {
        return;
    }
    let t = TestRuntime::new();
    let sb = t.sandbox("cycles");
    let mut cgroups = Vec::new();
    for i in 0..100 {
        let id = t.runtime.create_container(&sb, sh("c", "true")).unwrap();
        if i % 2 == 0 {
            t.runtime.start(&id).unwrap();
            wait_exit(&t.runtime, &id);
        }
        cgroups.push(t.runtime.status(&id).unwrap().cgroup);
        t.runtime.remove(&id).unwrap();
    }
    // Removed containers' directories are deleted in the background: soon, and all of them.
    wait_for_empty_trash(&t.runtime);
    let dirs = t.runtime.state_dirs().unwrap();
    assert_eq!(
        (dirs["containers"], dirs["libcontainer"], dirs["trash"]),
        (0, 0, 0),
        "{dirs:?}"
    );
    assert!(
        mounts_under(t.dir.path()).is_empty(),
        "{:?}",
        mounts_under(t.dir.path())
    );
    assert!(cgroups.iter().all(|c| !t.runtime.cgroups().exists(c)));
    let status = t.runtime.sandbox_status(&sb).unwrap();
    t.runtime.remove_sandbox(&sb).unwrap();
    assert!(!t.runtime.cgroups().exists(&status.cgroup));
    assert_eq!(t.runtime.state_dirs().unwrap()["sandboxes"], 0);
}

#[test]
fn a_reopened_runtime_discards_old_container_directories_without_a_record_and_lists_the_rest() {
    if !is_root("a_reopened_runtime_discards_old_container_directories_without_a_record") {
        return;
    }
    let t = TestRuntime::new();
    let sb = t.sandbox("orphans");
    let kept = t.runtime.create_container(&sb, sh("k", "true")).unwrap();
    let containers = t.config.root.join("containers");
    // What a power cut can leave: a directory whose record never reached the disk (old), one
    // with a torn record (old), and one a create is writing right now (young).
    let lost = containers.join("lost");
    let torn = containers.join("torn");
    let young = containers.join("young");
    for dir in [&lost, &torn, &young] {
        std::fs::create_dir_all(dir.join("upper/etc")).unwrap();
    }
    std::fs::write(torn.join("container.json"), b"{\"id\": \"tor").unwrap();
    // A record this version cannot read for another reason (a newer runtime's) is kept.
    let foreign = containers.join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("container.json"), b"[\"not\", \"ours\"]").unwrap();
    let long_ago = std::time::SystemTime::now() - Duration::from_secs(600);
    for dir in [&lost, &torn, &foreign] {
        std::fs::File::open(dir)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
    }
    // A torn record is skipped by listings, not an error for the whole node.
    let listed: Vec<String> = t
        .runtime
        .list()
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(listed, std::slice::from_ref(&kept));

    let second = t.reopen();
    assert!(!lost.exists() && !torn.exists(), "old orphans discarded");
    assert!(
        young.exists(),
        "a young directory may be a create under way"
    );
    assert!(
        foreign.exists(),
        "an unreadable but whole record is not an orphan's"
    );
    let listed: Vec<String> = second.list().unwrap().into_iter().map(|c| c.id).collect();
    assert_eq!(listed, std::slice::from_ref(&kept));
    wait_for_empty_trash(&second);
    std::fs::remove_dir_all(&young).unwrap();
    std::fs::remove_dir_all(&foreign).unwrap();
    second.remove(&kept).unwrap();
    second.remove_sandbox(&sb).unwrap();
}
