//! Content negotiation: which representation a client accepts (JSON, YAML or Kubernetes'
//! protobuf; the object itself, a `Table`, `PartialObjectMetadata`, or aggregated discovery), and
//! which format a request body is in. Kubernetes spells these as media-type parameters (`application/json;as=Table;v=v1;
//! g=meta.k8s.io`).

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::status::ApiError;

/// The wire format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `application/json`.
    Json,
    /// `application/yaml`.
    Yaml,
    /// `application/vnd.kubernetes.protobuf` (see [`crate::protobuf`]).
    Protobuf,
}

/// What shape the answer takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// The object or list itself.
    Object,
    /// `meta.k8s.io/v1` `Table`.
    Table,
    /// `meta.k8s.io/v1` `PartialObjectMetadata` / `PartialObjectMetadataList`.
    Metadata,
    /// `apidiscovery.k8s.io/v2` `APIGroupDiscoveryList`.
    DiscoveryV2,
    /// `apidiscovery.k8s.io/v2beta1` `APIGroupDiscoveryList`.
    DiscoveryV2Beta1,
}

/// A chosen representation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accept {
    /// Format.
    pub format: Format,
    /// Shape.
    pub shape: Shape,
    /// Whether the client also takes JSON: the answer when an object has no protobuf form.
    pub json_fallback: bool,
}

impl Accept {
    /// Plain JSON.
    pub const JSON: Accept = Accept {
        format: Format::Json,
        shape: Shape::Object,
        json_fallback: true,
    };

    /// Picks the first media type of the `Accept` header that rkube can produce.
    pub fn from_headers(headers: &HeaderMap) -> Result<Accept, ApiError> {
        let Some(raw) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
            return Ok(Accept::JSON);
        };
        if raw.trim().is_empty() {
            return Ok(Accept::JSON);
        }
        let entries: Vec<&str> = raw.split(',').collect();
        for (i, entry) in entries.iter().enumerate() {
            let mut parts = entry.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default().to_ascii_lowercase();
            let mut params = std::collections::HashMap::new();
            for p in parts {
                if let Some((k, v)) = p.split_once('=') {
                    params.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
                }
            }
            let format = match media.as_str() {
                "application/json" | "*/*" | "application/*" | "" => Format::Json,
                "application/yaml" => Format::Yaml,
                "application/vnd.kubernetes.protobuf" => Format::Protobuf,
                _ => continue,
            };
            let get = |k: &str| params.get(k).map(String::as_str);
            let shape = match (get("as"), get("g"), get("v")) {
                (None, _, _) => Shape::Object,
                (Some("Table"), Some("meta.k8s.io"), Some("v1")) => Shape::Table,
                (
                    Some("PartialObjectMetadata" | "PartialObjectMetadataList"),
                    Some("meta.k8s.io"),
                    Some("v1"),
                ) => Shape::Metadata,
                (Some("APIGroupDiscoveryList"), Some("apidiscovery.k8s.io"), Some("v2")) => {
                    Shape::DiscoveryV2
                }
                (Some("APIGroupDiscoveryList"), Some("apidiscovery.k8s.io"), Some("v2beta1")) => {
                    Shape::DiscoveryV2Beta1
                }
                _ => continue,
            };
            if format == Format::Protobuf && !matches!(shape, Shape::Object | Shape::Metadata) {
                // Tables and discovery documents have no protobuf form here; upstream's Table
                // has none either, and clients list JSON after it.
                continue;
            }
            let json_fallback = format != Format::Protobuf
                || entries[i + 1..].iter().any(|e| {
                    let media = e.split(';').next().unwrap_or_default().trim();
                    matches!(media, "application/json" | "*/*" | "application/*")
                });
            return Ok(Accept {
                format,
                shape,
                json_fallback,
            });
        }
        Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "NotAcceptable",
            "only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf",
        ))
    }
}

/// The format of a request body from `Content-Type` (JSON when absent).
pub fn body_format(headers: &HeaderMap) -> Result<Format, ApiError> {
    let media = content_type(headers);
    match media.as_str() {
        "" | "application/json" => Ok(Format::Json),
        "application/yaml" => Ok(Format::Yaml),
        crate::protobuf::MEDIA_TYPE => Ok(Format::Protobuf),
        _ => Err(unsupported_media_type(&media)),
    }
}

/// The media type of `Content-Type`, lower-case, without parameters.
pub fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// 415.
pub fn unsupported_media_type(media: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "UnsupportedMediaType",
        format!(
            "the body of the request was in an unknown format ({media}) - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf"
        ),
    )
}

/// A body that may be protobuf (client-go sends `DeleteOptions` so), as JSON bytes; other
/// formats are returned as they are.
pub fn json_body(headers: &HeaderMap, body: Vec<u8>) -> Result<Vec<u8>, ApiError> {
    if content_type(headers) != crate::protobuf::MEDIA_TYPE || body.is_empty() {
        return Ok(body);
    }
    let value = decode(&body, Format::Protobuf)?;
    Ok(serde_json::to_vec(&value).unwrap_or_default())
}

/// Decodes a body in `format` as JSON (upstream's messages for broken bodies are 400s).
pub fn decode(body: &[u8], format: Format) -> Result<Value, ApiError> {
    match format {
        Format::Json => serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        }),
        Format::Yaml => {
            check_yaml_nesting(body)?;
            serde_yaml::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: {e}")))
        }
        Format::Protobuf => crate::protobuf::decode_object(body).map_err(|e| match e {
            // Custom resources and unserved kinds: upstream refuses protobuf for them too.
            crate::protobuf::ProtoError::UnknownType { .. } => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                format!("the body of the request was in an unknown format: {e}"),
            ),
            other => ApiError::bad_request(format!(
                "the protobuf body cannot be decoded: {}",
                crate::protobuf::error_chain(&other)
            )),
        }),
    }
}

/// Deepest `[`/`{` nesting a YAML body may have. The YAML parser takes time quadratic in flow
/// nesting (a 200 KB body of brackets took a minute), so deeper bodies are refused before it runs;
/// JSON's parser stops at depth 128 by itself.
const MAX_YAML_FLOW_DEPTH: usize = 128;

/// Refuses YAML whose flow collections nest deeper than [`MAX_YAML_FLOW_DEPTH`]. Brackets inside
/// quoted scalars and comments are not counted; an unbalanced bracket in a plain scalar counts,
/// which only matters past a hundred of them.
pub(crate) fn check_yaml_nesting(body: &[u8]) -> Result<(), ApiError> {
    let (mut depth, mut quote, mut comment, mut previous) = (0usize, None, false, b'\n');
    for &byte in body {
        match (quote, byte) {
            (_, b'\n') => comment = false,
            _ if comment => {}
            (Some(q), b) if b == q => quote = None,
            (Some(_), _) => {}
            (None, b'#') if previous.is_ascii_whitespace() => comment = true,
            (None, b'"' | b'\'') => quote = Some(byte),
            (None, b'[' | b'{') => {
                depth += 1;
                if depth > MAX_YAML_FLOW_DEPTH {
                    return Err(ApiError::bad_request(format!(
                        "error converting YAML to JSON: collections nested deeper than {MAX_YAML_FLOW_DEPTH}"
                    )));
                }
            }
            (None, b']' | b'}') => depth = depth.saturating_sub(1),
            _ => {}
        }
        previous = byte;
    }
    Ok(())
}

/// Encodes an answer. An object without a protobuf form goes out as JSON when the client takes
/// JSON too (client-go always lists it), else 406.
pub fn respond(code: StatusCode, body: &Value, accept: Accept) -> Response {
    if accept.format == Format::Protobuf {
        match crate::protobuf::encode_object(body) {
            Ok(bytes) => {
                let mut response = (code, bytes).into_response();
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(crate::protobuf::MEDIA_TYPE),
                );
                return response;
            }
            Err(e) if accept.json_fallback => {
                tracing::debug!(error = %e, "answering in JSON: no protobuf form");
            }
            Err(e) => {
                return ApiError::new(
                    StatusCode::NOT_ACCEPTABLE,
                    "NotAcceptable",
                    format!("the object cannot be encoded as protobuf: {e}"),
                )
                .into_response();
            }
        }
    }
    let (bytes, media) = match accept.format {
        Format::Json | Format::Protobuf => (
            serde_json::to_vec(body).unwrap_or_default(),
            "application/json",
        ),
        Format::Yaml => (
            serde_yaml::to_string(body).unwrap_or_default().into_bytes(),
            "application/yaml",
        ),
    };
    let media = match accept.shape {
        Shape::DiscoveryV2 => {
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
        }
        Shape::DiscoveryV2Beta1 => {
            "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
        }
        _ => media,
    };
    let mut response = (code, bytes).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
    response
}

/// A JSON answer already encoded (lists served from the watch cache).
pub fn respond_json_bytes(code: StatusCode, bytes: Vec<u8>) -> Response {
    let mut response = (code, bytes).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &'static str) -> Result<Accept, ApiError> {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_static(v));
        Accept::from_headers(&h)
    }

    #[test]
    fn yaml_nesting_is_bounded_but_brackets_in_strings_do_not_count() {
        let deep = format!("a: {}{}", "[".repeat(200), "]".repeat(200));
        assert_eq!(decode(deep.as_bytes(), Format::Yaml).unwrap_err().code, 400);
        let fine = format!("a: {}1{}", "[".repeat(100), "]".repeat(100));
        assert!(decode(fine.as_bytes(), Format::Yaml).is_ok());
        let quoted = format!(
            "a: \"{}\"\nb: '{}'\n# {}\n",
            "[".repeat(500),
            "{".repeat(500),
            "[".repeat(500)
        );
        assert!(decode(quoted.as_bytes(), Format::Yaml).is_ok());
    }

    #[test]
    fn kubectls_accept_headers_choose_the_right_shape() {
        let table = accept("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json").unwrap();
        assert_eq!(table.shape, Shape::Table);
        let old_table =
            accept("application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json").unwrap();
        assert_eq!(old_table, Accept::JSON);
        let disco = accept(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
        )
        .unwrap();
        assert_eq!(disco.shape, Shape::DiscoveryV2);
        let proto = accept("application/vnd.kubernetes.protobuf, */*").unwrap();
        assert_eq!(proto.format, Format::Protobuf);
        assert!(proto.json_fallback);
        let only = accept("application/vnd.kubernetes.protobuf").unwrap();
        assert_eq!((only.format, only.json_fallback), (Format::Protobuf, false));
        let meta = accept("application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json").unwrap();
        assert_eq!(
            (meta.format, meta.shape),
            (Format::Protobuf, Shape::Metadata)
        );
        let table = accept("application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1;g=meta.k8s.io").unwrap();
        assert_eq!((table.format, table.shape), (Format::Json, Shape::Table));
        assert_eq!(accept("application/yaml").unwrap().format, Format::Yaml);
        assert_eq!(
            accept("application/cbor").unwrap_err().code,
            StatusCode::NOT_ACCEPTABLE
        );
    }

    #[test]
    fn bodies_decode_or_are_400() {
        assert!(decode(b"{\"a\": 1}", Format::Json).is_ok());
        assert_eq!(
            decode(b"{\"a\": ", Format::Json).unwrap_err().code,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            decode(b"a: [1, 2]\n", Format::Yaml).unwrap(),
            serde_json::json!({"a": [1, 2]})
        );
        let deep = "[".repeat(100_000);
        assert_eq!(
            decode(deep.as_bytes(), Format::Json).unwrap_err().code,
            StatusCode::BAD_REQUEST
        );
        assert!(decode(deep.as_bytes(), Format::Yaml).is_err());
    }
}
