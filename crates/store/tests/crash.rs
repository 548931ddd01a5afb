//! Crash safety of the embedded store: a writer process is killed with SIGKILL at random moments,
//! and after each kill the store must reopen intact, hold every acknowledged write, show no
//! unacknowledged write beyond the one each writer may have had in flight, and have a gap-free
//! history. The writer also keeps saving snapshots; whichever snapshot file survives must restore
//! to a consistent store.
//!
//! The writer is this test binary run again as a child with `crash_writer_child_process`
//! selected (it is `#[ignore]`d so a normal run skips it).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use rand::Rng;
use rkube_store::embedded::{self, EmbeddedStore, snapshot};
use rkube_store::{ListOptions, Revision, Store, WatchItem};

const TASKS: usize = 8;
const KILLS: usize = 25;

/// The deterministic op `seq` of writer task `task` in generation `generation`.
#[derive(Clone, Debug, PartialEq)]
enum Op {
    Create { index: usize },
    Update { index: usize },
    Delete { index: usize },
}

fn op(seq: usize) -> Op {
    match seq % 8 {
        3 => Op::Update { index: seq - 1 },
        7 => Op::Delete { index: seq - 2 },
        _ => Op::Create { index: seq },
    }
}

fn key(generation: usize, task: usize, index: usize) -> String {
    format!("/crash/g{generation:03}/t{task}/{index:06}")
}

/// A value whose every byte depends on its key and version, so a torn or mixed-up value shows.
fn value(key: &str, version: u32) -> Bytes {
    let unit = format!("{key}@v{version};");
    let mut out = String::with_capacity(1100);
    while out.len() < 1000 {
        out.push_str(&unit);
    }
    Bytes::from(out)
}

/// The keys and values of one task after its first `ops` ops.
fn model(generation: usize, task: usize, ops: usize) -> BTreeMap<String, Bytes> {
    let mut state = BTreeMap::new();
    for seq in 0..ops {
        match op(seq) {
            Op::Create { index } => {
                let k = key(generation, task, index);
                state.insert(k.clone(), value(&k, 0));
            }
            Op::Update { index } => {
                let k = key(generation, task, index);
                state.insert(k.clone(), value(&k, 1));
            }
            Op::Delete { index } => {
                state.remove(&key(generation, task, index));
            }
        }
    }
    state
}

#[test]
#[ignore = "entry point of the writer process that crash tests kill; not a test on its own"]
fn crash_writer_child_process() {
    let dir = PathBuf::from(std::env::var("RKUBE_CRASH_DIR").expect("RKUBE_CRASH_DIR"));
    let generation: usize = std::env::var("RKUBE_CRASH_GEN")
        .expect("RKUBE_CRASH_GEN")
        .parse()
        .expect("generation");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        // Small log segments, so kills also land in checkpoints and segment rolls.
        let options = embedded::Options {
            wal_segment_bytes: 96 << 10,
            ..Default::default()
        };
        let store = Arc::new(
            EmbeddedStore::open_with(dir.join("state.redb"), options).expect("open store"),
        );
        let acks = Arc::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(format!("acks-{generation:03}")))
                .expect("ack log"),
        );
        let mut tasks = Vec::new();
        for task in 0..TASKS {
            let store = store.clone();
            let acks = acks.clone();
            tasks.push(tokio::spawn(async move {
                let mut revisions: BTreeMap<usize, Revision> = BTreeMap::new();
                for seq in 0.. {
                    let revision = match op(seq) {
                        Op::Create { index } => {
                            let k = key(generation, task, index);
                            let r = store.create(&k, value(&k, 0)).await.expect("create");
                            revisions.insert(index, r);
                            r
                        }
                        Op::Update { index } => {
                            let k = key(generation, task, index);
                            let r = store
                                .update(&k, value(&k, 1), revisions[&index])
                                .await
                                .expect("update");
                            revisions.insert(index, r);
                            r
                        }
                        Op::Delete { index } => {
                            let k = key(generation, task, index);
                            store
                                .delete(&k, Some(revisions[&index]))
                                .await
                                .expect("delete")
                                .0
                        }
                    };
                    // One write(2) per line on an O_APPEND file: lines never interleave.
                    (&*acks)
                        .write_all(format!("{task} {seq} {revision}\n").as_bytes())
                        .expect("ack");
                }
            }));
        }
        // Keep saving snapshots while the writers run.
        let snapshot_path = dir.join("snapshot.redb");
        loop {
            tokio::time::sleep(Duration::from_millis(30)).await;
            store.snapshot(&snapshot_path).await.expect("snapshot");
        }
    });
}

/// Acknowledged ops of one generation: per task, (seq → revision).
fn read_acks(dir: &Path, generation: usize) -> Vec<BTreeMap<usize, Revision>> {
    let mut acks = vec![BTreeMap::new(); TASKS];
    let text =
        std::fs::read_to_string(dir.join(format!("acks-{generation:03}"))).unwrap_or_default();
    for line in text.lines() {
        let mut fields = line
            .split(' ')
            .map(|f| f.parse::<i64>().expect("ack field"));
        let (task, seq, revision) = (
            fields.next().unwrap() as usize,
            fields.next().unwrap() as usize,
            fields.next().unwrap(),
        );
        acks[task].insert(seq, revision);
    }
    acks
}

/// The state of `task`'s keys in `store` at its current revision.
async fn task_state(store: &dyn Store, generation: usize, task: usize) -> BTreeMap<String, Bytes> {
    let list = store
        .list(ListOptions {
            prefix: format!("/crash/g{generation:03}/t{task}/"),
            ..Default::default()
        })
        .await
        .expect("list");
    list.items
        .into_iter()
        .map(|kv| (kv.key, kv.value))
        .collect()
}

/// Checks one generation in a reopened store; returns how many ops each task got durable.
async fn verify_generation(store: &dyn Store, dir: &Path, generation: usize) -> Vec<usize> {
    let acks = read_acks(dir, generation);
    let mut durable = Vec::new();
    for (task, acked) in acks.iter().enumerate() {
        // Acknowledged ops are a gap-free prefix of the task's sequence.
        let n = acked.len();
        assert!(
            acked.keys().copied().eq(0..n),
            "generation {generation} task {task}: acknowledged seqs are not 0..{n}"
        );
        let state = task_state(store, generation, task).await;
        // Every acknowledged op is there; at most the one op in flight at the kill may be too.
        let matches = if state == model(generation, task, n) {
            n
        } else if state == model(generation, task, n + 1) {
            n + 1
        } else {
            panic!(
                "generation {generation} task {task}: state matches neither {n} acknowledged ops \
                 nor {} (keys seen: {:?})",
                n + 1,
                state.keys().collect::<Vec<_>>()
            );
        };
        durable.push(matches);
    }
    durable
}

/// In a snapshot, each task's keys are the state after some prefix of its ops (at most one past
/// what was acknowledged); returns the sum of those prefix lengths.
async fn snapshot_prefixes(store: &dyn Store, dir: &Path, generation: usize) -> usize {
    let acks = read_acks(dir, generation);
    let mut total = 0;
    for (task, acked) in acks.iter().enumerate() {
        let state = task_state(store, generation, task).await;
        let prefix = (0..=acked.len() + 1)
            .find(|&k| model(generation, task, k) == state)
            .unwrap_or_else(|| {
                panic!("snapshot: generation {generation} task {task} is not a prefix of its ops")
            });
        total += prefix;
    }
    total
}

/// The whole history is gap-free and every acknowledged revision holds its op.
async fn verify_history(store: &dyn Store, dir: &Path, generations: usize) {
    let current = store.current_revision().await.expect("revision");
    let mut watch = store.watch("/", 1).await.expect("watch history");
    let mut by_revision = BTreeMap::new();
    let mut expected = 2;
    while expected <= current {
        let item = tokio::time::timeout(Duration::from_secs(20), watch.next())
            .await
            .expect("history replay timed out")
            .expect("watch ended")
            .expect("watch error");
        if let WatchItem::Event(event) = item {
            assert_eq!(
                event.revision(),
                expected,
                "history has a gap or disorder: expected revision {expected}"
            );
            by_revision.insert(event.revision(), event.kv.key.clone());
            expected += 1;
        }
    }
    for generation in 0..generations {
        for (task, acked) in read_acks(dir, generation).iter().enumerate() {
            for (seq, revision) in acked {
                let index = match op(*seq) {
                    Op::Create { index } | Op::Update { index } | Op::Delete { index } => index,
                };
                assert_eq!(
                    by_revision.get(revision),
                    Some(&key(generation, task, index)),
                    "acknowledged op {seq} of task {task} (generation {generation}) is not at revision {revision}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill_and_nothing_else_is_half_visible() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("state.redb");
    let exe = std::env::current_exe().expect("test binary");
    let mut rng = rand::rng();
    let mut snapshots_checked = 0;
    for generation in 0..KILLS {
        let mut child = Command::new(&exe)
            .args([
                "crash_writer_child_process",
                "--exact",
                "--ignored",
                "--nocapture",
            ])
            .env("RKUBE_CRASH_DIR", dir.path())
            .env("RKUBE_CRASH_GEN", generation.to_string())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(dir.path().join(format!("writer-{generation:03}.log")))
                    .expect("log"),
            )
            .spawn()
            .expect("spawn writer");
        // The kill must land while the writer writes: wait for its first acknowledgement (a
        // loaded machine can take longer than the random delay just to start it), then let it
        // run a random while more.
        let started = std::time::Instant::now();
        let acks = dir.path().join(format!("acks-{generation:03}"));
        // A whole line, not read_acks: the writer may be halfway through one.
        while !std::fs::read(&acks).is_ok_and(|b| b.contains(&b'\n'))
            && started.elapsed() < Duration::from_secs(60)
            && child.try_wait().expect("poll the writer").is_none()
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..600))).await;
        child.kill().expect("SIGKILL the writer");
        child.wait().expect("reap the writer");

        let acked: usize = read_acks(dir.path(), generation)
            .iter()
            .map(|a| a.len())
            .sum();
        assert!(
            acked > 0,
            "writer {generation} acknowledged nothing before the kill; its log: {}",
            std::fs::read_to_string(dir.path().join(format!("writer-{generation:03}.log")))
                .unwrap_or_default()
        );
        assert!(
            embedded::check_integrity(&db).expect("store file must open after a crash"),
            "integrity check found damage after kill {generation}"
        );
        let store = EmbeddedStore::open(&db).expect("reopen after kill");
        let mut ops = 0;
        for g in 0..=generation {
            ops += verify_generation(&store, dir.path(), g)
                .await
                .iter()
                .sum::<usize>();
        }
        eprintln!("kill {generation}: {ops} durable ops in all");
        verify_history(&store, dir.path(), generation + 1).await;
        assert_eq!(
            store.current_revision().await.unwrap(),
            1 + ops as Revision,
            "revision must count exactly the durable writes"
        );
        drop(store);

        // The snapshot file, when one was written, is complete and restores to a consistent store.
        let snapshot_file = dir.path().join("snapshot.redb");
        if snapshot_file.exists() {
            let restored = tempfile::tempdir().expect("tempdir");
            let restored_db = restored.path().join("state.redb");
            let info = snapshot::restore(&snapshot_file, &restored_db).expect("restore snapshot");
            let restored_store = EmbeddedStore::open(&restored_db).expect("open restored");
            assert_eq!(
                restored_store.current_revision().await.unwrap(),
                info.revision
            );
            // Each task shows some prefix of its ops, and together they are exactly the writes
            // up to the snapshot's revision: a consistent point in time.
            let mut total = 0;
            for g in 0..=generation {
                total += snapshot_prefixes(&restored_store, dir.path(), g).await;
            }
            assert_eq!(
                total as Revision,
                info.revision - 1,
                "snapshot at revision {} must hold exactly the writes up to it",
                info.revision
            );
            snapshots_checked += 1;
        }
    }
    assert!(
        snapshots_checked >= KILLS / 2,
        "only {snapshots_checked} of {KILLS} runs left a snapshot to check"
    );
}
