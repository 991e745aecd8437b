//! Decoders: bytes from any transport to one transport-neutral [`crate::event::Event`] shape.
//! Decoders never perform I/O and never panic on input; a body they cannot read becomes a
//! [`DecodeError`] that names what is wrong.

pub mod native;

/// Why a body could not be decoded. The variants map to HTTP 400 (not JSON at all) and 422
/// (JSON of the wrong shape); on NATS both become dead letters with this text as the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("body is not valid JSON: {0}")]
    NotJson(String),
    #[error("body must be a JSON object")]
    NotAnObject,
    #[error("`{0}` is required")]
    MissingField(&'static str),
    #[error("`{field}` must be {expected}")]
    WrongType { field: &'static str, expected: &'static str },
    #[error("{0}")]
    Invalid(String),
}

impl DecodeError {
    /// The HTTP status that reports this error.
    pub fn http_status(&self) -> http::StatusCode {
        match self {
            DecodeError::NotJson(_) => http::StatusCode::BAD_REQUEST,
            _ => http::StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    /// A bounded label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::NotJson(_) => "not_json",
            DecodeError::NotAnObject => "not_an_object",
            DecodeError::MissingField(_) => "missing_field",
            DecodeError::WrongType { .. } => "wrong_type",
            DecodeError::Invalid(_) => "invalid",
        }
    }
}
