//! The garbage collector's picture of the cluster: every object's owners and dependents, by uid,
//! and the decision of what to do about one object. Pure data and logic, so every rule of
//! upstream's collector (orphan, foreground, background, dangling references) is unit-tested
//! without a server; `super` feeds it from watches and carries out its [`Action`]s.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

/// A resource type the collector watches: enough to address its objects over the API.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ResourceType {
    /// API group (`""` for core).
    pub group: String,
    /// The version the collector reads it at.
    pub version: String,
    /// Kind, as owner references name it.
    pub kind: String,
    /// The URL path segment.
    pub plural: String,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
}

/// One `metadata.ownerReferences` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerRef {
    /// The owner's uid: the identity that matters (a re-created owner is another owner).
    pub uid: String,
    /// `apiVersion` as written, to find the owner's resource when it is not in the graph.
    pub api_version: String,
    /// Owner kind.
    pub kind: String,
    /// Owner name.
    pub name: String,
    /// `blockOwnerDeletion`: a foreground deletion of the owner waits for this dependent.
    pub block_owner_deletion: bool,
}

impl OwnerRef {
    /// The owner's API group, from its `apiVersion`.
    pub fn group(&self) -> &str {
        self.api_version
            .rsplit_once('/')
            .map(|(g, _)| g)
            .unwrap_or("")
    }
}

/// What the collector knows of one object.
#[derive(Clone, Debug)]
pub struct Node {
    /// `metadata.uid`.
    pub uid: String,
    /// Its resource type.
    pub resource: Arc<ResourceType>,
    /// `metadata.namespace` (`None` for cluster-scoped objects).
    pub namespace: Option<String>,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.ownerReferences`.
    pub owners: Vec<OwnerRef>,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// `metadata.finalizers`.
    pub finalizers: Vec<String>,
}

/// The finalizer that asks the collector to orphan dependents before the owner goes.
pub const ORPHAN: &str = "orphan";
/// The finalizer that asks the collector to delete dependents before the owner goes.
pub const FOREGROUND: &str = "foregroundDeletion";

impl Node {
    fn has_finalizer(&self, f: &str) -> bool {
        self.finalizers.iter().any(|x| x == f)
    }

    /// Being deleted and waiting for its dependents to go first.
    pub fn waiting_for_dependents(&self) -> bool {
        self.deleting && self.has_finalizer(FOREGROUND)
    }
}

/// What a live look-up said of an owner missing from the graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presence {
    /// An object with that uid exists.
    Present,
    /// Nothing with that uid exists (absent, or re-created under a new uid).
    Absent,
}

/// `propagationPolicy` for a delete the collector issues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Dependents are collected after the object is gone.
    Background,
    /// The object waits for its own dependents.
    Foreground,
}

/// Addresses one object for an API call; the uid is the precondition every call carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Resource type.
    pub resource: Arc<ResourceType>,
    /// Namespace, for namespaced resources.
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// uid the call must still find.
    pub uid: String,
}

/// One API call the collector should make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Remove the owner references with these uids from the target.
    RemoveOwnerRefs(Target, Vec<String>),
    /// Delete the target.
    Delete(Target, Policy),
    /// Remove this finalizer from the target.
    RemoveFinalizer(Target, &'static str),
}

/// The result of looking at one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// These owners are not in the graph: look them up, then plan again with the answers.
    LookUp(Vec<OwnerRef>),
    /// Carry these out in order (empty: nothing to do).
    Act(Vec<Action>),
}

/// Owners and dependents of every watched object, keyed by uid.
#[derive(Default)]
pub struct Graph {
    nodes: HashMap<String, Node>,
    /// Owner uid → uids of objects that name it, including owners not (or no longer) present.
    dependents: HashMap<String, BTreeSet<String>>,
}

impl Graph {
    /// The node with this uid.
    pub fn get(&self, uid: &str) -> Option<&Node> {
        self.nodes.get(uid)
    }

    /// Number of objects known.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// No objects known.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Records an added or changed object; returns the uids whose decisions may have changed.
    pub fn upsert(&mut self, node: Node) -> Vec<String> {
        let mut touched: BTreeSet<String> = BTreeSet::new();
        let uid = node.uid.clone();
        if let Some(old) = self.nodes.get(&uid) {
            let old_owners: HashSet<&str> = old.owners.iter().map(|o| o.uid.as_str()).collect();
            let new_owners: HashSet<&str> = node.owners.iter().map(|o| o.uid.as_str()).collect();
            for gone in old_owners.difference(&new_owners) {
                touched.insert((*gone).to_owned());
                if let Some(set) = self.dependents.get_mut(*gone) {
                    set.remove(&uid);
                    if set.is_empty() {
                        self.dependents.remove(*gone);
                    }
                }
            }
            // A newly deleting object matters to its owners (a foreground owner waits on it)
            // and to its dependents (orphan / foreground handling of this one).
            if old.deleting != node.deleting || old.finalizers != node.finalizers {
                touched.extend(node.owners.iter().map(|o| o.uid.clone()));
                touched.extend(self.dependents_of(&uid));
            }
        } else {
            // A newcomer may be the owner some dependents were waiting to find.
            touched.extend(self.dependents_of(&uid));
            touched.extend(node.owners.iter().map(|o| o.uid.clone()));
        }
        for owner in &node.owners {
            self.dependents
                .entry(owner.uid.clone())
                .or_default()
                .insert(uid.clone());
        }
        touched.insert(uid.clone());
        self.nodes.insert(uid, node);
        touched.into_iter().collect()
    }

    /// Forgets a deleted object; returns the uids whose decisions may have changed.
    pub fn remove(&mut self, uid: &str) -> Vec<String> {
        let mut touched: BTreeSet<String> = BTreeSet::new();
        if let Some(old) = self.nodes.remove(uid) {
            for owner in &old.owners {
                touched.insert(owner.uid.clone());
                if let Some(set) = self.dependents.get_mut(&owner.uid) {
                    set.remove(uid);
                    if set.is_empty() {
                        self.dependents.remove(&owner.uid);
                    }
                }
            }
        }
        touched.extend(self.dependents_of(uid));
        touched.into_iter().collect()
    }

    /// Drops objects of `resource` not in `seen` (after a re-list); returns touched uids.
    pub fn retain_listed(
        &mut self,
        resource: &ResourceType,
        seen: &HashSet<String>,
    ) -> Vec<String> {
        let gone: Vec<String> = self
            .nodes
            .values()
            .filter(|n| *n.resource == *resource && !seen.contains(&n.uid))
            .map(|n| n.uid.clone())
            .collect();
        let mut touched = Vec::new();
        for uid in gone {
            touched.extend(self.remove(&uid));
        }
        touched
    }

    fn dependents_of(&self, uid: &str) -> Vec<String> {
        self.dependents
            .get(uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn target(node: &Node) -> Target {
        Target {
            resource: node.resource.clone(),
            namespace: node.namespace.clone(),
            name: node.name.clone(),
            uid: node.uid.clone(),
        }
    }

    /// Decides what to do about the object `uid`. `looked_up` holds live answers for owners
    /// missing from the graph; an owner missing from both is asked for, never guessed.
    pub fn plan(&self, uid: &str, looked_up: &HashMap<String, Presence>) -> Plan {
        let Some(node) = self.nodes.get(uid) else {
            return Plan::Act(Vec::new());
        };
        let dependents: Vec<&Node> = self
            .dependents_of(uid)
            .iter()
            .filter_map(|d| self.nodes.get(d))
            .collect();

        // Orphan: free every dependent, then let the owner go.
        if node.deleting && node.has_finalizer(ORPHAN) {
            let mut actions: Vec<Action> = dependents
                .iter()
                .map(|d| Action::RemoveOwnerRefs(Self::target(d), vec![uid.to_owned()]))
                .collect();
            actions.push(Action::RemoveFinalizer(Self::target(node), ORPHAN));
            return Plan::Act(actions);
        }

        // Foreground: delete every dependent; the owner goes when no blocking one is left.
        if node.waiting_for_dependents() {
            let mut actions = Vec::new();
            for d in &dependents {
                if !d.deleting {
                    actions.push(Action::Delete(Self::target(d), self.policy_for(d, true)));
                }
            }
            let blocked = dependents.iter().any(|d| {
                d.owners
                    .iter()
                    .any(|o| o.uid == uid && o.block_owner_deletion)
            });
            if !blocked {
                actions.push(Action::RemoveFinalizer(Self::target(node), FOREGROUND));
            }
            return Plan::Act(actions);
        }

        if node.owners.is_empty() || node.deleting {
            return Plan::Act(Vec::new());
        }

        // A dependent: is any owner still there?
        let mut missing = Vec::new();
        let (mut solid, mut dangling, mut waiting) = (false, Vec::new(), Vec::new());
        for owner in &node.owners {
            match self.nodes.get(&owner.uid) {
                Some(o) if o.waiting_for_dependents() => waiting.push(owner.uid.clone()),
                Some(_) => solid = true,
                None => match looked_up.get(&owner.uid) {
                    Some(Presence::Present) => solid = true,
                    Some(Presence::Absent) => dangling.push(owner.uid.clone()),
                    None => missing.push(owner.clone()),
                },
            }
        }
        if !missing.is_empty() {
            return Plan::LookUp(missing);
        }
        if solid {
            let mut drop = dangling;
            drop.extend(waiting);
            if drop.is_empty() {
                return Plan::Act(Vec::new());
            }
            return Plan::Act(vec![Action::RemoveOwnerRefs(Self::target(node), drop)]);
        }
        // Every owner is gone or waiting for its dependents to go: this one goes.
        let policy = self.policy_for(node, !waiting.is_empty());
        Plan::Act(vec![Action::Delete(Self::target(node), policy)])
    }

    /// Foreground when an owner waits for this object and it has dependents of its own (so the
    /// wait covers the whole tree, as upstream does); background otherwise.
    fn policy_for(&self, node: &Node, owner_waiting: bool) -> Policy {
        if owner_waiting && !self.dependents_of(&node.uid).is_empty() {
            Policy::Foreground
        } else {
            Policy::Background
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(kind: &str, plural: &str) -> Arc<ResourceType> {
        Arc::new(ResourceType {
            group: "apps".into(),
            version: "v1".into(),
            kind: kind.into(),
            plural: plural.into(),
            namespaced: true,
        })
    }

    fn node(uid: &str, owners: &[(&str, bool)]) -> Node {
        Node {
            uid: uid.into(),
            resource: kind("ReplicaSet", "replicasets"),
            namespace: Some("d".into()),
            name: format!("n-{uid}"),
            owners: owners
                .iter()
                .map(|(o, block)| OwnerRef {
                    uid: (*o).into(),
                    api_version: "apps/v1".into(),
                    kind: "Deployment".into(),
                    name: format!("n-{o}"),
                    block_owner_deletion: *block,
                })
                .collect(),
            deleting: false,
            finalizers: vec![],
        }
    }

    fn deleting(mut n: Node, finalizer: &str) -> Node {
        n.deleting = true;
        if !finalizer.is_empty() {
            n.finalizers.push(finalizer.into());
        }
        n
    }

    fn acts(plan: Plan) -> Vec<Action> {
        match plan {
            Plan::Act(a) => a,
            other => panic!("expected actions, got {other:?}"),
        }
    }

    fn none() -> HashMap<String, Presence> {
        HashMap::new()
    }

    #[test]
    fn a_dependent_with_a_live_owner_is_left_alone() {
        let mut g = Graph::default();
        g.upsert(node("owner", &[]));
        g.upsert(node("dep", &[("owner", true)]));
        assert_eq!(acts(g.plan("dep", &none())), vec![]);
        assert_eq!(acts(g.plan("owner", &none())), vec![]);
    }

    #[test]
    fn an_unknown_owner_is_looked_up_never_guessed() {
        let mut g = Graph::default();
        g.upsert(node("dep", &[("owner", false)]));
        match g.plan("dep", &none()) {
            Plan::LookUp(owners) => assert_eq!(owners[0].uid, "owner"),
            other => panic!("{other:?}"),
        }
        let present = HashMap::from([("owner".to_owned(), Presence::Present)]);
        assert_eq!(acts(g.plan("dep", &present)), vec![]);
        let absent = HashMap::from([("owner".to_owned(), Presence::Absent)]);
        let a = acts(g.plan("dep", &absent));
        assert!(matches!(&a[..], [Action::Delete(t, Policy::Background)] if t.uid == "dep"));
    }

    #[test]
    fn background_deletion_collects_dependents_once_the_owner_is_gone() {
        let mut g = Graph::default();
        g.upsert(node("owner", &[]));
        g.upsert(node("dep", &[("owner", false)]));
        let touched = g.remove("owner");
        assert_eq!(touched, vec!["dep".to_owned()]);
        let absent = HashMap::from([("owner".to_owned(), Presence::Absent)]);
        assert!(matches!(
            &acts(g.plan("dep", &absent))[..],
            [Action::Delete(_, Policy::Background)]
        ));
    }

    #[test]
    fn dangling_references_are_removed_while_another_owner_lives() {
        let mut g = Graph::default();
        g.upsert(node("a", &[]));
        g.upsert(node("dep", &[("a", false), ("b", false)]));
        let absent = HashMap::from([("b".to_owned(), Presence::Absent)]);
        assert_eq!(
            acts(g.plan("dep", &absent)),
            vec![Action::RemoveOwnerRefs(
                Graph::target(g.get("dep").unwrap()),
                vec!["b".into()]
            )]
        );
    }

    #[test]
    fn orphaning_frees_every_dependent_then_drops_the_finalizer() {
        let mut g = Graph::default();
        g.upsert(node("owner", &[]));
        g.upsert(node("d1", &[("owner", true)]));
        g.upsert(node("d2", &[("owner", false)]));
        let touched = g.upsert(deleting(node("owner", &[]), ORPHAN));
        assert!(touched.contains(&"owner".to_owned()));
        let a = acts(g.plan("owner", &none()));
        assert_eq!(a.len(), 3);
        assert!(matches!(&a[0], Action::RemoveOwnerRefs(t, u) if t.uid == "d1" && u == &["owner"]));
        assert!(matches!(&a[1], Action::RemoveOwnerRefs(t, _) if t.uid == "d2"));
        assert!(matches!(&a[2], Action::RemoveFinalizer(t, ORPHAN) if t.uid == "owner"));
        // The orphaned dependents themselves are not deleted.
        assert_eq!(acts(g.plan("d1", &none())), vec![]);
    }

    #[test]
    fn foreground_deletes_dependents_and_waits_for_blocking_ones() {
        let mut g = Graph::default();
        g.upsert(deleting(node("owner", &[]), FOREGROUND));
        g.upsert(node("rs", &[("owner", true)]));
        g.upsert(node("pod", &[("rs", true)]));
        g.upsert(node("loose", &[("owner", false)]));
        let a = acts(g.plan("owner", &none()));
        // rs has a dependent of its own: foreground; loose has none: background; and the
        // owner keeps its finalizer while the blocking rs exists.
        assert!(a.contains(&Action::Delete(
            Graph::target(g.get("rs").unwrap()),
            Policy::Foreground
        )));
        assert!(a.contains(&Action::Delete(
            Graph::target(g.get("loose").unwrap()),
            Policy::Background
        )));
        assert!(!a.iter().any(|x| matches!(x, Action::RemoveFinalizer(..))));
        // The dependent's own view agrees: its only owner waits for it.
        assert!(matches!(
            &acts(g.plan("rs", &none()))[..],
            [Action::Delete(_, Policy::Foreground)]
        ));
        // rs is being deleted: no second delete; when it is gone the owner may go.
        g.upsert(deleting(node("rs", &[("owner", true)]), FOREGROUND));
        let a = acts(g.plan("owner", &none()));
        assert!(
            !a.iter()
                .any(|x| matches!(x, Action::Delete(t, _) if t.uid == "rs"))
        );
        assert!(!a.iter().any(|x| matches!(x, Action::RemoveFinalizer(..))));
        let touched = g.remove("rs");
        assert!(touched.contains(&"owner".to_owned()));
        g.remove("loose");
        assert_eq!(
            acts(g.plan("owner", &none())),
            vec![Action::RemoveFinalizer(
                Graph::target(g.get("owner").unwrap()),
                FOREGROUND
            )]
        );
    }

    #[test]
    fn a_waiting_owner_is_dropped_from_a_dependent_another_owner_keeps() {
        let mut g = Graph::default();
        g.upsert(deleting(node("a", &[]), FOREGROUND));
        g.upsert(node("b", &[]));
        g.upsert(node("dep", &[("a", true), ("b", false)]));
        assert_eq!(
            acts(g.plan("dep", &none())),
            vec![Action::RemoveOwnerRefs(
                Graph::target(g.get("dep").unwrap()),
                vec!["a".into()]
            )]
        );
    }

    #[test]
    fn changed_owner_lists_move_the_dependent_index() {
        let mut g = Graph::default();
        g.upsert(node("dep", &[("a", false)]));
        let touched = g.upsert(node("dep", &[("b", false)]));
        assert!(touched.contains(&"a".to_owned()));
        assert!(g.dependents_of("a").is_empty());
        assert_eq!(g.dependents_of("b"), vec!["dep".to_owned()]);
        // A re-list that no longer has it forgets it.
        let t = g.retain_listed(&g.get("dep").unwrap().resource.clone(), &HashSet::new());
        assert!(t.contains(&"b".to_owned()));
        assert!(g.is_empty());
    }

    #[test]
    fn an_object_being_deleted_is_not_deleted_again() {
        let mut g = Graph::default();
        g.upsert(deleting(node("dep", &[("gone", false)]), ""));
        let absent = HashMap::from([("gone".to_owned(), Presence::Absent)]);
        assert_eq!(acts(g.plan("dep", &absent)), vec![]);
    }

    #[test]
    fn owner_group_comes_from_api_version() {
        let mut o = node("x", &[("o", false)]).owners.remove(0);
        assert_eq!(o.group(), "apps");
        o.api_version = "v1".into();
        assert_eq!(o.group(), "");
    }
}
