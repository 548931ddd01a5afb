//! The real `kubectl explain` against the OpenAPI documents, served by a small plain-HTTP axum
//! server with just enough discovery for kubectl to map `deployment` to apps/v1.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use axum::routing::get;
use axum::{Json, Router};
use rkube_apiserver::openapi::{GroupVersionKind, OpenApi, ServedResource, ServedSubresource};
use serde_json::json;

fn kubectls() -> Vec<PathBuf> {
    let dir = std::env::var_os("RKUBE_CLIENTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/rkube-ci/clients"));
    let found: Vec<PathBuf> = ["kubectl-v1.33", "kubectl-v1.37"]
        .iter()
        .map(|name| dir.join(name))
        .filter(|path| path.exists())
        .collect();
    if found.is_empty() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have fetched kubectl into {} (scripts/clients)",
            dir.display()
        );
    }
    found
}

fn resources() -> Vec<ServedResource> {
    let verbs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    vec![
        ServedResource {
            group: "apps".into(),
            version: "v1".into(),
            kind: "Deployment".into(),
            plural: "deployments".into(),
            namespaced: true,
            verbs: verbs(&[
                "create", "delete", "get", "list", "patch", "update", "watch",
            ]),
            subresources: vec![ServedSubresource {
                name: "scale".into(),
                kind: GroupVersionKind::new("autoscaling", "v1", "Scale"),
                verbs: verbs(&["get", "patch", "update"]),
            }],
            strategic_merge_patch: true,
        },
        ServedResource {
            group: String::new(),
            version: "v1".into(),
            kind: "Pod".into(),
            plural: "pods".into(),
            namespaced: true,
            verbs: verbs(&[
                "create", "delete", "get", "list", "patch", "update", "watch",
            ]),
            subresources: Vec::new(),
            strategic_merge_patch: true,
        },
    ]
}

/// Legacy discovery for the two resources (test scaffolding, not the apiserver's discovery).
fn discovery() -> Router {
    let resource = |name: &str, kind: &str| {
        json!({"name": name, "singularName": "", "namespaced": true, "kind": kind,
               "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]})
    };
    let core = json!({"kind": "APIResourceList", "groupVersion": "v1",
                      "resources": [resource("pods", "Pod")]});
    let apps = json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "apps/v1",
                      "resources": [resource("deployments", "Deployment")]});
    Router::new()
        .route(
            "/api",
            get(|| async { Json(json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})) }),
        )
        .route("/api/v1", get(move || async move { Json(core) }))
        .route(
            "/apis",
            get(|| async {
                Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [{
                    "name": "apps",
                    "versions": [{"groupVersion": "apps/v1", "version": "v1"}],
                    "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"},
                }]}))
            }),
        )
        .route("/apis/apps/v1", get(move || async move { Json(apps) }))
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_explain_prints_descriptions_from_the_v3_documents() {
    let kubectls = kubectls();
    if kubectls.is_empty() {
        return;
    }
    let api = Arc::new(OpenApi::new(resources()));
    let router = discovery().merge(api.router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    let dir = tempfile::tempdir().unwrap();

    for kubectl in kubectls {
        let run = |args: Vec<String>| {
            let kubectl = kubectl.clone();
            let home = dir.path().to_owned();
            tokio::task::spawn_blocking(move || {
                Command::new(&kubectl)
                    .env("HOME", &home)
                    .env("KUBECONFIG", home.join("none"))
                    .arg(format!("--server=http://{addr}"))
                    .args(args)
                    .output()
                    .unwrap()
            })
        };
        let out = run(vec!["explain".into(), "deployment.spec.strategy".into()])
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}: {stdout}{}",
            kubectl.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("GROUP:      apps"), "{stdout}");
        assert!(stdout.contains("KIND:       Deployment"), "{stdout}");
        assert!(
            stdout.contains("FIELD: strategy <DeploymentStrategy>"),
            "{stdout}"
        );
        assert!(
            stdout.contains("The deployment strategy to use"),
            "{stdout}"
        );
        assert!(
            stdout.contains("rollingUpdate\t<RollingUpdateDeployment>"),
            "{stdout}"
        );

        let out = run(vec!["explain".into(), "pod".into(), "--recursive".into()])
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("KIND:       Pod"), "{stdout}");
        assert!(
            stdout.contains("containers\t<[]Container> -required-"),
            "{stdout}"
        );
        assert!(
            stdout.contains("containerPort\t<integer> -required-"),
            "{stdout}"
        );
    }
}
