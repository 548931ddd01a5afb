//! Subresources other than `status`: `scale` (autoscaling/v1 `Scale` over a workload's
//! `spec.replicas`), `pods/binding` (the scheduler's one-time `spec.nodeName`), `pods/eviction`
//! (a delete that honours PodDisruptionBudgets) and `namespaces/finalize` (`spec.finalizers`).
//! The rest (`log`, `exec`, `attach`, `portforward`, `proxy`, `token`, `ephemeralcontainers`,
//! `resize`) answer 501 until the parts behind them exist.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::negotiate::{self, Accept};
use super::selector::LabelSelector;
use super::{Api, DeleteOptions, Deleted, Query, Target, dry_run, read_body, read_plain_object};
use crate::registry::validation::FieldError;
use crate::registry::{ResourceInfo, catalog, str_at};
use crate::rest::storage::{self, internal};
use crate::status::ApiError;
use rkube_store::Error as StoreError;

/// Serves `verb` on `target.subresource` (never `status`).
pub(super) async fn serve(
    api: &Api<'_>,
    target: &Target,
    verb: &str,
    query: &Query,
    headers: &HeaderMap,
    body: Body,
    accept: Accept,
) -> Result<Response, ApiError> {
    let info = target.info;
    let sub = target.subresource.as_deref().unwrap_or_default();
    match (sub, verb) {
        ("scale", "get") => {
            let (obj, _) = main_object(api, target).await?;
            Ok(negotiate::respond(
                StatusCode::OK,
                &scale_of(target.info, &obj),
                accept,
            ))
        }
        ("scale", "update" | "patch") => {
            let body = read_body(headers, body).await?;
            let dry = dry_run(query)?;
            let apply = negotiate::content_type(headers) == "application/apply-patch+yaml";
            let manager = if verb == "update" {
                super::field_manager(query, headers, "UpdateOptions")?
            } else {
                super::patch_options(query, headers, apply)?
            };
            if verb == "patch" && apply {
                return apply_scale(api, target, &body, &manager, query, dry, accept).await;
            }
            let record = super::Recording::Update {
                manager,
                subresource: "scale",
            };
            let scale = if verb == "update" {
                read_plain_object(headers, &body)?
            } else {
                let (obj, _) = main_object(api, target).await?;
                patch_scale(&scale_of(target.info, &obj), headers, &body)?
            };
            update_scale(api, target, scale, dry, record, accept).await
        }
        ("binding", "create") => {
            let body = read_body(headers, body).await?;
            bind(
                api,
                target,
                &read_plain_object(headers, &body)?,
                dry_run(query)?,
            )
            .await
        }
        ("eviction", "create") => {
            let body = read_body(headers, body).await?;
            evict(
                api,
                target,
                &read_plain_object(headers, &body)?,
                dry_run(query)?,
            )
            .await
        }
        ("finalize", "update") => {
            let body = read_body(headers, body).await?;
            finalize(
                api,
                target,
                read_plain_object(headers, &body)?,
                dry_run(query)?,
                accept,
            )
            .await
        }
        _ => Err(ApiError::not_implemented(format!(
            "the {}/{sub} subresource is not served by rkube yet",
            info.plural
        ))),
    }
}

fn main_target(target: &Target) -> Target {
    Target {
        info: target.info,
        namespace: target.namespace.clone(),
        name: target.name.clone(),
        subresource: None,
        watch_path: false,
    }
}

async fn main_object(api: &Api<'_>, target: &Target) -> Result<(Value, i64), ApiError> {
    let name = target.name.as_deref().unwrap_or_default();
    api.objects
        .get(&api.key(target, name))
        .await?
        .ok_or_else(|| super::not_found(target.info, name))
}

/// A `Success` status, as upstream answers binding and eviction.
fn success(code: StatusCode) -> Response {
    let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
        "code": code.as_u16()});
    negotiate::respond(code, &status, Accept::JSON)
}

// ---------------------------------------------------------------------------------------------
// scale

/// The text form of a workload's selector (`app=web,tier in (a,b)`), as `Scale.status.selector`.
pub fn selector_string(selector: Option<&Value>) -> String {
    let Some(selector) = selector else {
        return String::new();
    };
    let is_label_selector =
        selector.get("matchLabels").is_some() || selector.get("matchExpressions").is_some();
    let mut parts: Vec<String> = Vec::new();
    let labels = if is_label_selector {
        selector.get("matchLabels")
    } else {
        // ReplicationController: a plain map.
        Some(selector)
    };
    if let Some(map) = labels.and_then(Value::as_object) {
        for (k, v) in map {
            parts.push(format!("{k}={}", v.as_str().unwrap_or_default()));
        }
    }
    for e in selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = str_at(e, "/key");
        let mut values: Vec<&str> = e
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        values.sort_unstable();
        parts.push(match str_at(e, "/operator") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_owned(),
            _ => format!("!{key}"),
        });
    }
    parts.sort();
    parts.join(",")
}

/// Where `info` keeps its replicas and selector (the workload paths when it says nothing).
fn scale_paths(info: &crate::registry::ResourceInfo) -> crate::registry::ScalePaths {
    info.strategy
        .scale_paths()
        .unwrap_or_else(crate::registry::ScalePaths::workload)
}

fn scale_of(info: &crate::registry::ResourceInfo, obj: &Value) -> Value {
    let paths = scale_paths(info);
    let meta = &obj["metadata"];
    let selector = match &paths.label_selector {
        None => String::new(),
        Some(p) if paths.selector_is_text => str_at(obj, p).to_owned(),
        Some(p) => selector_string(obj.pointer(p)),
    };
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"],
            "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": {"replicas": obj.pointer(&paths.spec_replicas).and_then(Value::as_i64).unwrap_or(
            // Upstream defaults replicas to 1 for every built-in scalable kind; a custom
            // resource without the field shows 0.
            if paths.selector_is_text { 0 } else { 1 })},
        "status": {
            "replicas": obj.pointer(&paths.status_replicas).and_then(Value::as_i64).unwrap_or(0),
            "selector": selector,
        },
    })
}

/// A JSON pointer (`/spec/replicas`) as a managedFields path.
fn field_path(pointer: &str) -> crate::patch::fieldpath::Path {
    use crate::patch::fieldpath::{Path, PathElement};
    Path(
        pointer
            .split('/')
            .skip(1)
            .map(|part| PathElement::Field(part.into()))
            .collect(),
    )
}

fn patch_scale(current: &Value, headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    let media = negotiate::content_type(headers);
    let mut doc = current.clone();
    match media.as_str() {
        "application/json-patch+json" => {
            let patch: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("the JSON patch is not valid: {e}")))?;
            json_patch::patch(&mut doc, &patch).map_err(|e| {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", e.to_string())
            })?;
        }
        // Scale has no lists, so a strategic merge patch is a merge patch.
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
            let patch: Value = serde_json::from_slice(body).map_err(|e| {
                ApiError::bad_request(format!("the merge patch is not valid JSON: {e}"))
            })?;
            json_patch::merge(&mut doc, &patch);
        }
        other => return Err(negotiate::unsupported_media_type(other)),
    }
    Ok(doc)
}

async fn update_scale(
    api: &Api<'_>,
    target: &Target,
    scale: Value,
    dry: bool,
    record: super::Recording,
    accept: Accept,
) -> Result<Response, ApiError> {
    let info = target.info;
    let name = target.name.as_deref().unwrap_or_default();
    if str_at(&scale, "/kind") != "Scale" {
        return Err(ApiError::bad_request(format!(
            "the body is a {:?}, not an autoscaling/v1 Scale",
            str_at(&scale, "/kind")
        )));
    }
    let body_name = str_at(&scale, "/metadata/name");
    if !body_name.is_empty() && body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    let replicas = match scale.pointer("/spec/replicas") {
        None | Some(Value::Null) => 0,
        Some(v) => v.as_i64().ok_or_else(|| {
            ApiError::bad_request("Scale in version \"v1\" cannot be handled as a Scale: spec.replicas must be an integer")
        })?,
    };
    if replicas < 0 || replicas > i64::from(i32::MAX) {
        let errors = [FieldError::invalid(
            "spec.replicas",
            json!(replicas),
            "must be greater than or equal to 0",
        )];
        let err = super::invalid(info, name, &errors);
        return Err(ApiError {
            message: err
                .message
                .replacen(&info.group_kind(), "Scale.autoscaling", 1),
            details: err.details.map(|mut d| {
                d["kind"] = json!("Scale");
                d["group"] = json!("autoscaling");
                d
            }),
            ..err
        });
    }
    let requested = match str_at(&scale, "/metadata/resourceVersion") {
        "" => None,
        rv => Some(super::parse_revision(rv)?),
    };
    let change = move |current: &Value| -> Result<Value, ApiError> {
        let mut obj = current.clone();
        crate::registry::set_at(&mut obj, &scale_paths(info).spec_replicas, json!(replicas));
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
        }
        Ok(obj)
    };
    let (_, obj) = api
        .write_value(&main_target(target), dry, requested, record, change)
        .await?;
    Ok(negotiate::respond(
        StatusCode::OK,
        &scale_of(target.info, &obj),
        accept,
    ))
}

/// Server-side apply of a `Scale`: the apply runs on the Scale view of the object, whose
/// managedFields are the object's `.spec.replicas` owners (upstream's scale handler), and its
/// outcome goes back to the object: the replicas and who owns them.
async fn apply_scale(
    api: &Api<'_>,
    target: &Target,
    body: &[u8],
    manager: &str,
    query: &super::Query,
    dry: bool,
    accept: Accept,
) -> Result<Response, ApiError> {
    use crate::patch::fieldpath::{FieldSet, Path};
    use crate::patch::managedfields::{self, Managed, Reset};
    negotiate::check_yaml_nesting(body)?;
    let config = negotiate::decode(body, negotiate::Format::Yaml)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {}", e.message)))?;
    if str_at(&config, "/apiVersion") != "autoscaling/v1" || str_at(&config, "/kind") != "Scale" {
        return Err(ApiError::bad_request(format!(
            "Incorrect version specified in apply patch. Specified patch version: {}, expected: autoscaling/v1",
            str_at(&config, "/apiVersion")
        )));
    }
    if config
        .pointer("/metadata/managedFields")
        .is_some_and(|m| !m.is_null())
    {
        return Err(ApiError::bad_request("metadata.managedFields must be nil"));
    }
    let info = target.info;
    let name = target.name.clone().unwrap_or_default();
    let force = super::flag(query, "force");
    let schemas = api.objects.openapi().schemas();
    let scale_gvk = crate::openapi::GroupVersionKind::new("autoscaling", "v1", "Scale");
    let parent_version = info.api_version();
    let now = crate::registry::meta::now();
    let spec_replicas = scale_paths(info).spec_replicas;
    let replicas: Path = field_path(&spec_replicas);
    let only_replicas: FieldSet = [replicas.clone()].into_iter().collect();
    let manager = manager.to_owned();
    let change = move |current: &Value| -> Result<Value, ApiError> {
        let parent = Managed::of(current).unwrap_or_default();
        // The Scale view: the object's replicas and their owners.
        let mut view = scale_of(info, current);
        let mut scale_managed = Managed(
            parent
                .0
                .iter()
                .map(|e| {
                    let mut e = e.clone();
                    e.fields = e.fields.intersection(&only_replicas);
                    e.api_version = "autoscaling/v1".into();
                    e
                })
                .filter(|e| !e.fields.is_empty())
                .collect(),
        );
        if scale_managed.0.is_empty() && !parent.0.is_empty() {
            // Nobody owns replicas, but the object is tracked: an entry owning nothing keeps the
            // view from looking untracked (it is dropped with the other empty entries).
            scale_managed = Managed(vec![managedfields::Entry {
                manager: managedfields::BEFORE_FIRST_APPLY.into(),
                operation: managedfields::Operation::Update,
                api_version: "autoscaling/v1".into(),
                subresource: String::new(),
                time: None,
                fields: FieldSet::new(),
            }]);
        }
        scale_managed.write_to(&mut view);
        let cx = managedfields::Context {
            schema: schemas.for_kind(&scale_gvk),
            api_version: "autoscaling/v1",
            subresource: "scale",
            reset: Reset::Nothing,
            now: &now,
        };
        let applied = managedfields::apply(Some(&view), &config, &manager, force, &cx).map_err(
            |e| match e {
                managedfields::ApplyFailure::Conflicts(c) => super::apply_conflict(&c),
                managedfields::ApplyFailure::Invalid(e) => {
                    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", e.to_string())
                }
            },
        )?;
        if str_at(&applied, "/metadata/name") != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                str_at(&applied, "/metadata/name")
            )));
        }
        // Back to the object: its replicas, and who owns them now.
        let mut obj = current.clone();
        if let Some(r) = applied.pointer("/spec/replicas") {
            let r = r.as_i64().filter(|r| *r >= 0).ok_or_else(|| {
                ApiError::bad_request(
                    "Scale in version \"v1\" cannot be handled as a Scale: spec.replicas must be a non-negative integer",
                )
            })?;
            crate::registry::set_at(&mut obj, &spec_replicas, json!(r));
        }
        let mut managed = parent;
        for e in &mut managed.0 {
            e.fields = e.fields.difference(&only_replicas);
        }
        for e in Managed::of(&applied).unwrap_or_default().0 {
            if !e.fields.contains(&replicas) {
                continue;
            }
            let mut e = e;
            e.fields = only_replicas.clone();
            e.api_version = parent_version.clone();
            match managed.0.iter_mut().find(|x| {
                x.manager == e.manager
                    && x.operation == e.operation
                    && x.subresource == e.subresource
                    && (x.operation == managedfields::Operation::Apply
                        || x.api_version == e.api_version)
            }) {
                Some(x) => {
                    x.fields = x.fields.union(&e.fields);
                    x.time = e.time.clone();
                }
                None => managed.0.push(e),
            }
        }
        managed.0.retain(|e| !e.fields.is_empty());
        managed.write_to(&mut obj);
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
        }
        Ok(obj)
    };
    let (_, obj) = api
        .write_value(
            &main_target(target),
            dry,
            None,
            super::Recording::Apply { upsert: false },
            change,
        )
        .await?;
    Ok(negotiate::respond(
        StatusCode::OK,
        &scale_of(target.info, &obj),
        accept,
    ))
}

// ---------------------------------------------------------------------------------------------
// a read-modify-write outside the main strategy (binding, finalize, PDB status)

/// Changes the object under `key` with `change` (which may refuse), retrying on races.
async fn modify(
    api: &Api<'_>,
    info: &ResourceInfo,
    key: &str,
    name: &str,
    dry: bool,
    change: impl Fn(&Value) -> Result<Value, ApiError>,
) -> Result<Value, ApiError> {
    for _ in 0..super::WRITE_ATTEMPTS {
        let Some((old, revision)) = api.objects.get(key).await? else {
            return Err(super::not_found(info, name));
        };
        let mut new = change(&old)?;
        if dry || new == old {
            return Ok(new);
        }
        match api
            .objects
            .store()
            .update(key, storage::encode(&new), revision)
            .await
        {
            Ok(rev) => {
                storage::set_resource_version(&mut new, rev);
                return Ok(new);
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(StoreError::NotFound { .. }) => return Err(super::not_found(info, name)),
            Err(e) => return Err(internal(e)),
        }
    }
    Err(super::conflict(info, name))
}

fn now() -> String {
    let at = time::OffsetDateTime::now_utc();
    let at = at.replace_nanosecond(0).unwrap_or(at);
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// pods/binding

async fn bind(
    api: &Api<'_>,
    target: &Target,
    binding: &Value,
    dry: bool,
) -> Result<Response, ApiError> {
    let info = target.info;
    let name = target.name.as_deref().unwrap_or_default();
    let node = str_at(binding, "/target/name").to_owned();
    let mut errors = Vec::new();
    if node.is_empty() {
        errors.push(FieldError::required("target.name", ""));
    }
    let kind = str_at(binding, "/target/kind");
    if !kind.is_empty() && kind != "Node" {
        errors.push(FieldError::not_supported(
            "target.kind",
            json!(kind),
            &["Node"],
        ));
    }
    let body_name = str_at(binding, "/metadata/name");
    if !body_name.is_empty() && body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    if !errors.is_empty() {
        let err = super::invalid(info, name, &errors);
        return Err(ApiError {
            message: err.message.replacen("Pod", "Binding", 1),
            ..err
        });
    }
    let uid = str_at(binding, "/metadata/uid").to_owned();
    let key = api.key(target, name);
    let conflict = |why: String| ApiError::conflict("", "pods/binding", name, &why);
    modify(api, info, &key, name, dry, |pod| {
        if !uid.is_empty() && uid != str_at(pod, "/metadata/uid") {
            return Err(conflict(format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                str_at(pod, "/metadata/uid")
            )));
        }
        if pod
            .pointer("/metadata/deletionTimestamp")
            .is_some_and(|v| !v.is_null())
        {
            return Err(conflict(format!(
                "pod {name} is being deleted, cannot be assigned to a host"
            )));
        }
        let current = str_at(pod, "/spec/nodeName");
        if !current.is_empty() {
            return Err(conflict(format!(
                "pod {name} is already assigned to node {current:?}"
            )));
        }
        let mut pod = pod.clone();
        crate::registry::set_at(&mut pod, "/spec/nodeName", json!(node));
        let conditions = pod
            .pointer_mut("/status/conditions")
            .and_then(Value::as_array_mut)
            .map(std::mem::take)
            .unwrap_or_default();
        let mut conditions: Vec<Value> = conditions
            .into_iter()
            .filter(|c| str_at(c, "/type") != "PodScheduled")
            .collect();
        conditions.push(json!({"type": "PodScheduled", "status": "True",
            "lastProbeTime": null, "lastTransitionTime": now()}));
        crate::registry::set_at(&mut pod, "/status/conditions", json!(conditions));
        Ok(pod)
    })
    .await?;
    Ok(success(StatusCode::CREATED))
}

// ---------------------------------------------------------------------------------------------
// pods/eviction

fn too_many_requests(message: &str, cause: String) -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "TooManyRequests",
        message.to_owned(),
    )
    .with_details(json!({"causes": [{"reason": "DisruptionBudget", "message": cause}]}))
}

fn pod_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| str_at(c, "/type") == "Ready" && str_at(c, "/status") == "True")
}

async fn evict(
    api: &Api<'_>,
    target: &Target,
    eviction: &Value,
    dry_query: bool,
) -> Result<Response, ApiError> {
    let name = target.name.as_deref().unwrap_or_default().to_owned();
    let namespace = target.namespace.clone().unwrap_or_default();
    let body_name = str_at(eviction, "/metadata/name");
    if !body_name.is_empty() && body_name != name {
        return Err(ApiError::bad_request(format!(
            "name in URL does not match name in Eviction object ({body_name} != {name})"
        )));
    }
    let options_body = match eviction.get("deleteOptions") {
        Some(v) if !v.is_null() => serde_json::to_vec(v).unwrap_or_default(),
        _ => Vec::new(),
    };
    let mut options = DeleteOptions::parse(&Query::new(), &options_body)?;
    options.dry_run |= dry_query;
    let (pod, _) = main_object(api, target).await?;
    let phase = str_at(&pod, "/status/phase");
    let terminal_or_pending = matches!(phase, "Succeeded" | "Failed" | "Pending" | "")
        || pod
            .pointer("/metadata/deletionTimestamp")
            .is_some_and(|v| !v.is_null());
    if !terminal_or_pending {
        check_budgets(api, &namespace, &pod, options.dry_run).await?;
    }
    match api
        .delete_one(&main_target(target), &name, &options)
        .await?
    {
        Deleted::Removed(_) | Deleted::Pending(_) => Ok(success(StatusCode::CREATED)),
    }
}

/// Upstream's eviction checks: at most one PodDisruptionBudget may select the pod; its status
/// must be current and allow a disruption, which this eviction takes.
async fn check_budgets(
    api: &Api<'_>,
    namespace: &str,
    pod: &Value,
    dry: bool,
) -> Result<(), ApiError> {
    let pdbs = catalog::find("policy", "v1", "poddisruptionbudgets")
        .expect("poddisruptionbudgets are in the catalogue");
    let page = api
        .objects
        .list(&pdbs.prefix(Some(namespace)), None, 0, 0)
        .await
        .map_err(internal)?;
    let matching: Vec<Value> = page
        .items
        .into_iter()
        .map(|(_, pdb)| pdb)
        .filter(|pdb| {
            let Some(selector) = pdb.pointer("/spec/selector") else {
                return false;
            };
            LabelSelector::from_api(selector).is_ok_and(|s| !s.is_empty() && s.matches_object(pod))
        })
        .collect();
    let pdb = match matching.as_slice() {
        [] => return Ok(()),
        [one] => one,
        _ => {
            return Err(ApiError::internal(
                "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
            ));
        }
    };
    let pdb_name = str_at(pdb, "/metadata/name").to_owned();
    let violate = "Cannot evict pod as it would violate the pod's disruption budget.";
    let int = |p: &str| pdb.pointer(p).and_then(Value::as_i64).unwrap_or(0);
    // An unready pod may go when the budget is met anyway, or always when the PDB says so.
    if !pod_ready(pod) {
        let policy = str_at(pdb, "/spec/unhealthyPodEvictionPolicy");
        if policy == "AlwaysAllow"
            || (int("/status/observedGeneration") >= int("/metadata/generation")
                && int("/status/currentHealthy") >= int("/status/desiredHealthy"))
        {
            return Ok(());
        }
    }
    let pod_name = str_at(pod, "/metadata/name").to_owned();
    let key = pdbs.key(Some(namespace), &pdb_name);
    modify(api, pdbs, &key, &pdb_name, dry, |current| {
        let int = |p: &str| current.pointer(p).and_then(Value::as_i64).unwrap_or(0);
        if int("/status/observedGeneration") < int("/metadata/generation")
            || current.pointer("/status/observedGeneration").is_none()
        {
            return Err(too_many_requests(
                violate,
                format!("The disruption budget {pdb_name} is still being processed by the server."),
            ));
        }
        let allowed = int("/status/disruptionsAllowed");
        if allowed < 0 {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "Forbidden",
                "pdb disruptions allowed is negative",
            ));
        }
        if allowed == 0 {
            return Err(too_many_requests(
                violate,
                format!(
                    "The disruption budget {pdb_name} needs {} healthy pods and has {} currently",
                    int("/status/desiredHealthy"),
                    int("/status/currentHealthy")
                ),
            ));
        }
        let mut next = current.clone();
        crate::registry::set_at(&mut next, "/status/disruptionsAllowed", json!(allowed - 1));
        crate::registry::set_at(
            &mut next,
            &format!("/status/disruptedPods/{pod_name}"),
            json!(now()),
        );
        Ok(next)
    })
    .await
    .map(|_| ())
}

// ---------------------------------------------------------------------------------------------
// namespaces/finalize

async fn finalize(
    api: &Api<'_>,
    target: &Target,
    ns: Value,
    dry: bool,
    accept: Accept,
) -> Result<Response, ApiError> {
    let info = target.info;
    let name = target.name.as_deref().unwrap_or_default();
    let body_name = str_at(&ns, "/metadata/name");
    if body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    let finalizers: Vec<Value> = ns
        .pointer("/spec/finalizers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut errors = Vec::new();
    for (i, f) in finalizers.iter().enumerate() {
        let text = f.as_str().unwrap_or_default();
        for problem in crate::registry::validation::qualified_name(text) {
            errors.push(FieldError::invalid(
                format!("spec.finalizers[{i}]"),
                json!(text),
                problem,
            ));
        }
    }
    if !errors.is_empty() {
        return Err(super::invalid(info, name, &errors));
    }
    let key = api.key(target, name);
    let obj = modify(api, info, &key, name, dry, |current| {
        let mut next = current.clone();
        crate::registry::set_at(&mut next, "/spec/finalizers", json!(finalizers));
        Ok(next)
    })
    .await?;
    // The last finalizer of a terminating namespace is gone: it goes now.
    if !dry && super::ready_to_go(info, &obj) {
        let revision = str_at(&obj, "/metadata/resourceVersion").parse().ok();
        match api.objects.store().delete(&key, revision).await {
            Ok(_) | Err(StoreError::NotFound { .. }) | Err(StoreError::Conflict { .. }) => {}
            Err(e) => return Err(internal(e)),
        }
    }
    Ok(negotiate::respond(StatusCode::OK, &obj, accept))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_print_as_upstream_formats_them() {
        assert_eq!(
            selector_string(Some(&json!({"matchLabels": {"b": "2", "a": "1"},
                "matchExpressions": [{"key": "t", "operator": "In", "values": ["y", "x"]},
                                     {"key": "g", "operator": "DoesNotExist"}]}))),
            "!g,a=1,b=2,t in (x,y)"
        );
        assert_eq!(selector_string(Some(&json!({"app": "web"}))), "app=web");
        assert_eq!(selector_string(None), "");
    }

    #[test]
    fn scale_shows_replicas_and_selector() {
        let d = json!({"metadata": {"name": "web", "namespace": "d", "uid": "u",
            "resourceVersion": "5"}, "spec": {"replicas": 3,
            "selector": {"matchLabels": {"app": "web"}}}, "status": {"replicas": 2}});
        let s = scale_of(
            crate::registry::catalog::find("apps", "v1", "deployments").unwrap(),
            &d,
        );
        assert_eq!(s["spec"]["replicas"], 3);
        assert_eq!(s["status"], json!({"replicas": 2, "selector": "app=web"}));
        assert_eq!(s["metadata"]["resourceVersion"], "5");
    }
}
