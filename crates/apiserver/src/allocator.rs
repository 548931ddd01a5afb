//! Service cluster IPs (from `--service-cidr`) and node ports (30000–32767).
//!
//! Each allocation is one key in the store, created only if absent, so two concurrent creates
//! can never get the same address and allocations survive restarts:
//! `/registry/ipaddresses/<ip>` (upstream's key for its `networking.k8s.io/v1` IPAddress objects,
//! with the same content) and `/registry/servicenodeports/<port>` (upstream keeps a bitmap
//! instead; one key per port keeps claims atomic without a read-modify-write of a shared value).
//! Claims are made before the Service is written and released after it is deleted; a crash in
//! between leaves a claim without its Service, which [`ServiceAllocator::repair`] removes at the
//! next start (it also claims what Services stored before the allocator existed hold).
//!
//! Dynamic IPs are random, from the upper part of the range first (upstream's split: the lower
//! band is left for IPs clients ask for); the first address is never given out dynamically: it
//! is the `kubernetes` Service's.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use async_trait::async_trait;
use axum::http::StatusCode;
use rkube_store::Error as StoreError;
use serde_json::{Value, json};

use crate::registry::validation::FieldError;
use crate::registry::{catalog, str_at};
use crate::rest::hooks::{Claims, StoreHooks};
use crate::rest::storage::{self, Objects, internal};
use crate::status::ApiError;

/// Where IP claims live.
pub const IP_PREFIX: &str = "/registry/ipaddresses/";
/// Where node port claims live.
pub const NODE_PORT_PREFIX: &str = "/registry/servicenodeports/";
/// Upstream's node port range.
pub const NODE_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;

/// A bad `--service-cidr`.
#[derive(Debug, thiserror::Error)]
pub enum CidrError {
    /// Not `a.b.c.d/n`.
    #[error(
        "service CIDR {0:?} is not an IPv4 CIDR (a.b.c.d/n); IPv6 service ranges are not supported yet"
    )]
    Syntax(String),
    /// Too small to hold the `kubernetes` Service and anything else.
    #[error("service CIDR {0:?} is too small: it needs at least /29")]
    TooSmall(String),
}

/// An IPv4 range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    base: u32,
    prefix: u8,
}

impl Cidr {
    /// Parses `10.43.0.0/16`.
    pub fn parse(text: &str) -> Result<Cidr, CidrError> {
        let syntax = || CidrError::Syntax(text.to_owned());
        let (ip, len) = text.split_once('/').ok_or_else(syntax)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| syntax())?;
        let prefix: u8 = len.parse().map_err(|_| syntax())?;
        if prefix > 32 {
            return Err(syntax());
        }
        if prefix > 29 {
            return Err(CidrError::TooSmall(text.to_owned()));
        }
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        Ok(Cidr {
            base: u32::from(ip) & mask,
            prefix,
        })
    }

    /// Usable addresses: all but the network and broadcast addresses.
    fn size(&self) -> u32 {
        ((1u64 << (32 - self.prefix)) - 2).min(u64::from(u32::MAX)) as u32
    }

    /// The `offset`th usable address (0 = the first after the network address).
    fn nth(&self, offset: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.base + 1 + offset)
    }

    /// The offset of `ip`, when it is a usable address of the range.
    fn offset(&self, ip: Ipv4Addr) -> Option<u32> {
        let n = u32::from(ip);
        (n > self.base && n - self.base - 1 < self.size()).then(|| n - self.base - 1)
    }

    /// The first usable address: the `kubernetes` Service's.
    pub fn first(&self) -> Ipv4Addr {
        self.nth(0)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

/// Allocates cluster IPs and node ports for Services.
pub struct ServiceAllocator {
    cidr: Cidr,
}

/// What one Service holds.
#[derive(Debug, Default, PartialEq, Eq)]
struct Held {
    ips: Vec<Ipv4Addr>,
    node_ports: Vec<u16>,
}

fn service_ref(obj: &Value) -> (String, String) {
    (
        str_at(obj, "/metadata/namespace").to_owned(),
        str_at(obj, "/metadata/name").to_owned(),
    )
}

/// Whether the Service's type gets a cluster IP.
fn wants_ip(obj: &Value) -> bool {
    str_at(obj, "/spec/type") != "ExternalName"
}

fn wants_node_ports(obj: &Value) -> bool {
    matches!(str_at(obj, "/spec/type"), "NodePort" | "LoadBalancer")
        && obj
            .pointer("/spec/allocateLoadBalancerNodePorts")
            .and_then(Value::as_bool)
            != Some(false)
}

fn held(obj: &Value) -> Held {
    let mut out = Held::default();
    if wants_ip(obj) {
        for ip in requested_ips(obj) {
            if let Ok(ip) = ip.parse() {
                out.ips.push(ip);
            }
        }
    }
    for p in ports(obj) {
        if let Some(np) = p
            .get("nodePort")
            .and_then(Value::as_u64)
            .and_then(|n| u16::try_from(n).ok())
            && np != 0
            && !out.node_ports.contains(&np)
        {
            out.node_ports.push(np);
        }
    }
    out
}

fn ports(obj: &Value) -> Vec<Value> {
    obj.pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// `clusterIPs`, or `[clusterIP]`.
fn requested_ips(obj: &Value) -> Vec<String> {
    let list: Vec<String> = obj
        .pointer("/spec/clusterIPs")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if !list.is_empty() {
        return list;
    }
    match str_at(obj, "/spec/clusterIP") {
        "" => Vec::new(),
        ip => vec![ip.to_owned()],
    }
}

fn invalid(obj: &Value, errors: Vec<FieldError>) -> ApiError {
    let info = catalog::find("", "v1", "services").expect("services are in the catalogue");
    crate::rest::invalid(info, str_at(obj, "/metadata/name"), &errors)
}

impl ServiceAllocator {
    /// An allocator over `cidr`.
    pub fn new(cidr: Cidr) -> Arc<Self> {
        Arc::new(Self { cidr })
    }

    /// The range.
    pub fn cidr(&self) -> Cidr {
        self.cidr
    }

    fn ip_key(ip: Ipv4Addr) -> String {
        format!("{IP_PREFIX}{ip}")
    }

    fn port_key(port: u16) -> String {
        format!("{NODE_PORT_PREFIX}{port}")
    }

    fn claim_value(kind: &str, name: &str, owner: &(String, String)) -> bytes::Bytes {
        let value = match kind {
            "IPAddress" => json!({"apiVersion": "networking.k8s.io/v1", "kind": "IPAddress",
                "metadata": {"name": name, "labels": {
                    "ipaddress.kubernetes.io/ip-family": "IPv4",
                    "ipaddress.kubernetes.io/managed-by": "ipallocator.k8s.io"}},
                "spec": {"parentRef": {"group": "", "resource": "services",
                    "namespace": owner.0, "name": owner.1}}}),
            _ => json!({"kind": "ServiceNodePort", "port": name.parse::<u16>().unwrap_or(0),
                "spec": {"parentRef": {"group": "", "resource": "services",
                    "namespace": owner.0, "name": owner.1}}}),
        };
        bytes::Bytes::from(serde_json::to_vec(&value).unwrap_or_default())
    }

    fn owner_of(value: &[u8]) -> Option<(String, String)> {
        let v: Value = serde_json::from_slice(value).ok()?;
        Some((
            str_at(&v, "/spec/parentRef/namespace").to_owned(),
            str_at(&v, "/spec/parentRef/name").to_owned(),
        ))
    }

    /// Claims `key` for `owner`. `Ok(false)`: someone else holds it. A key the same Service
    /// already holds counts as claimed (idempotent).
    async fn claim(
        &self,
        objects: &Objects,
        key: &str,
        value: bytes::Bytes,
        owner: &(String, String),
        dry_run: bool,
    ) -> Result<bool, ApiError> {
        if dry_run {
            return match objects.store().get(key).await.map_err(internal)? {
                None => Ok(true),
                Some(kv) => Ok(Self::owner_of(&kv.value).as_ref() == Some(owner)),
            };
        }
        match objects.store().create(key, value).await {
            Ok(_) => Ok(true),
            Err(StoreError::KeyExists { .. }) => {
                match objects.store().get(key).await.map_err(internal)? {
                    Some(kv) => Ok(Self::owner_of(&kv.value).as_ref() == Some(owner)),
                    None => Ok(false),
                }
            }
            Err(e) => Err(internal(e)),
        }
    }

    /// Deletes `key` if `owner` holds it.
    async fn release(&self, objects: &Objects, key: &str, owner: &(String, String)) {
        let kv = match objects.store().get(key).await {
            Ok(Some(kv)) => kv,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(%key, error = %e, "reading an allocation to release failed");
                return;
            }
        };
        if Self::owner_of(&kv.value).as_ref() != Some(owner) {
            return;
        }
        match objects.store().delete(key, Some(kv.mod_revision)).await {
            Ok(_) | Err(StoreError::NotFound { .. } | StoreError::Conflict { .. }) => {}
            Err(e) => tracing::warn!(%key, error = %e, "releasing an allocation failed"),
        }
    }

    /// Claims a free address at random (upper band first).
    async fn allocate_ip(
        &self,
        objects: &Objects,
        owner: &(String, String),
        dry_run: bool,
    ) -> Result<Ipv4Addr, ApiError> {
        let size = self.cidr.size();
        // Upstream's static band: min(max(16, size/16), 256) addresses at the bottom.
        let band = (size / 16).clamp(16, 256).min(size / 2);
        for (lo, hi) in [(band, size), (1, band)] {
            if hi <= lo {
                continue;
            }
            let span = hi - lo;
            let start = rand::random_range(0..span);
            // Probe at most a bounded number of addresses before the exhaustive scan.
            for i in 0..span {
                let offset = lo + (start + i) % span;
                let ip = self.cidr.nth(offset);
                let key = Self::ip_key(ip);
                let value = Self::claim_value("IPAddress", &ip.to_string(), owner);
                if self.claim(objects, &key, value, owner, dry_run).await? {
                    return Ok(ip);
                }
            }
        }
        Err(ApiError::internal(format!(
            "Internal error occurred: failed to allocate a serviceIP: range is full ({})",
            self.cidr
        )))
    }

    async fn allocate_port(
        &self,
        objects: &Objects,
        owner: &(String, String),
        taken: &HashSet<u16>,
        dry_run: bool,
    ) -> Result<u16, ApiError> {
        let (lo, hi) = (*NODE_PORTS.start(), *NODE_PORTS.end());
        let span = u32::from(hi - lo) + 1;
        let start = rand::random_range(0..span);
        for i in 0..span {
            let port = lo + ((start + i) % span) as u16;
            if taken.contains(&port) {
                continue;
            }
            let value = Self::claim_value("NodePort", &port.to_string(), owner);
            if self
                .claim(objects, &Self::port_key(port), value, owner, dry_run)
                .await?
            {
                return Ok(port);
            }
        }
        Err(ApiError::internal(
            "Internal error occurred: failed to allocate a nodePort: range is full",
        ))
    }

    /// Claims (or allocates) what `obj` needs and `old` did not hold, filling in allocated
    /// values. Returns the new claims.
    async fn allocate(
        &self,
        objects: &Objects,
        obj: &mut Value,
        old: Option<&Value>,
        dry_run: bool,
    ) -> Result<Claims, ApiError> {
        let owner = service_ref(obj);
        let before = old.map(held).unwrap_or_default();
        let mut claims = Vec::new();
        let result = self
            .allocate_inner(objects, obj, &owner, &before, dry_run, &mut claims)
            .await;
        if let Err(e) = result {
            if !dry_run {
                self.release_keys(objects, &claims, &owner).await;
            }
            return Err(e);
        }
        Ok(if dry_run { Vec::new() } else { claims })
    }

    async fn allocate_inner(
        &self,
        objects: &Objects,
        obj: &mut Value,
        owner: &(String, String),
        before: &Held,
        dry_run: bool,
        claims: &mut Claims,
    ) -> Result<(), ApiError> {
        if wants_ip(obj) {
            let requested = requested_ips(obj);
            let single = str_at(obj, "/spec/clusterIP");
            if !single.is_empty() && requested.first().is_some_and(|first| first != single) {
                return Err(invalid(
                    obj,
                    vec![FieldError::invalid(
                        "spec.clusterIPs",
                        json!(requested),
                        "element [0] must match clusterIP",
                    )],
                ));
            }
            if requested.len() > 1 {
                return Err(invalid(
                    obj,
                    vec![FieldError::invalid(
                        "spec.clusterIPs",
                        json!(requested),
                        "only one IP family (IPv4) is served by this cluster",
                    )],
                ));
            }
            let ip = match requested.first().map(String::as_str) {
                Some("None") => None,
                Some(text) => {
                    let bad = |detail: String| {
                        invalid(
                            obj,
                            vec![FieldError::invalid(
                                "spec.clusterIPs",
                                json!([text]),
                                detail,
                            )],
                        )
                    };
                    let Ok(ip) = text.parse::<Ipv4Addr>() else {
                        return Err(bad(format!(
                            "failed to allocate IP {text}: must be a valid IPv4 address"
                        )));
                    };
                    if self.cidr.offset(ip).is_none() {
                        return Err(bad(format!(
                            "failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {}",
                            self.cidr
                        )));
                    }
                    if !before.ips.contains(&ip) {
                        let key = Self::ip_key(ip);
                        let value = Self::claim_value("IPAddress", &ip.to_string(), owner);
                        if !self.claim(objects, &key, value, owner, dry_run).await? {
                            return Err(bad(format!(
                                "failed to allocate IP {ip}: provided IP is already allocated"
                            )));
                        }
                        claims.push(key);
                    }
                    Some(ip)
                }
                None => {
                    let ip = self.allocate_ip(objects, owner, dry_run).await?;
                    claims.push(Self::ip_key(ip));
                    Some(ip)
                }
            };
            let text = ip.map_or_else(|| "None".to_owned(), |ip| ip.to_string());
            let spec = spec_mut(obj);
            spec.insert("clusterIP".into(), json!(text));
            spec.insert("clusterIPs".into(), json!([text]));
            spec.entry("ipFamilies").or_insert(json!(["IPv4"]));
            spec.entry("ipFamilyPolicy").or_insert(json!("SingleStack"));
        }
        if wants_node_ports(obj) {
            let mut taken: HashSet<u16> = HashSet::new();
            let mut list = ports(obj);
            // Requested ports first, so a dynamic one never takes a port asked for later.
            for (i, p) in list.iter().enumerate() {
                let Some(np) = p
                    .get("nodePort")
                    .and_then(Value::as_i64)
                    .filter(|n| *n != 0)
                else {
                    continue;
                };
                let field = format!("spec.ports[{i}].nodePort");
                let port = u16::try_from(np).ok().filter(|p| NODE_PORTS.contains(p));
                let Some(port) = port else {
                    return Err(invalid(
                        obj,
                        vec![FieldError::invalid(
                            field,
                            json!(np),
                            format!(
                                "provided port is not in the valid range. The range of valid ports is {}-{}",
                                NODE_PORTS.start(),
                                NODE_PORTS.end()
                            ),
                        )],
                    ));
                };
                if taken.contains(&port) || before.node_ports.contains(&port) {
                    taken.insert(port);
                    continue;
                }
                let value = Self::claim_value("NodePort", &port.to_string(), owner);
                let key = Self::port_key(port);
                if !self.claim(objects, &key, value, owner, dry_run).await? {
                    return Err(invalid(
                        obj,
                        vec![FieldError::invalid(
                            field,
                            json!(np),
                            "provided port is already allocated",
                        )],
                    ));
                }
                claims.push(key);
                taken.insert(port);
            }
            for p in list.iter_mut() {
                if p.get("nodePort")
                    .and_then(Value::as_i64)
                    .is_some_and(|n| n != 0)
                {
                    continue;
                }
                let port = self.allocate_port(objects, owner, &taken, dry_run).await?;
                claims.push(Self::port_key(port));
                taken.insert(port);
                if let Some(map) = p.as_object_mut() {
                    map.insert("nodePort".into(), json!(port));
                }
            }
            spec_mut(obj).insert("ports".into(), Value::Array(list));
        }
        Ok(())
    }

    async fn release_keys(&self, objects: &Objects, keys: &[String], owner: &(String, String)) {
        for key in keys {
            self.release(objects, key, owner).await;
        }
    }

    /// Releases what `old` held and `new` (if any) does not.
    async fn release_diff(&self, objects: &Objects, old: &Value, new: Option<&Value>) {
        let owner = service_ref(old);
        let before = held(old);
        let after = new.map(held).unwrap_or_default();
        for ip in before.ips.iter().filter(|ip| !after.ips.contains(ip)) {
            self.release(objects, &Self::ip_key(*ip), &owner).await;
        }
        for port in before
            .node_ports
            .iter()
            .filter(|p| !after.node_ports.contains(p))
        {
            self.release(objects, &Self::port_key(*port), &owner).await;
        }
    }

    /// Makes the claims match the stored Services: drops claims whose Service is gone or no
    /// longer holds them (a crash between claim and write), claims what Services hold without a
    /// claim (data from before the allocator).
    pub async fn repair(&self, objects: &Objects) -> Result<(), ApiError> {
        let services = catalog::find("", "v1", "services").expect("services are in the catalogue");
        let page = objects
            .list(&services.prefix(None), None, 0, 0)
            .await
            .map_err(internal)?;
        let mut wanted: HashMap<String, (String, String)> = HashMap::new();
        for (_, svc) in &page.items {
            let owner = service_ref(svc);
            let h = held(svc);
            for ip in h.ips {
                wanted.insert(Self::ip_key(ip), owner.clone());
            }
            for port in h.node_ports {
                wanted.insert(Self::port_key(port), owner.clone());
            }
        }
        for prefix in [IP_PREFIX, NODE_PORT_PREFIX] {
            let claims = objects
                .store()
                .list(rkube_store::ListOptions {
                    prefix: prefix.to_owned(),
                    start_key: None,
                    limit: 0,
                    revision: 0,
                })
                .await
                .map_err(internal)?;
            for kv in claims.items {
                let owner = Self::owner_of(&kv.value);
                match wanted.get(&kv.key) {
                    Some(w) if Some(w) == owner.as_ref() => {
                        wanted.remove(&kv.key);
                    }
                    _ => {
                        tracing::info!(key = %kv.key, "releasing an allocation no Service holds");
                        match objects.store().delete(&kv.key, Some(kv.mod_revision)).await {
                            Ok(_)
                            | Err(StoreError::NotFound { .. } | StoreError::Conflict { .. }) => {}
                            Err(e) => return Err(internal(e)),
                        }
                    }
                }
            }
        }
        for (key, owner) in wanted {
            let name = key.rsplit('/').next().unwrap_or_default().to_owned();
            let kind = if key.starts_with(IP_PREFIX) {
                "IPAddress"
            } else {
                "NodePort"
            };
            let value = Self::claim_value(kind, &name, &owner);
            if !self.claim(objects, &key, value, &owner, false).await? {
                tracing::warn!(%key, service = ?owner, "two Services hold the same allocation");
            }
        }
        Ok(())
    }
}

fn spec_mut(obj: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !obj.get("spec").is_some_and(Value::is_object) {
        obj["spec"] = json!({});
    }
    obj["spec"].as_object_mut().expect("made an object above")
}

#[async_trait]
impl StoreHooks for ServiceAllocator {
    async fn before_create(
        &self,
        objects: &Objects,
        obj: &mut Value,
        dry_run: bool,
    ) -> Result<Claims, ApiError> {
        self.allocate(objects, obj, None, dry_run).await
    }

    async fn before_update(
        &self,
        objects: &Objects,
        new: &mut Value,
        old: &Value,
        dry_run: bool,
    ) -> Result<Claims, ApiError> {
        self.allocate(objects, new, Some(old), dry_run).await
    }

    async fn rollback(&self, objects: &Objects, claims: Claims) {
        // Claims are only ever made for the object being written; its owner is in each value.
        for key in claims {
            if let Ok(Some(kv)) = objects.store().get(&key).await
                && let Some(owner) = Self::owner_of(&kv.value)
            {
                self.release(objects, &key, &owner).await;
            }
        }
    }

    async fn after_update(&self, objects: &Objects, new: &Value, old: &Value) {
        self.release_diff(objects, old, Some(new)).await;
    }

    async fn after_delete(&self, objects: &Objects, old: &Value) {
        self.release_diff(objects, old, None).await;
    }
}

/// Creates or refreshes the `default/kubernetes` Service (the first address of the range), its
/// Endpoints and its EndpointSlice, pointing at this apiserver.
pub async fn ensure_kubernetes_service(
    objects: &Objects,
    allocator: &ServiceAllocator,
    advertise: std::net::SocketAddr,
) -> Result<(), ApiError> {
    let services = catalog::find("", "v1", "services").expect("services are in the catalogue");
    let key = services.key(Some("default"), "kubernetes");
    if objects.get(&key).await?.is_none() {
        let ip = allocator.cidr().first().to_string();
        let svc = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "namespace": "default",
                "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"type": "ClusterIP", "clusterIP": ip,
                "ports": [{"name": "https", "port": 443, "protocol": "TCP",
                    "targetPort": advertise.port()}]}});
        let mut svc = crate::rest::admit_create(services, svc)?;
        let claims = allocator.before_create(objects, &mut svc, false).await?;
        match objects.store().create(&key, storage::encode(&svc)).await {
            Ok(_) => {}
            Err(StoreError::KeyExists { .. }) => allocator.rollback(objects, claims).await,
            Err(e) => {
                allocator.rollback(objects, claims).await;
                return Err(internal(e));
            }
        }
    } else {
        // The port may differ from the last start; keep targetPort true.
        upsert(objects, &key, |svc| {
            if let Some(port) = svc.pointer_mut("/spec/ports/0/targetPort") {
                *port = json!(advertise.port());
            }
        })
        .await?;
    }
    let ip = advertise.ip().to_string();
    let endpoints = catalog::find("", "v1", "endpoints").expect("endpoints are in the catalogue");
    let ep = json!({"apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default",
            "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": ip}],
            "ports": [{"name": "https", "port": advertise.port(), "protocol": "TCP"}]}]});
    put(objects, endpoints, ep).await?;
    let slices = catalog::find("discovery.k8s.io", "v1", "endpointslices")
        .expect("endpointslices are in the catalogue");
    let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default",
            "labels": {"kubernetes.io/service-name": "kubernetes"}},
        "addressType": if advertise.is_ipv4() { "IPv4" } else { "IPv6" },
        "endpoints": [{"addresses": [ip], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": advertise.port(), "protocol": "TCP"}]});
    put(objects, slices, slice).await
}

/// Creates `obj`, or replaces its content (keeping metadata) when it differs.
async fn put(
    objects: &Objects,
    info: &'static crate::registry::ResourceInfo,
    obj: Value,
) -> Result<(), ApiError> {
    let key = info.key(Some("default"), str_at(&obj, "/metadata/name"));
    if objects.get(&key).await?.is_none() {
        let obj = crate::rest::admit_create(info, obj)?;
        return match objects.store().create(&key, storage::encode(&obj)).await {
            Ok(_) | Err(StoreError::KeyExists { .. }) => Ok(()),
            Err(e) => Err(internal(e)),
        };
    }
    upsert(objects, &key, move |current| {
        for (k, v) in obj.as_object().into_iter().flatten() {
            if k != "metadata" {
                current[k] = v.clone();
            }
        }
    })
    .await
}

async fn upsert(objects: &Objects, key: &str, change: impl Fn(&mut Value)) -> Result<(), ApiError> {
    for _ in 0..8 {
        let Some((current, revision)) = objects.get(key).await? else {
            return Ok(());
        };
        let mut new = current.clone();
        change(&mut new);
        if new == current {
            return Ok(());
        }
        match objects
            .store()
            .update(key, storage::encode(&new), revision)
            .await
        {
            Ok(_) => return Ok(()),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(internal(e)),
        }
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "Conflict",
        format!("{key} kept changing while it was being updated"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rkube_store::embedded::EmbeddedStore;

    fn objects(dir: &tempfile::TempDir) -> Objects {
        let store = EmbeddedStore::open(dir.path().join("state.redb")).unwrap();
        Objects::new(
            Arc::new(store),
            Arc::new(crate::openapi::OpenApi::new(Vec::new())),
        )
    }

    fn svc(name: &str, spec: Value) -> Value {
        json!({"metadata": {"name": name, "namespace": "default"}, "spec": spec})
    }

    #[test]
    fn cidrs_parse_and_bound_the_range() {
        let c = Cidr::parse("10.43.7.9/16").unwrap();
        assert_eq!(c.to_string(), "10.43.0.0/16");
        assert_eq!(c.first(), Ipv4Addr::new(10, 43, 0, 1));
        assert_eq!(c.size(), 65534);
        assert_eq!(c.offset("10.43.255.254".parse().unwrap()), Some(65533));
        assert_eq!(
            c.offset("10.43.255.255".parse().unwrap()),
            None,
            "broadcast"
        );
        assert_eq!(c.offset("10.43.0.0".parse().unwrap()), None, "network");
        assert_eq!(c.offset("10.44.0.1".parse().unwrap()), None);
        for bad in ["10.43.0.0", "10.43.0.0/33", "fd00::/64", "x/16"] {
            assert!(
                matches!(Cidr::parse(bad), Err(CidrError::Syntax(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            Cidr::parse("10.0.0.0/30"),
            Err(CidrError::TooSmall(_))
        ));
    }

    #[tokio::test]
    async fn ips_and_node_ports_are_claimed_once_and_released() {
        let dir = tempfile::tempdir().unwrap();
        let objects = objects(&dir);
        let alloc = ServiceAllocator::new(Cidr::parse("10.43.0.0/24").unwrap());
        let mut a = svc("a", json!({"type": "NodePort", "ports": [{"port": 80}]}));
        let claims = alloc.before_create(&objects, &mut a, false).await.unwrap();
        assert_eq!(claims.len(), 2);
        let ip = str_at(&a, "/spec/clusterIP").to_owned();
        assert_eq!(a["spec"]["clusterIPs"], json!([ip]));
        assert_eq!(a["spec"]["ipFamilies"], json!(["IPv4"]));
        let np = a["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
        assert!(NODE_PORTS.contains(&(np as u16)));

        // The same IP or port for another Service is refused with upstream's words.
        let mut b = svc("b", json!({"clusterIP": ip, "ports": [{"port": 80}]}));
        let err = alloc
            .before_create(&objects, &mut b, false)
            .await
            .unwrap_err();
        assert_eq!(err.code, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            err.message,
            format!(
                "Service \"b\" is invalid: spec.clusterIPs: Invalid value: [\"{ip}\"]: failed to allocate IP {ip}: provided IP is already allocated"
            )
        );
        let mut c = svc(
            "c",
            json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": np}]}),
        );
        let err = alloc
            .before_create(&objects, &mut c, false)
            .await
            .unwrap_err();
        assert!(
            err.message
                .contains("spec.ports[0].nodePort: Invalid value"),
            "{}",
            err.message
        );
        assert!(
            err.message.ends_with("provided port is already allocated"),
            "{}",
            err.message
        );
        // The failed create left no claim behind (its IP was allocated before the port failed).
        let keys = objects
            .store()
            .list(rkube_store::ListOptions {
                prefix: "/registry/".into(),
                start_key: None,
                limit: 0,
                revision: 0,
            })
            .await
            .unwrap();
        assert_eq!(
            keys.items.len(),
            2,
            "{:?}",
            keys.items.iter().map(|k| &k.key).collect::<Vec<_>>()
        );

        // Out of range.
        let mut d = svc(
            "d",
            json!({"clusterIP": "10.0.0.1", "ports": [{"port": 80}]}),
        );
        let err = alloc
            .before_create(&objects, &mut d, false)
            .await
            .unwrap_err();
        assert!(
            err.message
                .contains("is not in the valid range. The range of valid IPs is 10.43.0.0/24"),
            "{}",
            err.message
        );
        let mut e = svc(
            "e",
            json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]}),
        );
        let err = alloc
            .before_create(&objects, &mut e, false)
            .await
            .unwrap_err();
        assert!(
            err.message
                .ends_with("The range of valid ports is 30000-32767"),
            "{}",
            err.message
        );

        // Headless and ExternalName get nothing.
        let mut h = svc("h", json!({"clusterIP": "None"}));
        assert!(
            alloc
                .before_create(&objects, &mut h, false)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(h["spec"]["clusterIPs"], json!(["None"]));
        let mut x = svc(
            "x",
            json!({"type": "ExternalName", "externalName": "example.com"}),
        );
        assert!(
            alloc
                .before_create(&objects, &mut x, false)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(x["spec"].get("clusterIP").is_none());

        // Deleting releases: b can now have the IP.
        alloc.after_delete(&objects, &a).await;
        let mut b = svc("b", json!({"clusterIP": ip, "ports": [{"port": 80}]}));
        alloc.before_create(&objects, &mut b, false).await.unwrap();
    }

    #[tokio::test]
    async fn a_dry_run_checks_without_claiming() {
        let dir = tempfile::tempdir().unwrap();
        let objects = objects(&dir);
        let alloc = ServiceAllocator::new(Cidr::parse("10.43.0.0/24").unwrap());
        let mut a = svc("a", json!({"clusterIP": "10.43.0.50"}));
        assert!(
            alloc
                .before_create(&objects, &mut a, true)
                .await
                .unwrap()
                .is_empty()
        );
        let mut b = svc("b", json!({"clusterIP": "10.43.0.50"}));
        alloc.before_create(&objects, &mut b, false).await.unwrap();
        let mut c = svc("c", json!({"clusterIP": "10.43.0.50"}));
        assert!(alloc.before_create(&objects, &mut c, true).await.is_err());
    }

    #[tokio::test]
    async fn concurrent_creates_never_share_an_address() {
        let dir = tempfile::tempdir().unwrap();
        let objects = objects(&dir);
        // 14 usable addresses, the first kept for `kubernetes`; 13 Services get the rest.
        let alloc = ServiceAllocator::new(Cidr::parse("10.43.0.0/28").unwrap());
        let mut tasks = Vec::new();
        for i in 0..13 {
            let (objects, alloc) = (objects.clone(), alloc.clone());
            tasks.push(tokio::spawn(async move {
                let mut s = svc(&format!("s{i}"), json!({"ports": [{"port": 80}]}));
                alloc.before_create(&objects, &mut s, false).await.unwrap();
                str_at(&s, "/spec/clusterIP").to_owned()
            }));
        }
        let mut ips = HashSet::new();
        for t in tasks {
            assert!(ips.insert(t.await.unwrap()));
        }
        let mut full = svc("full", json!({"ports": [{"port": 80}]}));
        let err = alloc
            .before_create(&objects, &mut full, false)
            .await
            .unwrap_err();
        assert!(err.message.contains("range is full"), "{}", err.message);
    }

    #[tokio::test]
    async fn repair_drops_orphans_and_claims_what_services_hold() {
        let dir = tempfile::tempdir().unwrap();
        let objects = objects(&dir);
        let alloc = ServiceAllocator::new(Cidr::parse("10.43.0.0/24").unwrap());
        // An orphan claim (crash between claim and write) ...
        let mut orphan = svc("gone", json!({"clusterIP": "10.43.0.9"}));
        alloc
            .before_create(&objects, &mut orphan, false)
            .await
            .unwrap();
        // ... and a Service stored without a claim.
        let services = catalog::find("", "v1", "services").unwrap();
        let held = svc(
            "old",
            json!({"clusterIP": "10.43.0.10", "clusterIPs": ["10.43.0.10"]}),
        );
        objects
            .store()
            .create(
                &services.key(Some("default"), "old"),
                storage::encode(&held),
            )
            .await
            .unwrap();
        alloc.repair(&objects).await.unwrap();
        let mut again = svc("new", json!({"clusterIP": "10.43.0.9"}));
        alloc
            .before_create(&objects, &mut again, false)
            .await
            .unwrap();
        let mut clash = svc("clash", json!({"clusterIP": "10.43.0.10"}));
        assert!(
            alloc
                .before_create(&objects, &mut clash, false)
                .await
                .is_err()
        );
    }
}
