//! The store benchmark of issue 3: one workload, three stores, one table.
//!
//! Every workload runs on a fresh store of each kind:
//!
//! * **embedded**: [`EmbeddedStore`] on a redb file in a temp dir;
//! * **etcd backend**: our [`EtcdStore`] against a real etcd that the bench starts on loopback;
//! * **etcd native**: the same kind of etcd driven directly through `etcd-client` (creates as a
//!   txn guarded by `create_revision == 0`, as Kubernetes does; plain range/get/watch otherwise),
//!   the yardstick every goal is measured against.
//!
//! Workloads (values are 1 KiB): sequential and concurrent durable creates, a whole-prefix range
//! of 10,000 keys and point gets, watch fan-out to 1,000 watchers, and memory after 100,000 keys
//! (the embedded store measured in a child process: this binary re-executed with
//! [`CHILD_ENV`] set). Every loop is bounded by a count and by a deadline.
//!
//! Run it with `bench/store` (release build) or `cargo bench -p rkube-store --bench store`;
//! `--only 1,3` runs a subset of the workloads. Progress goes to stderr, the markdown table of
//! results to stdout.

use std::any::Any;
use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, KvClient, Txn, TxnOp, WatchOptions,
};
use futures::StreamExt;
use futures::stream::BoxStream;
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rkube_store::embedded::EmbeddedStore;
use rkube_store::etcd::EtcdStore;
use rkube_store::{ListOptions, Store, WatchItem};
use rkube_testsupport::EtcdServer;

type BoxError = Box<dyn StdError + Send + Sync>;
type Res<T> = std::result::Result<T, BoxError>;

/// Set in the environment of the child process that loads the embedded store for the memory
/// workload; its value is the data file to create.
const CHILD_ENV: &str = "RKUBE_STORE_BENCH_MEMORY_CHILD";

const VALUE_LEN: usize = 1024;

// Workload sizes and bounds. Each loop stops at its count or its deadline, whichever comes first.
const SEQ_CREATES: usize = 3_000;
const SEQ_DEADLINE: Duration = Duration::from_secs(5);
const CONC_CLIENTS: usize = 64;
const CONC_CREATES: usize = 30_000;
const CONC_DEADLINE: Duration = Duration::from_secs(6);
const RANGE_KEYS: usize = 10_000;
const RANGE_RUNS: usize = 15;
const RANGE_DEADLINE: Duration = Duration::from_secs(10);
const GET_CLIENTS: usize = 16;
const GETS_ONE: usize = 30_000;
const GETS_MANY: usize = 300_000;
const GET_DEADLINE: Duration = Duration::from_secs(3);
const WATCHERS: usize = 1_000;
const WATCH_WRITES: usize = 200;
const WATCH_SPACING: Duration = Duration::from_millis(5);
const WATCH_SETUP_CONCURRENCY: usize = 32;
const WATCH_DEADLINE: Duration = Duration::from_secs(20);
const MEMORY_KEYS: usize = 100_000;
const LOAD_CLIENTS: usize = 64;
const LOAD_DEADLINE: Duration = Duration::from_secs(90);
/// gRPC connections the native etcd client spreads its concurrent clients over.
const NATIVE_CONNECTIONS: usize = 4;

fn main() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        memory_child(Path::new(&path));
        return;
    }
    let selection = parse_args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let table = runtime.block_on(run(selection));
    print!("{}", table.render());
}

/// What the command line selects: `--only 1,3,5` picks workloads, `--kinds embedded,native`
/// picks stores (`embedded`, `backend`, `native`). Anything else (cargo passes `--bench`) is
/// ignored.
struct Selection {
    workloads: Option<Vec<u32>>,
    kinds: Vec<Kind>,
}

fn parse_args() -> Selection {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        let pos = args.iter().position(|a| a == flag)?;
        args.get(pos + 1).cloned()
    };
    let workloads =
        value("--only").map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect());
    let kinds = match value("--kinds") {
        Some(v) => KINDS
            .into_iter()
            .filter(|k| v.split(',').any(|name| k.name().contains(name.trim())))
            .collect(),
        None => KINDS.to_vec(),
    };
    Selection { workloads, kinds }
}

// ---------------------------------------------------------------------------------------------
// The three stores behind one small interface.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Embedded,
    EtcdBackend,
    EtcdNative,
}

const KINDS: [Kind; 3] = [Kind::Embedded, Kind::EtcdBackend, Kind::EtcdNative];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Embedded => "embedded",
            Kind::EtcdBackend => "etcd backend",
            Kind::EtcdNative => "etcd native",
        }
    }
}

/// What the workloads do to a store. `client` picks the connection for the native etcd client.
#[async_trait]
trait Target: Send + Sync + 'static {
    async fn create(&self, client: usize, key: String, value: Bytes) -> Res<()>;
    async fn get(&self, client: usize, key: &str) -> Res<bool>;
    /// Reads every key under `prefix` in one call; returns how many there were.
    async fn range(&self, prefix: &str) -> Res<usize>;
    /// A watch from now on of `prefix`; yields the keys of each batch of events received.
    /// Returns once the watch is registered.
    async fn watch(
        &self,
        watcher: usize,
        prefix: &str,
    ) -> Res<BoxStream<'static, Res<Vec<String>>>>;
}

struct StoreTarget(Arc<dyn Store>);

#[async_trait]
impl Target for StoreTarget {
    async fn create(&self, _client: usize, key: String, value: Bytes) -> Res<()> {
        self.0.create(&key, value).await?;
        Ok(())
    }

    async fn get(&self, _client: usize, key: &str) -> Res<bool> {
        Ok(self.0.get(key).await?.is_some())
    }

    async fn range(&self, prefix: &str) -> Res<usize> {
        let list = self
            .0
            .list(ListOptions {
                prefix: prefix.to_owned(),
                ..Default::default()
            })
            .await?;
        Ok(list.items.len())
    }

    async fn watch(
        &self,
        _watcher: usize,
        prefix: &str,
    ) -> Res<BoxStream<'static, Res<Vec<String>>>> {
        let after = self.0.current_revision().await?;
        let mut stream = self.0.watch(prefix, after).await?;
        // A progress item answers a progress request only once the watch is established.
        stream.request_progress();
        match tokio::time::timeout(Duration::from_secs(30), stream.next()).await {
            Ok(Some(Ok(WatchItem::Progress(_)))) => {}
            Ok(Some(Ok(WatchItem::Event(event)))) => {
                return Err(format!("unexpected event before any write: {}", event.kv.key).into());
            }
            Ok(Some(Err(err))) => return Err(err.into()),
            Ok(None) => return Err("watch ended before it was established".into()),
            Err(_) => return Err("no progress from a new watch within 30 s".into()),
        }
        Ok(stream
            .filter_map(|item| async move {
                match item {
                    Ok(WatchItem::Event(event)) => Some(Ok(vec![event.kv.key])),
                    Ok(WatchItem::Progress(_)) => None,
                    Err(err) => Some(Err(BoxError::from(err))),
                }
            })
            .boxed())
    }
}

/// etcd through `etcd-client`, over [`NATIVE_CONNECTIONS`] connections.
struct NativeTarget {
    clients: Vec<Client>,
    kvs: Vec<KvClient>,
}

impl NativeTarget {
    async fn connect(endpoint: &str) -> Res<Self> {
        let mut clients = Vec::new();
        for _ in 0..NATIVE_CONNECTIONS {
            let options = ConnectOptions::new().with_connect_timeout(Duration::from_secs(5));
            clients.push(Client::connect([endpoint], Some(options)).await?);
        }
        // A 10,000-key range of 1 KiB values is ~10 MiB, over tonic's default 4 MiB limit.
        let kvs = clients
            .iter()
            .map(|c| c.kv_client().max_decoding_message_size(256 << 20))
            .collect();
        Ok(Self { clients, kvs })
    }

    fn kv(&self, client: usize) -> KvClient {
        self.kvs[client % self.kvs.len()].clone()
    }
}

#[async_trait]
impl Target for NativeTarget {
    async fn create(&self, client: usize, key: String, value: Bytes) -> Res<()> {
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.clone(), value.to_vec(), None)]);
        let resp = self.kv(client).txn(txn).await?;
        if !resp.succeeded() {
            return Err(format!("create {key}: key exists").into());
        }
        Ok(())
    }

    async fn get(&self, client: usize, key: &str) -> Res<bool> {
        let resp = self.kv(client).get(key, None).await?;
        Ok(!resp.kvs().is_empty())
    }

    async fn range(&self, prefix: &str) -> Res<usize> {
        let resp = self
            .kv(0)
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await?;
        Ok(resp.kvs().len())
    }

    async fn watch(
        &self,
        watcher: usize,
        prefix: &str,
    ) -> Res<BoxStream<'static, Res<Vec<String>>>> {
        let mut client = self.clients[watcher % self.clients.len()].clone();
        let mut stream = client
            .watch(prefix, Some(WatchOptions::new().with_prefix()))
            .await?;
        // The first response confirms the watch is registered.
        match stream.message().await? {
            Some(resp) if resp.created() => {}
            other => return Err(format!("watch not created: {other:?}").into()),
        }
        let (_sender, responses) = stream.split();
        Ok(responses
            .map(move |resp| {
                // Keep the request side open for as long as the stream lives.
                let _keep = &_sender;
                let resp = resp?;
                if resp.canceled() {
                    return Err(format!("watch canceled: {}", resp.cancel_reason()).into());
                }
                Ok(resp
                    .events()
                    .iter()
                    .filter_map(|e| e.kv().and_then(|kv| kv.key_str().ok().map(str::to_owned)))
                    .collect())
            })
            .boxed())
    }
}

/// A fresh store of one kind, with whatever keeps it alive.
struct Fresh {
    target: Arc<dyn Target>,
    /// The etcd behind the store, if any.
    etcd: Option<Etcd>,
    _guard: Option<Box<dyn Any + Send>>,
}

/// An etcd started for one workload, and its process id (for its RSS).
struct Etcd {
    server: EtcdServer,
    pid: u32,
}

impl Etcd {
    async fn start() -> Res<Etcd> {
        // `start` blocks until etcd listens and panics when it cannot start it.
        let server = tokio::task::spawn_blocking(EtcdServer::start)
            .await
            .map_err(|e| format!("starting etcd: {e}"))?;
        let endpoint = server.endpoint();
        let pid = etcd_pid(&endpoint)?;
        // Ready once a linearizable read succeeds: the member has elected itself leader.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut client = Client::connect([endpoint.as_str()], None).await?;
        while let Err(err) = client.get("/ready", None).await {
            if Instant::now() > deadline {
                return Err(format!("etcd at {endpoint} not ready within 30 s: {err}").into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Etcd { server, pid })
    }

    /// The size of etcd's database file, as etcd reports it.
    async fn db_size(&self) -> Res<u64> {
        let mut client = Client::connect([self.server.endpoint()], None).await?;
        Ok(client.status().await?.db_size().max(0) as u64)
    }
}

/// The pid of the etcd serving `endpoint`: the etcd process whose command line names it.
fn etcd_pid(endpoint: &str) -> Res<u32> {
    for entry in std::fs::read_dir("/proc")? {
        let entry = entry?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_etcd = args.first().is_some_and(|a| a.ends_with("etcd"));
        // The URL ends the argument (`--listen-client-urls=URL` or `URL`): port 2379 must not
        // match 23790.
        if is_etcd && args.iter().any(|a| a.ends_with(endpoint)) {
            return Ok(pid);
        }
    }
    Err(format!("no etcd process serving {endpoint}").into())
}

async fn fresh(kind: Kind) -> Res<Fresh> {
    match kind {
        Kind::Embedded => {
            let dir = tempfile::tempdir()?;
            let store = EmbeddedStore::open(dir.path().join("state.redb"))?;
            Ok(Fresh {
                target: Arc::new(StoreTarget(Arc::new(store))),
                etcd: None,
                _guard: Some(Box::new(dir)),
            })
        }
        Kind::EtcdBackend => {
            let etcd = Etcd::start().await?;
            let store = EtcdStore::connect(&[etcd.server.endpoint()]).await?;
            Ok(Fresh {
                target: Arc::new(StoreTarget(Arc::new(store))),
                etcd: Some(etcd),
                _guard: None,
            })
        }
        Kind::EtcdNative => {
            let etcd = Etcd::start().await?;
            let target = NativeTarget::connect(&etcd.server.endpoint()).await?;
            Ok(Fresh {
                target: Arc::new(target),
                etcd: Some(etcd),
                _guard: None,
            })
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Workloads.

fn value() -> Bytes {
    let mut rng = StdRng::seed_from_u64(3);
    let mut v = vec![0u8; VALUE_LEN];
    rng.fill(&mut v[..]);
    Bytes::from(v)
}

fn histogram() -> Histogram<u64> {
    // Microseconds, 1 µs to 10 min, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds")
}

fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).max(1)
}

/// Result of a batch of creates.
struct Creates {
    done: usize,
    elapsed: Duration,
    latency: Histogram<u64>,
}

impl Creates {
    fn ops_per_sec(&self) -> f64 {
        self.done as f64 / self.elapsed.as_secs_f64()
    }
}

/// `clients` tasks create keys `<prefix><n>` until `count` are done or `deadline` passes.
async fn create_many(
    target: &Arc<dyn Target>,
    prefix: &str,
    clients: usize,
    count: usize,
    deadline: Duration,
) -> Res<Creates> {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let end = start + deadline;
    let value = value();
    let mut tasks = Vec::new();
    for client in 0..clients {
        let (target, next, value, prefix) = (
            target.clone(),
            next.clone(),
            value.clone(),
            prefix.to_owned(),
        );
        tasks.push(tokio::spawn(async move {
            let mut latency = histogram();
            let mut done = 0usize;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count || Instant::now() >= end {
                    return Ok::<_, BoxError>((done, latency));
                }
                let t = Instant::now();
                target
                    .create(client, format!("{prefix}{n:08}"), value.clone())
                    .await?;
                latency.record(micros(t.elapsed()))?;
                done += 1;
            }
        }));
    }
    let mut result = Creates {
        done: 0,
        elapsed: Duration::ZERO,
        latency: histogram(),
    };
    for task in tasks {
        let (done, latency) = task.await??;
        result.done += done;
        result.latency.add(latency)?;
    }
    result.elapsed = start.elapsed();
    Ok(result)
}

/// Workload 1: one client, one durable create after another.
async fn sequential_creates(f: &Fresh) -> Res<Creates> {
    create_many(&f.target, "/registry/bench/warmup/", 1, 50, SEQ_DEADLINE).await?;
    create_many(
        &f.target,
        "/registry/bench/seq/",
        1,
        SEQ_CREATES,
        SEQ_DEADLINE,
    )
    .await
}

/// Workload 2: 64 clients creating at once.
async fn concurrent_creates(f: &Fresh) -> Res<Creates> {
    create_many(
        &f.target,
        "/registry/bench/warmup/",
        CONC_CLIENTS,
        500,
        CONC_DEADLINE,
    )
    .await?;
    create_many(
        &f.target,
        "/registry/bench/conc/",
        CONC_CLIENTS,
        CONC_CREATES,
        CONC_DEADLINE,
    )
    .await
}

struct Reads {
    /// Median time of the whole-prefix range and how many runs it is the median of; kept apart so
    /// a failing range still lets the gets be measured.
    range: Res<(Duration, usize)>,
    gets_one: f64,
    gets_many: f64,
}

/// Workload 3: whole-prefix range of 10,000 keys, then point gets from 1 and 16 clients.
async fn reads(f: &Fresh) -> Res<Reads> {
    let prefix = "/registry/bench/range/";
    let loaded = create_many(&f.target, prefix, LOAD_CLIENTS, RANGE_KEYS, LOAD_DEADLINE).await?;
    if loaded.done != RANGE_KEYS {
        return Err(format!("loaded only {} of {RANGE_KEYS} keys in time", loaded.done).into());
    }
    // Keys outside the prefix, so the range has to pick its keys out of a bigger keyspace.
    create_many(
        &f.target,
        "/registry/bench/other/",
        LOAD_CLIENTS,
        2_000,
        LOAD_DEADLINE,
    )
    .await?;
    let range = range_median(&f.target, prefix).await;
    let gets_one = point_gets(&f.target, prefix, 1, GETS_ONE).await?;
    let gets_many = point_gets(&f.target, prefix, GET_CLIENTS, GETS_MANY).await?;
    Ok(Reads {
        range,
        gets_one,
        gets_many,
    })
}

/// Median time of reading every key under `prefix` in one call, after one warm-up call.
async fn range_median(target: &Arc<dyn Target>, prefix: &str) -> Res<(Duration, usize)> {
    target.range(prefix).await?;
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < RANGE_RUNS && start.elapsed() < RANGE_DEADLINE {
        let t = Instant::now();
        let n = target.range(prefix).await?;
        times.push(t.elapsed());
        if n != RANGE_KEYS {
            return Err(format!("range returned {n} keys, expected {RANGE_KEYS}").into());
        }
    }
    times.sort();
    Ok((times[times.len() / 2], times.len()))
}

/// Gets of random existing keys from `clients` tasks; returns gets per second.
async fn point_gets(
    target: &Arc<dyn Target>,
    prefix: &str,
    clients: usize,
    count: usize,
) -> Res<f64> {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let end = start + GET_DEADLINE;
    let mut tasks = Vec::new();
    for client in 0..clients {
        let (target, next, prefix) = (target.clone(), next.clone(), prefix.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(client as u64);
            let mut done = 0usize;
            while next.fetch_add(1, Ordering::Relaxed) < count && Instant::now() < end {
                let key = format!("{prefix}{:08}", rng.random_range(0..RANGE_KEYS));
                if !target.get(client, &key).await? {
                    return Err(BoxError::from(format!("{key} not found")));
                }
                done += 1;
            }
            Ok(done)
        }));
    }
    let mut done = 0;
    for task in tasks {
        done += task.await??;
    }
    Ok(done as f64 / start.elapsed().as_secs_f64())
}

struct Fanout {
    p50: Duration,
    p99: Duration,
    max: Duration,
    delivered: u64,
    expected: u64,
    setup: Duration,
}

/// Workload 4: 1,000 watchers of one prefix, 200 creates spaced 5 ms apart; latency from the
/// start of each create call to each watcher receiving its event.
async fn watch_fanout(f: &Fresh) -> Res<Fanout> {
    let prefix = "/registry/bench/watch/";
    let base = Instant::now();
    let setup_start = Instant::now();
    // Set up with some concurrency (setup is not what is measured); each returns registered.
    let streams: Vec<_> = futures::stream::iter(0..WATCHERS)
        .map(|w| f.target.watch(w, prefix))
        .buffer_unordered(WATCH_SETUP_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Res<_>>()?;
    let setup = setup_start.elapsed();
    // Write-call start of write i, in ns since `base` (0: not started).
    let starts: Arc<Vec<AtomicU64>> =
        Arc::new((0..WATCH_WRITES).map(|_| AtomicU64::new(0)).collect());
    let end = Instant::now() + WATCH_DEADLINE;
    let mut watchers = Vec::with_capacity(WATCHERS);
    for mut stream in streams {
        watchers.push(tokio::spawn(async move {
            let mut seen: Vec<(u32, u64)> = Vec::with_capacity(WATCH_WRITES);
            while seen.len() < WATCH_WRITES {
                let Ok(item) = tokio::time::timeout_at(end.into(), stream.next()).await else {
                    break;
                };
                let Some(keys) = item else { break };
                let now = base.elapsed().as_nanos() as u64;
                for key in keys? {
                    let i: u32 = key[prefix.len()..].parse()?;
                    seen.push((i, now));
                }
            }
            Ok::<_, BoxError>(seen)
        }));
    }
    // Let every watcher task reach its first poll before writing.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let value = value();
    let writes_start = Instant::now();
    for i in 0..WATCH_WRITES {
        let due = writes_start + WATCH_SPACING * i as u32;
        tokio::time::sleep_until(due.into()).await;
        if Instant::now() >= end {
            break;
        }
        starts[i].store(base.elapsed().as_nanos() as u64, Ordering::Release);
        f.target
            .create(0, format!("{prefix}{i:08}"), value.clone())
            .await?;
    }

    let mut latency = histogram();
    let mut delivered = 0;
    for watcher in watchers {
        for (i, at) in watcher.await?? {
            let started = starts[i as usize].load(Ordering::Acquire);
            latency.record(((at.saturating_sub(started)) / 1_000).max(1))?;
            delivered += 1;
        }
    }
    let written = starts
        .iter()
        .filter(|s| s.load(Ordering::Relaxed) != 0)
        .count();
    Ok(Fanout {
        p50: Duration::from_micros(latency.value_at_quantile(0.50)),
        p99: Duration::from_micros(latency.value_at_quantile(0.99)),
        max: Duration::from_micros(latency.max()),
        delivered,
        expected: (written * WATCHERS) as u64,
        setup,
    })
}

struct Memory {
    rss: u64,
    file: u64,
    detail: String,
}

/// Workload 5: memory and file size after 100,000 keys of 1 KiB.
async fn memory(kind: Kind) -> Res<Memory> {
    match kind {
        Kind::Embedded => {
            // A child process that holds nothing but the embedded store.
            let dir = tempfile::tempdir()?;
            let path = dir.path().join("state.redb");
            let out = tokio::process::Command::new(std::env::current_exe()?)
                .env(CHILD_ENV, &path)
                .stderr(std::process::Stdio::inherit())
                .output()
                .await?;
            if !out.status.success() {
                return Err(format!("memory child failed: {}", out.status).into());
            }
            let fields = parse_fields(&String::from_utf8_lossy(&out.stdout));
            let get = |k: &str| -> Res<u64> {
                fields
                    .get(k)
                    .copied()
                    .ok_or_else(|| format!("memory child did not report {k}").into())
            };
            Ok(Memory {
                rss: get("rss_kib")? * 1024,
                file: get("file_bytes")?,
                detail: format!(
                    "child process: RSS {} before loading, after: {} anonymous + {} file-backed, peak {}; {} keys loaded in {:.1} s",
                    mib(get("rss_before_kib")? * 1024),
                    mib(get("anon_kib")? * 1024),
                    mib(get("file_kib")? * 1024),
                    mib(get("hwm_kib")? * 1024),
                    get("loaded")?,
                    get("load_ms")? as f64 / 1000.0
                ),
            })
        }
        Kind::EtcdBackend | Kind::EtcdNative => {
            let f = fresh(kind).await?;
            let etcd = f.etcd.as_ref().ok_or("no etcd behind this store")?;
            let pid = etcd.pid;
            let before = proc_status_kib(pid, "VmRSS")?;
            let t = Instant::now();
            let loaded = create_many(
                &f.target,
                "/registry/bench/mem/",
                LOAD_CLIENTS,
                MEMORY_KEYS,
                LOAD_DEADLINE,
            )
            .await?;
            if loaded.done != MEMORY_KEYS {
                return Err(
                    format!("loaded only {} of {MEMORY_KEYS} keys in time", loaded.done).into(),
                );
            }
            let load = t.elapsed();
            tokio::time::sleep(Duration::from_millis(200)).await;
            let rss = proc_status_kib(pid, "VmRSS")? * 1024;
            let hwm = proc_status_kib(pid, "VmHWM")? * 1024;
            let anon = proc_status_kib(pid, "RssAnon")? * 1024;
            let file_backed = proc_status_kib(pid, "RssFile")? * 1024;
            let file = etcd.db_size().await?;
            Ok(Memory {
                rss,
                file,
                detail: format!(
                    "etcd process: RSS {} before loading, after: {} anonymous + {} file-backed (bbolt's mmap), peak {}; {MEMORY_KEYS} keys loaded in {:.1} s",
                    mib(before * 1024),
                    mib(anon),
                    mib(file_backed),
                    mib(hwm),
                    load.as_secs_f64()
                ),
            })
        }
    }
}

/// The child of the memory workload: load the embedded store, report RSS and file size.
fn memory_child(path: &Path) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let report = runtime.block_on(async {
        let store = EmbeddedStore::open(path)?;
        let target: Arc<dyn Target> = Arc::new(StoreTarget(Arc::new(store)));
        let me = std::process::id();
        let rss_before = proc_status_kib(me, "VmRSS")?;
        let t = Instant::now();
        let loaded = create_many(
            &target,
            "/registry/bench/mem/",
            LOAD_CLIENTS,
            MEMORY_KEYS,
            LOAD_DEADLINE,
        )
        .await?;
        let load_ms = t.elapsed().as_millis();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let rss = proc_status_kib(me, "VmRSS")?;
        let hwm = proc_status_kib(me, "VmHWM")?;
        let anon = proc_status_kib(me, "RssAnon")?;
        let file_backed = proc_status_kib(me, "RssFile")?;
        let file = std::fs::metadata(path)?.len();
        Ok::<_, BoxError>(format!(
            "rss_kib={rss} hwm_kib={hwm} anon_kib={anon} file_kib={file_backed} rss_before_kib={rss_before} file_bytes={file} loaded={} load_ms={load_ms}",
            loaded.done
        ))
    });
    match report {
        Ok(line) => println!("{line}"),
        Err(err) => {
            eprintln!("memory child: {err}");
            std::process::exit(1);
        }
    }
}

fn parse_fields(s: &str) -> BTreeMap<String, u64> {
    s.split_whitespace()
        .filter_map(|f| {
            let (k, v) = f.split_once('=')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

/// A `kB` field of `/proc/<pid>/status`.
fn proc_status_kib(pid: u32, field: &str) -> Res<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix(field)?.strip_prefix(':')?;
            rest.trim().trim_end_matches("kB").trim().parse().ok()
        })
        .ok_or_else(|| format!("no {field} in /proc/{pid}/status").into())
}

// ---------------------------------------------------------------------------------------------
// Results.

#[derive(Clone, Copy)]
enum Unit {
    OpsPerSec,
    Millis,
    Bytes,
}

/// A goal on the ratio embedded / native.
#[derive(Clone, Copy)]
enum Goal {
    None,
    /// Ratio at least this (throughput).
    AtLeast(f64),
    /// Ratio at most this (times).
    AtMost(f64),
    /// Ratio strictly below this (times).
    Below(f64),
}

struct Row {
    figure: &'static str,
    unit: Unit,
    values: [Option<f64>; 3],
    goal: Goal,
    goal_text: &'static str,
}

#[derive(Default)]
struct Table {
    rows: Vec<Row>,
    errors: Vec<String>,
    notes: Vec<String>,
    /// Stores left out with `--kinds`: their empty cells read "not run", not "failed".
    skipped: [bool; 3],
}

impl Table {
    fn row(
        &mut self,
        figure: &'static str,
        unit: Unit,
        goal: Goal,
        goal_text: &'static str,
    ) -> usize {
        self.rows.push(Row {
            figure,
            unit,
            values: [None; 3],
            goal,
            goal_text,
        });
        self.rows.len() - 1
    }

    fn set(&mut self, row: usize, kind: Kind, value: f64) {
        self.rows[row].values[kind as usize] = Some(value);
    }

    fn error(&mut self, workload: &str, kind: Kind, err: BoxError) {
        let mut line = format!("{workload} / {}: {err}", kind.name());
        let mut source = err.source();
        while let Some(cause) = source {
            line.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        eprintln!("  FAILED {line}");
        self.errors.push(line);
    }

    fn note(&mut self, line: String) {
        eprintln!("  {line}");
        self.notes.push(line);
    }

    fn render(&self) -> String {
        let mut s = String::new();
        s.push_str("\n| figure | embedded | etcd backend | etcd native | ratio embedded/native | goal | met? |\n");
        s.push_str("|---|---:|---:|---:|---:|---|---|\n");
        for row in &self.rows {
            let cell = |kind: usize| match row.values[kind] {
                Some(v) => format_value(row.unit, v),
                None if self.skipped[kind] => "not run".to_owned(),
                None => "failed".to_owned(),
            };
            let ratio = match (row.values[0], row.values[2]) {
                (Some(e), Some(n)) if n > 0.0 => Some(e / n),
                _ => None,
            };
            let met = match (row.goal, ratio) {
                (Goal::None, _) => "—".to_owned(),
                (_, None) => "unknown".to_owned(),
                (Goal::AtLeast(x), Some(r)) => yes_no(r >= x),
                (Goal::AtMost(x), Some(r)) => yes_no(r <= x),
                (Goal::Below(x), Some(r)) => yes_no(r < x),
            };
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                row.figure,
                cell(0),
                cell(1),
                cell(2),
                ratio.map_or("—".to_owned(), |r| format!("{r:.2}")),
                row.goal_text,
                met
            ));
        }
        if !self.notes.is_empty() {
            s.push_str("\nNotes:\n");
            for n in &self.notes {
                s.push_str(&format!("- {n}\n"));
            }
        }
        if !self.errors.is_empty() {
            s.push_str("\nFailures:\n");
            for e in &self.errors {
                s.push_str(&format!("- {e}\n"));
            }
        }
        s
    }
}

fn yes_no(ok: bool) -> String {
    if ok { "yes" } else { "**NO**" }.to_owned()
}

fn format_value(unit: Unit, v: f64) -> String {
    match unit {
        Unit::OpsPerSec => format!("{} ops/s", thousands(v.round() as u64)),
        Unit::Millis if v < 10.0 => format!("{v:.2} ms"),
        Unit::Millis => format!("{v:.1} ms"),
        Unit::Bytes => mib(v as u64),
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Records one store's result of a create workload: throughput, p50, and p99 when it has a row.
fn record_creates(
    t: &mut Table,
    kind: Kind,
    workload: &str,
    result: Res<Creates>,
    ops: usize,
    p50: usize,
    p99: Option<usize>,
) {
    match result {
        Ok(c) => {
            eprintln!(
                "  {:>12}: {} creates in {:.2} s",
                kind.name(),
                c.done,
                c.elapsed.as_secs_f64()
            );
            t.set(ops, kind, c.ops_per_sec());
            t.set(p50, kind, c.latency.value_at_quantile(0.5) as f64 / 1000.0);
            if let Some(p99) = p99 {
                t.set(p99, kind, c.latency.value_at_quantile(0.99) as f64 / 1000.0);
            }
        }
        Err(e) => t.error(workload, kind, e),
    }
}

async fn run(selection: Selection) -> Table {
    let wanted = |n: u32| selection.workloads.as_ref().is_none_or(|o| o.contains(&n));
    let kinds = selection.kinds.clone();
    let mut t = Table::default();
    for kind in KINDS {
        t.skipped[kind as usize] = !kinds.contains(&kind);
    }
    let total = Instant::now();

    if wanted(1) {
        let ops = t.row(
            "1. sequential creates, 1 client",
            Unit::OpsPerSec,
            Goal::AtLeast(2.0),
            "≥ 2×",
        );
        let p50 = t.row("1. sequential create p50", Unit::Millis, Goal::None, "");
        eprintln!("== 1. sequential durable creates, 1 client");
        for &kind in &kinds {
            let r = async { sequential_creates(&fresh(kind).await?).await }.await;
            record_creates(&mut t, kind, "1. sequential creates", r, ops, p50, None);
        }
    }

    if wanted(2) {
        let ops = t.row(
            "2. concurrent creates, 64 clients",
            Unit::OpsPerSec,
            Goal::AtLeast(1.5),
            "≥ 1.5×",
        );
        let p50 = t.row("2. concurrent create p50", Unit::Millis, Goal::None, "");
        let p99 = t.row(
            "2. concurrent create p99",
            Unit::Millis,
            Goal::Below(1.0),
            "lower than etcd",
        );
        eprintln!("== 2. concurrent durable creates, {CONC_CLIENTS} clients");
        for &kind in &kinds {
            let r = async { concurrent_creates(&fresh(kind).await?).await }.await;
            record_creates(
                &mut t,
                kind,
                "2. concurrent creates",
                r,
                ops,
                p50,
                Some(p99),
            );
        }
    }

    if wanted(3) {
        let range = t.row(
            "3. range of 10,000 keys, median",
            Unit::Millis,
            Goal::AtMost(1.0 / 3.0),
            "≥ 3× faster (ratio ≤ 0.33)",
        );
        let one = t.row(
            "3. point gets, 1 client",
            Unit::OpsPerSec,
            Goal::AtLeast(3.0),
            "≥ 3×",
        );
        let many = t.row(
            "3. point gets, 16 clients",
            Unit::OpsPerSec,
            Goal::AtLeast(3.0),
            "≥ 3×",
        );
        eprintln!("== 3. range of {RANGE_KEYS} keys, point gets");
        for &kind in &kinds {
            let r = async { reads(&fresh(kind).await?).await }.await;
            match r {
                Ok(r) => {
                    match r.range {
                        Ok((median, runs)) => {
                            eprintln!(
                                "  {:>12}: range median {:.2} ms over {runs} runs",
                                kind.name(),
                                ms(median)
                            );
                            t.set(range, kind, ms(median));
                        }
                        Err(e) => t.error("3. range", kind, e),
                    }
                    eprintln!(
                        "  {:>12}: gets {:.0}/s (1 client), {:.0}/s ({GET_CLIENTS} clients)",
                        kind.name(),
                        r.gets_one,
                        r.gets_many
                    );
                    t.set(one, kind, r.gets_one);
                    t.set(many, kind, r.gets_many);
                }
                Err(e) => t.error("3. reads", kind, e),
            }
        }
    }

    if wanted(4) {
        let p50 = t.row(
            "4. watch delivery p50, 1,000 watchers",
            Unit::Millis,
            Goal::None,
            "",
        );
        let p99 = t.row(
            "4. watch delivery p99, 1,000 watchers",
            Unit::Millis,
            Goal::AtMost(1.0),
            "≤ etcd",
        );
        eprintln!(
            "== 4. watch fan-out: {WATCHERS} watchers, {WATCH_WRITES} writes {WATCH_SPACING:?} apart"
        );
        for &kind in &kinds {
            let r = async { watch_fanout(&fresh(kind).await?).await }.await;
            match r {
                Ok(w) => {
                    t.note(format!(
                        "4. {}: {} of {} events delivered, max {:.1} ms, {} watches set up in {:.2} s",
                        kind.name(),
                        w.delivered,
                        w.expected,
                        ms(w.max),
                        WATCHERS,
                        w.setup.as_secs_f64()
                    ));
                    t.set(p50, kind, ms(w.p50));
                    t.set(p99, kind, ms(w.p99));
                }
                Err(e) => t.error("4. watch fan-out", kind, e),
            }
        }
    }

    if wanted(5) {
        let rss = t.row(
            "5. RSS after 100,000 keys of 1 KiB",
            Unit::Bytes,
            Goal::None,
            "— (reported)",
        );
        let file = t.row(
            "5. data file after 100,000 keys",
            Unit::Bytes,
            Goal::None,
            "— (reported)",
        );
        eprintln!("== 5. memory after {MEMORY_KEYS} keys");
        for &kind in &kinds {
            match memory(kind).await {
                Ok(m) => {
                    t.note(format!("5. {}: {}", kind.name(), m.detail));
                    t.set(rss, kind, m.rss as f64);
                    t.set(file, kind, m.file as f64);
                }
                Err(e) => t.error("5. memory", kind, e),
            }
        }
    }

    eprintln!("== done in {:.0} s", total.elapsed().as_secs_f64());
    t
}
