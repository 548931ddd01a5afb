//! The store contract (`tests/contract`) run against the etcd backend, each case on its own fresh
//! etcd process on loopback; plus what only the etcd backend has to survive: etcd going away and
//! coming back, and an etcd that is not there at all.

mod contract;

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use rkube_store::etcd::EtcdStore;
use rkube_store::{Error, Store, WatchItem};
use rkube_testsupport::EtcdServer;

/// A fresh etcd and our backend connected to it; the etcd process lives as long as the guard.
async fn etcd_store() -> (Arc<dyn Store>, Box<dyn Any + Send>) {
    let server = tokio::task::spawn_blocking(EtcdServer::start)
        .await
        .expect("start etcd");
    let store = EtcdStore::connect(&[server.endpoint()])
        .await
        .unwrap_or_else(|e| panic!("connecting to etcd at {}: {e:#}", server.endpoint()));
    (Arc::new(store), Box::new(server))
}

contract::contract_tests!(etcd_store);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_etcd_is_reported_quickly_naming_the_endpoint() {
    let endpoint = format!("http://127.0.0.1:{}", rkube_testsupport::free_port());
    let started = Instant::now();
    let err = match EtcdStore::connect(std::slice::from_ref(&endpoint)).await {
        Ok(_) => panic!("connected to nothing at {endpoint}"),
        Err(err) => err,
    };
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?} to give up",
        started.elapsed()
    );
    assert!(matches!(err, Error::EtcdUnavailable { .. }), "{err:?}");
    assert!(err.to_string().contains(&endpoint), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_fail_clearly_while_etcd_is_down_and_work_again_after() {
    let mut server = tokio::task::spawn_blocking(EtcdServer::start)
        .await
        .unwrap();
    let store = EtcdStore::connect(&[server.endpoint()]).await.unwrap();
    store.create("/a", Bytes::from_static(b"1")).await.unwrap();

    let mut server = tokio::task::spawn_blocking(move || {
        server.stop();
        server
    })
    .await
    .unwrap();
    let started = Instant::now();
    let err = store
        .create("/b", Bytes::from_static(b"2"))
        .await
        .expect_err("a write with etcd down must fail");
    assert!(
        err.is_transient(),
        "expected an unavailable error, got {err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );

    let server = tokio::task::spawn_blocking(move || {
        server.restart();
        server
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match store.create("/b", Bytes::from_static(b"2")).await {
            Ok(_) => break,
            Err(err) if err.is_transient() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(err) => panic!("store did not recover after etcd restarted: {err:?}"),
        }
    }
    assert_eq!(
        store.get("/a").await.unwrap().unwrap().value,
        Bytes::from_static(b"1")
    );
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumes_across_an_etcd_restart_without_gaps_or_duplicates() {
    let server = tokio::task::spawn_blocking(EtcdServer::start)
        .await
        .unwrap();
    let store = Arc::new(EtcdStore::connect(&[server.endpoint()]).await.unwrap());
    let start = store.current_revision().await.unwrap();
    let mut watch = store.watch("/w/", start).await.unwrap();

    let mut written = Vec::new();
    for i in 0..20 {
        written.push(
            store
                .create(&format!("/w/{i:03}"), Bytes::new())
                .await
                .unwrap(),
        );
    }
    let mut server = tokio::task::spawn_blocking(move || {
        let mut server = server;
        server.restart();
        server
    })
    .await
    .unwrap();
    // Write after the restart, retrying while the client reconnects.
    for i in 20..40 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match store.create(&format!("/w/{i:03}"), Bytes::new()).await {
                Ok(revision) => {
                    written.push(revision);
                    break;
                }
                Err(err) if err.is_transient() && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(err) => panic!("write {i} after restart failed: {err:?}"),
            }
        }
    }
    let mut seen = Vec::new();
    while seen.len() < written.len() {
        let item = tokio::time::timeout(Duration::from_secs(30), watch.next())
            .await
            .expect("watch stalled after the etcd restart")
            .expect("watch ended")
            .expect("watch error");
        if let WatchItem::Event(event) = item {
            seen.push(event.revision());
        }
    }
    assert_eq!(
        seen, written,
        "watch lost or repeated events across the restart"
    );
    server.stop();
}
