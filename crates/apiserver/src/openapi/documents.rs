//! Rendering the OpenAPI documents: `/openapi/v2` (Swagger 2.0, every definition and path) and
//! one OpenAPI 3.0 document per group-version (`/openapi/v3/apis/apps/v1`), with the paths and
//! operations of the served resources.
//!
//! Clients read more than the schemas: `kubectl explain` finds a resource's kind through the
//! `x-kubernetes-group-version-kind` of its operations, and kubectl decides whether the server
//! validates fields (`fieldValidation` parameter on PATCH) and accepts strategic merge patch
//! (the PATCH request body's content types) from the v3 operations.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use super::model::{GroupVersionKind, Schemas, ext, ref_target};

/// The Kubernetes version the documents name (k8s-openapi's `latest` feature).
pub const KUBERNETES_VERSION: &str = "v1.37.0";

const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
const INT_OR_STRING: &str = "io.k8s.apimachinery.pkg.util.intstr.IntOrString";

/// A resource the server serves, as the documents need to know it. The apiserver builds these
/// from its resource catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedResource {
    /// API group (`""` for core).
    pub group: String,
    /// Version within the group.
    pub version: String,
    /// Kind of the objects (`Deployment`).
    pub kind: String,
    /// Plural resource name in URLs (`deployments`).
    pub plural: String,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Verbs as discovery lists them: get, list, watch, create, update, patch, delete,
    /// deletecollection.
    pub verbs: Vec<String>,
    /// Subresources such as `status` and `scale`.
    pub subresources: Vec<ServedSubresource>,
    /// Whether PATCH accepts `application/strategic-merge-patch+json` (built-ins yes, custom
    /// resources no, as upstream).
    pub strategic_merge_patch: bool,
}

/// A subresource (`deployments/status`, `deployments/scale`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedSubresource {
    /// Name after the object name in the URL (`status`).
    pub name: String,
    /// The kind its requests and responses carry (the parent's for `status`,
    /// `autoscaling/v1` `Scale` for `scale`).
    pub kind: GroupVersionKind,
    /// Verbs (get, update, patch; create for `binding`/`eviction`).
    pub verbs: Vec<String>,
}

impl ServedResource {
    fn gvk(&self) -> GroupVersionKind {
        GroupVersionKind::new(&self.group, &self.version, &self.kind)
    }

    fn has(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }

    /// `api/v1` or `apis/<group>/<version>`: the key of the v3 index.
    pub fn group_version_path(&self) -> String {
        group_version_path(&self.group, &self.version)
    }
}

/// `api/v1` or `apis/<group>/<version>`.
pub fn group_version_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// Which OpenAPI dialect to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    V2,
    V3,
}

/// The Swagger 2.0 document: every definition, every served path.
pub fn render_v2(schemas: &Schemas, resources: &[ServedResource]) -> Value {
    let mut paths = Map::new();
    for r in resources {
        add_paths(&mut paths, schemas, r, Dialect::V2);
    }
    let definitions: Map<String, Value> = schemas
        .iter()
        .map(|(name, schema)| (name.to_owned(), convert(schema, Dialect::V2, name)))
        .collect();
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
        "paths": paths,
        "definitions": definitions,
        "securityDefinitions": {"BearerToken": {
            "type": "apiKey", "name": "authorization", "in": "header",
            "description": "Bearer token authentication",
        }},
        "security": [{"BearerToken": []}],
    })
}

/// The OpenAPI 3.0 documents, one per group-version path (`apis/apps/v1`), each with the
/// definitions its resources reach.
pub fn render_v3(schemas: &Schemas, resources: &[ServedResource]) -> BTreeMap<String, Value> {
    let mut by_gv: BTreeMap<String, Vec<&ServedResource>> = BTreeMap::new();
    for r in resources {
        by_gv.entry(r.group_version_path()).or_default().push(r);
    }
    by_gv
        .into_iter()
        .map(|(gv, rs)| {
            let mut paths = Map::new();
            let mut roots = BTreeSet::new();
            for r in &rs {
                add_paths(&mut paths, schemas, r, Dialect::V3);
                roots.extend(definitions_named_by(schemas, r));
            }
            let components: Map<String, Value> = reachable(schemas, roots)
                .into_iter()
                .filter_map(|name| {
                    let schema = schemas.raw(&name)?;
                    let converted = convert(schema, Dialect::V3, &name);
                    Some((name, converted))
                })
                .collect();
            let doc = json!({
                "openapi": "3.0.0",
                "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
                "paths": paths,
                "components": {
                    "schemas": components,
                    "securitySchemes": {"BearerToken": {
                        "type": "apiKey", "name": "authorization", "in": "header",
                        "description": "Bearer token authentication",
                    }},
                },
                "security": [{"BearerToken": []}],
            });
            (gv, doc)
        })
        .collect()
}

/// The definitions a resource's operations name directly.
fn definitions_named_by(schemas: &Schemas, r: &ServedResource) -> Vec<String> {
    let mut names = vec![
        STATUS.to_owned(),
        DELETE_OPTIONS.to_owned(),
        PATCH.to_owned(),
    ];
    if let Some(n) = schemas.name_for_kind(&r.gvk()) {
        names.push(n.to_owned());
    }
    let list = GroupVersionKind::new(&r.group, &r.version, &format!("{}List", r.kind));
    if let Some(n) = schemas.name_for_kind(&list) {
        names.push(n.to_owned());
    }
    for s in &r.subresources {
        if let Some(n) = schemas.name_for_kind(&s.kind) {
            names.push(n.to_owned());
        }
    }
    names
}

/// Every definition reachable through `$ref` from `roots`.
fn reachable(schemas: &Schemas, roots: BTreeSet<String>) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo: Vec<String> = roots.into_iter().collect();
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if let Some(schema) = schemas.raw(&name) {
            collect_refs(schema, &mut |r| {
                if !seen.contains(r) {
                    todo.push(r.to_owned());
                }
            });
        }
    }
    seen.retain(|n| schemas.raw(n).is_some());
    seen
}

fn collect_refs(value: &Value, found: &mut dyn FnMut(&str)) {
    match value {
        Value::Object(o) => {
            if let Some(t) = o.get("$ref").and_then(Value::as_str).and_then(ref_target) {
                found(t);
            }
            for v in o.values() {
                collect_refs(v, found);
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect_refs(v, found)),
        _ => {}
    }
}

/// Translates a stored schema into the dialect: reference prefix, `$ref` with siblings (v3
/// wraps the reference in `allOf` as OpenAPI 3.0 ignores siblings of `$ref`), and
/// int-or-string (v2: a string with format `int-or-string` for IntOrString, a plain string for
/// Quantity; v3: `anyOf` integer or string).
fn convert(value: &Value, dialect: Dialect, definition: &str) -> Value {
    let mut out = convert_node(value, dialect);
    if dialect == Dialect::V2
        && let Some(o) = out.as_object_mut()
        && o.remove(ext::INT_OR_STRING).is_some()
    {
        o.insert("type".into(), json!("string"));
        if definition == INT_OR_STRING {
            o.insert("format".into(), json!("int-or-string"));
        }
    }
    out
}

fn convert_node(value: &Value, dialect: Dialect) -> Value {
    match value {
        Value::Object(o) => {
            let mut out = Map::with_capacity(o.len() + 1);
            for (k, v) in o {
                let converted = match k.as_str() {
                    // Keys of these maps are names, not keywords.
                    "properties" | "definitions" => match v {
                        Value::Object(props) => Value::Object(
                            props
                                .iter()
                                .map(|(pk, pv)| (pk.clone(), convert_node(pv, dialect)))
                                .collect(),
                        ),
                        other => other.clone(),
                    },
                    "$ref" => match (dialect, v.as_str().and_then(ref_target)) {
                        (Dialect::V3, Some(t)) => json!(format!("#/components/schemas/{t}")),
                        (Dialect::V2, Some(t)) => json!(format!("#/definitions/{t}")),
                        _ => v.clone(),
                    },
                    _ => convert_node(v, dialect),
                };
                out.insert(k.clone(), converted);
            }
            if dialect == Dialect::V3 {
                if out.len() > 1
                    && let Some(r) = out.remove("$ref")
                {
                    out.insert("allOf".into(), json!([{"$ref": r}]));
                }
                if out.get(ext::INT_OR_STRING) == Some(&json!(true)) && !out.contains_key("anyOf") {
                    out.insert(
                        "anyOf".into(),
                        json!([{"type": "integer"}, {"type": "string"}]),
                    );
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(|v| convert_node(v, dialect)).collect()),
        other => other.clone(),
    }
}

/// `Apps`, `Core`, `RbacAuthorization`, `StableExampleCom`: the group as operation ids spell it.
fn group_token(group: &str) -> String {
    if group.is_empty() {
        return "Core".into();
    }
    let trimmed = group.strip_suffix(".k8s.io").unwrap_or(group);
    trimmed
        .split(['.', '-'])
        .map(|part| {
            let mut c = part.chars();
            match c.next() {
                Some(f) => f.to_uppercase().chain(c).collect::<String>(),
                None => String::new(),
            }
        })
        .collect()
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn add_paths(paths: &mut Map<String, Value>, schemas: &Schemas, r: &ServedResource, d: Dialect) {
    let prefix = format!("/{}", r.group_version_path());
    let op_prefix = format!("{}{}", group_token(&r.group), capitalize(&r.version));
    let scope = if r.namespaced { "Namespaced" } else { "" };
    let collection = if r.namespaced {
        format!("{prefix}/namespaces/{{namespace}}/{}", r.plural)
    } else {
        format!("{prefix}/{}", r.plural)
    };
    let item = format!("{collection}/{{name}}");
    let kind_ref = schemas.name_for_kind(&r.gvk()).map(str::to_owned);
    let list_ref = schemas
        .name_for_kind(&GroupVersionKind::new(
            &r.group,
            &r.version,
            &format!("{}List", r.kind),
        ))
        .map(str::to_owned);
    let gvk = r.gvk();
    let ctx = OpContext {
        dialect: d,
        gvk: &gvk,
        tag: format!("{}_{}", group_token(&r.group).to_lowercase(), r.version),
    };

    let mut coll_ops = Map::new();
    if r.has("list") {
        coll_ops.insert(
            "get".into(),
            ctx.op(
                format!("list{op_prefix}{scope}{}", r.kind),
                format!("list or watch objects of kind {}", r.kind),
                "list",
                list_params(),
                None,
                list_ref.as_deref(),
            ),
        );
    }
    if r.has("create") {
        coll_ops.insert(
            "post".into(),
            ctx.op(
                format!("create{op_prefix}{scope}{}", r.kind),
                format!("create a {}", r.kind),
                "post",
                write_params(false),
                Some(Body::Object(kind_ref.as_deref())),
                kind_ref.as_deref(),
            ),
        );
    }
    if r.has("deletecollection") {
        let mut params = list_params();
        params.extend(delete_params());
        coll_ops.insert(
            "delete".into(),
            ctx.op(
                format!("delete{op_prefix}Collection{scope}{}", r.kind),
                format!("delete collection of {}", r.kind),
                "deletecollection",
                params,
                Some(Body::Object(Some(DELETE_OPTIONS))),
                Some(STATUS),
            ),
        );
    }
    if !coll_ops.is_empty() {
        coll_ops.insert("parameters".into(), path_params(d, r.namespaced, false));
        paths.insert(collection.clone(), Value::Object(coll_ops));
    }

    let mut item_ops = Map::new();
    if r.has("get") {
        item_ops.insert(
            "get".into(),
            ctx.op(
                format!("read{op_prefix}{scope}{}", r.kind),
                format!("read the specified {}", r.kind),
                "get",
                Vec::new(),
                None,
                kind_ref.as_deref(),
            ),
        );
    }
    if r.has("update") {
        item_ops.insert(
            "put".into(),
            ctx.op(
                format!("replace{op_prefix}{scope}{}", r.kind),
                format!("replace the specified {}", r.kind),
                "put",
                write_params(false),
                Some(Body::Object(kind_ref.as_deref())),
                kind_ref.as_deref(),
            ),
        );
    }
    if r.has("patch") {
        item_ops.insert(
            "patch".into(),
            ctx.op(
                format!("patch{op_prefix}{scope}{}", r.kind),
                format!("partially update the specified {}", r.kind),
                "patch",
                write_params(true),
                Some(Body::Patch(r.strategic_merge_patch)),
                kind_ref.as_deref(),
            ),
        );
    }
    if r.has("delete") {
        item_ops.insert(
            "delete".into(),
            ctx.op(
                format!("delete{op_prefix}{scope}{}", r.kind),
                format!("delete a {}", r.kind),
                "delete",
                delete_params(),
                Some(Body::Object(Some(DELETE_OPTIONS))),
                Some(STATUS),
            ),
        );
    }
    if !item_ops.is_empty() {
        item_ops.insert("parameters".into(), path_params(d, r.namespaced, true));
        paths.insert(item.clone(), Value::Object(item_ops));
    }

    if r.namespaced && r.has("list") {
        let mut all_ops = Map::new();
        all_ops.insert(
            "get".into(),
            ctx.op(
                format!("list{op_prefix}{}ForAllNamespaces", r.kind),
                format!("list or watch objects of kind {}", r.kind),
                "list",
                list_params(),
                None,
                list_ref.as_deref(),
            ),
        );
        all_ops.insert(
            "parameters".into(),
            json!([param(
                d,
                "pretty",
                "query",
                false,
                "string",
                "If 'true', then the output is pretty printed."
            )]),
        );
        paths.insert(format!("{prefix}/{}", r.plural), Value::Object(all_ops));
    }

    for sub in &r.subresources {
        let sub_ref = schemas.name_for_kind(&sub.kind).map(str::to_owned);
        let sub_ctx = OpContext {
            dialect: d,
            gvk: &sub.kind,
            tag: ctx.tag.clone(),
        };
        let suffix = capitalize(&sub.name);
        let has = |v: &str| sub.verbs.iter().any(|x| x == v);
        let mut ops = Map::new();
        if has("get") {
            ops.insert(
                "get".into(),
                sub_ctx.op(
                    format!("read{op_prefix}{scope}{}{suffix}", r.kind),
                    format!("read {} of the specified {}", sub.name, r.kind),
                    "get",
                    Vec::new(),
                    None,
                    sub_ref.as_deref(),
                ),
            );
        }
        if has("create") {
            ops.insert(
                "post".into(),
                sub_ctx.op(
                    format!("create{op_prefix}{scope}{}{suffix}", r.kind),
                    format!("create {} of a {}", sub.name, r.kind),
                    "post",
                    write_params(false),
                    Some(Body::Object(sub_ref.as_deref())),
                    sub_ref.as_deref(),
                ),
            );
        }
        if has("update") {
            ops.insert(
                "put".into(),
                sub_ctx.op(
                    format!("replace{op_prefix}{scope}{}{suffix}", r.kind),
                    format!("replace {} of the specified {}", sub.name, r.kind),
                    "put",
                    write_params(false),
                    Some(Body::Object(sub_ref.as_deref())),
                    sub_ref.as_deref(),
                ),
            );
        }
        if has("patch") {
            ops.insert(
                "patch".into(),
                sub_ctx.op(
                    format!("patch{op_prefix}{scope}{}{suffix}", r.kind),
                    format!("partially update {} of the specified {}", sub.name, r.kind),
                    "patch",
                    write_params(true),
                    Some(Body::Patch(r.strategic_merge_patch)),
                    sub_ref.as_deref(),
                ),
            );
        }
        if !ops.is_empty() {
            ops.insert("parameters".into(), path_params(d, r.namespaced, true));
            paths.insert(format!("{item}/{}", sub.name), Value::Object(ops));
        }
    }
}

/// What a request body is.
enum Body<'a> {
    /// An object of this definition (or anything, when unknown).
    Object(Option<&'a str>),
    /// A patch; whether strategic merge patch is accepted.
    Patch(bool),
}

struct OpContext<'a> {
    dialect: Dialect,
    gvk: &'a GroupVersionKind,
    tag: String,
}

/// A query parameter: (name, type, description).
type Param = (&'static str, &'static str, &'static str);

impl OpContext<'_> {
    fn op(
        &self,
        id: String,
        description: String,
        action: &str,
        params: Vec<Param>,
        body: Option<Body<'_>>,
        response: Option<&str>,
    ) -> Value {
        let d = self.dialect;
        let mut op = Map::new();
        op.insert("description".into(), json!(description));
        op.insert("operationId".into(), json!(id));
        op.insert("tags".into(), json!([self.tag]));
        let mut parameters: Vec<Value> = params
            .iter()
            .map(|(name, ty, desc)| param(d, name, "query", false, ty, desc))
            .collect();
        let response_schema = match response {
            Some(r) => json!({"$ref": schema_ref(d, r)}),
            None => json!({"type": "object"}),
        };
        if let Some(body) = &body {
            let (types, schema): (Vec<&str>, Value) = match body {
                Body::Object(def) => (
                    vec!["application/json", "application/yaml"],
                    match def {
                        Some(r) => json!({"$ref": schema_ref(d, r)}),
                        None => json!({"type": "object"}),
                    },
                ),
                Body::Patch(smp) => {
                    let mut t = vec![
                        "application/json-patch+json",
                        "application/merge-patch+json",
                    ];
                    if *smp {
                        t.push("application/strategic-merge-patch+json");
                    }
                    t.push("application/apply-patch+yaml");
                    (t, json!({"$ref": schema_ref(d, PATCH)}))
                }
            };
            match d {
                Dialect::V2 => {
                    op.insert("consumes".into(), json!(types));
                    parameters.push(
                        json!({"name": "body", "in": "body", "required": true, "schema": schema}),
                    );
                }
                Dialect::V3 => {
                    let content: Map<String, Value> = types
                        .iter()
                        .map(|t| ((*t).to_owned(), json!({"schema": schema})))
                        .collect();
                    op.insert(
                        "requestBody".into(),
                        json!({"content": content, "required": true}),
                    );
                }
            }
        }
        if !parameters.is_empty() {
            op.insert("parameters".into(), Value::Array(parameters));
        }
        let produces = ["application/json", "application/yaml"];
        match d {
            Dialect::V2 => {
                op.insert("produces".into(), json!(produces));
                op.insert("schemes".into(), json!(["https"]));
                op.insert(
                    "responses".into(),
                    json!({
                        "200": {"description": "OK", "schema": response_schema},
                        "401": {"description": "Unauthorized"},
                    }),
                );
            }
            Dialect::V3 => {
                let content: Map<String, Value> = produces
                    .iter()
                    .map(|t| ((*t).to_owned(), json!({"schema": response_schema})))
                    .collect();
                op.insert(
                    "responses".into(),
                    json!({
                        "200": {"description": "OK", "content": content},
                        "401": {"description": "Unauthorized"},
                    }),
                );
            }
        }
        op.insert("x-kubernetes-action".into(), json!(action));
        op.insert(
            ext::GVK.into(),
            json!({"group": self.gvk.group, "version": self.gvk.version, "kind": self.gvk.kind}),
        );
        Value::Object(op)
    }
}

fn schema_ref(d: Dialect, name: &str) -> String {
    match d {
        Dialect::V2 => format!("#/definitions/{name}"),
        Dialect::V3 => format!("#/components/schemas/{name}"),
    }
}

fn param(d: Dialect, name: &str, location: &str, required: bool, ty: &str, desc: &str) -> Value {
    let mut p = json!({"name": name, "in": location, "description": desc});
    if required {
        p["required"] = json!(true);
    }
    match d {
        Dialect::V2 => p["type"] = json!(ty),
        Dialect::V3 => p["schema"] = json!({"type": ty, "uniqueItems": true}),
    }
    p
}

fn path_params(d: Dialect, namespaced: bool, named: bool) -> Value {
    let mut ps = Vec::new();
    if named {
        ps.push(param(
            d,
            "name",
            "path",
            true,
            "string",
            "name of the object",
        ));
    }
    if namespaced {
        ps.push(param(
            d,
            "namespace",
            "path",
            true,
            "string",
            "object name and auth scope, such as for teams and projects",
        ));
    }
    ps.push(param(
        d,
        "pretty",
        "query",
        false,
        "string",
        "If 'true', then the output is pretty printed.",
    ));
    Value::Array(ps)
}

fn list_params() -> Vec<Param> {
    vec![
        (
            "allowWatchBookmarks",
            "boolean",
            "Ask for BOOKMARK events on a watch; the server may send them.",
        ),
        (
            "continue",
            "string",
            "The continue token of the previous page of a paginated list.",
        ),
        (
            "fieldSelector",
            "string",
            "Restrict the objects returned by their fields.",
        ),
        (
            "labelSelector",
            "string",
            "Restrict the objects returned by their labels.",
        ),
        (
            "limit",
            "integer",
            "The most objects to return in one page.",
        ),
        (
            "resourceVersion",
            "string",
            "Which resource version the list or watch must be served at or after.",
        ),
        (
            "resourceVersionMatch",
            "string",
            "How resourceVersion applies to a list: Exact or NotOlderThan.",
        ),
        (
            "sendInitialEvents",
            "boolean",
            "Begin a watch with synthetic ADDED events for the current state.",
        ),
        (
            "timeoutSeconds",
            "integer",
            "End the list or watch call after this many seconds.",
        ),
        (
            "watch",
            "boolean",
            "Watch for changes and stream them as add, update and remove events.",
        ),
    ]
}

fn write_params(patch: bool) -> Vec<Param> {
    let mut p = vec![
        (
            "dryRun",
            "string",
            "When present (All), the change is checked but not persisted.",
        ),
        (
            "fieldManager",
            "string",
            "The name of the actor making the change, recorded in managedFields.",
        ),
        (
            "fieldValidation",
            "string",
            "What to do with unknown or duplicate fields: Ignore, Warn or Strict.",
        ),
    ];
    if patch {
        p.push((
            "force",
            "boolean",
            "Apply requests take fields that other managers own.",
        ));
    }
    p
}

fn delete_params() -> Vec<Param> {
    vec![
        (
            "dryRun",
            "string",
            "When present (All), the deletion is checked but not persisted.",
        ),
        (
            "gracePeriodSeconds",
            "integer",
            "Seconds before the object is deleted; 0 deletes at once.",
        ),
        (
            "orphanDependents",
            "boolean",
            "Deprecated: use propagationPolicy.",
        ),
        (
            "propagationPolicy",
            "string",
            "Whether and how dependents are garbage collected: Orphan, Background or Foreground.",
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn deployments() -> ServedResource {
        ServedResource {
            group: "apps".into(),
            version: "v1".into(),
            kind: "Deployment".into(),
            plural: "deployments".into(),
            namespaced: true,
            verbs: [
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ]
            .map(String::from)
            .to_vec(),
            subresources: vec![
                ServedSubresource {
                    name: "status".into(),
                    kind: GroupVersionKind::new("apps", "v1", "Deployment"),
                    verbs: ["get", "patch", "update"].map(String::from).to_vec(),
                },
                ServedSubresource {
                    name: "scale".into(),
                    kind: GroupVersionKind::new("autoscaling", "v1", "Scale"),
                    verbs: ["get", "patch", "update"].map(String::from).to_vec(),
                },
            ],
            strategic_merge_patch: true,
        }
    }

    fn namespaces() -> ServedResource {
        ServedResource {
            group: String::new(),
            version: "v1".into(),
            kind: "Namespace".into(),
            plural: "namespaces".into(),
            namespaced: false,
            verbs: [
                "create", "delete", "get", "list", "patch", "update", "watch",
            ]
            .map(String::from)
            .to_vec(),
            subresources: Vec::new(),
            strategic_merge_patch: true,
        }
    }

    #[test]
    fn v3_document_has_paths_kubectl_finds_the_kind_through() {
        let schemas = Schemas::builtin();
        let docs = render_v3(&schemas, &[deployments(), namespaces()]);
        assert_eq!(
            docs.keys().collect::<Vec<_>>(),
            vec!["api/v1", "apis/apps/v1"]
        );
        let apps = &docs["apis/apps/v1"];
        let item = &apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"];
        assert_eq!(
            item["get"]["x-kubernetes-group-version-kind"]["kind"],
            "Deployment"
        );
        assert_eq!(item["get"]["operationId"], "readAppsV1NamespacedDeployment");
        let patch = &item["patch"];
        assert!(
            patch["requestBody"]["content"]["application/strategic-merge-patch+json"].is_object()
        );
        let params: Vec<&str> = patch["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert!(params.contains(&"fieldValidation"));
        let scale = &apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"];
        assert_eq!(
            scale["put"]["x-kubernetes-group-version-kind"]["kind"],
            "Scale"
        );
        let schemas_doc = &apps["components"]["schemas"];
        let deployment = &schemas_doc["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(
            deployment["x-kubernetes-group-version-kind"][0]["kind"],
            "Deployment"
        );
        // v3 wraps references that carry a description.
        assert_eq!(
            deployment["properties"]["spec"]["allOf"][0]["$ref"],
            "#/components/schemas/io.k8s.api.apps.v1.DeploymentSpec"
        );
        assert!(deployment["properties"]["spec"]["description"].is_string());
        // Everything referenced is present.
        assert!(schemas_doc["io.k8s.api.core.v1.PodSpec"].is_object());
        assert!(schemas_doc["io.k8s.api.autoscaling.v1.Scale"].is_object());
        let ios = &schemas_doc["io.k8s.apimachinery.pkg.util.intstr.IntOrString"];
        assert_eq!(ios["anyOf"][0]["type"], "integer");
        // ... and nothing from other groups that is not referenced.
        assert!(schemas_doc.get("io.k8s.api.batch.v1.Job").is_none());
        let core = &docs["api/v1"];
        assert_eq!(
            core["paths"]["/api/v1/namespaces"]["get"]["operationId"],
            "listCoreV1Namespace"
        );
    }

    #[test]
    fn v2_document_uses_definitions_and_string_int_or_string() {
        let schemas = Schemas::builtin();
        let doc = render_v2(&schemas, &[deployments()]);
        assert_eq!(doc["swagger"], "2.0");
        let ios = &doc["definitions"]["io.k8s.apimachinery.pkg.util.intstr.IntOrString"];
        assert_eq!(ios["type"], "string");
        assert_eq!(ios["format"], "int-or-string");
        let spec = &doc["definitions"]["io.k8s.api.apps.v1.Deployment"]["properties"]["spec"];
        assert_eq!(
            spec["$ref"],
            "#/definitions/io.k8s.api.apps.v1.DeploymentSpec"
        );
        let post = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments"]["post"];
        assert_eq!(
            post["parameters"].as_array().unwrap().last().unwrap()["in"],
            "body"
        );
        assert!(doc["definitions"]["io.k8s.api.apps.v1.DeploymentList"].is_object());
    }

    #[test]
    fn custom_resources_do_not_offer_strategic_merge_patch() {
        let schemas = Schemas::builtin();
        let mut r = deployments();
        r.strategic_merge_patch = false;
        let docs = render_v3(&schemas, &[r]);
        let patch = &docs["apis/apps/v1"]["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]
            ["patch"];
        assert!(
            patch["requestBody"]["content"]
                .get("application/strategic-merge-patch+json")
                .is_none()
        );
        assert!(patch["requestBody"]["content"]["application/merge-patch+json"].is_object());
    }

    #[test]
    fn group_tokens_are_spelled_as_operation_ids_spell_them() {
        assert_eq!(group_token(""), "Core");
        assert_eq!(
            group_token("rbac.authorization.k8s.io"),
            "RbacAuthorization"
        );
        assert_eq!(group_token("stable.example.com"), "StableExampleCom");
    }
}
