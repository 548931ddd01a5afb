//! `/metrics`: the apiserver's Prometheus metrics (OpenMetrics text, `prometheus-client`), named
//! and labelled as kube-apiserver's so existing dashboards and alerts read them:
//! * `apiserver_request_total{verb,dry_run,group,version,resource,subresource,scope,component,code}`
//! * `apiserver_request_duration_seconds{verb,dry_run,group,version,resource,subresource,scope,component}`
//!   (not for watches, which last as long as the client wants)
//! * `apiserver_longrunning_requests{verb,group,version,resource,subresource,scope,component}`:
//!   watches open now
//! * `etcd_request_duration_seconds{operation,type}`: store latency by operation and resource,
//!   for either backend ([`MeteredStore`]).
//!
//! Like every non-public path it needs credentials (upstream grants it to `system:monitoring`;
//! until RBAC, any authenticated user).

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use axum::http::Method;
use bytes::Bytes;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use rkube_store::{KeyValue, ListOptions, ListResult, Result, Revision, Stats, Store, WatchStream};

/// The media type of the answer.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What a request is, as the request metrics label it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `GET`, `LIST`, `WATCH`, `POST`, `PUT`, `PATCH`, `DELETE`, `DELETECOLLECTION`, `APPLY`.
    pub verb: String,
    /// `All` for dry runs, else empty.
    pub dry_run: String,
    /// API group ("" for core).
    pub group: String,
    /// API version.
    pub version: String,
    /// Resource plural ("" for non-resource paths).
    pub resource: String,
    /// Subresource.
    pub subresource: String,
    /// `cluster`, `namespace` or `resource`; "" for non-resource paths.
    pub scope: String,
    /// Always `apiserver`.
    pub component: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    #[prometheus(flatten)]
    request: RequestLabels,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LongRunningLabels {
    verb: String,
    group: String,
    version: String,
    resource: String,
    subresource: String,
    scope: String,
    component: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabels {
    operation: String,
    r#type: String,
}

/// The apiserver's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<CodeLabels, Counter>,
    durations: Family<RequestLabels, Histogram>,
    longrunning: Family<LongRunningLabels, Gauge>,
    store: Family<StoreLabels, Histogram>,
}

/// Upstream's request latency buckets.
const REQUEST_BUCKETS: &[f64] = &[
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0,
    10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
];
/// Upstream's etcd latency buckets.
const STORE_BUCKETS: &[f64] = &[
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0,
    10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
];

impl Metrics {
    /// Empty metrics, registered.
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::default();
        let requests = Family::<CodeLabels, Counter>::default();
        registry.register(
            "apiserver_request",
            "Counter of apiserver requests broken out for each verb, dry run value, group, version, resource, scope, component, and HTTP response code.",
            requests.clone(),
        );
        let durations: Family<RequestLabels, Histogram> =
            Family::new_with_constructor(|| Histogram::new(REQUEST_BUCKETS.iter().copied()));
        registry.register(
            "apiserver_request_duration_seconds",
            "Response latency distribution in seconds for each verb, dry run value, group, version, resource, subresource, scope and component.",
            durations.clone(),
        );
        let longrunning = Family::<LongRunningLabels, Gauge>::default();
        registry.register(
            "apiserver_longrunning_requests",
            "Gauge of all active long-running apiserver requests broken out by verb, group, version, resource, scope and component.",
            longrunning.clone(),
        );
        let store: Family<StoreLabels, Histogram> =
            Family::new_with_constructor(|| Histogram::new(STORE_BUCKETS.iter().copied()));
        registry.register(
            "etcd_request_duration_seconds",
            "Etcd request latency in seconds for each operation and object type.",
            store.clone(),
        );
        Arc::new(Metrics {
            registry,
            requests,
            durations,
            longrunning,
            store,
        })
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding the metrics failed");
        }
        out
    }

    /// Records a finished request.
    pub fn observe(&self, labels: &RequestLabels, code: u16, seconds: Option<f64>) {
        self.requests
            .get_or_create(&CodeLabels {
                request: labels.clone(),
                code: code.to_string(),
            })
            .inc();
        if let Some(s) = seconds {
            self.durations.get_or_create(labels).observe(s);
        }
    }

    /// Counts a watch as open until the guard is dropped.
    pub fn long_running(self: &Arc<Self>, labels: &RequestLabels) -> LongRunningGuard {
        let key = LongRunningLabels {
            verb: labels.verb.clone(),
            group: labels.group.clone(),
            version: labels.version.clone(),
            resource: labels.resource.clone(),
            subresource: labels.subresource.clone(),
            scope: labels.scope.clone(),
            component: labels.component.clone(),
        };
        self.longrunning.get_or_create(&key).inc();
        LongRunningGuard {
            metrics: self.clone(),
            key,
        }
    }

    fn observe_store(&self, operation: &str, key: &str, started: Instant) {
        self.store
            .get_or_create(&StoreLabels {
                operation: operation.to_owned(),
                r#type: resource_of_key(key),
            })
            .observe(started.elapsed().as_secs_f64());
    }
}

/// Decrements `apiserver_longrunning_requests` when dropped (the watch's body ended).
pub struct LongRunningGuard {
    metrics: Arc<Metrics>,
    key: LongRunningLabels,
}

impl Drop for LongRunningGuard {
    fn drop(&mut self) {
        self.metrics.longrunning.get_or_create(&self.key).dec();
    }
}

/// Labels a request from its method, path and query, as upstream's request info does.
pub fn classify(method: &Method, path: &str, query: &str) -> RequestLabels {
    let params: std::collections::HashMap<String, String> =
        form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
    let flag = |name: &str| {
        matches!(
            params.get(name).map(String::as_str),
            Some("1" | "true" | "True")
        )
    };
    let dry_run = if params.get("dryRun").is_some_and(|v| !v.is_empty()) {
        "All"
    } else {
        ""
    };
    let mut labels = RequestLabels {
        verb: method.as_str().to_owned(),
        dry_run: dry_run.to_owned(),
        group: String::new(),
        version: String::new(),
        resource: String::new(),
        subresource: String::new(),
        scope: String::new(),
        component: "apiserver".into(),
    };
    let Ok(crate::rest::Route::Resource(target)) = crate::rest::route(path) else {
        return labels;
    };
    labels.group = target.info.group.to_owned();
    labels.version = target.info.version.to_owned();
    labels.resource = target.info.plural.to_owned();
    labels.subresource = target.subresource.clone().unwrap_or_default();
    labels.scope = if target.name.is_some() {
        "resource"
    } else if target.namespace.is_some() {
        "namespace"
    } else {
        "cluster"
    }
    .to_owned();
    let watching = target.watch_path || flag("watch");
    labels.verb = match *method {
        Method::GET | Method::HEAD if watching => "WATCH",
        Method::GET | Method::HEAD if target.name.is_some() => "GET",
        Method::GET | Method::HEAD => "LIST",
        Method::DELETE if target.name.is_none() => "DELETECOLLECTION",
        _ => method.as_str(),
    }
    .to_owned();
    labels
}

/// `configmaps` for `/registry/configmaps/ns/name` (and `services/specs` style keys).
fn resource_of_key(key: &str) -> String {
    let mut parts = key.trim_start_matches('/').split('/');
    let _registry = parts.next();
    match (parts.next(), parts.next()) {
        (Some("services"), Some(kind @ ("specs" | "endpoints"))) => format!("services/{kind}"),
        (Some(group), Some(resource)) if group.contains('.') => format!("{resource}.{group}"),
        (Some(resource), _) => resource.to_owned(),
        (None, _) => String::new(),
    }
}

/// A [`Store`] that times every call into `etcd_request_duration_seconds`.
pub struct MeteredStore {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

impl MeteredStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Store>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }
}

#[async_trait]
impl Store for MeteredStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let started = Instant::now();
        let out = self.inner.get(key).await;
        self.metrics.observe_store("get", key, started);
        out
    }

    async fn list(&self, opts: ListOptions) -> Result<ListResult> {
        let started = Instant::now();
        let prefix = opts.prefix.clone();
        let out = self.inner.list(opts).await;
        self.metrics.observe_store("list", &prefix, started);
        out
    }

    async fn count(&self, prefix: &str) -> Result<u64> {
        let started = Instant::now();
        let out = self.inner.count(prefix).await;
        self.metrics.observe_store("count", prefix, started);
        out
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<Revision> {
        let started = Instant::now();
        let out = self.inner.create(key, value).await;
        self.metrics.observe_store("create", key, started);
        out
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<Revision> {
        let started = Instant::now();
        let out = self.inner.update(key, value, expected).await;
        self.metrics.observe_store("update", key, started);
        out
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(Revision, KeyValue)> {
        let started = Instant::now();
        let out = self.inner.delete(key, expected).await;
        self.metrics.observe_store("delete", key, started);
        out
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        self.inner.watch(prefix, after).await
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.inner.compact(revision).await
    }

    async fn current_revision(&self) -> Result<Revision> {
        self.inner.current_revision().await
    }

    async fn stats(&self) -> Result<Stats> {
        self.inner.stats().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_labelled_as_upstream_labels_them() {
        let l = classify(&Method::GET, "/api/v1/namespaces/d/pods", "watch=1");
        assert_eq!(
            (l.verb.as_str(), l.resource.as_str(), l.scope.as_str()),
            ("WATCH", "pods", "namespace")
        );
        let l = classify(&Method::GET, "/apis/apps/v1/deployments", "");
        assert_eq!(
            (l.verb.as_str(), l.group.as_str(), l.scope.as_str()),
            ("LIST", "apps", "cluster")
        );
        let l = classify(
            &Method::PUT,
            "/apis/apps/v1/namespaces/d/deployments/w/scale",
            "dryRun=All",
        );
        assert_eq!(
            (
                l.verb.as_str(),
                l.subresource.as_str(),
                l.scope.as_str(),
                l.dry_run.as_str()
            ),
            ("PUT", "scale", "resource", "All")
        );
        let l = classify(&Method::DELETE, "/api/v1/namespaces/d/configmaps", "");
        assert_eq!(l.verb, "DELETECOLLECTION");
        let l = classify(&Method::GET, "/healthz", "");
        assert_eq!((l.verb.as_str(), l.resource.as_str()), ("GET", ""));
    }

    #[test]
    fn store_keys_name_their_resource() {
        assert_eq!(resource_of_key("/registry/configmaps/d/x"), "configmaps");
        assert_eq!(
            resource_of_key("/registry/services/specs/d/x"),
            "services/specs"
        );
        assert_eq!(
            resource_of_key("/registry/apiextensions.k8s.io/customresourcedefinitions/x"),
            "customresourcedefinitions.apiextensions.k8s.io"
        );
    }

    #[test]
    fn the_exposition_has_upstreams_names() {
        let m = Metrics::new();
        let l = classify(&Method::GET, "/api/v1/namespaces/d/pods/p", "");
        m.observe(&l, 200, Some(0.01));
        let guard = m.long_running(&classify(&Method::GET, "/api/v1/pods", "watch=true"));
        let text = m.encode();
        assert!(text.contains("apiserver_request_total{verb=\"GET\",dry_run=\"\",group=\"\",version=\"v1\",resource=\"pods\",subresource=\"\",scope=\"resource\",component=\"apiserver\",code=\"200\"} 1"), "{text}");
        assert!(
            text.contains("apiserver_request_duration_seconds_bucket{"),
            "{text}"
        );
        assert!(
            text.contains("apiserver_longrunning_requests{verb=\"WATCH\""),
            "{text}"
        );
        assert!(text.contains("} 1\n"), "{text}");
        drop(guard);
        assert!(m.encode().contains(
            "resource=\"pods\",subresource=\"\",scope=\"cluster\",component=\"apiserver\"} 0"
        ));
    }
}
