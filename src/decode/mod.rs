//! Decoders: bytes from any transport to one transport-neutral shape: native commands to
//! [`crate::incident::Command`], alert webhooks to [`crate::alert::Notification`], CloudEvents to
//! [`cloudevents::CloudEvent`] whose data is then decoded by one of the others.
//! Decoders never perform I/O and never panic on input; a body they cannot read becomes a
//! [`DecodeError`] that names what is wrong.

pub mod alertmanager;
pub mod cloudevents;
pub mod grafana;
pub mod headers;
pub mod native;

/// Why a body could not be decoded. Over HTTP, a transport answers with a status of its
/// choosing (400, 415 or 422); on NATS all become dead letters with this text as the reason.
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
    /// Like `MissingField`, for a field deeper in the body (`alerts[2].labels`).
    #[error("`{0}` is required")]
    MissingAt(String),
    /// Like `WrongType`, for a field deeper in the body (`alerts[0].labels.instance`).
    #[error("`{path}` must be {expected}")]
    WrongTypeAt { path: String, expected: &'static str },
    /// The body is in a format this decoder does not read at all (a CloudEvents batch, a
    /// CloudEvent whose data is not JSON).
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
}

impl DecodeError {
    /// A bounded label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::NotJson(_) => "not_json",
            DecodeError::NotAnObject => "not_an_object",
            DecodeError::MissingField(_) | DecodeError::MissingAt(_) => "missing_field",
            DecodeError::WrongType { .. } | DecodeError::WrongTypeAt { .. } => "wrong_type",
            DecodeError::Invalid(_) => "invalid",
            DecodeError::UnsupportedMediaType(_) => "unsupported_media_type",
        }
    }
}
