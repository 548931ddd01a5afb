//! The garbage collector: deletes objects whose owners are gone, and carries out the
//! `orphan` and `foregroundDeletion` finalizers the apiserver adds for
//! `propagationPolicy: Orphan|Foreground` (`kubectl delete --cascade=orphan|foreground`).
//!
//! As upstream's: a metadata-only watch of every deletable resource type (re-discovered
//! periodically, so custom resources join) feeds an owner/dependent [`graph::Graph`]; each
//! touched uid is queued, and a worker asks the graph for a [`graph::Plan`] and carries it
//! out. Owners missing from the graph are looked up live before anything is deleted, and every
//! write carries a precondition (uid or resourceVersion), so a stale graph never deletes or
//! edits the wrong object.

pub mod graph;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::Client;
use kube::api::{DeleteParams, Patch, PatchParams, PropagationPolicy};
use kube::core::{DynamicObject, ObjectMeta, PartialObjectMeta};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tokio::task::JoinHandle;

use crate::discovery::{self, DELETABLE};
use crate::workqueue::WorkQueue;
use crate::{Error, is_gone};
use graph::{Action, Graph, Node, OwnerRef, Plan, Policy, Presence, ResourceType, Target};

/// How often discovery is re-read for new (custom) resource types.
const REDISCOVERY: Duration = Duration::from_secs(10);
/// Parallel workers.
const WORKERS: usize = 2;

struct Collector {
    client: Client,
    graph: Mutex<Graph>,
    queue: Arc<WorkQueue>,
    /// (group, kind) → the type, to look owners up by their references.
    kinds: Mutex<HashMap<(String, String), Arc<ResourceType>>>,
}

/// Runs the collector until the task is dropped.
pub async fn run(client: Client) {
    let gc = Arc::new(Collector {
        client,
        graph: Mutex::new(Graph::default()),
        queue: WorkQueue::new(),
        kinds: Mutex::new(HashMap::new()),
    });
    for _ in 0..WORKERS {
        let gc = gc.clone();
        tokio::spawn(async move { gc.work().await });
    }
    let mut watches: HashMap<ResourceType, JoinHandle<()>> = HashMap::new();
    loop {
        match discovery::resource_types(&gc.client).await {
            Ok(types) => gc.watch_types(types, &mut watches),
            Err(e) => tracing::warn!(error = %e, "garbage collector: discovery failed; retrying"),
        }
        tokio::time::sleep(REDISCOVERY).await;
    }
}

impl Collector {
    /// Starts watches for new types and stops those of types that went away.
    fn watch_types(
        self: &Arc<Self>,
        types: Vec<(ResourceType, kube::discovery::ApiCapabilities)>,
        watches: &mut HashMap<ResourceType, JoinHandle<()>>,
    ) {
        let mut current = HashSet::new();
        let mut kinds = HashMap::new();
        for (t, caps) in types {
            if discovery::is_event(&t) || !discovery::supports(&caps, DELETABLE) {
                continue;
            }
            let t = Arc::new(t);
            kinds.insert((t.group.clone(), t.kind.clone()), t.clone());
            current.insert((*t).clone());
            if !watches.contains_key(&*t) {
                let me = self.clone();
                let watched = t.clone();
                watches.insert(
                    (*t).clone(),
                    tokio::spawn(async move { me.watch(watched).await }),
                );
            }
        }
        *self.kinds.lock().expect("kinds lock") = kinds;
        watches.retain(|t, handle| {
            let keep = current.contains(t);
            if !keep {
                handle.abort();
                let touched = self
                    .graph
                    .lock()
                    .expect("graph lock")
                    .retain_listed(t, &HashSet::new());
                touched.into_iter().for_each(|u| self.queue.add(u));
            }
            keep
        });
    }

    /// Feeds one type's metadata watch into the graph.
    async fn watch(self: Arc<Self>, t: Arc<ResourceType>) {
        let ar = t.api_resource();
        let api: kube::Api<PartialObjectMeta<DynamicObject>> =
            kube::Api::all_with(self.client.clone(), &ar);
        let mut stream = watcher::watcher(api, watcher::Config::default().any_semantic())
            .default_backoff()
            .boxed();
        let mut listing: Option<HashSet<String>> = None;
        while let Some(event) = stream.next().await {
            let touched = match event {
                Ok(watcher::Event::Init) => {
                    listing = Some(HashSet::new());
                    Vec::new()
                }
                Ok(watcher::Event::InitApply(obj)) => {
                    if let (Some(seen), Some(uid)) = (listing.as_mut(), obj.metadata.uid.clone()) {
                        seen.insert(uid);
                    }
                    self.upsert(&t, &obj.metadata)
                }
                Ok(watcher::Event::InitDone) => {
                    let seen = listing.take().unwrap_or_default();
                    self.graph
                        .lock()
                        .expect("graph lock")
                        .retain_listed(&t, &seen)
                }
                Ok(watcher::Event::Apply(obj)) => self.upsert(&t, &obj.metadata),
                Ok(watcher::Event::Delete(obj)) => match obj.metadata.uid.as_deref() {
                    Some(uid) => self.graph.lock().expect("graph lock").remove(uid),
                    None => Vec::new(),
                },
                Err(e) => {
                    tracing::debug!(resource = %t.plural, error = %e, "garbage collector watch error");
                    Vec::new()
                }
            };
            touched.into_iter().for_each(|u| self.queue.add(u));
        }
    }

    fn upsert(&self, t: &Arc<ResourceType>, meta: &ObjectMeta) -> Vec<String> {
        let Some(node) = node_of(t, meta) else {
            return Vec::new();
        };
        self.graph.lock().expect("graph lock").upsert(node)
    }

    async fn work(self: Arc<Self>) {
        while let Some(uid) = self.queue.next().await {
            match self.process(&uid).await {
                Ok(()) => self.queue.forget(&uid),
                Err(e) => {
                    tracing::debug!(%uid, error = %e, "garbage collector: will retry");
                    self.queue.retry(uid);
                }
            }
        }
    }

    /// Plans for one object (looking unknown owners up once) and carries the plan out.
    async fn process(&self, uid: &str) -> Result<(), Error> {
        let mut looked_up = HashMap::new();
        loop {
            let (plan, namespace, dependent_namespaced) = {
                let graph = self.graph.lock().expect("graph lock");
                let plan = graph.plan(uid, &looked_up);
                let node = graph.get(uid);
                (
                    plan,
                    node.and_then(|n| n.namespace.clone()),
                    node.is_some_and(|n| n.resource.namespaced),
                )
            };
            match plan {
                Plan::LookUp(owners) => {
                    for owner in owners {
                        let presence = self
                            .look_up(&owner, namespace.as_deref(), dependent_namespaced)
                            .await?;
                        looked_up.insert(owner.uid.clone(), presence);
                    }
                }
                Plan::Act(actions) => {
                    for action in actions {
                        self.carry_out(action).await?;
                    }
                    return Ok(());
                }
            }
        }
    }

    /// Whether the owner an object names exists, asked of the server.
    async fn look_up(
        &self,
        owner: &OwnerRef,
        namespace: Option<&str>,
        dependent_namespaced: bool,
    ) -> Result<Presence, Error> {
        let t = self
            .kinds
            .lock()
            .expect("kinds lock")
            .get(&(owner.group().to_owned(), owner.kind.clone()))
            .cloned();
        let Some(t) = t else {
            // Unknown kind: maybe a custom resource not discovered yet. Never delete on a guess.
            return Err(Error::UnknownKind {
                api_version: owner.api_version.clone(),
                kind: owner.kind.clone(),
            });
        };
        if t.namespaced && !dependent_namespaced {
            // A cluster-scoped object cannot be owned by a namespaced one: the reference is
            // dangling, as upstream treats it.
            return Ok(Presence::Absent);
        }
        let api = t.api(&self.client, namespace);
        match api.get_metadata_opt(&owner.name).await {
            Ok(Some(found)) if found.metadata.uid.as_deref() == Some(owner.uid.as_str()) => {
                Ok(Presence::Present)
            }
            Ok(_) => Ok(Presence::Absent),
            Err(e) => Err(Error::Api {
                step: "looking up an owner",
                source: Box::new(e),
            }),
        }
    }

    async fn carry_out(&self, action: Action) -> Result<(), Error> {
        match action {
            Action::Delete(t, policy) => {
                let api = t.resource.api(&self.client, t.namespace.as_deref());
                let params = DeleteParams {
                    propagation_policy: Some(match policy {
                        Policy::Background => PropagationPolicy::Background,
                        Policy::Foreground => PropagationPolicy::Foreground,
                    }),
                    preconditions: Some(kube::api::Preconditions {
                        uid: Some(t.uid.clone()),
                        resource_version: None,
                    }),
                    ..DeleteParams::default()
                };
                tracing::info!(resource = %t.resource.plural, namespace = ?t.namespace, name = %t.name, ?policy, "garbage collector: deleting");
                match api.delete(&t.name, &params).await {
                    Ok(_) => Ok(()),
                    // Gone already, or another object now has the name.
                    Err(e) if is_gone(&e) => Ok(()),
                    Err(e) => Err(Error::Api {
                        step: "deleting a dependent",
                        source: Box::new(e),
                    }),
                }
            }
            Action::RemoveOwnerRefs(t, uids) => {
                self.edit_list(&t, "ownerReferences", |meta| {
                    let refs = meta.owner_references.clone().unwrap_or_default();
                    let kept: Vec<_> = refs
                        .iter()
                        .filter(|r| !uids.contains(&r.uid))
                        .cloned()
                        .collect();
                    (kept.len() != refs.len()).then(|| json!(kept))
                })
                .await
            }
            Action::RemoveFinalizer(t, finalizer) => {
                self.edit_list(&t, "finalizers", |meta| {
                    let list = meta.finalizers.clone().unwrap_or_default();
                    let kept: Vec<_> = list.iter().filter(|f| *f != finalizer).cloned().collect();
                    (kept.len() != list.len()).then(|| json!(kept))
                })
                .await
            }
        }
    }

    /// Reads the target's metadata and writes `field` as `change` computes it, with the
    /// resourceVersion read as precondition (a concurrent writer makes this retry).
    async fn edit_list(
        &self,
        t: &Target,
        field: &str,
        change: impl Fn(&ObjectMeta) -> Option<serde_json::Value>,
    ) -> Result<(), Error> {
        let api = t.resource.api(&self.client, t.namespace.as_deref());
        let current = match api.get_metadata_opt(&t.name).await {
            Ok(Some(c)) if c.metadata.uid.as_deref() == Some(t.uid.as_str()) => c,
            Ok(_) => return Ok(()),
            Err(e) => {
                return Err(Error::Api {
                    step: "reading an object to edit",
                    source: Box::new(e),
                });
            }
        };
        let Some(value) = change(&current.metadata) else {
            return Ok(());
        };
        let value = if value.as_array().is_some_and(Vec::is_empty) {
            serde_json::Value::Null
        } else {
            value
        };
        let patch = json!({"metadata": {
            field: value,
            "resourceVersion": current.metadata.resource_version,
        }});
        tracing::info!(resource = %t.resource.plural, namespace = ?t.namespace, name = %t.name, field, "garbage collector: editing");
        match api
            .patch(&t.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if matches!(&e, kube::Error::Api(s) if s.code == 404) => Ok(()),
            Err(e) => Err(Error::Api {
                step: "editing an object's metadata",
                source: Box::new(e),
            }),
        }
    }
}

/// The graph's view of an object's metadata (`None` without a uid).
fn node_of(t: &Arc<ResourceType>, meta: &ObjectMeta) -> Option<Node> {
    Some(Node {
        uid: meta.uid.clone()?,
        resource: t.clone(),
        namespace: meta.namespace.clone(),
        name: meta.name.clone().unwrap_or_default(),
        owners: meta
            .owner_references
            .iter()
            .flatten()
            .map(|r| OwnerRef {
                uid: r.uid.clone(),
                api_version: r.api_version.clone(),
                kind: r.kind.clone(),
                name: r.name.clone(),
                block_owner_deletion: r.block_owner_deletion.unwrap_or(false),
            })
            .collect(),
        deleting: meta.deletion_timestamp.is_some(),
        finalizers: meta.finalizers.clone().unwrap_or_default(),
    })
}
