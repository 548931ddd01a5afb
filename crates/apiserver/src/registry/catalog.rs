//! Every built-in resource rkube serves, with the names, scope, verbs, categories and
//! subresources upstream's discovery reports for it (`kubectl api-resources -o wide`), and the
//! store prefix upstream's etcd layout uses. Discovery, routing and the REST handlers all read
//! this one table.

use std::sync::{Arc, RwLock};

use serde_json::Value;

use super::apiextensions::customresourcedefinition::CustomResourceDefinitionStrategy;
use super::apps::{deployment::DeploymentStrategy, replicaset::ReplicaSetStrategy};
use super::autoscaling::HorizontalPodAutoscalerV1;
use super::coordination::lease::LeaseStrategy;
use super::core::{
    configmap::ConfigMapStrategy, event::EventStrategy, namespace::NamespaceStrategy,
    node::NodeStrategy, pod::PodStrategy, secret::SecretStrategy, service::ServiceStrategy,
    serviceaccount::ServiceAccountStrategy,
};
use super::events::EventsV1;
use super::generic::GenericStrategy;
use super::{Conversion, Strategy};

/// A subresource (`pods/status`, `deployments/scale`).
#[derive(Debug)]
pub struct Subresource {
    /// The part after the slash.
    pub name: &'static str,
    /// The kind it takes and returns.
    pub kind: &'static str,
    /// The group of that kind when it differs from the resource's ("" = the resource's).
    pub group: &'static str,
    /// The version of that kind when it differs from the resource's.
    pub version: &'static str,
    /// Verbs, as discovery lists them.
    pub verbs: &'static [&'static str],
}

/// One resource of one group-version.
pub struct ResourceInfo {
    /// API group; "" for core.
    pub group: &'static str,
    /// Version.
    pub version: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Plural (the URL segment).
    pub plural: &'static str,
    /// Singular name.
    pub singular: &'static str,
    /// `kubectl` short names.
    pub short_names: &'static [&'static str],
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Verbs of the main resource.
    pub verbs: &'static [&'static str],
    /// Categories (`all`).
    pub categories: &'static [&'static str],
    /// Subresources.
    pub subresources: &'static [Subresource],
    /// Store key prefix without the trailing slash (`/registry/services/specs`).
    pub storage: &'static str,
    /// The resource's rules (over objects in their stored form).
    pub strategy: &'static dyn Strategy,
    /// How this version converts to and from the stored one, when it is not the one stored.
    pub conversion: Option<&'static dyn Conversion>,
}

impl std::fmt::Debug for ResourceInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.group_resource())
    }
}

impl ResourceInfo {
    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `configmaps` or `deployments.apps`: how upstream names the resource in messages.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `ConfigMap` or `Deployment.apps`: how upstream names the kind in `Invalid` messages.
    pub fn group_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_owned()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    /// A request's object (this version) in its stored form.
    pub fn to_stored(&self, obj: Value) -> Value {
        match self.conversion {
            Some(c) => c.to_stored(obj),
            None => obj,
        }
    }

    /// A stored object as this version.
    pub fn to_served(&self, obj: Value) -> Value {
        match self.conversion {
            Some(c) => c.to_served(obj),
            None => obj,
        }
    }

    /// Whether the main resource allows `verb`.
    pub fn allows(&self, verb: &str) -> bool {
        self.verbs.contains(&verb)
    }

    /// The subresource named `name`.
    pub fn subresource(&self, name: &str) -> Option<&'static Subresource> {
        self.subresources.iter().find(|s| s.name == name)
    }

    /// The store key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("{}/{ns}/{name}", self.storage),
            _ => format!("{}/{name}", self.storage),
        }
    }

    /// The store prefix of a list: one namespace, or all.
    pub fn prefix(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("{}/{ns}/", self.storage),
            _ => format!("{}/", self.storage),
        }
    }
}

/// Every verb of a normal resource.
pub const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
const NO_COLLECTION_DELETE: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];
const GET_PATCH_UPDATE: &[&str] = &["get", "patch", "update"];
const ALL: &[&str] = &["all"];

const fn sub(
    name: &'static str,
    kind: &'static str,
    verbs: &'static [&'static str],
) -> Subresource {
    Subresource {
        name,
        kind,
        group: "",
        version: "",
        verbs,
    }
}

const fn status(kind: &'static str) -> Subresource {
    sub("status", kind, GET_PATCH_UPDATE)
}

const SCALE: Subresource = Subresource {
    name: "scale",
    kind: "Scale",
    group: "autoscaling",
    version: "v1",
    verbs: GET_PATCH_UPDATE,
};

#[allow(clippy::too_many_arguments)] // one table row; named fields would triple the table
const fn res(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    short_names: &'static [&'static str],
    namespaced: bool,
    verbs: &'static [&'static str],
    categories: &'static [&'static str],
    subresources: &'static [Subresource],
    storage: &'static str,
    strategy: &'static dyn Strategy,
) -> ResourceInfo {
    ResourceInfo {
        group,
        version,
        kind,
        plural,
        singular,
        short_names,
        namespaced,
        verbs,
        categories,
        subresources,
        storage,
        strategy,
        conversion: None,
    }
}

/// A served version stored as another: `info` with its conversion.
const fn converted(mut info: ResourceInfo, conversion: &'static dyn Conversion) -> ResourceInfo {
    info.conversion = Some(conversion);
    info
}

const G: &GenericStrategy = &GenericStrategy::WITH_STATUS;
const G_NO_STATUS: &GenericStrategy = &GenericStrategy::NO_STATUS;
const G_RBAC: &GenericStrategy = &GenericStrategy::RBAC;

/// The built-in resources, core first, then the groups in upstream's discovery order.
pub static RESOURCES: &[ResourceInfo] = &[
    // core/v1
    res(
        "",
        "v1",
        "ConfigMap",
        "configmaps",
        "configmap",
        &["cm"],
        true,
        ALL_VERBS,
        &[],
        &[],
        "/registry/configmaps",
        &ConfigMapStrategy,
    ),
    res(
        "",
        "v1",
        "Endpoints",
        "endpoints",
        "endpoints",
        &["ep"],
        true,
        ALL_VERBS,
        &[],
        &[],
        "/registry/services/endpoints",
        G_NO_STATUS,
    ),
    res(
        "",
        "v1",
        "Event",
        "events",
        "event",
        &["ev"],
        true,
        ALL_VERBS,
        &[],
        &[],
        "/registry/events",
        &EventStrategy,
    ),
    res(
        "",
        "v1",
        "LimitRange",
        "limitranges",
        "limitrange",
        &["limits"],
        true,
        ALL_VERBS,
        &[],
        &[],
        "/registry/limitranges",
        G_NO_STATUS,
    ),
    res(
        "",
        "v1",
        "Namespace",
        "namespaces",
        "namespace",
        &["ns"],
        false,
        NO_COLLECTION_DELETE,
        &[],
        &[
            sub("finalize", "Namespace", &["update"]),
            status("Namespace"),
        ],
        "/registry/namespaces",
        &NamespaceStrategy,
    ),
    res(
        "",
        "v1",
        "Node",
        "nodes",
        "node",
        &["no"],
        false,
        ALL_VERBS,
        &[],
        &[
            sub(
                "proxy",
                "NodeProxyOptions",
                &["create", "delete", "get", "patch", "update"],
            ),
            status("Node"),
        ],
        "/registry/minions",
        &NodeStrategy,
    ),
    res(
        "",
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        "persistentvolumeclaim",
        &["pvc"],
        true,
        ALL_VERBS,
        &[],
        &[status("PersistentVolumeClaim")],
        "/registry/persistentvolumeclaims",
        G,
    ),
    res(
        "",
        "v1",
        "PersistentVolume",
        "persistentvolumes",
        "persistentvolume",
        &["pv"],
        false,
        ALL_VERBS,
        &[],
        &[status("PersistentVolume")],
        "/registry/persistentvolumes",
        G,
    ),
    res(
        "",
        "v1",
        "Pod",
        "pods",
        "pod",
        &["po"],
        true,
        ALL_VERBS,
        ALL,
        &[
            sub("attach", "PodAttachOptions", &["create", "get"]),
            Subresource {
                name: "binding",
                kind: "Binding",
                group: "",
                version: "",
                verbs: &["create"],
            },
            sub("ephemeralcontainers", "Pod", GET_PATCH_UPDATE),
            Subresource {
                name: "eviction",
                kind: "Eviction",
                group: "policy",
                version: "v1",
                verbs: &["create"],
            },
            sub("exec", "PodExecOptions", &["create", "get"]),
            sub("log", "Pod", &["get"]),
            sub("portforward", "PodPortForwardOptions", &["create", "get"]),
            sub(
                "proxy",
                "PodProxyOptions",
                &["create", "delete", "get", "patch", "update"],
            ),
            sub("resize", "Pod", GET_PATCH_UPDATE),
            status("Pod"),
        ],
        "/registry/pods",
        &PodStrategy,
    ),
    res(
        "",
        "v1",
        "PodTemplate",
        "podtemplates",
        "podtemplate",
        &[],
        true,
        ALL_VERBS,
        &[],
        &[],
        "/registry/podtemplates",
        G_NO_STATUS,
    ),
    res(
        "",
        "v1",
        "ReplicationController",
        "replicationcontrollers",
        "replicationcontroller",
        &["rc"],
        true,
        ALL_VERBS,
        ALL,
        &[SCALE, status("ReplicationController")],
        "/registry/controllers",
        &GenericStrategy::WORKLOAD,
    ),
    res(
        "",
        "v1",
        "ResourceQuota",
        "resourcequotas",
        "resourcequota",
        &["quota"],
        true,
        ALL_VERBS,
        &[],
        &[status("ResourceQuota")],
        "/registry/resourcequotas",
        G,
    ),
    res(
        "",
        "v1",
        "Secret",
        "secrets",
        "secret",
        &[],
        true,
        ALL_VERBS,
        &[],
        &[],
        "/registry/secrets",
        &SecretStrategy,
    ),
    res(
        "",
        "v1",
        "ServiceAccount",
        "serviceaccounts",
        "serviceaccount",
        &["sa"],
        true,
        ALL_VERBS,
        &[],
        &[Subresource {
            name: "token",
            kind: "TokenRequest",
            group: "authentication.k8s.io",
            version: "v1",
            verbs: &["create"],
        }],
        "/registry/serviceaccounts",
        &ServiceAccountStrategy,
    ),
    res(
        "",
        "v1",
        "Service",
        "services",
        "service",
        &["svc"],
        true,
        ALL_VERBS,
        ALL,
        &[
            sub(
                "proxy",
                "ServiceProxyOptions",
                &["create", "delete", "get", "patch", "update"],
            ),
            status("Service"),
        ],
        "/registry/services/specs",
        &ServiceStrategy,
    ),
    // apiextensions.k8s.io/v1
    res(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        "customresourcedefinition",
        &["crd", "crds"],
        false,
        ALL_VERBS,
        &["api-extensions"],
        &[status("CustomResourceDefinition")],
        "/registry/apiextensions.k8s.io/customresourcedefinitions",
        &CustomResourceDefinitionStrategy,
    ),
    // apps/v1
    res(
        "apps",
        "v1",
        "ControllerRevision",
        "controllerrevisions",
        "controllerrevision",
        &[],
        true,
        ALL_VERBS,
        &[],
        &[],
        "/registry/controllerrevisions",
        G_NO_STATUS,
    ),
    res(
        "apps",
        "v1",
        "DaemonSet",
        "daemonsets",
        "daemonset",
        &["ds"],
        true,
        ALL_VERBS,
        ALL,
        &[status("DaemonSet")],
        "/registry/daemonsets",
        &GenericStrategy::WORKLOAD,
    ),
    res(
        "apps",
        "v1",
        "Deployment",
        "deployments",
        "deployment",
        &["deploy"],
        true,
        ALL_VERBS,
        ALL,
        &[SCALE, status("Deployment")],
        "/registry/deployments",
        &DeploymentStrategy,
    ),
    res(
        "apps",
        "v1",
        "ReplicaSet",
        "replicasets",
        "replicaset",
        &["rs"],
        true,
        ALL_VERBS,
        ALL,
        &[SCALE, status("ReplicaSet")],
        "/registry/replicasets",
        &ReplicaSetStrategy,
    ),
    res(
        "apps",
        "v1",
        "StatefulSet",
        "statefulsets",
        "statefulset",
        &["sts"],
        true,
        ALL_VERBS,
        ALL,
        &[SCALE, status("StatefulSet")],
        "/registry/statefulsets",
        &GenericStrategy::WORKLOAD,
    ),
    // autoscaling/v2
    res(
        "autoscaling",
        "v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        "horizontalpodautoscaler",
        &["hpa"],
        true,
        ALL_VERBS,
        ALL,
        &[status("HorizontalPodAutoscaler")],
        "/registry/horizontalpodautoscalers",
        &GenericStrategy::WORKLOAD,
    ),
    // autoscaling/v1: the same objects, with only a CPU target of their own
    converted(
        res(
            "autoscaling",
            "v1",
            "HorizontalPodAutoscaler",
            "horizontalpodautoscalers",
            "horizontalpodautoscaler",
            &["hpa"],
            true,
            ALL_VERBS,
            ALL,
            &[status("HorizontalPodAutoscaler")],
            "/registry/horizontalpodautoscalers",
            &GenericStrategy::WORKLOAD,
        ),
        &HorizontalPodAutoscalerV1,
    ),
    // batch/v1
    res(
        "batch",
        "v1",
        "CronJob",
        "cronjobs",
        "cronjob",
        &["cj"],
        true,
        ALL_VERBS,
        ALL,
        &[status("CronJob")],
        "/registry/cronjobs",
        &GenericStrategy::WORKLOAD,
    ),
    res(
        "batch",
        "v1",
        "Job",
        "jobs",
        "job",
        &[],
        true,
        ALL_VERBS,
        ALL,
        &[status("Job")],
        "/registry/jobs",
        &GenericStrategy::WORKLOAD,
    ),
    // coordination.k8s.io/v1
    res(
        "coordination.k8s.io",
        "v1",
        "Lease",
        "leases",
        "lease",
        &[],
        true,
        ALL_VERBS,
        &[],
        &[],
        "/registry/leases",
        &LeaseStrategy,
    ),
    // discovery.k8s.io/v1
    res(
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        "endpointslices",
        "endpointslice",
        &[],
        true,
        ALL_VERBS,
        &[],
        &[],
        "/registry/endpointslices",
        G_NO_STATUS,
    ),
    // events.k8s.io/v1: core events in their newer shape
    converted(
        res(
            "events.k8s.io",
            "v1",
            "Event",
            "events",
            "event",
            &["ev"],
            true,
            ALL_VERBS,
            &[],
            &[],
            "/registry/events",
            &EventStrategy,
        ),
        &EventsV1,
    ),
    // networking.k8s.io/v1
    res(
        "networking.k8s.io",
        "v1",
        "IngressClass",
        "ingressclasses",
        "ingressclass",
        &[],
        false,
        ALL_VERBS,
        &[],
        &[],
        "/registry/ingressclasses",
        G_NO_STATUS,
    ),
    res(
        "networking.k8s.io",
        "v1",
        "Ingress",
        "ingresses",
        "ingress",
        &["ing"],
        true,
        ALL_VERBS,
        &[],
        &[status("Ingress")],
        "/registry/ingress",
        G,
    ),
    res(
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
        "networkpolicy",
        &["netpol"],
        true,
        ALL_VERBS,
        &[],
        &[],
        "/registry/networkpolicies",
        G_NO_STATUS,
    ),
    // policy/v1
    res(
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        "poddisruptionbudget",
        &["pdb"],
        true,
        ALL_VERBS,
        &[],
        &[status("PodDisruptionBudget")],
        "/registry/poddisruptionbudgets",
        &GenericStrategy::WORKLOAD,
    ),
    // rbac.authorization.k8s.io/v1 (stored and served; enforcement comes with RBAC)
    res(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        "clusterrolebinding",
        &[],
        false,
        ALL_VERBS,
        &[],
        &[],
        "/registry/clusterrolebindings",
        G_RBAC,
    ),
    res(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
        "clusterrole",
        &[],
        false,
        ALL_VERBS,
        &[],
        &[],
        "/registry/clusterroles",
        G_RBAC,
    ),
    res(
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
        "rolebinding",
        &[],
        true,
        ALL_VERBS,
        &[],
        &[],
        "/registry/rolebindings",
        G_RBAC,
    ),
    res(
        "rbac.authorization.k8s.io",
        "v1",
        "Role",
        "roles",
        "role",
        &[],
        true,
        ALL_VERBS,
        &[],
        &[],
        "/registry/roles",
        G_RBAC,
    ),
    // scheduling.k8s.io/v1
    res(
        "scheduling.k8s.io",
        "v1",
        "PriorityClass",
        "priorityclasses",
        "priorityclass",
        &["pc"],
        false,
        ALL_VERBS,
        &[],
        &[],
        "/registry/priorityclasses",
        G_NO_STATUS,
    ),
    // storage.k8s.io/v1
    res(
        "storage.k8s.io",
        "v1",
        "CSIDriver",
        "csidrivers",
        "csidriver",
        &[],
        false,
        ALL_VERBS,
        &[],
        &[],
        "/registry/csidrivers",
        G_NO_STATUS,
    ),
    res(
        "storage.k8s.io",
        "v1",
        "StorageClass",
        "storageclasses",
        "storageclass",
        &["sc"],
        false,
        ALL_VERBS,
        &[],
        &[],
        "/registry/storageclasses",
        G_NO_STATUS,
    ),
    res(
        "storage.k8s.io",
        "v1",
        "VolumeAttachment",
        "volumeattachments",
        "volumeattachment",
        &[],
        false,
        ALL_VERBS,
        &[],
        &[status("VolumeAttachment")],
        "/registry/volumeattachments",
        G,
    ),
];

/// The custom resources being served, in discovery order (group, then version priority);
/// replaced as a whole by the apiextensions controller.
static CUSTOM: RwLock<Option<Arc<Vec<&'static ResourceInfo>>>> = RwLock::new(None);

/// Replaces the served custom resources.
pub fn set_custom(resources: Vec<&'static ResourceInfo>) {
    *CUSTOM.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(resources));
}

/// The custom resources being served.
pub fn custom() -> Arc<Vec<&'static ResourceInfo>> {
    CUSTOM
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .unwrap_or_default()
}

/// Every served resource: the built-ins, then the custom resources.
pub fn all() -> impl Iterator<Item = &'static ResourceInfo> {
    let custom = custom();
    RESOURCES
        .iter()
        .chain((0..custom.len()).map(move |i| custom[i]))
}

/// The resource `plural` of `group`/`version`.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceInfo> {
    all().find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The served groups, each with its versions, in discovery order (core is `""`).
pub fn groups() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for r in all() {
        match out.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, versions)) => {
                if !versions.contains(&r.version) {
                    versions.push(r.version);
                }
            }
            None => out.push((r.group, vec![r.version])),
        }
    }
    out
}

/// The resources of one group-version.
pub fn resources_of(group: &str, version: &str) -> impl Iterator<Item = &'static ResourceInfo> {
    let (group, version) = (group.to_owned(), version.to_owned());
    all().filter(move |r| r.group == group && r.version == version)
}

/// The built-in resources as the OpenAPI documents describe them.
pub fn served_resources() -> Vec<crate::openapi::ServedResource> {
    RESOURCES.iter().map(served_resource).collect()
}

/// One resource as the OpenAPI documents describe it.
pub fn served_resource(info: &ResourceInfo) -> crate::openapi::ServedResource {
    use crate::openapi::{GroupVersionKind, ServedResource, ServedSubresource};
    ServedResource {
        group: info.group.into(),
        version: info.version.into(),
        kind: info.kind.into(),
        plural: info.plural.into(),
        namespaced: info.namespaced,
        verbs: info.verbs.iter().map(|v| (*v).into()).collect(),
        subresources: info
            .subresources
            .iter()
            .map(|sub| ServedSubresource {
                name: sub.name.into(),
                kind: GroupVersionKind::new(
                    if sub.group.is_empty() && sub.version.is_empty() {
                        info.group
                    } else {
                        sub.group
                    },
                    if sub.version.is_empty() {
                        info.version
                    } else {
                        sub.version
                    },
                    if sub.kind.is_empty() {
                        info.kind
                    } else {
                        sub.kind
                    },
                ),
                verbs: sub.verbs.iter().map(|v| (*v).into()).collect(),
            })
            .collect(),
        strategic_merge_patch: info.strategy.strategic_merge_patch(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_short_names_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for r in RESOURCES {
            assert!(seen.insert((r.group, r.version, r.plural)), "{r:?} twice");
        }
        // A short name names one resource; versions of it, or a kind served in two groups
        // (events), share theirs.
        let mut short = std::collections::HashMap::new();
        for r in RESOURCES {
            for s in r.short_names {
                let owner = short.entry(*s).or_insert(r.plural);
                assert_eq!(*owner, r.plural, "short name {s} twice");
            }
        }
    }

    #[test]
    fn store_prefixes_do_not_contain_each_other() {
        for a in RESOURCES {
            for b in RESOURCES {
                if a.plural != b.plural {
                    assert!(
                        !format!("{}/", a.storage).starts_with(&format!("{}/", b.storage)),
                        "{a:?} inside {b:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn keys_follow_upstreams_layout() {
        let svc = find("", "v1", "services").unwrap();
        assert_eq!(
            svc.key(Some("default"), "web"),
            "/registry/services/specs/default/web"
        );
        let ns = find("", "v1", "namespaces").unwrap();
        assert_eq!(
            ns.key(Some("ignored"), "kube-system"),
            "/registry/namespaces/kube-system"
        );
        assert_eq!(
            find("apps", "v1", "deployments").unwrap().prefix(None),
            "/registry/deployments/"
        );
        assert_eq!(
            find("apps", "v1", "deployments").unwrap().group_resource(),
            "deployments.apps"
        );
    }
}
