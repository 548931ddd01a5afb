//! The pull benchmark of issue 5: pull + unpack of a 100 MiB, 5-layer image from a registry on
//! loopback, rkube against containerd (Debian's, through its CRI `PullImage`, which also unpacks
//! into its overlayfs snapshotter), in one run.
//!
//! Each round starts from an empty store (rkube: a fresh image store; containerd: a fresh
//! containerd), so every blob is downloaded and every layer unpacked. rkube unpacks each layer
//! into its own directory (as overlayfs lower dirs), layers in parallel. Prints the median and
//! all rounds for both, and the ratio rkube/containerd (goal ≤ 1).
//!
//! Run with `bench/runtime-pull` (release build, root, Debian `docker-registry`, `skopeo`,
//! `containerd`).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_cri::v1 as cri;
use rand::{RngCore, SeedableRng};
use rkube_runtime::cri::client::CriClient;
use rkube_runtime::image::archive::ImageStore;
use rkube_runtime::image::blobs::Digest;
use rkube_runtime::image::layer::apply_layer;
use rkube_runtime::image::pull::{Puller, RegistriesConfig, this_platform};
use rkube_testsupport::containerd::Containerd;
use rkube_testsupport::registry::{Entry, Layout, Registry};

const LAYERS: usize = 5;
const LAYER_BYTES: usize = 20 << 20;
const ROUNDS: usize = 5;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    runtime.block_on(run());
}

async fn run() {
    let registry = Registry::start();
    let work = tempfile::tempdir_in("/var/tmp").expect("tempdir");
    eprintln!(
        "building a {LAYERS}-layer image of {} MiB...",
        (LAYERS * LAYER_BYTES) >> 20
    );
    let mut layout = Layout::new(&work.path().join("image"));
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut layers = Vec::new();
    for i in 0..LAYERS {
        // Random bytes: compression cannot shrink the download, as with real binaries.
        let mut data = vec![0u8; LAYER_BYTES];
        rng.fill_bytes(&mut data);
        layers.push(layout.layer(&[
            Entry::Dir("data/"),
            Entry::File(format!("data/layer-{i}.bin"), data, 0o644),
        ]));
    }
    layout.image(
        this_platform().1,
        &layers,
        serde_json::json!({"Cmd": ["true"]}),
    );
    registry.push(&layout.finish(), "bench/big:1");
    let name = format!("{}/bench/big:1", registry.host());

    let mut ours = Vec::new();
    for round in 0..ROUNDS {
        let took = rkube_round(&registry, &name, work.path()).await;
        eprintln!("  rkube round {round}: {:.0} ms", took.as_secs_f64() * 1e3);
        ours.push(took);
    }
    let mut theirs = Vec::new();
    for round in 0..ROUNDS {
        let took = containerd_round(&registry, &name).await;
        eprintln!(
            "  containerd round {round}: {:.0} ms",
            took.as_secs_f64() * 1e3
        );
        theirs.push(took);
    }
    let (a, b) = (median(&mut ours), median(&mut theirs));
    println!("| figure | rkube | containerd | ratio rkube/containerd | goal | met? |");
    println!("|---|---:|---:|---:|---|---|");
    println!(
        "| pull + unpack, 100 MiB in 5 layers, median of {ROUNDS} | {:.0} ms | {:.0} ms | {:.2} | ≤ 1 | {} |",
        a.as_secs_f64() * 1e3,
        b.as_secs_f64() * 1e3,
        a.as_secs_f64() / b.as_secs_f64(),
        if a <= b { "yes" } else { "no" }
    );
    println!(
        "\nrounds (ms): rkube {:?}; containerd {:?}",
        ours.iter().map(|d| d.as_millis()).collect::<Vec<_>>(),
        theirs.iter().map(|d| d.as_millis()).collect::<Vec<_>>()
    );
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

async fn rkube_round(registry: &Registry, name: &str, work: &Path) -> Duration {
    let dir = tempfile::tempdir_in(work).expect("store dir");
    let store = Arc::new(ImageStore::open(&dir.path().join("images")).expect("store"));
    let mut config = RegistriesConfig::parse(&format!(
        "mirrors:\n  \"{host}\":\n    endpoint: [\"http://{host}\"]\n",
        host = registry.host()
    ))
    .expect("config");
    config.disable_default_endpoint = true;
    let puller = Puller::new(store.clone(), config).expect("puller");
    let started = Instant::now();
    let pulled = puller.pull(name, None).await.expect("pull");
    let manifest = store.manifest(&pulled.manifest).expect("manifest");
    let digests: Vec<Digest> = manifest
        .layers()
        .iter()
        .map(|l| Digest::parse(l.digest().as_ref()).expect("digest"))
        .collect();
    let root = dir.path().join("layers");
    tokio::task::spawn_blocking(move || {
        std::thread::scope(|scope| {
            for (i, digest) in digests.iter().enumerate() {
                let (store, root) = (&store, &root);
                scope.spawn(move || {
                    let dest = root.join(i.to_string());
                    std::fs::create_dir_all(&dest).expect("layer dir");
                    let blob = store.blobs().open(digest).expect("blob");
                    apply_layer(std::io::BufReader::new(blob), &dest).expect("unpack");
                });
            }
        });
    })
    .await
    .expect("unpack task");
    started.elapsed()
}

async fn containerd_round(registry: &Registry, name: &str) -> Duration {
    let containerd = Containerd::start(&[registry.host()]);
    let mut client = CriClient::connect(containerd.socket())
        .await
        .expect("connect");
    let started = Instant::now();
    client
        .images
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: name.to_owned(),
                ..Default::default()
            }),
            auth: None,
            sandbox_config: None,
        })
        .await
        .expect("containerd pull");
    started.elapsed()
}
