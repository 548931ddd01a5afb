//! The built-in definitions: generated once per process from k8s-openapi's schemas (its
//! `schemars` feature: descriptions, types, formats, required), then completed with what
//! k8s-openapi does not carry: the `x-kubernetes-group-version-kind` of every resource, list
//! definitions (`DeploymentList`), the merge extensions from [`super::field_meta`], and the
//! `required` lists k8s-openapi deliberately changed for its Rust types, put back as the API
//! serves them.

use std::sync::{Arc, OnceLock};

use k8s_openapi as k8s;
use k8s_openapi::Resource;
use schemars::{JsonSchema, generate::SchemaSettings};
use serde_json::{Value, json};

use super::field_meta;
use super::model::{Schemas, ext};

/// The definition name of the metadata of lists.
const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";

pub(super) fn builtin() -> Arc<Schemas> {
    static BUILTIN: OnceLock<Arc<Schemas>> = OnceLock::new();
    BUILTIN.get_or_init(|| Arc::new(generate())).clone()
}

struct Builder {
    generator: schemars::SchemaGenerator,
    /// (definition name, group, version, kind, listable)
    resources: Vec<(String, &'static str, &'static str, &'static str, bool)>,
}

fn add<T: Resource + JsonSchema>(builder: &mut Builder, listable: bool) {
    builder.generator.subschema_for::<T>();
    builder.resources.push((
        T::schema_name().into_owned(),
        T::GROUP,
        T::VERSION,
        T::KIND,
        listable,
    ));
}

fn generate() -> Schemas {
    let settings = SchemaSettings::draft07().with(|s| {
        s.transforms.clear();
        s.meta_schema = None;
        s.definitions_path = "/definitions".into();
    });
    let mut builder = Builder {
        generator: settings.into_generator(),
        resources: Vec::new(),
    };
    // Types the documents' operations name besides the resources.
    builder
        .generator
        .subschema_for::<k8s::apimachinery::pkg::apis::meta::v1::ListMeta>();
    builder
        .generator
        .subschema_for::<k8s::apimachinery::pkg::apis::meta::v1::DeleteOptions>();
    builder
        .generator
        .subschema_for::<k8s::apimachinery::pkg::apis::meta::v1::Patch>();
    add_all(&mut builder);
    let Builder {
        mut generator,
        resources,
    } = builder;
    let mut definitions = generator.take_definitions(false);

    for (name, group, version, kind, listable) in &resources {
        let Some(def) = definitions.get_mut(name).and_then(Value::as_object_mut) else {
            continue;
        };
        def.insert(
            ext::GVK.into(),
            json!([{"group": group, "version": version, "kind": kind}]),
        );
        if *listable {
            let list = list_definition(name, def, group, version, kind);
            definitions.insert(format!("{name}List"), list);
        }
    }

    let mut schemas = Schemas::new();
    for (name, schema) in definitions {
        schemas.insert(name, schema);
    }
    restore_upstream_required(&mut schemas);
    field_meta::apply(&mut schemas, field_meta::TABLE);
    schemas
}

/// The schema of `<Kind>List`: apiVersion and kind as the item type has them, list metadata and
/// the items.
fn list_definition(
    item: &str,
    item_def: &serde_json::Map<String, Value>,
    group: &str,
    version: &str,
    kind: &str,
) -> Value {
    let props = item_def.get("properties");
    let copy = |p: &str| {
        props
            .and_then(|ps| ps.get(p))
            .cloned()
            .unwrap_or_else(|| json!({"type": "string"}))
    };
    json!({
        "description": format!("{kind}List is a list of {kind} objects."),
        "type": "object",
        "properties": {
            "apiVersion": copy("apiVersion"),
            "items": {
                "description": format!("The {kind} objects in the list."),
                "type": "array",
                "items": {"$ref": format!("#/definitions/{item}")},
            },
            "kind": copy("kind"),
            "metadata": {
                "$ref": format!("#/definitions/{LIST_META}"),
                "description": "Standard list metadata: resourceVersion and continue token.",
            },
        },
        "required": ["items"],
        (ext::GVK): [{"group": group, "version": version, "kind": format!("{kind}List")}],
    })
}

/// k8s-openapi makes some optional properties required (and one required property optional) so
/// its Rust structs are convenient; the API itself declares them otherwise, and clients read
/// `required` (kubectl explain prints `-required-`), so serve the API's view.
fn restore_upstream_required(schemas: &mut Schemas) {
    const MADE_REQUIRED_BY_K8S_OPENAPI: &[(&str, &str)] = &[
        ("io.k8s.api.core.v1.ConfigMapEnvSource", "name"),
        ("io.k8s.api.core.v1.ConfigMapKeySelector", "name"),
        ("io.k8s.api.core.v1.ConfigMapProjection", "name"),
        ("io.k8s.api.core.v1.ConfigMapVolumeSource", "name"),
        ("io.k8s.api.core.v1.LocalObjectReference", "name"),
        ("io.k8s.api.core.v1.SecretEnvSource", "name"),
        ("io.k8s.api.core.v1.SecretKeySelector", "name"),
        ("io.k8s.api.core.v1.SecretProjection", "name"),
    ];
    const MADE_OPTIONAL_BY_K8S_OPENAPI: &[(&str, &str)] =
        &[("io.k8s.api.events.v1.Event", "eventTime")];

    let names: Vec<String> = schemas.iter().map(|(n, _)| n.to_owned()).collect();
    for name in names {
        let Some(def) = schemas.definition_mut(&name) else {
            continue;
        };
        // Resource metadata: k8s-openapi requires it on every type with apiVersion and kind.
        let is_resource = ["apiVersion", "kind", "metadata"]
            .iter()
            .all(|p| def.pointer(&format!("/properties/{p}")).is_some());
        if is_resource {
            remove_required(def, "metadata");
        }
        for (d, p) in MADE_REQUIRED_BY_K8S_OPENAPI {
            if *d == name {
                remove_required(def, p);
            }
        }
        for (d, p) in MADE_OPTIONAL_BY_K8S_OPENAPI {
            if *d == name && def.pointer(&format!("/properties/{p}")).is_some() {
                add_required(def, p);
            }
        }
    }
}

fn remove_required(def: &mut Value, prop: &str) {
    let Some(obj) = def.as_object_mut() else {
        return;
    };
    if let Some(Value::Array(req)) = obj.get_mut("required") {
        req.retain(|r| r != prop);
        if req.is_empty() {
            obj.remove("required");
        }
    }
}

fn add_required(def: &mut Value, prop: &str) {
    let Some(obj) = def.as_object_mut() else {
        return;
    };
    let req = obj.entry("required").or_insert_with(|| json!([]));
    if let Some(req) = req.as_array_mut()
        && !req.iter().any(|r| r == prop)
    {
        req.push(json!(prop));
    }
}

/// Every resource type k8s-openapi's `latest` feature has, with whether it has a list type.
fn add_all(builder: &mut Builder) {
    add::<k8s::api::admissionregistration::v1::MutatingAdmissionPolicy>(builder, true);
    add::<k8s::api::admissionregistration::v1::MutatingAdmissionPolicyBinding>(builder, true);
    add::<k8s::api::admissionregistration::v1::MutatingWebhookConfiguration>(builder, true);
    add::<k8s::api::admissionregistration::v1::ValidatingAdmissionPolicy>(builder, true);
    add::<k8s::api::admissionregistration::v1::ValidatingAdmissionPolicyBinding>(builder, true);
    add::<k8s::api::admissionregistration::v1::ValidatingWebhookConfiguration>(builder, true);
    add::<k8s::api::admissionregistration::v1alpha1::MutatingAdmissionPolicy>(builder, true);
    add::<k8s::api::admissionregistration::v1alpha1::MutatingAdmissionPolicyBinding>(builder, true);
    add::<k8s::api::admissionregistration::v1beta1::MutatingAdmissionPolicy>(builder, true);
    add::<k8s::api::admissionregistration::v1beta1::MutatingAdmissionPolicyBinding>(builder, true);
    add::<k8s::api::apiserverinternal::v1alpha1::StorageVersion>(builder, true);
    add::<k8s::api::apps::v1::ControllerRevision>(builder, true);
    add::<k8s::api::apps::v1::DaemonSet>(builder, true);
    add::<k8s::api::apps::v1::Deployment>(builder, true);
    add::<k8s::api::apps::v1::ReplicaSet>(builder, true);
    add::<k8s::api::apps::v1::StatefulSet>(builder, true);
    add::<k8s::api::authentication::v1::SelfSubjectReview>(builder, false);
    add::<k8s::api::authentication::v1::TokenRequest>(builder, false);
    add::<k8s::api::authentication::v1::TokenReview>(builder, false);
    add::<k8s::api::authorization::v1::LocalSubjectAccessReview>(builder, false);
    add::<k8s::api::authorization::v1::SelfSubjectAccessReview>(builder, false);
    add::<k8s::api::authorization::v1::SelfSubjectRulesReview>(builder, false);
    add::<k8s::api::authorization::v1::SubjectAccessReview>(builder, false);
    add::<k8s::api::autoscaling::v1::HorizontalPodAutoscaler>(builder, true);
    add::<k8s::api::autoscaling::v1::Scale>(builder, false);
    add::<k8s::api::autoscaling::v2::HorizontalPodAutoscaler>(builder, true);
    add::<k8s::api::batch::v1::CronJob>(builder, true);
    add::<k8s::api::batch::v1::Job>(builder, true);
    add::<k8s::api::certificates::v1::CertificateSigningRequest>(builder, true);
    add::<k8s::api::certificates::v1::ClusterTrustBundle>(builder, true);
    add::<k8s::api::certificates::v1::PodCertificateRequest>(builder, true);
    add::<k8s::api::certificates::v1beta1::ClusterTrustBundle>(builder, true);
    add::<k8s::api::certificates::v1beta1::PodCertificateRequest>(builder, true);
    add::<k8s::api::coordination::v1::Lease>(builder, true);
    add::<k8s::api::coordination::v1alpha2::LeaseCandidate>(builder, true);
    add::<k8s::api::coordination::v1beta1::LeaseCandidate>(builder, true);
    add::<k8s::api::core::v1::Binding>(builder, false);
    add::<k8s::api::core::v1::ComponentStatus>(builder, true);
    add::<k8s::api::core::v1::ConfigMap>(builder, true);
    add::<k8s::api::core::v1::Endpoints>(builder, true);
    add::<k8s::api::core::v1::Event>(builder, true);
    add::<k8s::api::core::v1::LimitRange>(builder, true);
    add::<k8s::api::core::v1::Namespace>(builder, true);
    add::<k8s::api::core::v1::Node>(builder, true);
    add::<k8s::api::core::v1::PersistentVolume>(builder, true);
    add::<k8s::api::core::v1::PersistentVolumeClaim>(builder, true);
    add::<k8s::api::core::v1::Pod>(builder, true);
    add::<k8s::api::core::v1::PodTemplate>(builder, true);
    add::<k8s::api::core::v1::ReplicationController>(builder, true);
    add::<k8s::api::core::v1::ResourceQuota>(builder, true);
    add::<k8s::api::core::v1::Secret>(builder, true);
    add::<k8s::api::core::v1::Service>(builder, true);
    add::<k8s::api::core::v1::ServiceAccount>(builder, true);
    add::<k8s::api::discovery::v1::EndpointSlice>(builder, true);
    add::<k8s::api::events::v1::Event>(builder, true);
    add::<k8s::api::flowcontrol::v1::FlowSchema>(builder, true);
    add::<k8s::api::flowcontrol::v1::PriorityLevelConfiguration>(builder, true);
    add::<k8s::api::lifecycle::v1alpha1::Eviction>(builder, true);
    add::<k8s::api::lifecycle::v1alpha1::EvictionRequest>(builder, true);
    add::<k8s::api::networking::v1::Ingress>(builder, true);
    add::<k8s::api::networking::v1::IngressClass>(builder, true);
    add::<k8s::api::networking::v1::IPAddress>(builder, true);
    add::<k8s::api::networking::v1::NetworkPolicy>(builder, true);
    add::<k8s::api::networking::v1::ServiceCIDR>(builder, true);
    add::<k8s::api::node::v1::RuntimeClass>(builder, true);
    add::<k8s::api::policy::v1::Eviction>(builder, false);
    add::<k8s::api::policy::v1::PodDisruptionBudget>(builder, true);
    add::<k8s::api::rbac::v1::ClusterRole>(builder, true);
    add::<k8s::api::rbac::v1::ClusterRoleBinding>(builder, true);
    add::<k8s::api::rbac::v1::Role>(builder, true);
    add::<k8s::api::rbac::v1::RoleBinding>(builder, true);
    add::<k8s::api::resource::v1::DeviceClass>(builder, true);
    add::<k8s::api::resource::v1::DeviceTaintRule>(builder, true);
    add::<k8s::api::resource::v1::ResourceClaim>(builder, true);
    add::<k8s::api::resource::v1::ResourceClaimTemplate>(builder, true);
    add::<k8s::api::resource::v1::ResourceSlice>(builder, true);
    add::<k8s::api::resource::v1alpha3::DeviceTaintRule>(builder, true);
    add::<k8s::api::resource::v1alpha3::ResourcePoolStatusRequest>(builder, true);
    add::<k8s::api::resource::v1beta1::DeviceClass>(builder, true);
    add::<k8s::api::resource::v1beta1::ResourceClaim>(builder, true);
    add::<k8s::api::resource::v1beta1::ResourceClaimTemplate>(builder, true);
    add::<k8s::api::resource::v1beta1::ResourceSlice>(builder, true);
    add::<k8s::api::resource::v1beta2::DeviceClass>(builder, true);
    add::<k8s::api::resource::v1beta2::DeviceTaintRule>(builder, true);
    add::<k8s::api::resource::v1beta2::ResourceClaim>(builder, true);
    add::<k8s::api::resource::v1beta2::ResourceClaimTemplate>(builder, true);
    add::<k8s::api::resource::v1beta2::ResourceSlice>(builder, true);
    add::<k8s::api::scheduling::v1::PriorityClass>(builder, true);
    add::<k8s::api::scheduling::v1alpha3::CompositePodGroup>(builder, true);
    add::<k8s::api::scheduling::v1alpha3::PodGroup>(builder, true);
    add::<k8s::api::scheduling::v1alpha3::Workload>(builder, true);
    add::<k8s::api::scheduling::v1beta1::PodGroup>(builder, true);
    add::<k8s::api::scheduling::v1beta1::Workload>(builder, true);
    add::<k8s::api::storage::v1::CSIDriver>(builder, true);
    add::<k8s::api::storage::v1::CSINode>(builder, true);
    add::<k8s::api::storage::v1::CSIStorageCapacity>(builder, true);
    add::<k8s::api::storage::v1::StorageClass>(builder, true);
    add::<k8s::api::storage::v1::VolumeAttachment>(builder, true);
    add::<k8s::api::storage::v1::VolumeAttributesClass>(builder, true);
    add::<k8s::api::storagemigration::v1::StorageVersionMigration>(builder, true);
    add::<k8s::api::storagemigration::v1beta1::StorageVersionMigration>(builder, true);
    add::<k8s::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>(
        builder, true,
    );
    add::<k8s::apimachinery::pkg::apis::meta::v1::APIGroup>(builder, false);
    add::<k8s::apimachinery::pkg::apis::meta::v1::APIGroupList>(builder, false);
    add::<k8s::apimachinery::pkg::apis::meta::v1::APIResourceList>(builder, false);
    add::<k8s::apimachinery::pkg::apis::meta::v1::APIVersions>(builder, false);
    add::<k8s::apimachinery::pkg::apis::meta::v1::Status>(builder, false);
    add::<k8s::kube_aggregator::pkg::apis::apiregistration::v1::APIService>(builder, true);
}
