//! `GetContainerEvents`: container lifecycle events (created, started, stopped, deleted) for
//! the kubelet's evented PLEG, which would otherwise relist every second.
//!
//! The runtime keeps all state on disk and its containers are owned by shims, so a container
//! can stop (or a restarted runtime find it gone) without any call passing through here.
//! Events are therefore not emitted by the calls but found by one watcher comparing successive
//! listings: whatever changed the state, the event follows within [`INTERVAL`]. The watcher
//! runs only while someone subscribes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_cri::v1 as cri;
use tokio::sync::broadcast;

use super::runtime::{container_status, pod_sandbox_status};
use crate::runtime::{ContainerState, ContainerStatus, Runtime};

/// How often the watcher lists containers.
pub const INTERVAL: Duration = Duration::from_millis(250);
/// Events kept for a subscriber that reads slowly; beyond, it misses some (and relists).
const BACKLOG: usize = 1024;

/// The event feed.
pub struct ContainerEvents {
    tx: broadcast::Sender<cri::ContainerEventResponse>,
    watcher: Slot,
}

/// The running watcher, if any; async so that starting one can await its first listing.
type Slot = Arc<tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>;

impl Default for ContainerEvents {
    fn default() -> Self {
        ContainerEvents {
            tx: broadcast::channel(BACKLOG).0,
            watcher: Arc::default(),
        }
    }
}

impl ContainerEvents {
    /// A new subscription; starts the watcher if none runs. Events are of changes after
    /// this call returns.
    pub async fn subscribe(
        &self,
        runtime: Arc<Runtime>,
    ) -> broadcast::Receiver<cri::ContainerEventResponse> {
        let mut watcher = self.watcher.lock().await;
        let rx = self.tx.subscribe();
        if watcher.as_ref().is_none_or(|w| w.is_finished()) {
            // The first listing is taken before returning, so nothing the caller does next
            // is mistaken for what was already there.
            let known = snapshot(list(runtime.clone()).await.unwrap_or_default());
            let tx = self.tx.clone();
            let slot = self.watcher.clone();
            *watcher = Some(tokio::spawn(watch(runtime, tx, slot, known)));
        }
        rx
    }
}

/// Every container, from the blocking pool; `None` if the listing failed.
async fn list(runtime: Arc<Runtime>) -> Option<Vec<ContainerStatus>> {
    tokio::task::spawn_blocking(move || runtime.list())
        .await
        .ok()
        .and_then(Result::ok)
}

/// id → (state, sandbox): the sandbox names the pod of a container once it is gone.
fn snapshot(list: Vec<ContainerStatus>) -> HashMap<String, (ContainerState, String)> {
    list.into_iter()
        .map(|c| (c.id, (c.state, c.sandbox_id)))
        .collect()
}

/// Lists containers every [`INTERVAL`] and sends what changed, until nobody listens.
async fn watch(
    runtime: Arc<Runtime>,
    tx: broadcast::Sender<cri::ContainerEventResponse>,
    slot: Slot,
    mut known: HashMap<String, (ContainerState, String)>,
) {
    loop {
        tokio::time::sleep(INTERVAL).await;
        {
            // Decided under the subscribers' lock, so a new subscriber either sees this
            // watcher running or starts another.
            let mut held = slot.lock().await;
            if tx.receiver_count() == 0 {
                *held = None;
                return;
            }
        }
        let Some(now) = list(runtime.clone()).await else {
            continue;
        };
        let states = known.iter().map(|(id, (s, _))| (id.clone(), *s)).collect();
        let changes = transitions(&states, &now);
        if !changes.is_empty() {
            let pods: Vec<String> = changes
                .iter()
                .map(|(id, _)| {
                    known
                        .get(id)
                        .map(|k| k.1.clone())
                        .or_else(|| {
                            now.iter()
                                .find(|c| &c.id == id)
                                .map(|c| c.sandbox_id.clone())
                        })
                        .unwrap_or_default()
                })
                .collect();
            let rt = runtime.clone();
            let wanted: std::collections::BTreeSet<String> = pods.iter().cloned().collect();
            let sandboxes: HashMap<String, cri::PodSandboxStatus> =
                tokio::task::spawn_blocking(move || {
                    wanted
                        .into_iter()
                        .filter_map(|id| {
                            let status = rt.sandbox_status(&id).ok()?;
                            Some((id, pod_sandbox_status(&status)))
                        })
                        .collect()
                })
                .await
                .unwrap_or_default();
            for ((id, kind), sandbox_id) in changes.into_iter().zip(pods) {
                let event = cri::ContainerEventResponse {
                    container_id: id,
                    container_event_type: kind as i32,
                    created_at: crate::shim::now_ns() as i64,
                    pod_sandbox_status: sandboxes.get(&sandbox_id).cloned(),
                    containers_statuses: now
                        .iter()
                        .filter(|c| c.sandbox_id == sandbox_id)
                        .map(container_status)
                        .collect(),
                };
                let _ = tx.send(event);
            }
        }
        known = snapshot(now);
    }
}

/// The events that take `before` (id → state) to `now`, in lifecycle order per container.
pub fn transitions(
    before: &HashMap<String, ContainerState>,
    now: &[ContainerStatus],
) -> Vec<(String, cri::ContainerEventType)> {
    use cri::ContainerEventType as E;
    let rank = |s: ContainerState| match s {
        ContainerState::Created => 0,
        ContainerState::Running => 1,
        ContainerState::Exited => 2,
        ContainerState::Unknown => 3,
    };
    let mut out = Vec::new();
    for c in now {
        let from = before.get(&c.id).copied();
        if from == Some(c.state) {
            continue;
        }
        let from = from.map(rank);
        let to = rank(c.state);
        if from.is_none() {
            out.push((c.id.clone(), E::ContainerCreatedEvent));
        }
        if to >= 1 && from.is_none_or(|f| f < 1) && c.started_at_ns.is_some() {
            out.push((c.id.clone(), E::ContainerStartedEvent));
        }
        if to == 2 && from.is_none_or(|f| f < 2) {
            out.push((c.id.clone(), E::ContainerStoppedEvent));
        }
    }
    for id in before.keys() {
        if !now.iter().any(|c| &c.id == id) {
            out.push((id.clone(), E::ContainerDeletedEvent));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use cri::ContainerEventType as E;

    fn status(id: &str, state: ContainerState, started: bool) -> ContainerStatus {
        ContainerStatus {
            id: id.into(),
            sandbox_id: "pod".into(),
            config: Default::default(),
            image_digest: String::new(),
            state,
            created_at_ns: 1,
            started_at_ns: started.then_some(2),
            finished_at_ns: None,
            exit_code: None,
            reason: String::new(),
            pid: None,
            log_path: Default::default(),
            cgroup: String::new(),
        }
    }

    #[test]
    fn each_change_of_state_is_one_event_in_lifecycle_order() {
        let before: HashMap<String, ContainerState> = [
            ("a".to_owned(), ContainerState::Created),
            ("b".to_owned(), ContainerState::Running),
            ("gone".to_owned(), ContainerState::Exited),
            ("same".to_owned(), ContainerState::Running),
        ]
        .into();
        let now = [
            status("a", ContainerState::Running, true),
            status("b", ContainerState::Exited, true),
            status("same", ContainerState::Running, true),
            status("new", ContainerState::Exited, true),
            status("never-started", ContainerState::Exited, false),
        ];
        let events = transitions(&before, &now);
        let named: Vec<(&str, E)> = events.iter().map(|(i, e)| (i.as_str(), *e)).collect();
        assert_eq!(
            named,
            [
                ("a", E::ContainerStartedEvent),
                ("b", E::ContainerStoppedEvent),
                ("new", E::ContainerCreatedEvent),
                ("new", E::ContainerStartedEvent),
                ("new", E::ContainerStoppedEvent),
                ("never-started", E::ContainerCreatedEvent),
                ("never-started", E::ContainerStoppedEvent),
                ("gone", E::ContainerDeletedEvent),
            ]
        );
    }
}
