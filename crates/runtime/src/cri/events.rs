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
#[derive(Default)]
pub struct ContainerEvents {
    shared: Arc<Shared>,
}

/// What the watcher and the calls share.
struct Shared {
    tx: broadcast::Sender<cri::ContainerEventResponse>,
    /// The running watcher, if any; async so that starting one can await its first listing.
    watcher: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The last state seen of each container, and its sandbox (which names the pod of a
    /// container once it is gone).
    known: std::sync::Mutex<HashMap<String, (ContainerState, String)>>,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            tx: broadcast::channel(BACKLOG).0,
            watcher: Default::default(),
            known: Default::default(),
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
        let mut watcher = self.shared.watcher.lock().await;
        let rx = self.shared.tx.subscribe();
        if watcher.as_ref().is_none_or(|w| w.is_finished()) {
            // The first listing is taken before returning, so nothing the caller does next
            // is mistaken for what was already there.
            let now = list(runtime.clone()).await.unwrap_or_default();
            *self.shared.lock_known() = snapshot(&now);
            *watcher = Some(tokio::spawn(watch(runtime, self.shared.clone())));
        }
        rx
    }

    /// Sends the events a container's latest status implies, before a call makes it vanish:
    /// a container that stops and is removed between two listings still gets its stopped
    /// event, with its exit code.
    pub async fn observe(&self, runtime: Arc<Runtime>, id: &str) {
        if self.shared.tx.receiver_count() == 0 {
            return;
        }
        let Some(now) = list(runtime.clone()).await else {
            return;
        };
        let Some(status) = now.iter().find(|c| c.id == id) else {
            return;
        };
        let changes = {
            let mut known = self.shared.lock_known();
            let from = known.get(id).map(|k| k.0);
            known.insert(id.to_owned(), (status.state, status.sandbox_id.clone()));
            changes_of(from, status)
        };
        let changes = changes.into_iter().map(|e| (id.to_owned(), e)).collect();
        let pods = vec![status.sandbox_id.clone()];
        send(&runtime, &self.shared.tx, changes, pods, &now).await;
    }
}

impl Shared {
    fn lock_known(&self) -> std::sync::MutexGuard<'_, HashMap<String, (ContainerState, String)>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Every container, from the blocking pool; `None` if the listing failed.
async fn list(runtime: Arc<Runtime>) -> Option<Vec<ContainerStatus>> {
    tokio::task::spawn_blocking(move || runtime.list())
        .await
        .ok()
        .and_then(Result::ok)
}

fn snapshot(list: &[ContainerStatus]) -> HashMap<String, (ContainerState, String)> {
    list.iter()
        .map(|c| (c.id.clone(), (c.state, c.sandbox_id.clone())))
        .collect()
}

/// Lists containers every [`INTERVAL`] and sends what changed, until nobody listens.
async fn watch(runtime: Arc<Runtime>, shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(INTERVAL).await;
        {
            // Decided under the subscribers' lock, so a new subscriber either sees this
            // watcher running or starts another.
            let mut held = shared.watcher.lock().await;
            if shared.tx.receiver_count() == 0 {
                *held = None;
                return;
            }
        }
        let Some(now) = list(runtime.clone()).await else {
            continue;
        };
        let (changes, pods) = {
            let mut known = shared.lock_known();
            let states = known.iter().map(|(id, (s, _))| (id.clone(), *s)).collect();
            let changes = transitions(&states, &now);
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
            *known = snapshot(&now);
            (changes, pods)
        };
        send(&runtime, &shared.tx, changes, pods, &now).await;
    }
}

/// Sends `changes` (each in the pod named at the same index of `pods`), each carrying its
/// pod's status and its containers' statuses from `now`.
async fn send(
    runtime: &Arc<Runtime>,
    tx: &broadcast::Sender<cri::ContainerEventResponse>,
    changes: Vec<(String, cri::ContainerEventType)>,
    pods: Vec<String>,
    now: &[ContainerStatus],
) {
    if changes.is_empty() {
        return;
    }
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

/// The events that take one container from state `from` (`None`: not seen before) to `c`'s.
fn changes_of(from: Option<ContainerState>, c: &ContainerStatus) -> Vec<cri::ContainerEventType> {
    use cri::ContainerEventType as E;
    let rank = |s: ContainerState| match s {
        ContainerState::Created => 0,
        ContainerState::Running => 1,
        ContainerState::Exited => 2,
        ContainerState::Unknown => 3,
    };
    if from == Some(c.state) {
        return Vec::new();
    }
    let mut out = Vec::new();
    let (from, to) = (from.map(rank), rank(c.state));
    if from.is_none() {
        out.push(E::ContainerCreatedEvent);
    }
    if to >= 1 && from.is_none_or(|f| f < 1) && c.started_at_ns.is_some() {
        out.push(E::ContainerStartedEvent);
    }
    if to == 2 && from.is_none_or(|f| f < 2) {
        out.push(E::ContainerStoppedEvent);
    }
    out
}

/// The events that take `before` (id → state) to `now`, in lifecycle order per container. A
/// running container that vanished stopped first.
pub fn transitions(
    before: &HashMap<String, ContainerState>,
    now: &[ContainerStatus],
) -> Vec<(String, cri::ContainerEventType)> {
    use cri::ContainerEventType as E;
    let mut out = Vec::new();
    for c in now {
        let from = before.get(&c.id).copied();
        out.extend(changes_of(from, c).into_iter().map(|e| (c.id.clone(), e)));
    }
    let mut gone: Vec<(&String, &ContainerState)> = before
        .iter()
        .filter(|(id, _)| !now.iter().any(|c| &c.id == *id))
        .collect();
    gone.sort_by_key(|(id, _)| *id);
    for (id, state) in gone {
        if *state == ContainerState::Running {
            out.push((id.clone(), E::ContainerStoppedEvent));
        }
        out.push((id.clone(), E::ContainerDeletedEvent));
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
            ("vanished".to_owned(), ContainerState::Running),
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
                ("vanished", E::ContainerStoppedEvent),
                ("vanished", E::ContainerDeletedEvent),
            ]
        );
    }
}
