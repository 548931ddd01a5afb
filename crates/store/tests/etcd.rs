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

// ------------------------------------------------------------------------------------------------
// Progress notifications, compaction seen by other clients, watches across outages.
// ------------------------------------------------------------------------------------------------

/// A fresh etcd and a store on it.
async fn etcd() -> (EtcdServer, EtcdStore) {
    let server = tokio::task::spawn_blocking(EtcdServer::start)
        .await
        .expect("start etcd");
    let store = EtcdStore::connect(&[server.endpoint()])
        .await
        .unwrap_or_else(|e| panic!("connecting to etcd at {}: {e}", server.endpoint()));
    (server, store)
}

/// Runs a blocking `EtcdServer` operation off the runtime's threads.
async fn with_server(server: EtcdServer, op: fn(&mut EtcdServer)) -> EtcdServer {
    tokio::task::spawn_blocking(move || {
        let mut server = server;
        op(&mut server);
        server
    })
    .await
    .expect("etcd server operation")
}

/// The next item of a watch, within 30 s.
async fn next_item(
    watch: &mut rkube_store::WatchStream,
    what: &str,
) -> rkube_store::Result<WatchItem> {
    match tokio::time::timeout(Duration::from_secs(30), watch.next()).await {
        Err(_) => panic!("{what}: the watch yielded nothing within 30 s"),
        Ok(None) => panic!("{what}: the watch ended"),
        Ok(Some(item)) => item,
    }
}

/// etcd before 3.4.31 answers a progress request at once with its current revision, even while
/// the watch is still replaying history (etcd-io/etcd#15220). A `Progress(r)` must still come
/// only after every event of the watch up to `r`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_progress_notification_never_overtakes_the_events_it_covers() {
    let (_server, store) = etcd().await;
    let mut ours = Vec::new();
    for i in 0..2000 {
        // One write in ten lands outside the watched prefix.
        let key = if i % 10 == 9 {
            format!("/other/k{i:04}")
        } else {
            format!("/p/k{i:04}")
        };
        let revision = store
            .create(&key, Bytes::from(vec![b'x'; 100]))
            .await
            .unwrap();
        if key.starts_with("/p/") {
            ours.push(revision);
        }
    }
    let end = store.current_revision().await.unwrap();
    for after in [1, end - 700, end - 25, end - 1, end, 1] {
        let what = format!("watch of /p/ after {after} (store at {end})");
        let mut watch = store.watch("/p/", after).await.unwrap();
        watch.request_progress();
        let mut last = after;
        let progress = loop {
            match next_item(&mut watch, &what).await.unwrap() {
                WatchItem::Event(event) => {
                    assert!(event.revision() > last, "{what}: {event:?} after {last}");
                    last = event.revision();
                }
                WatchItem::Progress(revision) => break revision,
            }
        };
        assert!(
            progress >= end,
            "{what}: progress {progress} is older than the request"
        );
        let due = ours
            .iter()
            .copied()
            .filter(|r| *r > after && *r <= progress)
            .max()
            .unwrap_or(after);
        assert_eq!(
            last, due,
            "{what}: Progress({progress}) came when events were delivered only up to {last}"
        );
        // And nothing at or below it afterwards: a new write is the next event.
        let next = store.create("/p/after", Bytes::new()).await.unwrap();
        match next_item(&mut watch, &what).await.unwrap() {
            WatchItem::Event(event) => assert_eq!(event.revision(), next, "{what}"),
            WatchItem::Progress(p) => assert!(p >= progress, "{what}: progress went back"),
        }
        let (deleted, _) = store.delete("/p/after", Some(next)).await.unwrap();
        ours.extend([next, deleted]);
    }
}

/// Compaction by another client (another apiserver, `etcdctl compact`) is seen: stats report it,
/// reads and watches below it fail with `Compacted` naming it, compacting below it is a no-op.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_by_another_client_is_reported_with_its_revision() {
    let (server, a) = etcd().await;
    let b = EtcdStore::connect(&[server.endpoint()]).await.unwrap();
    for i in 0..10 {
        a.create(&format!("/k/{i}"), Bytes::new()).await.unwrap();
    }
    assert_eq!(b.stats().await.unwrap().compacted_revision, 0);
    a.compact(7).await.unwrap();
    assert_eq!(b.stats().await.unwrap().compacted_revision, 7);
    let old = rkube_store::ListOptions {
        prefix: "/k/".into(),
        revision: 3,
        ..Default::default()
    };
    match b.list(old).await {
        Err(Error::Compacted {
            requested: 3,
            compacted: 7,
        }) => {}
        other => panic!("list at 3 after compact(7) elsewhere: {other:?}"),
    }
    match b.watch("/k/", 2).await {
        Err(Error::Compacted {
            requested: 2,
            compacted: 7,
        }) => {}
        Err(other) => panic!("watch after 2 after compact(7) elsewhere: {other:?}"),
        Ok(_) => panic!("watch after 2 after compact(7) elsewhere: opened"),
    }
    b.compact(5).await.unwrap();
    b.compact(7).await.unwrap();
    a.compact(9).await.unwrap();
    assert_eq!(b.stats().await.unwrap().compacted_revision, 9);
    assert_eq!(
        b.list(rkube_store::ListOptions {
            prefix: "/k/".into(),
            revision: 9,
            ..Default::default()
        })
        .await
        .unwrap()
        .items
        .len(),
        8
    );
}

/// etcd compares an absent key's mod_revision as 0: an update or guarded delete expecting 0 must
/// still be `NotFound`, not create or "delete" the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expecting_revision_zero_of_a_missing_key_is_not_found() {
    let (_server, store) = etcd().await;
    match store.update("/missing", Bytes::from_static(b"x"), 0).await {
        Err(Error::NotFound { key }) => assert_eq!(key, "/missing"),
        other => panic!("update of a missing key expecting 0: {other:?}"),
    }
    match store.delete("/missing", Some(0)).await {
        Err(Error::NotFound { key }) => assert_eq!(key, "/missing"),
        other => panic!("guarded delete of a missing key expecting 0: {other:?}"),
    }
    assert_eq!(store.get("/missing").await.unwrap(), None);
    assert_eq!(store.current_revision().await.unwrap(), 1);
}

/// While etcd is down every kind of call fails promptly with a transient error — watch() too —
/// and an open watch waits, then resumes once etcd is back, however long it was gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_etcd_is_down_calls_fail_fast_and_open_watches_wait_for_it() {
    let (server, store) = etcd().await;
    let first = store.create("/w/a", Bytes::new()).await.unwrap();
    let mut watch = store.watch("/w/", first).await.unwrap();
    let server = with_server(server, EtcdServer::stop).await;

    let started = Instant::now();
    let errors = [
        store.get("/w/a").await.map(drop),
        store
            .list(rkube_store::ListOptions::default())
            .await
            .map(drop),
        store.count("/w/").await.map(drop),
        store.update("/w/a", Bytes::new(), first).await.map(drop),
        store.delete("/w/a", None).await.map(drop),
        store.compact(1).await.map(drop),
        store.current_revision().await.map(drop),
        store.stats().await.map(drop),
        store.watch("/w/", first).await.map(drop),
    ];
    for (i, result) in errors.into_iter().enumerate() {
        match result {
            Err(err @ Error::EtcdUnavailable { .. }) => {
                assert!(
                    err.to_string().contains(&server.endpoint()),
                    "call {i}: {err}"
                )
            }
            other => panic!("call {i} with etcd down: expected EtcdUnavailable, saw {other:?}"),
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "failing took {:?}",
        started.elapsed()
    );

    // Longer than the watch's longest back-off, so it retries several times.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let _server = with_server(server, EtcdServer::restart).await;
    let second = loop {
        match store.create("/w/b", Bytes::new()).await {
            Ok(revision) => break revision,
            Err(err) if err.is_transient() => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(err) => panic!("create after etcd came back: {err:?}"),
        }
    };
    match next_item(&mut watch, "watch across a 5 s outage")
        .await
        .unwrap()
    {
        WatchItem::Event(event) => {
            assert_eq!((event.kv.key.as_str(), event.revision()), ("/w/b", second))
        }
        WatchItem::Progress(p) => panic!("expected the event at {second}, saw Progress({p})"),
    }
    watch.request_progress();
    match next_item(&mut watch, "progress after the outage")
        .await
        .unwrap()
    {
        WatchItem::Progress(p) => assert!(p >= second),
        WatchItem::Event(event) => panic!("expected progress, saw {event:?}"),
    }
}

/// Writers keep going while etcd restarts; the watch that was reading them resumes and delivers
/// every write that happened exactly once, in order, and a progress after the last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_stays_exact_while_writers_run_through_an_etcd_restart() {
    let (server, store) = etcd().await;
    let store = Arc::new(store);
    let start = store.current_revision().await.unwrap();
    let mut watch = store.watch("/w/", start).await.unwrap();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut written = Vec::new();
            for i in 0..300 {
                let key = format!("/w/{i:04}");
                loop {
                    match store.create(&key, Bytes::from(vec![b'v'; 64])).await {
                        Ok(revision) => {
                            written.push(revision);
                            break;
                        }
                        // An attempt that failed with etcd going away got through after all.
                        Err(Error::KeyExists { .. }) => {
                            let kv = store.get(&key).await.unwrap().unwrap();
                            written.push(kv.mod_revision);
                            break;
                        }
                        Err(err) if err.is_transient() => {
                            tokio::time::sleep(Duration::from_millis(50)).await
                        }
                        Err(err) => panic!("create {key}: {err:?}"),
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            written
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let server = with_server(server, EtcdServer::restart).await;
    let written = writer.await.expect("writer");
    let mut seen = Vec::new();
    while seen.len() < written.len() {
        match next_item(&mut watch, "watch through the restart")
            .await
            .unwrap()
        {
            WatchItem::Event(event) => seen.push(event.revision()),
            WatchItem::Progress(p) => assert!(
                written.iter().filter(|r| **r <= p).count() <= seen.len(),
                "Progress({p}) before all events up to it"
            ),
        }
    }
    assert_eq!(seen, written, "events across the restart");
    watch.request_progress();
    loop {
        match next_item(&mut watch, "progress after the writes")
            .await
            .unwrap()
        {
            WatchItem::Progress(p) if p >= *written.last().unwrap() => break,
            WatchItem::Progress(_) => {}
            WatchItem::Event(event) => panic!("an event nobody wrote: {event:?}"),
        }
    }
    drop(server);
}

/// A watch that falls behind, loses its stream, and finds its resume point compacted while it was
/// away ends with `Compacted` (after every event it could still deliver, in order) rather than
/// skipping what it lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_whose_resume_point_was_compacted_ends_with_compacted() {
    let (server, store) = etcd().await;
    let start = store.current_revision().await.unwrap();
    let mut watch = store.watch("/w/", start).await.unwrap();
    // Far more than the watch and its HTTP/2 connection buffer (10 MB against windows of a few):
    // etcd keeps the rest until the watch reads on.
    for i in 0..2500 {
        store
            .create(&format!("/w/{i:04}"), Bytes::from(vec![b'v'; 4096]))
            .await
            .unwrap();
    }
    let end = store.current_revision().await.unwrap();
    store.compact(end).await.unwrap();
    let _server = with_server(server, EtcdServer::restart).await;

    let mut expected = start + 1;
    loop {
        match next_item(&mut watch, "watch behind a compaction").await {
            Ok(WatchItem::Event(event)) => {
                assert_eq!(event.revision(), expected, "events before the error");
                expected += 1;
            }
            Ok(WatchItem::Progress(p)) => panic!("Progress({p}) with events {expected}.. lost"),
            Err(Error::Compacted { compacted, .. }) => {
                assert_eq!(compacted, end);
                break;
            }
            Err(other) => panic!("expected Compacted, saw {other:?}"),
        }
    }
    assert!(
        expected <= end,
        "every event arrived; the test did not lose the stream"
    );
    let after = tokio::time::timeout(Duration::from_secs(10), watch.next()).await;
    assert!(
        matches!(after, Ok(None)),
        "the watch must end after Compacted: {after:?}"
    );
}

/// A start key beyond the prefix's end (etcd gets a range whose start is past its end) lists
/// nothing, at the right revision, instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_key_past_the_prefix_lists_nothing() {
    let (_server, store) = etcd().await;
    store
        .create("/registry/pods/a", Bytes::new())
        .await
        .unwrap();
    store.create("/registry/z", Bytes::new()).await.unwrap();
    let listed = store
        .list(rkube_store::ListOptions {
            prefix: "/registry/pods/".into(),
            start_key: Some("/registry/z".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(listed.items.is_empty(), "{:?}", listed.items);
    assert_eq!(listed.revision, 3);
    assert_eq!(listed.next_key, None);
}
