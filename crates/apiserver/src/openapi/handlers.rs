//! Serving the documents: `GET /openapi/v2`, `GET /openapi/v3` (the index of group-versions)
//! and `GET /openapi/v3/<api/v1 | apis/<group>/<version>>`.
//!
//! Documents are rendered on first request and kept until the served resources or the custom
//! schemas change. Each carries an `ETag` (a hash of its bytes, so `If-None-Match` gets 304),
//! and the v3 index links each document with `?hash=<hash>`: a request with the current hash
//! may be cached for good, one with an old hash is redirected to the current URL, as upstream.
//!
//! Protobuf is not offered: a request that accepts only
//! `application/com.github.proto-openapi.spec.v2@v1.0+protobuf` (what client-go's
//! `OpenAPISchema()` sends) gets 406. kubectl treats that as "no v2 document" and uses v3,
//! which carries everything it needs (explain, patch computation, field validation support).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use sha2::{Digest, Sha512};

use super::documents::{ServedResource, render_v2, render_v3};
use super::model::{GroupVersionKind, Schemas, ext};
use crate::status::ApiError;

/// The schema of one custom resource version, as a CRD declares it.
#[derive(Debug, Clone)]
pub struct CustomResourceSchema {
    /// The resource as served.
    pub resource: ServedResource,
    /// The version's `openAPIV3Schema` (structural; `properties` of the whole object).
    pub schema: Value,
}

impl CustomResourceSchema {
    /// The definition name upstream gives a custom resource: the group reversed, then version
    /// and kind (`com.example.stable.v1.CronTab`).
    pub fn definition_name(&self) -> String {
        let mut parts: Vec<&str> = self.resource.group.split('.').collect();
        parts.reverse();
        format!(
            "{}.{}.{}",
            parts.join("."),
            self.resource.version,
            self.resource.kind
        )
    }
}

/// The OpenAPI service: the current schemas and served resources, and the rendered documents.
/// Shared by the router and by the patch and validation code (through [`OpenApi::schemas`]).
pub struct OpenApi {
    state: RwLock<Arc<Published>>,
}

struct Published {
    schemas: Arc<Schemas>,
    builtin_resources: Vec<ServedResource>,
    custom: Vec<CustomResourceSchema>,
    v2: OnceLock<Rendered>,
    v3: OnceLock<V3Rendered>,
}

struct Rendered {
    body: axum::body::Bytes,
    hash: String,
}

struct V3Rendered {
    index: Rendered,
    documents: HashMap<String, Rendered>,
}

impl Rendered {
    fn new(value: &Value) -> Self {
        let body = serde_json::to_vec(value).unwrap_or_default();
        let hash = hex::encode_upper(&Sha512::digest(&body)[..32]);
        Self {
            body: body.into(),
            hash,
        }
    }
}

impl Published {
    fn resources(&self) -> Vec<ServedResource> {
        let mut all = self.builtin_resources.clone();
        all.extend(self.custom.iter().map(|c| c.resource.clone()));
        all
    }

    fn v2(&self) -> &Rendered {
        self.v2
            .get_or_init(|| Rendered::new(&render_v2(&self.schemas, &self.resources())))
    }

    fn v3(&self) -> &V3Rendered {
        self.v3.get_or_init(|| {
            let documents: HashMap<String, Rendered> = render_v3(&self.schemas, &self.resources())
                .into_iter()
                .map(|(gv, doc)| (gv, Rendered::new(&doc)))
                .collect();
            let mut paths = serde_json::Map::new();
            for (gv, doc) in &documents {
                paths.insert(
                    gv.clone(),
                    json!({"serverRelativeURL": format!("/openapi/v3/{gv}?hash={}", doc.hash)}),
                );
            }
            V3Rendered {
                index: Rendered::new(&json!({"paths": paths})),
                documents,
            }
        })
    }
}

impl OpenApi {
    /// The service for the built-in schemas and these served built-in resources.
    pub fn new(resources: Vec<ServedResource>) -> Self {
        Self {
            state: RwLock::new(Arc::new(Published {
                schemas: Schemas::builtin(),
                builtin_resources: resources,
                custom: Vec::new(),
                v2: OnceLock::new(),
                v3: OnceLock::new(),
            })),
        }
    }

    fn current(&self) -> Arc<Published> {
        self.state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn publish(&self, builtin_resources: Vec<ServedResource>, custom: Vec<CustomResourceSchema>) {
        let mut schemas = Schemas::layered_over(Schemas::builtin());
        for c in &custom {
            let (name, def, list) = custom_definitions(c);
            schemas.insert(format!("{name}List"), list);
            schemas.insert(name, def);
        }
        let published = Arc::new(Published {
            schemas: Arc::new(schemas),
            builtin_resources,
            custom,
            v2: OnceLock::new(),
            v3: OnceLock::new(),
        });
        *self
            .state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = published;
    }

    /// Replaces the served built-in resources (the documents' paths).
    pub fn set_resources(&self, resources: Vec<ServedResource>) {
        let custom = self.current().custom.clone();
        self.publish(resources, custom);
    }

    /// Replaces the custom resource schemas (all of them: the CRD controller passes the
    /// current set each time one changes).
    pub fn set_custom(&self, custom: Vec<CustomResourceSchema>) {
        let builtin = self.current().builtin_resources.clone();
        self.publish(builtin, custom);
    }

    /// The current schemas: built-ins plus custom resources.
    pub fn schemas(&self) -> Arc<Schemas> {
        self.current().schemas.clone()
    }

    /// The routes `/openapi/v2`, `/openapi/v3` and `/openapi/v3/{group-version path}`.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/openapi/v2", get(serve_v2))
            .route("/openapi/v3", get(serve_v3_index))
            .route("/openapi/v3/{*gv}", get(serve_v3_document))
            .with_state(self)
    }
}

/// The definition of a custom resource (with the apiVersion, kind and metadata properties
/// every object has, and its GVK) and of its list.
fn custom_definitions(c: &CustomResourceSchema) -> (String, Value, Value) {
    let name = c.definition_name();
    let r = &c.resource;
    let mut def = c.schema.clone();
    if !def.is_object() {
        def = json!({"type": "object"});
    }
    let standard = [
        (
            "apiVersion",
            json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}),
        ),
        (
            "kind",
            json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}),
        ),
        (
            "metadata",
            json!({"$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "description": "Standard object's metadata."}),
        ),
    ];
    if let Some(obj) = def.as_object_mut() {
        obj.entry("type").or_insert_with(|| json!("object"));
        let props = obj.entry("properties").or_insert_with(|| json!({}));
        if let Some(props) = props.as_object_mut() {
            for (k, v) in standard {
                props.insert(k.to_owned(), v);
            }
        }
        obj.insert(
            ext::GVK.into(),
            json!([{"group": r.group, "version": r.version, "kind": r.kind}]),
        );
    }
    let list_kind = GroupVersionKind::new(&r.group, &r.version, &format!("{}List", r.kind));
    let list = json!({
        "description": format!("{}List is a list of {} objects.", r.kind, r.kind),
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "items": {"type": "array", "items": {"$ref": format!("#/definitions/{name}")}},
            "kind": {"type": "string"},
            "metadata": {"$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta"},
        },
        "required": ["items"],
        (ext::GVK): [{"group": list_kind.group, "version": list_kind.version, "kind": list_kind.kind}],
    });
    (name, def, list)
}

/// Whether the client accepts JSON (an absent or wildcard Accept does).
fn accepts_json(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    accept.split(',').any(|part| {
        let media = part.split(';').next().unwrap_or("").trim();
        matches!(media, "" | "*/*" | "application/*" | "application/json")
    })
}

fn not_acceptable(headers: &HeaderMap) -> ApiError {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    ApiError {
        code: StatusCode::NOT_ACCEPTABLE,
        reason: "NotAcceptable",
        message: format!(
            "only the following media types are accepted: application/json (asked for {accept})"
        ),
        details: None,
    }
}

/// A rendered document, or 304 when the client's `If-None-Match` names it.
fn document_response(doc: &Rendered, headers: &HeaderMap, immutable: bool) -> Response {
    let etag = format!("\"{}\"", doc.hash);
    let cache = if immutable {
        "public, immutable, max-age=31536000"
    } else {
        "no-cache, private"
    };
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut response = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            doc.body.clone(),
        )
            .into_response()
    };
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}

async fn serve_v2(State(api): State<Arc<OpenApi>>, headers: HeaderMap) -> Response {
    if !accepts_json(&headers) {
        return not_acceptable(&headers).into_response();
    }
    let published = api.current();
    document_response(published.v2(), &headers, false)
}

async fn serve_v3_index(State(api): State<Arc<OpenApi>>, headers: HeaderMap) -> Response {
    if !accepts_json(&headers) {
        return not_acceptable(&headers).into_response();
    }
    let published = api.current();
    document_response(&published.v3().index, &headers, false)
}

async fn serve_v3_document(
    State(api): State<Arc<OpenApi>>,
    Path(gv): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if !accepts_json(&headers) {
        return not_acceptable(&headers).into_response();
    }
    let published = api.current();
    let Some(doc) = published.v3().documents.get(&gv) else {
        return ApiError::not_served(&format!("/openapi/v3/{gv}")).into_response();
    };
    match query.get("hash") {
        Some(h) if *h == doc.hash => document_response(doc, &headers, true),
        Some(_) => {
            let location = format!("/openapi/v3/{gv}?hash={}", doc.hash);
            let mut r = StatusCode::MOVED_PERMANENTLY.into_response();
            if let Ok(v) = HeaderValue::from_str(&location) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        None => document_response(doc, &headers, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openapi::documents::ServedSubresource;
    use axum::body::{Body, to_bytes};
    use axum::http::Request;
    use tower::ServiceExt;

    fn resource(group: &str, version: &str, kind: &str, plural: &str, smp: bool) -> ServedResource {
        ServedResource {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            plural: plural.into(),
            namespaced: true,
            verbs: ["get", "list", "create", "update", "patch", "delete"]
                .map(String::from)
                .to_vec(),
            subresources: vec![ServedSubresource {
                name: "status".into(),
                kind: GroupVersionKind::new(group, version, kind),
                verbs: ["get", "patch", "update"].map(String::from).to_vec(),
            }],
            strategic_merge_patch: smp,
        }
    }

    async fn get(
        router: &Router,
        uri: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Vec<u8>) {
        let mut req = Request::get(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = router
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        (status, headers, body.to_vec())
    }

    #[tokio::test]
    async fn the_v3_index_links_documents_by_hash_and_caches_them() {
        let api = Arc::new(OpenApi::new(vec![resource(
            "apps",
            "v1",
            "Deployment",
            "deployments",
            true,
        )]));
        let router = api.clone().router();
        let (status, _, body) = get(&router, "/openapi/v3", &[]).await;
        assert_eq!(status, StatusCode::OK);
        let index: Value = serde_json::from_slice(&body).unwrap();
        let url = index["paths"]["apis/apps/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(url.starts_with("/openapi/v3/apis/apps/v1?hash="));

        let (status, headers, body) = get(&router, &url, &[("accept", "application/json")]).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            headers[header::CACHE_CONTROL]
                .to_str()
                .unwrap()
                .contains("immutable")
        );
        let doc: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(doc["openapi"], "3.0.0");
        let etag = headers[header::ETAG].to_str().unwrap().to_owned();

        let (status, _, _) = get(
            &router,
            "/openapi/v3/apis/apps/v1",
            &[("if-none-match", &etag)],
        )
        .await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        let (status, headers, _) = get(&router, "/openapi/v3/apis/apps/v1?hash=stale", &[]).await;
        assert_eq!(status, StatusCode::MOVED_PERMANENTLY);
        assert_eq!(headers[header::LOCATION].to_str().unwrap(), url);
        let (status, _, body) = get(&router, "/openapi/v3/apis/nope/v1", &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let status_body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status_body["kind"], "Status");
    }

    #[tokio::test]
    async fn protobuf_only_requests_get_406_and_json_requests_get_the_v2_document() {
        let api = Arc::new(OpenApi::new(vec![resource(
            "apps",
            "v1",
            "Deployment",
            "deployments",
            true,
        )]));
        let router = api.router();
        let (status, _, body) = get(
            &router,
            "/openapi/v2",
            &[(
                "accept",
                "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
            )],
        )
        .await;
        assert_eq!(status, StatusCode::NOT_ACCEPTABLE);
        let s: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(s["reason"], "NotAcceptable");
        let (status, _, body) = get(
            &router,
            "/openapi/v2",
            &[(
                "accept",
                "application/com.github.proto-openapi.spec.v2@v1.0+protobuf, application/json",
            )],
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let doc: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(doc["swagger"], "2.0");
    }

    #[tokio::test]
    async fn custom_resource_schemas_appear_and_change_the_hash() {
        let api = Arc::new(OpenApi::new(vec![resource(
            "apps",
            "v1",
            "Deployment",
            "deployments",
            true,
        )]));
        let router = api.clone().router();
        let (_, _, before) = get(&router, "/openapi/v3", &[]).await;
        api.set_custom(vec![CustomResourceSchema {
            resource: resource("stable.example.com", "v1", "CronTab", "crontabs", false),
            schema: json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
                "cronSpec": {"type": "string", "description": "when to run"}}}}}),
        }]);
        let (_, _, after) = get(&router, "/openapi/v3", &[]).await;
        assert_ne!(before, after);
        let index: Value = serde_json::from_slice(&after).unwrap();
        let url = index["paths"]["apis/stable.example.com/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap()
            .to_owned();
        let (_, _, body) = get(&router, &url, &[]).await;
        let doc: Value = serde_json::from_slice(&body).unwrap();
        let def = &doc["components"]["schemas"]["com.example.stable.v1.CronTab"];
        assert_eq!(
            def["properties"]["spec"]["properties"]["cronSpec"]["description"],
            "when to run"
        );
        assert_eq!(def["x-kubernetes-group-version-kind"][0]["kind"], "CronTab");
        assert!(
            doc["components"]["schemas"]["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]
                .is_object()
        );
        // The model sees it too.
        let schemas = api.schemas();
        let node = schemas
            .for_kind(&GroupVersionKind::new(
                "stable.example.com",
                "v1",
                "CronTab",
            ))
            .unwrap();
        assert!(
            node.property("spec")
                .unwrap()
                .property("cronSpec")
                .is_some()
        );
        assert!(
            schemas
                .for_kind(&GroupVersionKind::new("apps", "v1", "Deployment"))
                .is_some()
        );
    }
}
