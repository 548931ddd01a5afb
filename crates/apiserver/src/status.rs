//! Kubernetes `Status` objects: the body of every error the API returns, shaped as upstream's
//! (`kind`, `apiVersion`, `metadata`, `status: Failure`, `message`, `reason`, `details`, `code`),
//! so clients show their own error text for it.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// A failed request, answered as a `Status`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status code.
    pub code: StatusCode,
    /// Upstream's machine-readable reason (`NotFound`, `Unauthorized`, ...).
    pub reason: &'static str,
    /// What a person reads.
    pub message: String,
    /// `details`, when the error is about one object.
    pub details: Option<Value>,
}

impl ApiError {
    /// 401: no valid credentials.
    pub fn unauthorized() -> Self {
        Self {
            code: StatusCode::UNAUTHORIZED,
            reason: "Unauthorized",
            message: "Unauthorized".into(),
            details: None,
        }
    }

    /// 404 for a path the server does not serve, worded as kube-apiserver words it.
    pub fn not_served(path: &str) -> Self {
        Self {
            code: StatusCode::NOT_FOUND,
            reason: "NotFound",
            message: format!("the server could not find the requested resource ({path})"),
            details: None,
        }
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code.as_u16(),
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.code, axum::Json(self.to_status())).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_has_upstreams_shape() {
        let status = ApiError::not_served("/api/v1/pods").to_status();
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["apiVersion"], "v1");
        assert_eq!(status["status"], "Failure");
        assert_eq!(status["reason"], "NotFound");
        assert_eq!(status["code"], 404);
        assert!(status.get("details").is_none());
    }
}
