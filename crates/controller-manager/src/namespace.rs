//! The namespace controller: empties a namespace being deleted, then removes its `kubernetes`
//! finalizer (`namespaces/{name}/finalize`) so the apiserver lets it go.
//!
//! As upstream's: every namespaced type that can be listed and deleted is emptied with
//! `deletecollection` (or one delete per object where that verb is missing); while objects
//! remain (finalizers, grace periods) the namespace's status carries the conditions upstream
//! reports (`NamespaceContentRemaining`, `NamespaceFinalizersRemaining`,
//! `NamespaceDeletionContentFailure`, `NamespaceDeletionDiscoveryFailure`) and the namespace is
//! looked at again shortly.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::discovery::verbs;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::discovery;
use crate::workqueue::WorkQueue;
use crate::{Error, is_gone};

/// The finalizer this controller owns in `spec.finalizers`.
pub const FINALIZER: &str = "kubernetes";
/// How soon a namespace with content left is looked at again.
const RECHECK: Duration = Duration::from_secs(2);

/// Runs the controller until the task is dropped.
pub async fn run(client: Client) {
    let queue = WorkQueue::new();
    for _ in 0..2 {
        let (client, queue) = (client.clone(), queue.clone());
        tokio::spawn(async move {
            while let Some(name) = queue.next().await {
                match sync(&client, &name).await {
                    Ok(Outcome::Done) => queue.forget(&name),
                    Ok(Outcome::Again) => {
                        queue.forget(&name);
                        queue.add_after(name, RECHECK);
                    }
                    Err(e) => {
                        tracing::warn!(namespace = %name, error = %e, "namespace controller: will retry");
                        queue.retry(name);
                    }
                }
            }
        });
    }
    let api: Api<Namespace> = Api::all(client);
    let mut stream = watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .applied_objects()
        .boxed();
    while let Some(event) = stream.next().await {
        if let Ok(ns) = event
            && ns.metadata.deletion_timestamp.is_some()
        {
            queue.add(ns.name_any());
        }
    }
}

enum Outcome {
    Done,
    Again,
}

fn has_finalizer(ns: &Namespace) -> bool {
    ns.spec
        .as_ref()
        .and_then(|s| s.finalizers.as_ref())
        .is_some_and(|f| f.iter().any(|x| x == FINALIZER))
}

async fn sync(client: &Client, name: &str) -> Result<Outcome, Error> {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = match api.get_opt(name).await {
        Ok(Some(ns)) => ns,
        Ok(None) => return Ok(Outcome::Done),
        Err(e) => return Err(api_error("reading the namespace", e)),
    };
    if ns.metadata.deletion_timestamp.is_none() || !has_finalizer(&ns) {
        return Ok(Outcome::Done);
    }
    let types = match discovery::resource_types(client).await {
        Ok(t) => t,
        Err(e) => {
            set_conditions(
                &api,
                name,
                &[(
                    "NamespaceDeletionDiscoveryFailure",
                    "DiscoveryFailed",
                    e.to_string(),
                )],
            )
            .await;
            return Err(api_error("discovering resource types", e));
        }
    };
    let mut remaining: BTreeMap<String, usize> = BTreeMap::new();
    let mut finalizers: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for (t, caps) in types {
        if !t.namespaced || !discovery::supports(&caps, &[verbs::LIST, verbs::DELETE]) {
            continue;
        }
        let api = t.api(client, Some(name));
        let emptied = if caps.supports_operation(verbs::DELETE_COLLECTION) {
            api.delete_collection(&DeleteParams::background(), &ListParams::default())
                .await
                .map(|_| ())
        } else {
            match api.list_metadata(&ListParams::default()).await {
                Ok(list) => {
                    let mut result = Ok(());
                    for obj in list {
                        if let Err(e) = api
                            .delete(&obj.name_any(), &DeleteParams::background())
                            .await
                            && !is_gone(&e)
                        {
                            result = Err(e);
                        }
                    }
                    result
                }
                Err(e) => Err(e),
            }
        };
        if let Err(e) = emptied
            && !is_gone(&e)
        {
            failures.push(format!("{}: {e}", resource_name(&t)));
            continue;
        }
        match api.list_metadata(&ListParams::default()).await {
            Ok(list) if !list.items.is_empty() => {
                remaining.insert(resource_name(&t), list.items.len());
                for obj in &list.items {
                    for f in obj.metadata.finalizers.iter().flatten() {
                        *finalizers.entry(f.clone()).or_default() += 1;
                    }
                }
            }
            Ok(_) => {}
            Err(e) if is_gone(&e) => {}
            Err(e) => failures.push(format!("{}: {e}", resource_name(&t))),
        }
    }
    if remaining.is_empty() && failures.is_empty() {
        let mut next = ns.clone();
        if let Some(spec) = next.spec.as_mut() {
            spec.finalizers = Some(
                spec.finalizers
                    .iter()
                    .flatten()
                    .filter(|f| *f != FINALIZER)
                    .cloned()
                    .collect(),
            );
        }
        tracing::info!(namespace = %name, "namespace controller: emptied; finalizing");
        return match api
            .replace_subresource("finalize", name, &PostParams::default(), &next)
            .await
        {
            Ok(_) => Ok(Outcome::Done),
            Err(e) if is_gone(&e) => Ok(Outcome::Done),
            Err(e) => Err(api_error("finalizing the namespace", e)),
        };
    }
    let mut conditions = Vec::new();
    if !remaining.is_empty() {
        let list: Vec<String> = remaining
            .iter()
            .map(|(r, n)| format!("{r} has {n} resource instances"))
            .collect();
        conditions.push((
            "NamespaceContentRemaining",
            "SomeResourcesRemain",
            format!("Some resources are remaining: {}", list.join(", ")),
        ));
    }
    if !finalizers.is_empty() {
        let list: Vec<String> = finalizers
            .iter()
            .map(|(f, n)| format!("{f} in {n} resource instances"))
            .collect();
        conditions.push((
            "NamespaceFinalizersRemaining",
            "SomeFinalizersRemain",
            format!(
                "Some content in the namespace has finalizers remaining: {}",
                list.join(", ")
            ),
        ));
    }
    if !failures.is_empty() {
        conditions.push((
            "NamespaceDeletionContentFailure",
            "ContentDeletionFailed",
            format!(
                "Failed to delete all resource types, {} remaining: {}",
                failures.len(),
                failures.join(", ")
            ),
        ));
    }
    set_conditions(&api, name, &conditions).await;
    Ok(Outcome::Again)
}

/// `pods` or `deployments.apps`, as upstream's condition messages name types.
fn resource_name(t: &crate::garbagecollector::graph::ResourceType) -> String {
    if t.group.is_empty() {
        t.plural.clone()
    } else {
        format!("{}.{}", t.plural, t.group)
    }
}

/// Records the deletion conditions in the namespace's status (best effort: they inform, the
/// deletion goes on without them).
async fn set_conditions(api: &Api<Namespace>, name: &str, conditions: &[(&str, &str, String)]) {
    let now = k8s_openapi::jiff::Timestamp::now();
    let mut all = Vec::new();
    for (kind, reason, message) in conditions {
        all.push(json!({"type": kind, "status": "True", "reason": reason,
            "message": message, "lastTransitionTime": now.to_string()}));
    }
    let patch = json!({"status": {"conditions": all}});
    if let Err(e) = api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        tracing::debug!(namespace = %name, error = %e, "namespace controller: status not updated");
    }
}

fn api_error(step: &'static str, e: kube::Error) -> Error {
    Error::Api {
        step,
        source: Box::new(e),
    }
}
