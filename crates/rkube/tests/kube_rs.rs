//! kube-rs (the client every rkube component will use) against `rkube apiserver`: typed CRUD,
//! patches, selectors, and a `watcher` that survives a restart of the server with the data
//! intact.

mod common;

use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt, watcher};

async fn client(kubeconfig: &Path) -> kube::Client {
    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(kubeconfig).unwrap(),
        &KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    kube::Client::try_from(config).unwrap()
}

fn configmap(name: &str, value: &str) -> ConfigMap {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"suite": "kube-rs"}},
        "data": {"value": value},
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_works_and_its_watcher_survives_a_server_restart() {
    let mut server = common::Apiserver::start();
    let kubeconfig = server.dir.path().join("client-kubeconfig.yaml");
    std::fs::copy(server.kubeconfig(), &kubeconfig).unwrap();
    let client = client(&kubeconfig).await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");

    // Typed CRUD and the patch types kube-rs sends as JSON.
    let created = api
        .create(&PostParams::default(), &configmap("a", "1"))
        .await
        .unwrap();
    assert!(created.metadata.uid.is_some());
    let mut fetched = api.get("a").await.unwrap();
    fetched
        .data
        .as_mut()
        .unwrap()
        .insert("value".into(), "2".into());
    api.replace("a", &PostParams::default(), &fetched)
        .await
        .unwrap();
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"data": {"extra": "x"}})),
    )
    .await
    .unwrap();
    let patched = api.get("a").await.unwrap();
    assert_eq!(
        patched.data.unwrap().get("extra").map(String::as_str),
        Some("x")
    );
    let stale = api
        .replace("a", &PostParams::default(), &fetched)
        .await
        .unwrap_err();
    assert!(
        matches!(&stale, kube::Error::Api(s) if s.code == 409),
        "{stale:?}"
    );
    let listed = api
        .list(&ListParams::default().labels("suite=kube-rs"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);

    // A watcher (with back-off, as controllers run it) sees changes, through a restart.
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let watch = tokio::spawn(
        watcher(
            api.clone(),
            watcher::Config::default().labels("suite=kube-rs"),
        )
        .default_backoff()
        .applied_objects()
        .for_each(move |object| {
            if let Ok(object) = object {
                let _ = seen_tx.send(object.metadata.name.unwrap_or_default());
            }
            futures::future::ready(())
        }),
    );
    let wait_for = |name: &'static str| {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        async move |seen: &mut tokio::sync::mpsc::UnboundedReceiver<String>| loop {
            match tokio::time::timeout_at(deadline, seen.recv()).await {
                Ok(Some(got)) if got == name => return,
                Ok(Some(_)) => continue,
                _ => panic!("the watcher never saw {name}"),
            }
        }
    };
    wait_for("a")(&mut seen).await;

    // Restart on the same port: clients keep their address.
    let port = server.port;
    let _ = server.child.kill();
    let _ = server.child.wait();
    server.child = common::spawn_on(server.dir.path(), port, &server.args);
    server.wait_ready();

    // Data intact, and the same client and watcher carry on.
    assert_eq!(api.get("a").await.unwrap().data.unwrap()["extra"], "x");
    api.create(&PostParams::default(), &configmap("b", "1"))
        .await
        .unwrap();
    wait_for("b")(&mut seen).await;

    api.delete("a", &DeleteParams::default()).await.unwrap();
    let err = api.get("a").await.unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 404),
        "{err:?}"
    );
    watch.abort();
}
