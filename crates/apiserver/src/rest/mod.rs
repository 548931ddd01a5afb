//! The REST API for resources: `/api/v1/...` and `/apis/<group>/<version>/...`, namespaced and
//! cluster-scoped, with get, list, watch, create, update, patch, delete and deletecollection.
//!
//! One generic path serves every resource: it parses the URL into a [`Target`], negotiates the
//! representation ([`negotiate`]), and runs the verb, calling the resource's
//! [`Strategy`](crate::registry::Strategy) for defaults, validation and what may change, and the
//! shared metadata rules ([`crate::registry::meta`]). Reads go through [`storage::Objects`];
//! watches are in [`watch`]. Start at [`serve`].

pub mod cache;
pub mod hooks;
pub mod negotiate;
pub mod pagination;
pub mod render;
pub mod selector;
pub mod storage;
pub mod subresource;
pub mod watch;

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use rkube_store::{Error as StoreError, Revision};
use serde_json::{Value, json};

use crate::registry::validation::{FieldError, aggregate};
use crate::registry::{ResourceInfo, catalog, meta, str_at};
use crate::status::ApiError;
use negotiate::Accept;
use render::IncludeObject;
use selector::{FieldSelector, LabelSelector};
use storage::{Objects, internal};

/// The largest request body accepted (upstream's limit).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// The namespaces that exist from the start, as upstream creates them.
pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

/// How often a write retries when another write raced it and the client gave no
/// `resourceVersion` (so it asked for last-writer-wins).
const WRITE_ATTEMPTS: usize = 8;

/// A request for a resource, parsed from its URL.
#[derive(Debug)]
pub struct Target {
    /// The resource.
    pub info: &'static ResourceInfo,
    /// The namespace from the URL.
    pub namespace: Option<String>,
    /// The object name from the URL.
    pub name: Option<String>,
    /// The subresource from the URL.
    pub subresource: Option<String>,
    /// Whether the path had the legacy `/watch/` prefix.
    pub watch_path: bool,
}

/// What a `/api` or `/apis` URL names.
pub enum Route {
    /// A discovery document.
    Discovery(crate::discovery::Doc),
    /// A resource.
    Resource(Target),
}

/// Parses a path under `/api` or `/apis`.
pub fn route(path: &str) -> Result<Route, ApiError> {
    use crate::discovery::Doc;
    let not_found = || ApiError::not_served(path);
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    if segments.iter().any(|s| s.is_empty()) {
        return Err(not_found());
    }
    let (group, version, rest) = match segments.as_slice() {
        ["api"] => return Ok(Route::Discovery(Doc::CoreVersions)),
        ["apis"] => return Ok(Route::Discovery(Doc::Groups)),
        ["apis", group] => return Ok(Route::Discovery(Doc::Group((*group).to_owned()))),
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(not_found()),
    };
    if !catalog::groups()
        .iter()
        .any(|(g, vs)| *g == group && vs.contains(&version))
    {
        return Err(not_found());
    }
    if rest.is_empty() {
        return Ok(Route::Discovery(Doc::Resources(
            group.to_owned(),
            version.to_owned(),
        )));
    }
    let (watch_path, rest) = match rest {
        ["watch", rest @ ..] => (true, rest),
        rest => (false, rest),
    };
    let (namespace, resource, name, sub) = match rest {
        ["namespaces", ns, sub @ ("status" | "finalize")] if group.is_empty() => {
            (None, "namespaces", Some(*ns), Some(*sub))
        }
        ["namespaces", ns, resource, tail @ ..] if tail.len() <= 2 => (
            Some(*ns),
            *resource,
            tail.first().copied(),
            tail.get(1).copied(),
        ),
        [resource, tail @ ..] if tail.len() <= 2 => {
            (None, *resource, tail.first().copied(), tail.get(1).copied())
        }
        _ => return Err(not_found()),
    };
    let info = catalog::find(group, version, resource).ok_or_else(not_found)?;
    if namespace.is_some() && !info.namespaced {
        return Err(not_found());
    }
    if info.namespaced && namespace.is_none() && name.is_some() {
        return Err(not_found());
    }
    if let Some(sub) = sub
        && info.subresource(sub).is_none()
    {
        return Err(not_found());
    }
    Ok(Route::Resource(Target {
        info,
        namespace: namespace.map(str::to_owned),
        name: name.map(str::to_owned),
        subresource: sub.map(str::to_owned),
        watch_path,
    }))
}

/// Query parameters (the last of repeated ones wins, as Go's `Get` takes the first... either
/// way clients send each once).
pub type Query = HashMap<String, String>;

fn parse_query(uri: &axum::http::Uri) -> Query {
    uri.query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

fn flag(query: &Query, name: &str) -> bool {
    matches!(
        query.get(name).map(String::as_str),
        Some("1" | "true" | "True")
    )
}

/// Serves one request under `/api` or `/apis`.
pub async fn serve(objects: &Objects, request: Request) -> Response {
    serve_with_hooks(objects, &hooks::Hooks::none(), request).await
}

/// [`serve`] with the store hooks of the resources that have them (Service IPs).
pub async fn serve_with_hooks(
    objects: &Objects,
    hooks: &hooks::Hooks,
    request: Request,
) -> Response {
    // The body is read before anything else: a request answered early (404, 405, 501, ...) with
    // its body unread gets its HTTP/2 stream reset, and clients then report a framing error
    // instead of our Status.
    let (parts, body) = request.into_parts();
    let body = match read_body(&parts.headers, body).await {
        Ok(body) => body,
        Err(error) => return error.into_response(),
    };
    let request = Request::from_parts(parts, Body::from(body));
    match serve_inner(objects, hooks, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn serve_inner(
    objects: &Objects,
    hooks: &hooks::Hooks,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let route = route(parts.uri.path())?;
    let accept = Accept::from_headers(&parts.headers)?;
    let query = parse_query(&parts.uri);
    let target = match route {
        Route::Discovery(doc) => {
            if parts.method != Method::GET {
                return Err(ApiError::method_not_allowed());
            }
            return crate::discovery::serve(doc, accept, &parts.headers);
        }
        Route::Resource(target) => target,
    };
    let verb = verb(&parts.method, &target, &query)?;
    let info = target.info;
    let allowed = match &target.subresource {
        None => info.allows(verb),
        Some(sub) => info.subresource(sub).is_some_and(|s| {
            s.verbs.contains(&verb) || (verb == "create" && s.verbs.contains(&"create"))
        }),
    };
    if !allowed {
        return Err(ApiError::method_not_allowed());
    }
    let api = Api { objects, hooks };
    if target.subresource.as_deref().is_some_and(|s| s != "status") {
        return subresource::serve(&api, &target, verb, &query, &parts.headers, body, accept).await;
    }
    match verb {
        "get" => api.get(&target, &query, accept).await,
        "list" => api.list(&target, &query, accept).await,
        "watch" => watch::serve(objects, &target, &query, accept).await,
        "create" => {
            let body = read_body(&parts.headers, body).await?;
            api.create(&target, &query, &parts.headers, &body, accept)
                .await
        }
        "update" => {
            let body = read_body(&parts.headers, body).await?;
            api.update(&target, &query, &parts.headers, &body, accept)
                .await
        }
        "patch" => {
            let body = read_body(&parts.headers, body).await?;
            api.patch(&target, &query, &parts.headers, &body, accept)
                .await
        }
        "delete" => {
            let body =
                negotiate::json_body(&parts.headers, read_body(&parts.headers, body).await?)?;
            api.delete(&target, &query, &body, accept).await
        }
        "deletecollection" => {
            let body =
                negotiate::json_body(&parts.headers, read_body(&parts.headers, body).await?)?;
            api.delete_collection(&target, &query, &body, accept).await
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

fn verb(method: &Method, target: &Target, query: &Query) -> Result<&'static str, ApiError> {
    let named = target.name.is_some();
    let watching = target.watch_path || flag(query, "watch");
    Ok(match *method {
        Method::GET | Method::HEAD if watching => "watch",
        Method::GET | Method::HEAD if named => "get",
        Method::GET | Method::HEAD => "list",
        Method::POST if !named && target.namespace.is_some() == target.info.namespaced => "create",
        Method::POST if named && target.subresource.is_some() => "create",
        Method::PUT if named => "update",
        Method::PATCH if named => "patch",
        Method::DELETE if named && target.subresource.is_none() => "delete",
        Method::DELETE if !named => "deletecollection",
        _ => return Err(ApiError::method_not_allowed()),
    })
}

/// Reads a body of at most [`MAX_BODY_BYTES`]; more is 413, as upstream.
async fn read_body(headers: &HeaderMap, body: Body) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {MAX_BODY_BYTES}"),
        )
    };
    // The body is drained (up to a bound) before answering 413: an HTTP/2 client whose upload is
    // cut short by a reset often never reads the answer.
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let mut too_big = announced.is_some_and(|len| len > MAX_BODY_BYTES);
    let mut stream = body.into_data_stream();
    let mut out = Vec::new();
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::bad_request(format!("reading the request body failed: {e}")))?;
        seen += chunk.len();
        if seen > MAX_BODY_BYTES {
            too_big = true;
            out = Vec::new();
        }
        if seen > 4 * MAX_BODY_BYTES {
            break;
        }
        if !too_big {
            out.extend_from_slice(&chunk);
        }
    }
    if too_big {
        return Err(too_large());
    }
    Ok(out)
}

/// How much of a streamed list goes out at a time.
const LIST_CHUNK: usize = 64 * 1024;

/// A JSON list answer (`head`, the items joined by commas, `]}`) written while it is sent, in
/// chunks of about [`LIST_CHUNK`]: the first bytes of a 10,000-object list leave at once and
/// encryption and sending overlap the rest, and the whole answer (36 MB for 10,000 pods) never
/// sits in memory at once.
fn stream_json_list(
    head: String,
    items: Vec<std::sync::Arc<cache::Cached>>,
    write: impl Fn(&cache::Cached, &mut Vec<u8>) + Send + 'static,
) -> Response {
    let mut head = Some(head.into_bytes());
    let mut items = items.into_iter();
    let mut first = true;
    let mut done = false;
    let chunks = std::iter::from_fn(move || {
        if done {
            return None;
        }
        let mut buf = head.take().unwrap_or_default();
        buf.reserve(LIST_CHUNK + 8 * 1024);
        while buf.len() < LIST_CHUNK {
            match items.next() {
                Some(obj) => {
                    if !first {
                        buf.push(b',');
                    }
                    first = false;
                    write(&obj, &mut buf);
                }
                None => {
                    buf.extend_from_slice(b"]}");
                    done = true;
                    break;
                }
            }
        }
        Some(Ok::<_, std::convert::Infallible>(bytes::Bytes::from(buf)))
    });
    let mut response = Response::new(Body::from_stream(futures::stream::iter(chunks)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    response
}

/// Whether the request asks for `dryRun=All` (anything else but empty is refused).
fn dry_run(query: &Query) -> Result<bool, ApiError> {
    match query.get("dryRun").map(String::as_str) {
        None | Some("") => Ok(false),
        Some("All") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "dryRun: Unsupported value: {other:?}: supported values: \"All\""
        ))),
    }
}

/// How a write through [`Api::write_value`] records its manager in `metadata.managedFields`
/// (writes the server makes on its own behalf, like bindings and finalize, keep them as stored).
#[derive(Clone, Debug)]
pub(crate) enum Recording {
    /// An update by `manager`, through `subresource` (`""`: the main resource).
    Update {
        /// The field manager.
        manager: String,
        /// The subresource written through.
        subresource: &'static str,
    },
    /// A server-side apply: the change itself computes managedFields; with `upsert` a missing
    /// object is created (apply to the resource upserts; through `/scale` it does not).
    Apply {
        /// Whether a missing object is created.
        upsert: bool,
    },
}

/// Upstream's checks of `PatchOptions`: `force` only on apply patches, `fieldManager` required
/// on them. Returns the field manager.
fn patch_options(query: &Query, headers: &HeaderMap, apply: bool) -> Result<String, ApiError> {
    if !apply && query.contains_key("force") {
        return Err(options_invalid(
            "PatchOptions",
            &[FieldError::forbidden(
                "force",
                "may not be specified for non-apply patch",
            )],
        ));
    }
    if apply && query.get("fieldManager").is_none_or(|m| m.is_empty()) {
        return Err(options_invalid(
            "PatchOptions",
            &[FieldError::required(
                "fieldManager",
                "is required for apply patch",
            )],
        ));
    }
    field_manager(query, headers, "PatchOptions")
}

/// The field manager of a write: `?fieldManager=`, else the User-Agent up to its first `/`
/// (upstream's default, so `kubectl/v1.33.0 ...` records `kubectl`). `options` names the
/// options kind in errors (`CreateOptions`, `UpdateOptions`, `PatchOptions`).
fn field_manager(query: &Query, headers: &HeaderMap, options: &str) -> Result<String, ApiError> {
    let given = query
        .get("fieldManager")
        .map(String::as_str)
        .unwrap_or_default();
    let mut errors = Vec::new();
    if given.len() > crate::patch::managedfields::MAX_MANAGER_LENGTH {
        errors.push(FieldError::too_long(
            "fieldManager",
            crate::patch::managedfields::MAX_MANAGER_LENGTH,
        ));
    }
    for (i, c) in given.char_indices() {
        if c.is_control() {
            errors.push(FieldError::invalid(
                "fieldManager",
                json!(given),
                format!("invalid character U+{:04X} (at position {i})", c as u32),
            ));
        }
    }
    if !errors.is_empty() {
        return Err(options_invalid(options, &errors));
    }
    if !given.is_empty() {
        return Ok(given.to_owned());
    }
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let mut name = agent.split('/').next().unwrap_or_default().to_owned();
    // Bounded like a given name, so a long User-Agent cannot bloat every object.
    while name.len() > crate::patch::managedfields::MAX_MANAGER_LENGTH {
        name.pop();
    }
    Ok(name)
}

/// 422 for invalid request options, as upstream: `PatchOptions.meta.k8s.io "" is invalid: ...`.
fn options_invalid(kind: &str, errors: &[FieldError]) -> ApiError {
    let causes: Vec<Value> = errors
        .iter()
        .map(|e| json!({"reason": e.kind.cause_reason(), "message": e.body(), "field": e.field}))
        .collect();
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        format!("{kind}.meta.k8s.io \"\" is invalid: {}", aggregate(errors)),
    )
    .with_details(json!({"group": "meta.k8s.io", "kind": kind, "causes": causes}))
}

/// What managedFields recording needs to know about a kind and a write, owned so a
/// [`crate::patch::managedfields::Context`] can borrow it.
struct FieldScope {
    schemas: std::sync::Arc<crate::openapi::Schemas>,
    gvk: crate::openapi::GroupVersionKind,
    api_version: String,
    subresource: &'static str,
    reset: crate::patch::managedfields::Reset,
    now: String,
}

impl FieldScope {
    fn new(objects: &Objects, info: &ResourceInfo, subresource: &'static str) -> Self {
        use crate::patch::managedfields::Reset;
        let reset = match subresource {
            "status" => Reset::AllButStatus,
            "" if info.strategy.has_status() => Reset::Status,
            _ => Reset::Nothing,
        };
        FieldScope {
            schemas: objects.openapi().schemas(),
            gvk: crate::openapi::GroupVersionKind::new(info.group, info.version, info.kind),
            api_version: info.api_version(),
            subresource,
            reset,
            now: meta::now(),
        }
    }

    fn context(&self) -> crate::patch::managedfields::Context<'_> {
        crate::patch::managedfields::Context {
            schema: self.schemas.for_kind(&self.gvk),
            api_version: &self.api_version,
            subresource: self.subresource,
            reset: self.reset,
            now: &self.now,
        }
    }

    /// Records an update from `live` (`None`: a create) to `new` in `new`'s managedFields.
    fn record(&self, live: Option<&Value>, new: &mut Value, manager: &str) {
        use crate::patch::managedfields;
        let mut managed = managedfields::for_update(new, live, !self.subresource.is_empty());
        let empty = json!({});
        managedfields::record_update(
            &mut managed,
            live.unwrap_or(&empty),
            new,
            manager,
            &self.context(),
        );
        managed.write_to(new);
    }
}

/// The 409 of an apply that conflicts, as upstream's `NewApplyConflict`.
fn apply_conflict(conflicts: &crate::patch::managedfields::Conflicts) -> ApiError {
    let causes: Vec<Value> = conflicts
        .causes()
        .into_iter()
        .map(|(message, field)| {
            json!({"reason": "FieldManagerConflict", "message": message, "field": field})
        })
        .collect();
    ApiError::new(StatusCode::CONFLICT, "Conflict", conflicts.message())
        .with_details(json!({"causes": causes}))
}

/// 422 for an invalid object, shaped as upstream's `NewInvalid`.
pub fn invalid(info: &ResourceInfo, name: &str, errors: &[FieldError]) -> ApiError {
    let causes: Vec<Value> = errors
        .iter()
        .map(|e| json!({"reason": e.kind.cause_reason(), "message": e.body(), "field": e.field}))
        .collect();
    let mut details = json!({"name": name, "kind": info.kind, "causes": causes});
    if !info.group.is_empty() {
        details["group"] = json!(info.group);
    }
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        format!(
            "{} {name:?} is invalid: {}",
            info.group_kind(),
            aggregate(errors)
        ),
    )
    .with_details(details)
}

fn not_found(info: &ResourceInfo, name: &str) -> ApiError {
    ApiError::not_found(info.group, info.plural, name)
}

fn conflict(info: &ResourceInfo, name: &str) -> ApiError {
    ApiError::conflict(
        info.group,
        info.plural,
        name,
        "the object has been modified; please apply your changes to the latest version and try again",
    )
}

fn parse_revision(rv: &str) -> Result<Revision, ApiError> {
    rv.parse::<Revision>()
        .ok()
        .filter(|r| *r >= 0)
        .ok_or_else(|| ApiError::bad_request(format!("invalid resource version: {rv:?}")))
}

/// Decodes a request body as an object (JSON, YAML or protobuf by `Content-Type`), checking its fields
/// against the kind's schema as `fieldValidation` asks (Strict by default, as upstream): unknown
/// fields are dropped (Ignore), dropped with a warning (Warn) or refused (Strict), and so are
/// duplicate fields. Returns the object and the warnings to send back.
fn read_object(
    objects: &Objects,
    info: &ResourceInfo,
    query: &Query,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Value, Vec<String>), ApiError> {
    use crate::fieldvalidation::{BodyFormat, FieldValidation, decode_and_validate};
    let format = negotiate::body_format(headers)?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    let mode = FieldValidation::parse(query.get("fieldValidation").map_or("", String::as_str))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let body_format = match format {
        negotiate::Format::Json => BodyFormat::Json,
        negotiate::Format::Yaml => {
            negotiate::check_yaml_nesting(body)?;
            BodyFormat::Yaml
        }
        // Protobuf has no unknown or duplicate fields to report: its decoder keeps only the
        // fields the kind's message declares.
        negotiate::Format::Protobuf => {
            return negotiate::decode(body, format).map(|obj| (obj, Vec::new()));
        }
    };
    let schemas = objects.openapi().schemas();
    let gvk = crate::openapi::GroupVersionKind::new(info.group, info.version, info.kind);
    match decode_and_validate(body, body_format, schemas.for_kind(&gvk), mode) {
        Ok(decoded) => {
            let warnings = decoded.warnings();
            Ok((decoded.object, warnings))
        }
        // A body that does not even decode gets the decoder's usual message.
        Err(crate::fieldvalidation::FieldValidationError::Decode(_)) => {
            negotiate::decode(body, format).map(|obj| (obj, Vec::new()))
        }
        // Upstream's words: `ConfigMap in version "v1" cannot be handled as a ConfigMap: strict
        // decoding error: unknown field "bogus"`.
        Err(err) => Err(ApiError::new(
            StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::BAD_REQUEST),
            "BadRequest",
            format!(
                "{} in version {:?} cannot be handled as a {}: {err}",
                info.kind, info.version, info.kind
            ),
        )),
    }
}

/// Decodes a request body as an object without field validation: for subresource bodies
/// (`Scale`, `Binding`, `Eviction`), whose kinds are not the resource's own.
fn read_plain_object(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    let format = negotiate::body_format(headers)?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    negotiate::decode(body, format)
}

/// Adds `Warning: 299 - "..."` headers, as upstream sends field-validation warnings.
fn with_warnings(mut response: Response, warnings: &[String]) -> Response {
    for warning in warnings {
        let text = format!("299 - {:?}", warning);
        if let Ok(value) = axum::http::HeaderValue::from_str(&text) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    response
}

fn shape_error(info: &ResourceInfo, detail: &str) -> ApiError {
    ApiError::bad_request(format!(
        "{} in version {:?} cannot be handled as a {}: {detail}",
        info.kind, info.version, info.kind
    ))
}

/// The create path every created object takes: shape, defaults, metadata, validation.
pub fn admit_create(info: &ResourceInfo, mut obj: Value) -> Result<Value, ApiError> {
    let strategy = info.strategy;
    strategy
        .check_shape(&obj)
        .map_err(|e| shape_error(info, &e))?;
    strategy.default(&mut obj);
    meta::prepare_for_create(&mut obj, strategy.uses_generation());
    if strategy.has_status()
        && let Some(map) = obj.as_object_mut()
    {
        map.remove("status");
    }
    strategy.prepare_for_create(&mut obj);
    let mut errors = meta::validate(&obj, info);
    errors.extend(strategy.validate(&obj));
    if !errors.is_empty() {
        return Err(invalid(info, str_at(&obj, "/metadata/name"), &errors));
    }
    Ok(obj)
}

/// The update path of the main resource.
pub fn admit_update(info: &ResourceInfo, mut new: Value, old: &Value) -> Result<Value, ApiError> {
    let strategy = info.strategy;
    strategy
        .check_shape(&new)
        .map_err(|e| shape_error(info, &e))?;
    strategy.default(&mut new);
    meta::prepare_for_update(&mut new, old, strategy.uses_generation());
    if strategy.has_status()
        && let Some(map) = new.as_object_mut()
    {
        match old.get("status") {
            Some(status) => map.insert("status".into(), status.clone()),
            None => map.remove("status"),
        };
    }
    strategy.prepare_for_update(&mut new, old);
    let mut errors = meta::validate(&new, info);
    errors.extend(meta::validate_update(&new, old));
    errors.extend(strategy.validate_update(&new, old));
    if !errors.is_empty() {
        return Err(invalid(info, str_at(&new, "/metadata/name"), &errors));
    }
    Ok(new)
}

/// The update path of `/status`: everything but `status` stays as stored.
fn admit_status_update(info: &ResourceInfo, new: Value, old: &Value) -> Result<Value, ApiError> {
    info.strategy
        .check_shape(&new)
        .map_err(|e| shape_error(info, &e))?;
    let uid = str_at(&new, "/metadata/uid");
    if !uid.is_empty() && uid != str_at(old, "/metadata/uid") {
        let errors = [FieldError::invalid(
            "metadata.uid",
            uid.into(),
            "field is immutable",
        )];
        return Err(invalid(info, str_at(old, "/metadata/name"), &errors));
    }
    let mut result = old.clone();
    match new.get("status") {
        Some(status) => result["status"] = status.clone(),
        None => {
            if let Some(map) = result.as_object_mut() {
                map.remove("status");
            }
        }
    }
    let errors = info.strategy.validate_status(&result);
    if !errors.is_empty() {
        return Err(invalid(info, str_at(old, "/metadata/name"), &errors));
    }
    Ok(result)
}

/// Equal but for `resourceVersion`: an update that changes nothing is not written.
fn same_object(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
        }
        v
    };
    strip(a) == strip(b)
}

/// Whether an object being deleted may go now: no `metadata.finalizers`, and for a namespace
/// no `spec.finalizers` either (the namespace controller's `kubernetes`, removed through
/// `namespaces/{name}/finalize` once the namespace is empty).
pub(crate) fn ready_to_go(info: &ResourceInfo, obj: &Value) -> bool {
    let deleting = obj
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null());
    let spec_finalizers = info.group.is_empty()
        && info.kind == "Namespace"
        && obj
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
    deleting
        && finalizers(obj).is_empty()
        && !spec_finalizers
        && obj
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            == 0
}

fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|f| {
            f.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Options of a delete, from the body (`DeleteOptions`) and the query.
#[derive(Default)]
struct DeleteOptions {
    grace: Option<i64>,
    propagation: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    dry_run: bool,
}

impl DeleteOptions {
    fn parse(query: &Query, body: &[u8]) -> Result<Self, ApiError> {
        let mut options = DeleteOptions {
            dry_run: dry_run(query)?,
            ..Default::default()
        };
        if !body.iter().all(u8::is_ascii_whitespace) {
            let v: Value = serde_json::from_slice(body)
                .or_else(|_| serde_yaml::from_slice(body))
                .map_err(|e| {
                    ApiError::bad_request(format!("the body is not DeleteOptions: {e}"))
                })?;
            options.grace = v.get("gracePeriodSeconds").and_then(Value::as_i64);
            options.propagation = v
                .get("propagationPolicy")
                .and_then(Value::as_str)
                .map(str::to_owned);
            if v.get("orphanDependents").and_then(Value::as_bool) == Some(true) {
                options.propagation = Some("Orphan".into());
            }
            options.uid = v
                .pointer("/preconditions/uid")
                .and_then(Value::as_str)
                .map(str::to_owned);
            options.resource_version = v
                .pointer("/preconditions/resourceVersion")
                .and_then(Value::as_str)
                .map(str::to_owned);
            if let Some(dry) = v.get("dryRun").and_then(Value::as_array) {
                for d in dry {
                    match d.as_str() {
                        Some("All") => options.dry_run = true,
                        other => {
                            return Err(ApiError::bad_request(format!(
                                "dryRun: Unsupported value: {:?}: supported values: \"All\"",
                                other.unwrap_or_default()
                            )));
                        }
                    }
                }
            }
        }
        if let Some(g) = query.get("gracePeriodSeconds") {
            options.grace = Some(g.parse().map_err(|_| {
                ApiError::bad_request(format!("gracePeriodSeconds: invalid value {g:?}"))
            })?);
        }
        if let Some(p) = query.get("propagationPolicy") {
            options.propagation = Some(p.clone());
        }
        match options.propagation.as_deref() {
            None | Some("Background" | "Orphan" | "Foreground") => {}
            Some(other) => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid",
                    format!(
                        "DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Unsupported value: {other:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
                    ),
                ));
            }
        }
        if options.grace.is_some_and(|g| g < 0) {
            options.grace = Some(0);
        }
        Ok(options)
    }
}

/// Outcome of one delete.
enum Deleted {
    /// Gone; the last state.
    Removed(Value),
    /// Still there (finalizers, grace period, namespace terminating); the new state.
    Pending(Value),
}

struct Api<'a> {
    objects: &'a Objects,
    hooks: &'a hooks::Hooks,
}

impl Api<'_> {
    fn key(&self, target: &Target, name: &str) -> String {
        target.info.key(target.namespace.as_deref(), name)
    }

    async fn get(
        &self,
        target: &Target,
        query: &Query,
        accept: Accept,
    ) -> Result<Response, ApiError> {
        let include = IncludeObject::parse(query.get("includeObject").map(String::as_str))
            .map_err(ApiError::bad_request)?;
        let name = target.name.as_deref().unwrap_or_default();
        let (obj, _) = self
            .objects
            .get(&self.key(target, name))
            .await?
            .ok_or_else(|| not_found(target.info, name))?;
        let body = render::one(target.info, obj, accept.shape, include);
        Ok(negotiate::respond(StatusCode::OK, &body, accept))
    }

    async fn list(
        &self,
        target: &Target,
        query: &Query,
        accept: Accept,
    ) -> Result<Response, ApiError> {
        let include = IncludeObject::parse(query.get("includeObject").map(String::as_str))
            .map_err(ApiError::bad_request)?;
        let filter = Filter::from_query(target.info, query)?;
        let limit = match query.get("limit").map(String::as_str) {
            None | Some("") => 0,
            Some(l) => l
                .parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("limit: invalid value {l:?}")))?
                .max(0) as usize,
        };
        let prefix = target.info.prefix(target.namespace.as_deref());
        let (mut revision, mut start) = (0, None);
        let rv = query
            .get("resourceVersion")
            .map(String::as_str)
            .unwrap_or("");
        let rv_match = query
            .get("resourceVersionMatch")
            .map(String::as_str)
            .unwrap_or("");
        let continuing = query.get("continue").filter(|c| !c.is_empty());
        if let Some(token) = continuing {
            if !rv.is_empty() && rv != "0" {
                return Err(ApiError::bad_request(
                    "specifying resource version is not allowed when using continue",
                ));
            }
            let (token_rev, token_start) =
                pagination::decode(token).map_err(ApiError::bad_request)?;
            revision = token_rev;
            start = Some(format!("{prefix}{token_start}"));
        } else {
            match (rv, rv_match) {
                ("", "") | ("0", "" | "NotOlderThan") => {}
                ("", _) => {
                    return Err(ApiError::bad_request(
                        "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
                    ));
                }
                (rv, "Exact") => revision = parse_revision(rv)?,
                (rv, "") if limit > 0 => revision = parse_revision(rv)?,
                (rv, "" | "NotOlderThan") => {
                    let wanted = parse_revision(rv)?;
                    wait_for_revision(self.objects, wanted).await?;
                }
                (_, other) => {
                    return Err(ApiError::bad_request(format!(
                        "resourceVersionMatch: Unsupported value: {other:?}: supported values: \"Exact\", \"NotOlderThan\""
                    )));
                }
            }
            if rv == "0" && rv_match == "Exact" {
                return Err(ApiError::bad_request(
                    "resourceVersionMatch: Forbidden: resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
                ));
            }
        }
        if continuing.is_none()
            && revision == 0
            && let Some(response) = self
                .list_from_cache(target, &prefix, rv, &filter, limit, accept, include)
                .await
        {
            return Ok(response);
        }
        let mut items = Vec::new();
        let mut next = None;
        let page_size = if limit == 0 { 0 } else { limit.max(100) };
        'pages: loop {
            let page = self
                .objects
                .list(&prefix, start.clone(), page_size, revision)
                .await
                .map_err(|e| list_error(e, continuing.is_some()))?;
            revision = page.revision;
            let count = page.items.len();
            for (i, (key, obj)) in page.items.into_iter().enumerate() {
                if !filter.matches(target.info, &obj) {
                    continue;
                }
                items.push(obj);
                if limit > 0 && items.len() == limit {
                    if i + 1 < count || page.next_key.is_some() {
                        let after = rkube_store::key_after(&key);
                        next = Some(pagination::encode(revision, &after[prefix.len()..]));
                    }
                    break 'pages;
                }
            }
            match page.next_key {
                Some(key) => start = Some(key),
                None => break,
            }
        }
        let body = render::list(
            target.info,
            items,
            revision.to_string(),
            next,
            accept.shape,
            include,
        );
        Ok(negotiate::respond(StatusCode::OK, &body, accept))
    }

    /// A list at the current state from the watch cache, once it is as new as the request
    /// needs (`resourceVersion` unset: as new as the store; `0`: any; N: at least N); `None`
    /// sends the caller to the store. A continue token points at the store at the list's
    /// revision, so later pages are the same snapshot.
    #[allow(clippy::too_many_arguments)]
    async fn list_from_cache(
        &self,
        target: &Target,
        prefix: &str,
        rv: &str,
        filter: &Filter,
        limit: usize,
        accept: Accept,
        include: IncludeObject,
    ) -> Option<Response> {
        let cache = self.objects.cache()?;
        let fresh = match rv {
            "" => cache.wait_fresh(&**self.objects.store()).await,
            "0" => cache.ready(),
            n => cache.wait_for(n.parse().ok()?).await,
        };
        if !fresh {
            return None;
        }
        let info = target.info;
        let listed = cache.list(prefix, None, limit, |obj| obj.selected(filter, info))?;
        let next = listed.last_key.as_ref().map(|key| {
            let after = rkube_store::key_after(key);
            pagination::encode(listed.revision, &after[prefix.len()..])
        });
        if accept.format == negotiate::Format::Json
            && accept.shape == negotiate::Shape::Object
            && info.conversion.is_none()
        {
            // Concatenated encodings made once per object version: no decode, no re-encode.
            let mut meta = json!({"resourceVersion": listed.revision.to_string()});
            if let Some(token) = &next {
                meta["continue"] = json!(token);
            }
            let head = format!(
                r#"{{"kind":"{}List","apiVersion":"{}","metadata":{meta},"items":["#,
                info.kind,
                info.api_version()
            );
            // Items keep their kind and apiVersion (upstream's typed lists drop them; clients
            // read both), so one encoding serves lists, gets and watches.
            return Some(stream_json_list(head, listed.items, |obj, out| {
                out.extend_from_slice(obj.json())
            }));
        }
        if accept.format == negotiate::Format::Json
            && accept.shape == negotiate::Shape::Table
            && include == IncludeObject::Metadata
            && info.conversion.is_none()
        {
            // kubectl get: rows made once per object version, concatenated.
            let mut meta = json!({"resourceVersion": listed.revision.to_string()});
            if let Some(token) = &next {
                meta["continue"] = json!(token);
            }
            let head = format!(
                r#"{{"kind":"Table","apiVersion":"meta.k8s.io/v1","metadata":{meta},"columnDefinitions":{},"rows":["#,
                render::column_definitions(info)
            );
            return Some(stream_json_list(head, listed.items, move |obj, out| {
                obj.write_metadata_row(info, out)
            }));
        }
        let items = listed.items.iter().map(|o| o.value()).collect();
        let body = render::list(
            info,
            items,
            listed.revision.to_string(),
            next,
            accept.shape,
            include,
        );
        Some(negotiate::respond(StatusCode::OK, &body, accept))
    }

    /// 404 when the namespace of a new object is missing, 403 when it is terminating.
    async fn check_namespace(
        &self,
        info: &ResourceInfo,
        namespace: &str,
        name: &str,
    ) -> Result<(), ApiError> {
        if !info.namespaced {
            return Ok(());
        }
        let ns_info =
            catalog::find("", "v1", "namespaces").expect("namespaces are in the catalogue");
        let Some((ns, _)) = self.objects.get(&ns_info.key(None, namespace)).await? else {
            return Err(ApiError::not_found("", "namespaces", namespace));
        };
        if str_at(&ns, "/status/phase") == "Terminating"
            || ns
                .pointer("/metadata/deletionTimestamp")
                .is_some_and(|v| !v.is_null())
        {
            let mut details = json!({"name": name, "kind": info.plural, "causes": [{
                "reason": "NamespaceTerminating",
                "message": format!("namespace {namespace} is being terminated"),
                "field": "metadata.namespace"}]});
            if !info.group.is_empty() {
                details["group"] = json!(info.group);
            }
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!(
                    "{} {name:?} is forbidden: unable to create new content in namespace {namespace} because it is being terminated",
                    info.group_resource()
                ),
            )
            .with_details(details));
        }
        Ok(())
    }

    async fn create(
        &self,
        target: &Target,
        query: &Query,
        headers: &HeaderMap,
        body: &[u8],
        accept: Accept,
    ) -> Result<Response, ApiError> {
        let dry = dry_run(query)?;
        let info = target.info;
        let (mut obj, warnings) = read_object(self.objects, info, query, headers, body)?;
        meta::check_type(&mut obj, info)?;
        meta::set_namespace(&mut obj, info, target.namespace.as_deref())?;
        let obj = info.to_stored(obj);
        let namespace = target.namespace.clone().unwrap_or_default();
        self.check_namespace(info, &namespace, str_at(&obj, "/metadata/name"))
            .await?;
        let manager = field_manager(query, headers, "CreateOptions")?;
        let mut obj = admit_create(info, obj)?;
        let mut warnings = warnings;
        warnings.extend(info.strategy.warnings(&obj));
        FieldScope::new(self.objects, info, "").record(None, &mut obj, &manager);
        let include = IncludeObject::parse(query.get("includeObject").map(String::as_str))
            .map_err(ApiError::bad_request)?;
        let obj = self.store_new_with_hooks(target, obj, dry).await?;
        let body = render::one(info, obj, accept.shape, include);
        Ok(with_warnings(
            negotiate::respond(StatusCode::CREATED, &body, accept),
            &warnings,
        ))
    }

    /// [`Api::store_new`] with the resource's store hooks around it (Service IPs and ports
    /// are claimed before, released if the write fails).
    async fn store_new_with_hooks(
        &self,
        target: &Target,
        mut obj: Value,
        dry: bool,
    ) -> Result<Value, ApiError> {
        let hooks = self.hooks.of(target.info);
        let claims = match hooks {
            Some(h) => h.before_create(self.objects, &mut obj, dry).await?,
            None => Vec::new(),
        };
        match self.store_new(target, obj, dry).await {
            Ok(obj) => Ok(obj),
            Err(e) => {
                if let Some(h) = hooks {
                    h.rollback(self.objects, claims).await;
                }
                Err(e)
            }
        }
    }

    async fn store_new(
        &self,
        target: &Target,
        mut obj: Value,
        dry: bool,
    ) -> Result<Value, ApiError> {
        let info = target.info;
        let name = str_at(&obj, "/metadata/name").to_owned();
        if dry {
            return Ok(obj);
        }
        match self
            .objects
            .store()
            .create(&self.key(target, &name), storage::encode(&obj))
            .await
        {
            Ok(revision) => {
                storage::set_resource_version(&mut obj, revision);
                Ok(obj)
            }
            Err(StoreError::KeyExists { .. }) => {
                Err(ApiError::already_exists(info.group, info.plural, &name))
            }
            Err(e) => Err(internal(e)),
        }
    }

    async fn update(
        &self,
        target: &Target,
        query: &Query,
        headers: &HeaderMap,
        body: &[u8],
        accept: Accept,
    ) -> Result<Response, ApiError> {
        let info = target.info;
        let (mut obj, warnings) = read_object(self.objects, info, query, headers, body)?;
        meta::check_type(&mut obj, info)?;
        meta::set_namespace(&mut obj, info, target.namespace.as_deref())?;
        let url_name = target.name.as_deref().unwrap_or_default();
        let body_name = str_at(&obj, "/metadata/name");
        if body_name != url_name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({url_name})"
            )));
        }
        let requested = match str_at(&obj, "/metadata/resourceVersion") {
            "" => None,
            rv => Some(parse_revision(rv)?),
        };
        let record = Recording::Update {
            manager: field_manager(query, headers, "UpdateOptions")?,
            subresource: subresource_name(target),
        };
        let mut warnings = warnings;
        warnings.extend(info.strategy.warnings(&obj));
        let new = obj;
        let response = self
            .write(target, query, accept, requested, record, move |_| {
                Ok(new.clone())
            })
            .await?;
        Ok(with_warnings(response, &warnings))
    }

    async fn patch(
        &self,
        target: &Target,
        query: &Query,
        headers: &HeaderMap,
        body: &[u8],
        accept: Accept,
    ) -> Result<Response, ApiError> {
        let info = target.info;
        let media = negotiate::content_type(headers);
        enum Kind {
            Json(json_patch::Patch),
            Merge(Value),
            Strategic(Value),
            Apply { config: Value, force: bool },
        }
        let apply = media == "application/apply-patch+yaml";
        let manager = patch_options(query, headers, apply)?;
        let mut warnings = Vec::new();
        let kind = match media.as_str() {
            "application/json-patch+json" => {
                Kind::Json(serde_json::from_slice(body).map_err(|e| {
                    ApiError::bad_request(format!("the JSON patch is not valid: {e}"))
                })?)
            }
            "application/merge-patch+json" => {
                Kind::Merge(serde_json::from_slice(body).map_err(|e| {
                    ApiError::bad_request(format!("the merge patch is not valid JSON: {e}"))
                })?)
            }
            "application/strategic-merge-patch+json" if !info.strategy.strategic_merge_patch() => {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
                ));
            }
            "application/strategic-merge-patch+json" => {
                Kind::Strategic(serde_json::from_slice(body).map_err(|e| {
                    ApiError::bad_request(format!(
                        "the strategic merge patch is not valid JSON: {e}"
                    ))
                })?)
            }
            "application/apply-patch+yaml" => {
                let (config, found) = read_apply_config(self.objects, info, query, body)?;
                warnings = found;
                warnings.extend(info.strategy.warnings(&config));
                Kind::Apply {
                    config,
                    force: flag(query, "force"),
                }
            }
            "application/apply-patch+cbor" => return Err(other_patch(&media)),
            other => return Err(negotiate::unsupported_media_type(other)),
        };
        let name = target.name.clone().unwrap_or_default();
        let namespace = target.namespace.clone();
        let schemas = self.objects.openapi().schemas();
        let gvk = crate::openapi::GroupVersionKind::new(info.group, info.version, info.kind);
        let subresource = subresource_name(target);
        let scope = FieldScope::new(self.objects, info, subresource);
        let record = match &kind {
            Kind::Apply { .. } => Recording::Apply { upsert: true },
            _ => Recording::Update {
                manager: manager.clone(),
                subresource,
            },
        };
        let mode = crate::fieldvalidation::FieldValidation::parse(
            query.get("fieldValidation").map_or("", String::as_str),
        )
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let found = std::sync::Mutex::new(Vec::new());
        let change = |current: &Value| -> Result<Value, ApiError> {
            let mut doc = current.clone();
            match &kind {
                Kind::Apply { config, force } => {
                    // The object stored has a uid; the placeholder of a missing one does not.
                    let live = current
                        .pointer("/metadata/uid")
                        .is_some_and(|u| !u.is_null())
                        .then_some(current);
                    doc = crate::patch::managedfields::apply(
                        live,
                        config,
                        &manager,
                        *force,
                        &scope.context(),
                    )
                    .map_err(|e| match e {
                        crate::patch::managedfields::ApplyFailure::Conflicts(c) => {
                            apply_conflict(&c)
                        }
                        crate::patch::managedfields::ApplyFailure::Invalid(e) => ApiError::new(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            "Invalid",
                            format!(
                                "failed to create typed patch object ({}, Kind={}): {e}",
                                info.api_version(),
                                info.kind
                            ),
                        ),
                    })?;
                    if str_at(&doc, "/metadata/name") != name {
                        return Err(ApiError::bad_request(format!(
                            "the name of the object ({}) does not match the name on the URL ({name})",
                            str_at(&doc, "/metadata/name")
                        )));
                    }
                }
                Kind::Json(patch) => json_patch::patch(&mut doc, patch).map_err(|e| {
                    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", e.to_string())
                })?,
                Kind::Merge(patch) => json_patch::merge(&mut doc, patch),
                Kind::Strategic(patch) => {
                    doc = crate::patch::strategic::apply_strategic_merge_patch(
                        current,
                        patch,
                        schemas.for_kind(&gvk),
                    )
                    .map_err(|e| {
                        let code = StatusCode::from_u16(e.http_status())
                            .unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
                        let reason = if code == StatusCode::BAD_REQUEST {
                            "BadRequest"
                        } else {
                            "Invalid"
                        };
                        ApiError::new(code, reason, e.to_string())
                    })?
                }
            }
            // A patch's result is checked as a body would be: unknown fields it brought are
            // dropped, warned about or refused (an apply checked its configuration already).
            if !matches!(kind, Kind::Apply { .. })
                && let Some(schema) = schemas.for_kind(&gvk)
            {
                let checked =
                    crate::fieldvalidation::validate_value(doc, schema, mode).map_err(|err| {
                        ApiError::new(
                            StatusCode::from_u16(err.http_status())
                                .unwrap_or(StatusCode::BAD_REQUEST),
                            "BadRequest",
                            format!(
                                "{} in version {:?} cannot be handled as a {}: {err}",
                                info.kind, info.version, info.kind
                            ),
                        )
                    })?;
                *found.lock().unwrap_or_else(|p| p.into_inner()) = checked.warnings();
                doc = checked.object;
            }
            meta::check_type(&mut doc, info)?;
            meta::set_namespace(&mut doc, info, namespace.as_deref())?;
            if str_at(&doc, "/metadata/name") != name {
                let errors = [FieldError::invalid(
                    "metadata.name",
                    doc.pointer("/metadata/name")
                        .cloned()
                        .unwrap_or(Value::Null),
                    "field is immutable",
                )];
                return Err(invalid(info, &name, &errors));
            }
            Ok(doc)
        };
        let response = self
            .write(target, query, accept, None, record, change)
            .await?;
        warnings.extend(found.into_inner().unwrap_or_else(|p| p.into_inner()));
        Ok(with_warnings(response, &warnings))
    }

    /// The read-modify-write loop of update and patch: `change` turns the current object into
    /// the requested one. A `resourceVersion` in the requested object (or `requested`) is a
    /// precondition; without one, races are retried.
    async fn write(
        &self,
        target: &Target,
        query: &Query,
        accept: Accept,
        requested: Option<Revision>,
        record: Recording,
        change: impl Fn(&Value) -> Result<Value, ApiError>,
    ) -> Result<Response, ApiError> {
        let include = IncludeObject::parse(query.get("includeObject").map(String::as_str))
            .map_err(ApiError::bad_request)?;
        let (code, obj) = self
            .write_value(target, dry_run(query)?, requested, record, change)
            .await?;
        let body = render::one(target.info, obj, accept.shape, include);
        Ok(negotiate::respond(code, &body, accept))
    }

    /// [`Api::write`] answering with the written object (also for subresources that show the
    /// object in another shape, like `scale`).
    async fn write_value(
        &self,
        target: &Target,
        dry: bool,
        requested: Option<Revision>,
        record: Recording,
        change: impl Fn(&Value) -> Result<Value, ApiError>,
    ) -> Result<(StatusCode, Value), ApiError> {
        let info = target.info;
        let name = target.name.as_deref().unwrap_or_default();
        let key = self.key(target, name);
        let upsert = matches!(record, Recording::Apply { upsert: true });
        for _ in 0..WRITE_ATTEMPTS {
            let Some((old, revision)) = self.objects.get(&key).await? else {
                if target.subresource.is_none()
                    && (info.strategy.allow_create_on_update() || upsert)
                    && requested.is_none()
                {
                    let mut obj = change(&json!({"metadata": {"name": name}}))?;
                    meta::check_type(&mut obj, info)?;
                    let obj = info.to_stored(obj);
                    let namespace = target.namespace.clone().unwrap_or_default();
                    self.check_namespace(info, &namespace, name).await?;
                    let mut obj = admit_create(info, obj)?;
                    if let Recording::Update { manager, .. } = &record {
                        FieldScope::new(self.objects, info, "").record(None, &mut obj, manager);
                    }
                    let obj = self.store_new_with_hooks(target, obj, dry).await?;
                    return Ok((StatusCode::CREATED, obj));
                }
                return Err(not_found(info, name));
            };
            // The change is made in the requested version, the rest on the stored form.
            let wanted = match info.conversion {
                Some(c) => c.to_stored(change(&c.to_served(old.clone()))?),
                None => change(&old)?,
            };
            let precondition = match str_at(&wanted, "/metadata/resourceVersion") {
                "" => requested,
                rv if rv == revision.to_string() => Some(revision),
                rv => Some(parse_revision(rv)?),
            };
            if precondition.is_some_and(|p| p != revision) {
                return Err(conflict(info, name));
            }
            // An apply's managedFields are computed with the change; a status write keeps the
            // rest of the stored object, so they are carried over explicitly.
            let applied_managed = matches!(record, Recording::Apply { .. })
                .then(|| wanted.pointer("/metadata/managedFields").cloned());
            let mut new = match target.subresource.as_deref() {
                Some("status") => admit_status_update(info, wanted, &old)?,
                _ => admit_update(info, wanted, &old)?,
            };
            if let Some(managed) = applied_managed {
                let meta = meta::metadata_mut(&mut new);
                match managed {
                    Some(m) => meta.insert("managedFields".into(), m),
                    None => meta.remove("managedFields"),
                };
            }
            if let Recording::Update {
                manager,
                subresource,
            } = &record
            {
                FieldScope::new(self.objects, info, subresource).record(
                    Some(&old),
                    &mut new,
                    manager,
                );
            }
            if same_object(&new, &old) {
                return Ok((StatusCode::OK, old));
            }
            let hooks = self.hooks.of(info).filter(|_| target.subresource.is_none());
            let claims = match hooks {
                Some(h) => h.before_update(self.objects, &mut new, &old, dry).await?,
                None => Vec::new(),
            };
            if dry {
                storage::set_resource_version(&mut new, revision);
                return Ok((StatusCode::OK, new));
            }
            let written = self
                .objects
                .store()
                .update(&key, storage::encode(&new), revision)
                .await;
            if let Some(h) = hooks {
                match &written {
                    Ok(_) => h.after_update(self.objects, &new, &old).await,
                    Err(_) => h.rollback(self.objects, claims).await,
                }
            }
            match written {
                Ok(new_revision) => {
                    storage::set_resource_version(&mut new, new_revision);
                    // The last finalizer of an object being deleted is gone: delete it now.
                    if ready_to_go(info, &new) {
                        match self.objects.store().delete(&key, Some(new_revision)).await {
                            Ok(_) => {
                                if let Some(h) = self.hooks.of(info) {
                                    h.after_delete(self.objects, &new).await;
                                }
                            }
                            Err(StoreError::NotFound { .. } | StoreError::Conflict { .. }) => {}
                            Err(e) => return Err(internal(e)),
                        }
                    }
                    return Ok((StatusCode::OK, new));
                }
                Err(StoreError::Conflict { .. }) if precondition.is_none() => continue,
                Err(StoreError::Conflict { .. }) => return Err(conflict(info, name)),
                Err(StoreError::NotFound { .. }) => return Err(not_found(info, name)),
                Err(e) => return Err(internal(e)),
            }
        }
        Err(conflict(info, name))
    }

    async fn delete(
        &self,
        target: &Target,
        query: &Query,
        body: &[u8],
        accept: Accept,
    ) -> Result<Response, ApiError> {
        let options = DeleteOptions::parse(query, body)?;
        let info = target.info;
        let name = target.name.as_deref().unwrap_or_default();
        match self.delete_one(target, name, &options).await? {
            Deleted::Pending(obj) => Ok(negotiate::respond(
                StatusCode::OK,
                &info.to_served(obj),
                accept,
            )),
            Deleted::Removed(obj) if info.strategy.return_deleted_object() => Ok(
                negotiate::respond(StatusCode::OK, &info.to_served(obj), accept),
            ),
            Deleted::Removed(obj) => {
                let mut details = json!({"name": name, "kind": info.plural, "uid": str_at(&obj, "/metadata/uid")});
                if !info.group.is_empty() {
                    details["group"] = json!(info.group);
                }
                let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Success", "details": details});
                Ok(negotiate::respond(StatusCode::OK, &status, accept))
            }
        }
    }

    async fn delete_one(
        &self,
        target: &Target,
        name: &str,
        options: &DeleteOptions,
    ) -> Result<Deleted, ApiError> {
        let info = target.info;
        let key = self.key(target, name);
        for _ in 0..WRITE_ATTEMPTS {
            let Some((old, revision)) = self.objects.get(&key).await? else {
                return Err(not_found(info, name));
            };
            if let Some(uid) = &options.uid
                && uid != str_at(&old, "/metadata/uid")
            {
                return Err(ApiError::conflict(
                    info.group,
                    info.plural,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        str_at(&old, "/metadata/uid")
                    ),
                ));
            }
            if let Some(rv) = &options.resource_version
                && *rv != revision.to_string()
            {
                return Err(ApiError::conflict(
                    info.group,
                    info.plural,
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {revision}"
                    ),
                ));
            }
            let mut obj = old.clone();
            let keep = if info.strategy.begin_delete(&mut obj) {
                true
            } else {
                let finalizer = match options.propagation.as_deref() {
                    Some("Orphan") => Some("orphan"),
                    Some("Foreground") => Some("foregroundDeletion"),
                    _ => None,
                };
                let mut list = finalizers(&obj);
                if let Some(f) = finalizer
                    && !list.iter().any(|x| x == f)
                {
                    list.push(f.to_owned());
                    meta::metadata_mut(&mut obj).insert("finalizers".into(), json!(list));
                }
                let grace = options
                    .grace
                    .or(info.strategy.default_grace_period(&obj))
                    .unwrap_or(0);
                if list.is_empty() && grace == 0 {
                    false
                } else {
                    let meta = meta::metadata_mut(&mut obj);
                    if !meta.contains_key("deletionTimestamp") {
                        let at = time::OffsetDateTime::now_utc() + time::Duration::seconds(grace);
                        let at = at.replace_nanosecond(0).unwrap_or(at);
                        meta.insert(
                            "deletionTimestamp".into(),
                            json!(
                                at.format(&time::format_description::well_known::Rfc3339)
                                    .unwrap_or_default()
                            ),
                        );
                        meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
                        if let Some(g) = meta.get("generation").and_then(Value::as_i64) {
                            meta.insert("generation".into(), json!(g + 1));
                        }
                    } else if !list.is_empty() || grace > 0 {
                        // Already being deleted: nothing more to record.
                    }
                    true
                }
            };
            if options.dry_run {
                return Ok(if keep {
                    Deleted::Pending(obj)
                } else {
                    Deleted::Removed(old)
                });
            }
            if keep {
                if same_object(&obj, &old) {
                    return Ok(Deleted::Pending(old));
                }
                match self
                    .objects
                    .store()
                    .update(&key, storage::encode(&obj), revision)
                    .await
                {
                    Ok(rev) => {
                        storage::set_resource_version(&mut obj, rev);
                        return Ok(Deleted::Pending(obj));
                    }
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(StoreError::NotFound { .. }) => return Err(not_found(info, name)),
                    Err(e) => return Err(internal(e)),
                }
            }
            match self.objects.store().delete(&key, Some(revision)).await {
                Ok((rev, _)) => {
                    if let Some(h) = self.hooks.of(info) {
                        h.after_delete(self.objects, &old).await;
                    }
                    let mut gone = old;
                    storage::set_resource_version(&mut gone, rev);
                    return Ok(Deleted::Removed(gone));
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(StoreError::NotFound { .. }) => return Err(not_found(info, name)),
                Err(e) => return Err(internal(e)),
            }
        }
        Err(conflict(info, name))
    }

    async fn delete_collection(
        &self,
        target: &Target,
        query: &Query,
        body: &[u8],
        accept: Accept,
    ) -> Result<Response, ApiError> {
        let options = DeleteOptions::parse(query, body)?;
        let filter = Filter::from_query(target.info, query)?;
        let prefix = target.info.prefix(target.namespace.as_deref());
        let page = self
            .objects
            .list(&prefix, None, 0, 0)
            .await
            .map_err(internal)?;
        let mut deleted = Vec::new();
        for (_, obj) in page.items {
            if !filter.matches(target.info, &obj) {
                continue;
            }
            let name = str_at(&obj, "/metadata/name").to_owned();
            let one = Target {
                info: target.info,
                namespace: obj
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                name: Some(name.clone()),
                subresource: None,
                watch_path: false,
            };
            match self.delete_one(&one, &name, &options).await {
                Ok(Deleted::Removed(obj) | Deleted::Pending(obj)) => deleted.push(obj),
                Err(e) if e.code == StatusCode::NOT_FOUND => {}
                Err(e) => return Err(e),
            }
        }
        let revision = self.objects.current_revision().await?;
        let body = render::list(
            target.info,
            deleted,
            revision.to_string(),
            None,
            negotiate::Shape::Object,
            IncludeObject::Metadata,
        );
        Ok(negotiate::respond(StatusCode::OK, &body, accept))
    }
}

/// Patch types not served (CBOR apply): 501 naming the ones that are.
fn other_patch(media: &str) -> ApiError {
    ApiError::not_implemented(format!(
        "patch type {media} is not supported by rkube yet; use application/apply-patch+yaml, application/json-patch+json, application/merge-patch+json or application/strategic-merge-patch+json"
    ))
}

/// The subresource a write goes through, as recorded in managedFields.
fn subresource_name(target: &Target) -> &'static str {
    match target.subresource.as_deref() {
        Some("status") => "status",
        Some("scale") => "scale",
        _ => "",
    }
}

/// Decodes a server-side apply body (YAML, which includes JSON) as the full intended object,
/// with the request's field validation. It must name the resource's apiVersion and kind and may
/// not carry managedFields (upstream's rules).
fn read_apply_config(
    objects: &Objects,
    info: &ResourceInfo,
    query: &Query,
    body: &[u8],
) -> Result<(Value, Vec<String>), ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    negotiate::check_yaml_nesting(body)?;
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/yaml"),
    );
    let raw = negotiate::decode(body, negotiate::Format::Yaml)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {}", e.message)))?;
    if !raw.is_object() {
        return Err(ApiError::bad_request(
            "error decoding YAML: the applied configuration must be an object",
        ));
    }
    if raw
        .pointer("/metadata/managedFields")
        .is_some_and(|m| !m.is_null())
    {
        return Err(ApiError::bad_request("metadata.managedFields must be nil"));
    }
    let version = str_at(&raw, "/apiVersion");
    if version != info.api_version() {
        return Err(ApiError::bad_request(format!(
            "Incorrect version specified in apply patch. Specified patch version: {version}, expected: {}",
            info.api_version()
        )));
    }
    let kind = str_at(&raw, "/kind");
    if kind != info.kind {
        return Err(ApiError::bad_request(format!(
            "Incorrect kind specified in apply patch. Specified patch kind: {kind}, expected: {}",
            info.kind
        )));
    }
    read_object(objects, info, query, &headers, body)
}

/// 410 for a list at a compacted revision, 504 for one in the future.
fn list_error(error: StoreError, continuing: bool) -> ApiError {
    match error {
        StoreError::Compacted { .. } if continuing => ApiError::expired(
            "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
        ),
        StoreError::Compacted {
            requested,
            compacted,
        } => ApiError::expired(format!(
            "too old resource version: {requested} ({compacted})"
        )),
        StoreError::FutureRevision { requested, current } => too_large(requested, current),
        other => internal(other),
    }
}

fn too_large(requested: Revision, current: Revision) -> ApiError {
    ApiError::new(
        StatusCode::GATEWAY_TIMEOUT,
        "Timeout",
        format!("Too large resource version: {requested}, current: {current}"),
    )
    .with_details(json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}], "retryAfterSeconds": 1}))
}

/// Waits (up to 3 s, as upstream) until the store has reached `wanted`.
async fn wait_for_revision(objects: &Objects, wanted: Revision) -> Result<(), ApiError> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        let current = objects.current_revision().await?;
        if current >= wanted {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(too_large(wanted, current));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Label and field selectors of a list, watch or deletecollection.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    /// Parses `labelSelector` and `fieldSelector`, refusing fields the resource does not index.
    pub fn from_query(info: &ResourceInfo, query: &Query) -> Result<Filter, ApiError> {
        let labels =
            LabelSelector::parse(query.get("labelSelector").map(String::as_str).unwrap_or(""))
                .map_err(ApiError::bad_request)?;
        let fields =
            FieldSelector::parse(query.get("fieldSelector").map(String::as_str).unwrap_or(""))
                .map_err(ApiError::bad_request)?;
        let mut supported = vec!["metadata.name", "metadata.namespace"];
        supported.extend(info.strategy.field_label_names());
        if let Some(field) = fields.unsupported(&supported) {
            return Err(ApiError::bad_request(format!(
                "field label not supported: {field}"
            )));
        }
        Ok(Filter { labels, fields })
    }

    /// Whether everything matches.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    /// Whether an object whose labels and fields were taken out already is selected.
    pub fn matches_selectable(&self, selectable: &cache::Selectable) -> bool {
        self.labels.matches(Some(&selectable.labels))
            && (self.fields.is_empty() || self.fields.matches(&selectable.fields))
    }

    /// Whether `obj` is selected.
    pub fn matches(&self, info: &ResourceInfo, obj: &Value) -> bool {
        if !self.labels.matches_object(obj) {
            return false;
        }
        self.fields.is_empty() || self.fields.matches(&selectable_fields(info, obj))
    }
}

/// The fields a field selector may test, with `obj`'s values: `metadata.name`,
/// `metadata.namespace` and the strategy's own.
pub(crate) fn selectable_fields(info: &ResourceInfo, obj: &Value) -> Vec<(&'static str, String)> {
    let mut fields = vec![
        ("metadata.name", str_at(obj, "/metadata/name").to_owned()),
        (
            "metadata.namespace",
            str_at(obj, "/metadata/namespace").to_owned(),
        ),
    ];
    fields.extend(info.strategy.field_labels(obj));
    fields
}

/// Creates the system namespaces that do not exist yet.
pub async fn ensure_system_namespaces(objects: &Objects) -> Result<(), ApiError> {
    let info = catalog::find("", "v1", "namespaces").expect("namespaces are in the catalogue");
    for name in SYSTEM_NAMESPACES {
        let key = info.key(None, name);
        if objects.get(&key).await?.is_some() {
            continue;
        }
        let obj = admit_create(
            info,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
        )?;
        match objects.store().create(&key, storage::encode(&obj)).await {
            Ok(_) | Err(StoreError::KeyExists { .. }) => {}
            Err(e) => return Err(internal(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(path: &str) -> Target {
        match route(path).unwrap_or_else(|e| panic!("{path}: {e:?}")) {
            Route::Resource(t) => t,
            Route::Discovery(_) => panic!("{path} is discovery"),
        }
    }

    #[test]
    fn urls_parse_into_targets() {
        let t = target("/api/v1/namespaces/default/configmaps/x");
        assert_eq!(
            (t.info.plural, t.namespace.as_deref(), t.name.as_deref()),
            ("configmaps", Some("default"), Some("x"))
        );
        let t = target("/apis/apps/v1/deployments");
        assert_eq!(
            (t.info.plural, t.namespace, t.name),
            ("deployments", None, None)
        );
        let t = target("/api/v1/namespaces/kube-system");
        assert_eq!(
            (t.info.plural, t.name.as_deref()),
            ("namespaces", Some("kube-system"))
        );
        let t = target("/api/v1/namespaces/x/status");
        assert_eq!(
            (t.info.plural, t.name.as_deref(), t.subresource.as_deref()),
            ("namespaces", Some("x"), Some("status"))
        );
        let t = target("/api/v1/watch/namespaces/d/pods");
        assert!(t.watch_path);
        let t = target("/apis/apps/v1/namespaces/d/deployments/web/status");
        assert_eq!(t.subresource.as_deref(), Some("status"));
        for bad in [
            "/api/v2/pods",
            "/api/v1/nothings",
            "/apis/apps/v1/namespaces/d/deployments/web/nope",
            "/api/v1/namespaces/d/nodes",
            "/api/v1/configmaps/x",
            "/api/v1/namespaces/d/configmaps/x/status/y",
            "/apis/nogroup/v1",
            "/api//v1",
        ] {
            assert!(route(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn invalid_has_upstreams_shape() {
        let info = catalog::find("apps", "v1", "deployments").unwrap();
        let err = invalid(
            info,
            "web",
            &[FieldError::required(
                "spec.template.spec.containers[0].image",
                "",
            )],
        );
        assert_eq!(err.code, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            err.message,
            "Deployment.apps \"web\" is invalid: spec.template.spec.containers[0].image: Required value"
        );
        let details = err.details.unwrap();
        assert_eq!(details["kind"], "Deployment");
        assert_eq!(details["group"], "apps");
        assert_eq!(details["causes"][0]["reason"], "FieldValueRequired");
        assert_eq!(
            details["causes"][0]["field"],
            "spec.template.spec.containers[0].image"
        );
    }

    #[test]
    fn field_managers_come_from_the_query_or_the_user_agent() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::USER_AGENT,
            "kubectl-v1.33/v1.33.4 (linux/amd64) kubernetes/abc"
                .parse()
                .unwrap(),
        );
        let none = Query::new();
        assert_eq!(
            field_manager(&none, &headers, "PatchOptions").unwrap(),
            "kubectl-v1.33"
        );
        let given: Query = [("fieldManager".to_owned(), "helm".to_owned())].into();
        assert_eq!(
            field_manager(&given, &headers, "PatchOptions").unwrap(),
            "helm"
        );
        assert_eq!(
            field_manager(&none, &HeaderMap::new(), "CreateOptions").unwrap(),
            ""
        );
        let long: Query = [("fieldManager".to_owned(), "x".repeat(129))].into();
        let err = field_manager(&long, &headers, "PatchOptions").unwrap_err();
        assert_eq!(err.code, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            err.message
                .starts_with("PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Too long"),
            "{}",
            err.message
        );
        let control: Query = [("fieldManager".to_owned(), "a\u{7}b".to_owned())].into();
        let err = field_manager(&control, &headers, "UpdateOptions").unwrap_err();
        assert!(
            err.message.contains("invalid character U+0007"),
            "{}",
            err.message
        );
        let mut long_agent = HeaderMap::new();
        long_agent.insert(header::USER_AGENT, "y".repeat(300).parse().unwrap());
        assert_eq!(
            field_manager(&none, &long_agent, "CreateOptions")
                .unwrap()
                .len(),
            128
        );
    }

    #[test]
    fn apply_conflicts_are_upstreams_409() {
        use crate::patch::fieldpath::{Path, PathElement};
        use crate::patch::managedfields::{Conflict, Conflicts, Entry, Operation};
        let owner = Entry {
            manager: "kubectl-client-side-apply".into(),
            operation: Operation::Update,
            api_version: "apps/v1".into(),
            subresource: String::new(),
            time: None,
            fields: Default::default(),
        };
        let path = Path(vec![
            PathElement::Field("spec".into()),
            PathElement::Field("replicas".into()),
        ]);
        let err = apply_conflict(&Conflicts(vec![Conflict {
            manager: owner,
            path,
        }]));
        assert_eq!(err.code, StatusCode::CONFLICT);
        let status = err.to_status();
        assert_eq!(status["reason"], "Conflict");
        assert_eq!(
            status["message"],
            "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas"
        );
        assert_eq!(
            status["details"]["causes"],
            json!([{"reason": "FieldManagerConflict",
                "message": "conflict with \"kubectl-client-side-apply\" using apps/v1",
                "field": ".spec.replicas"}])
        );
    }

    #[test]
    fn field_selectors_name_only_indexed_fields() {
        let pods = catalog::find("", "v1", "pods").unwrap();
        let q: Query = [("fieldSelector".to_owned(), "spec.nodeName=n1".to_owned())].into();
        let f = Filter::from_query(pods, &q).unwrap();
        assert!(f.matches(
            pods,
            &json!({"metadata": {"name": "a"}, "spec": {"nodeName": "n1"}})
        ));
        assert!(!f.matches(
            pods,
            &json!({"metadata": {"name": "a"}, "spec": {"nodeName": "n2"}})
        ));
        let cms = catalog::find("", "v1", "configmaps").unwrap();
        assert!(Filter::from_query(cms, &q).is_err());
    }
}
