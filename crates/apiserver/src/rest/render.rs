//! The shapes an answer takes: the object, a `Table` (kubectl's columns), or
//! `PartialObjectMetadata`; lists of each.

use serde_json::{Value, json};

use super::negotiate::Shape;
use crate::registry::ResourceInfo;

/// How much of each object a `Table` row carries (`includeObject`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncludeObject {
    /// No object.
    None,
    /// `PartialObjectMetadata` (the default).
    Metadata,
    /// The whole object.
    Object,
}

impl IncludeObject {
    /// Parses the query parameter.
    pub fn parse(v: Option<&str>) -> Result<Self, String> {
        match v {
            None | Some("") | Some("Metadata") => Ok(Self::Metadata),
            Some("None") => Ok(Self::None),
            Some("Object") => Ok(Self::Object),
            Some(other) => Err(format!(
                "includeObject: Unsupported value: {other:?}: supported values: \"Metadata\", \"None\", \"Object\""
            )),
        }
    }
}

/// `PartialObjectMetadata` of an object.
pub fn partial(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
    })
}

/// The `columnDefinitions` of a resource's `Table`.
pub fn column_definitions(info: &ResourceInfo) -> Value {
    Value::Array(
        info.strategy
            .columns()
            .iter()
            .map(|c| {
                json!({"name": c.name, "type": c.kind, "format": c.format,
                       "description": c.description, "priority": c.priority})
            })
            .collect(),
    )
}

/// A `Table` of `items`.
pub fn table(
    info: &ResourceInfo,
    items: &[Value],
    list_meta: Value,
    include: IncludeObject,
) -> Value {
    let rows: Vec<Value> = items
        .iter()
        .map(|obj| table_row(info, obj, include))
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": column_definitions(info),
        "rows": rows,
    })
}

/// One `Table` row: the resource's cells, and the object as `include` asks.
/// The cells come from the stored form (which the strategy reads); the object is shown in the
/// requested version.
pub fn table_row(info: &ResourceInfo, obj: &Value, include: IncludeObject) -> Value {
    let mut row = json!({"cells": info.strategy.cells(obj)});
    match include {
        IncludeObject::None => {}
        IncludeObject::Metadata => row["object"] = partial(obj),
        IncludeObject::Object => row["object"] = info.to_served(obj.clone()),
    }
    row
}

/// One object in the requested shape.
pub fn one(info: &ResourceInfo, obj: Value, shape: Shape, include: IncludeObject) -> Value {
    match shape {
        Shape::Table => {
            let rv = obj.pointer("/metadata/resourceVersion").cloned();
            let meta = rv.map_or(json!({}), |rv| json!({"resourceVersion": rv}));
            table(info, &[obj], meta, include)
        }
        Shape::Metadata => partial(&obj),
        _ => info.to_served(obj),
    }
}

/// A list in the requested shape.
pub fn list(
    info: &ResourceInfo,
    items: Vec<Value>,
    resource_version: String,
    continue_token: Option<String>,
    shape: Shape,
    include: IncludeObject,
) -> Value {
    let mut meta = json!({"resourceVersion": resource_version});
    if let Some(token) = continue_token {
        meta["continue"] = Value::String(token);
    }
    match shape {
        Shape::Table => table(info, &items, meta, include),
        Shape::Metadata => json!({
            "kind": "PartialObjectMetadataList",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": meta,
            "items": items.iter().map(partial).collect::<Vec<_>>(),
        }),
        _ => {
            // Upstream's typed lists leave kind and apiVersion out of the items.
            let items: Vec<Value> = items
                .into_iter()
                .map(|obj| {
                    let mut obj = info.to_served(obj);
                    if let Some(map) = obj.as_object_mut() {
                        map.remove("kind");
                        map.remove("apiVersion");
                    }
                    obj
                })
                .collect();
            json!({
                "kind": format!("{}List", info.kind),
                "apiVersion": info.api_version(),
                "metadata": meta,
                "items": items,
            })
        }
    }
}
