//! RFC 9457 problem details: the one shape every HTTP error of the bridge takes.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::{Map, Value, json};

#[derive(Debug, Clone)]
pub struct Problem {
    status: StatusCode,
    kind: &'static str,
    title: &'static str,
    detail: Option<String>,
    retry_after_secs: Option<u64>,
    extensions: Map<String, Value>,
}

impl Problem {
    /// `kind` becomes the problem type `urn:incident-bridge:problem:<kind>`.
    pub fn new(status: StatusCode, kind: &'static str, title: &'static str) -> Self {
        Self { status, kind, title, detail: None, retry_after_secs: None, extensions: Map::new() }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Adds a `Retry-After` header (whole seconds, at least 1).
    pub fn retry_after(mut self, after: std::time::Duration) -> Self {
        self.retry_after_secs = Some(after.as_secs_f64().ceil().max(1.0) as u64);
        self
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extensions.insert(key.to_owned(), value.into());
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn kind(&self) -> &'static str {
        self.kind
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut body = json!({
            "type": format!("urn:incident-bridge:problem:{}", self.kind),
            "title": self.title,
            "status": self.status.as_u16(),
        });
        if let (Some(detail), Some(obj)) = (self.detail, body.as_object_mut()) {
            obj.insert("detail".into(), detail.into());
        }
        if let Some(obj) = body.as_object_mut() {
            obj.extend(self.extensions);
        }
        let mut resp = (self.status, body.to_string()).into_response();
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(secs) = self.retry_after_secs {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}
