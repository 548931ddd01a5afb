//! End-to-end tests of `rkube datastore`: the real binary against real store files, including
//! the bad input a user can give it (corrupt, truncated, locked, unwritable). The test process
//! itself plays "the other process" that holds a store open.

mod common;

use common::{assert_clean_failure, stderr, stdout};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use rkube_store::embedded::{EmbeddedStore, db_path};
use rkube_store::{ListOptions, Store};

fn rkube(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rkube"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run rkube")
}

/// `rkube datastore --data-dir DIR ARGS...`
fn datastore(data_dir: &str, args: &[&str]) -> Output {
    let mut full = vec!["datastore", "--data-dir", data_dir];
    full.extend_from_slice(args);
    rkube(&full)
}

fn dir_arg(dir: &Path) -> String {
    dir.to_str().expect("utf-8 path").to_owned()
}

async fn fill(store: &EmbeddedStore, prefix: &str, n: usize) {
    for i in 0..n {
        store
            .create(&format!("{prefix}{i:05}"), Bytes::from(vec![b'x'; 100]))
            .await
            .expect("create");
    }
}

#[test]
fn help_and_version_work() {
    let out = rkube(&["--version"]);
    assert!(out.status.success());
    assert!(stdout(&out).starts_with("rkube "), "{}", stdout(&out));
    let out = rkube(&["datastore", "--help"]);
    assert!(out.status.success());
    for sub in ["stats", "compact", "snapshot"] {
        assert!(
            stdout(&out).contains(sub),
            "help lacks {sub}: {}",
            stdout(&out)
        );
    }
}

#[test]
fn stats_creates_an_empty_store_where_there_is_none() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = datastore(&dir_arg(&data), &["stats", "-o", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json stats");
    assert_eq!(stats["keys"], 0);
    assert_eq!(stats["revision"], 1);
    assert!(db_path(&data).exists(), "store file was not created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_save_and_restore_round_trip_and_compact_keeps_keys() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let snap = dir.path().join("backup.redb");
    {
        let store = EmbeddedStore::open(db_path(&data)).unwrap();
        fill(&store, "/registry/configmaps/default/cm-", 50).await;
    }
    let d = dir_arg(&data);
    let out = datastore(&d, &["snapshot", "save", snap.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("revision 51"), "{}", stdout(&out));

    // Lose data, then restore it.
    {
        let store = EmbeddedStore::open(db_path(&data)).unwrap();
        for i in 0..50 {
            store
                .delete(&format!("/registry/configmaps/default/cm-{i:05}"), None)
                .await
                .unwrap();
        }
        fill(&store, "/registry/secrets/default/s-", 3).await;
    }
    let out = datastore(&d, &["snapshot", "restore", snap.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    {
        let store = EmbeddedStore::open(db_path(&data)).unwrap();
        assert_eq!(store.count("/registry/configmaps/").await.unwrap(), 50);
        assert_eq!(store.count("/registry/secrets/").await.unwrap(), 0);
        assert_eq!(store.current_revision().await.unwrap(), 51);
        // The restored store keeps counting from the snapshot's revision.
        assert_eq!(store.create("/registry/x", Bytes::new()).await.unwrap(), 52);
    }

    let out = datastore(&d, &["compact"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = datastore(&d, &["stats", "-o", "json"]);
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["keys"], 51);
    assert_eq!(stats["compacted_revision"], stats["revision"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_in_use_answers_stats_snapshots_and_compaction_and_refuses_restore() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = dir_arg(&data);
    let store = Arc::new(EmbeddedStore::open(db_path(&data)).unwrap());
    fill(&store, "/registry/pods/default/p-", 100).await;

    // Keep writing while the CLI takes snapshots from another process.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                store
                    .create(
                        &format!("/registry/events/default/e-{i:06}"),
                        Bytes::from_static(b"e"),
                    )
                    .await
                    .unwrap();
                i += 1;
            }
            i
        })
    };
    for round in 0..3 {
        let snap = dir.path().join(format!("live-{round}.redb"));
        let acknowledged = store.current_revision().await.unwrap();
        let out = tokio::task::spawn_blocking({
            let (d, snap) = (d.clone(), snap.clone());
            move || datastore(&d, &["snapshot", "save", snap.to_str().unwrap()])
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "live snapshot failed: {}",
            stderr(&out)
        );

        // Only creates happened, so a consistent snapshot at revision R holds exactly R-1 keys.
        let restored = tempfile::tempdir().unwrap();
        let info =
            rkube_store::embedded::snapshot::restore(&snap, &db_path(restored.path())).unwrap();
        let copy = EmbeddedStore::open(db_path(restored.path())).unwrap();
        let all = copy
            .list(ListOptions {
                prefix: "/".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            all.items.len() as i64,
            info.revision - 1,
            "snapshot is not one point in time"
        );
        assert!(
            info.revision >= acknowledged,
            "snapshot at revision {} misses writes acknowledged before it started (revision {acknowledged})",
            info.revision
        );
    }

    let out = datastore(&d, &["stats"]);
    assert!(
        out.status.success(),
        "stats of a live store failed: {}",
        stderr(&out)
    );

    // Compaction of a live store is done by the process holding it, as etcdctl compact is.
    let before = store.current_revision().await.unwrap();
    let out = datastore(&d, &["compact"]);
    assert!(
        out.status.success(),
        "live compact failed: {}",
        stderr(&out)
    );
    let compacted = store.stats().await.unwrap().compacted_revision;
    assert!(
        compacted >= before,
        "compacted to {compacted}, revision was {before}"
    );
    let out = datastore(&d, &["compact", "--revision", "1"]);
    assert!(
        out.status.success(),
        "an older revision is a no-op: {}",
        stderr(&out)
    );
    let snap = dir.path().join("live-0.redb");
    let out = datastore(&d, &["snapshot", "restore", snap.to_str().unwrap()]);
    assert_clean_failure(&out, &["stop the server", "locked"]);

    stop.store(true, Ordering::Relaxed);
    assert!(writer.await.unwrap() > 0);
}

#[test]
fn a_corrupt_or_truncated_store_file_is_reported_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("corrupt");
    std::fs::create_dir_all(db_path(&corrupt).parent().unwrap()).unwrap();
    std::fs::write(
        db_path(&corrupt),
        b"this is not a database, just text\n".repeat(200),
    )
    .unwrap();
    let out = datastore(&dir_arg(&corrupt), &["stats"]);
    assert_clean_failure(&out, &["corrupt", "state.redb"]);

    // A real store cut short.
    let truncated = dir.path().join("truncated");
    let out = datastore(&dir_arg(&truncated), &["stats"]);
    assert!(out.status.success());
    let file = db_path(&truncated);
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 3]).unwrap();
    for args in [
        &["stats"][..],
        &["compact"],
        &["snapshot", "save", "/dev/null/x"],
    ] {
        let out = datastore(&dir_arg(&truncated), args);
        assert_clean_failure(&out, &["corrupt", "state.redb"]);
    }
    // The damaged file is left as it was for the operator to inspect.
    assert_eq!(std::fs::read(&file).unwrap().len(), bytes.len() / 3);

    // A damaged write-ahead log segment is named as such, and left alone too.
    let bad_log = dir.path().join("bad-log");
    assert!(datastore(&dir_arg(&bad_log), &["stats"]).status.success());
    let wal_dir = db_path(&bad_log).with_file_name("state.redb.wal");
    let segment = std::fs::read_dir(&wal_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "wal"))
        .expect("a log segment");
    std::fs::write(&segment, b"not a log segment at all, 32+ bytes long").unwrap();
    let out = datastore(&dir_arg(&bad_log), &["stats"]);
    assert_clean_failure(&out, &["corrupt", "state.redb.wal", "write-ahead log"]);
    assert!(segment.exists());
}

#[test]
fn a_bad_snapshot_file_is_refused_and_the_store_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = dir_arg(&data);
    assert!(datastore(&d, &["stats"]).status.success());
    let before = std::fs::read(db_path(&data)).unwrap();

    let garbage = dir.path().join("garbage.redb");
    std::fs::write(&garbage, b"\x00\x01garbage").unwrap();
    let out = datastore(&d, &["snapshot", "restore", garbage.to_str().unwrap()]);
    assert_clean_failure(&out, &["garbage.redb", "not a valid snapshot"]);

    let missing = dir.path().join("missing.redb");
    let out = datastore(&d, &["snapshot", "restore", missing.to_str().unwrap()]);
    assert_clean_failure(&out, &["missing.redb"]);

    assert_eq!(
        std::fs::read(db_path(&data)).unwrap(),
        before,
        "store changed by a refused restore"
    );
}

#[test]
fn an_unwritable_data_dir_is_reported_with_its_path() {
    // Root ignores permission bits, so make the directory truly read-only: a read-only tmpfs.
    let dir = tempfile::tempdir().unwrap();
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs"])
        .arg(&ro)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root and must be able to mount a read-only tmpfs"
        );
        eprintln!("skipping: cannot mount a read-only tmpfs (not root?)");
        return;
    }
    let out = datastore(&dir_arg(&ro), &["stats"]);
    let _ = Command::new("umount").arg(&ro).status();
    assert_clean_failure(&out, &["Read-only file system", ro.to_str().unwrap()]);
}

#[test]
fn an_unreachable_etcd_is_one_error_line_naming_the_endpoint() {
    let endpoint = format!("http://127.0.0.1:{}", rkube_testsupport::free_port());
    let started = std::time::Instant::now();
    let out = rkube(&["datastore", "--datastore-endpoint", &endpoint, "stats"]);
    assert_clean_failure(&out, &["unreachable", &endpoint]);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );

    let out = rkube(&[
        "datastore",
        "--datastore-endpoint",
        "unix:///run/etcd.sock",
        "stats",
    ]);
    assert_clean_failure(
        &out,
        &["unsupported datastore endpoint", "unix:///run/etcd.sock"],
    );
    let out = rkube(&[
        "datastore",
        "--datastore-endpoint",
        &endpoint,
        "snapshot",
        "save",
        "/tmp/x",
    ]);
    assert_clean_failure(&out, &["etcdctl", "snapshot save"]);
}

#[test]
fn stats_and_compact_work_on_an_etcd_datastore() {
    let etcd = rkube_testsupport::EtcdServer::start();
    let endpoint = etcd.endpoint();
    let out = rkube(&["datastore", "--datastore-endpoint", &endpoint, "compact"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = rkube(&[
        "datastore",
        "--datastore-endpoint",
        &endpoint,
        "stats",
        "-o",
        "json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json stats");
    assert_eq!(stats["keys"], 0);
    assert!(stats["size_bytes"].as_u64().unwrap() > 0, "{stats}");
}
