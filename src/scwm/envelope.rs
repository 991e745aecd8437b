//! The SCWM wire format (see the contract in the README): the seven operations, the request
//! envelope the bridge sends and the response envelope SCWM answers with.
//!
//! This module only describes and parses bytes; it never performs I/O. The response header is
//! kept byte for byte as received because result events must carry it unmodified.

use std::{fmt, str::FromStr};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, value::RawValue};

use crate::ids::{ItemId, LicensePlate};

/// The header version every envelope carries.
pub const HEADER_VERSION: u32 = 1;

/// The response `eventName` SCWM documents for every operation. Reported, never checked.
pub const DEFAULT_RESPONSE_EVENT_NAME: &str = "agile-process-teams:add-change-response:v3";

/// A JSON object: the shape of every payload.
pub type Payload = Map<String, Value>;

/// One of the seven SCWM incident operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    Add,
    Edit,
    Copy,
    Close,
    Reopen,
    Submit,
    Read,
}

impl Operation {
    pub const ALL: [Operation; 7] = [
        Operation::Add,
        Operation::Edit,
        Operation::Copy,
        Operation::Close,
        Operation::Reopen,
        Operation::Submit,
        Operation::Read,
    ];

    /// The short name used in URLs, subjects, config keys and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Add => "add",
            Operation::Edit => "edit",
            Operation::Copy => "copy",
            Operation::Close => "close",
            Operation::Reopen => "reopen",
            Operation::Submit => "submit",
            Operation::Read => "read",
        }
    }

    /// The request `eventName` the contract gives for this operation.
    pub fn default_event_name(self) -> &'static str {
        match self {
            Operation::Add => "agile-process-teams:add-incident:v3",
            Operation::Edit => "agile-process-teams:edit-incident:v3",
            Operation::Copy => "agile-process-teams:copy-incident:v3",
            Operation::Close => "agile-process-teams:close-incident:v3",
            Operation::Reopen => "agile-process-teams:reopen-incident:v3",
            Operation::Submit => "agile-process-teams:submit-incident-to-partner:v3",
            Operation::Read => "agile-process-teams:read-incident:v3",
        }
    }

    /// Every operation but `add` addresses an existing item and needs `payload.id`.
    pub fn requires_id(self) -> bool {
        self != Operation::Add
    }

    /// Payload fields, beyond `id`, without which SCWM cannot act.
    pub fn required_fields(self) -> &'static [&'static str] {
        match self {
            Operation::Submit => &["partnerId"],
            _ => &[],
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An operation name that is not one of the seven.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("unknown operation `{0}` (expected one of add, edit, copy, close, reopen, submit, read)")]
pub struct UnknownOperation(pub String);

impl FromStr for Operation {
    type Err = UnknownOperation;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Operation::ALL.into_iter().find(|op| op.as_str() == s).ok_or_else(|| UnknownOperation(s.to_owned()))
    }
}

/// The header of a request envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestHeader {
    pub header_version: u32,
    pub event_name: String,
    pub owner_id: String,
    pub license_plate: LicensePlate,
}

/// `{"header": {...}, "payload": {...}}` as sent to SCWM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestEnvelope {
    pub header: RequestHeader,
    pub payload: Payload,
}

/// The parsed fields of a response header. Every field SCWM might leave out has a default so a
/// terse but valid answer still parses; `isErr` is the one field an answer cannot lack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponseHeader {
    #[serde(default)]
    pub header_version: Option<u32>,
    #[serde(default)]
    pub event_name: String,
    #[serde(default)]
    pub owner_id: String,
    pub is_err: bool,
    #[serde(default)]
    pub err_code: String,
    #[serde(default)]
    pub license_plate: String,
}

impl ResponseHeader {
    /// The HTTP status encoded in `errCode` (`"404_NOT_FOUND"` → 404), if it has one.
    pub fn err_status(&self) -> Option<u16> {
        err_code_status(&self.err_code)
    }
}

/// The numeric prefix of an errCode: `"429_TOO_MANY_REQUESTS"` → 429. The contract says the
/// number decides, whatever the words.
pub fn err_code_status(err_code: &str) -> Option<u16> {
    let digits = err_code.split('_').next()?;
    if digits.len() != 3 {
        return None;
    }
    let n: u16 = digits.parse().ok()?;
    (100..=599).contains(&n).then_some(n)
}

/// The errCode the contract uses for an HTTP status, e.g. 404 → `404_NOT_FOUND`.
pub fn err_code_for(status: http::StatusCode) -> String {
    let words = status
        .canonical_reason()
        .unwrap_or("ERROR")
        .to_ascii_uppercase()
        .replace(|c: char| !c.is_ascii_alphanumeric(), "_");
    format!("{}_{}", status.as_u16(), words)
}

/// A response envelope as received: the whole body, the header exactly as SCWM wrote it, and
/// both parsed.
#[derive(Debug, Clone)]
pub struct ResponseEnvelope {
    body: Bytes,
    raw_header: Box<RawValue>,
    header: ResponseHeader,
    payload: Value,
}

/// Why a body is not a response envelope.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("not an SCWM response envelope: {0}")]
pub struct NotAnEnvelope(pub String);

impl ResponseEnvelope {
    pub fn parse(body: Bytes) -> Result<Self, NotAnEnvelope> {
        #[derive(Deserialize)]
        struct Wire<'a> {
            #[serde(borrow)]
            header: &'a RawValue,
            #[serde(default)]
            payload: Value,
        }
        let wire: Wire<'_> = serde_json::from_slice(&body).map_err(|e| NotAnEnvelope(e.to_string()))?;
        let header: ResponseHeader =
            serde_json::from_str(wire.header.get()).map_err(|e| NotAnEnvelope(format!("header: {e}")))?;
        let raw_header = wire.header.to_owned();
        let payload = wire.payload;
        Ok(Self { body, raw_header, header, payload })
    }

    /// The whole body exactly as received.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The header JSON exactly as received.
    pub fn raw_header(&self) -> &RawValue {
        &self.raw_header
    }

    pub fn header(&self) -> &ResponseHeader {
        &self.header
    }

    pub fn payload(&self) -> &Value {
        &self.payload
    }

    /// `payload.id`, which every successful answer carries.
    pub fn item_id(&self) -> Option<ItemId> {
        match self.payload.get("id")? {
            Value::String(s) => Some(ItemId::new(s.clone())),
            Value::Number(n) => Some(ItemId::new(n.to_string())),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_round_trip_through_their_names() {
        for op in Operation::ALL {
            assert_eq!(op.as_str().parse::<Operation>(), Ok(op));
        }
        assert!("delete".parse::<Operation>().is_err());
    }

    #[test]
    fn err_code_status_reads_the_numeric_part() {
        assert_eq!(err_code_status("200_OK"), Some(200));
        assert_eq!(err_code_status("429_TOO_MANY_REQUESTS"), Some(429));
        assert_eq!(err_code_status("503"), Some(503));
        assert_eq!(err_code_status("OK"), None);
        assert_eq!(err_code_status("99_X"), None);
        assert_eq!(err_code_status(""), None);
    }

    #[test]
    fn err_code_for_follows_the_contract_spelling() {
        assert_eq!(err_code_for(http::StatusCode::NOT_FOUND), "404_NOT_FOUND");
        assert_eq!(err_code_for(http::StatusCode::TOO_MANY_REQUESTS), "429_TOO_MANY_REQUESTS");
        assert_eq!(err_code_for(http::StatusCode::INTERNAL_SERVER_ERROR), "500_INTERNAL_SERVER_ERROR");
    }

    #[test]
    fn response_keeps_the_header_bytes_exactly() {
        let body = br#"{"header": {"isErr":false, "errCode":"200_OK","licensePlate":"P" ,"eventName":"x"},"payload":{"id":"IT-1"}}"#;
        let env = ResponseEnvelope::parse(Bytes::from_static(body)).unwrap();
        assert_eq!(
            env.raw_header().get(),
            r#"{"isErr":false, "errCode":"200_OK","licensePlate":"P" ,"eventName":"x"}"#
        );
        assert_eq!(env.item_id(), Some(ItemId::new("IT-1")));
        assert!(!env.header().is_err);
    }

    #[test]
    fn a_body_without_is_err_is_not_an_envelope() {
        assert!(ResponseEnvelope::parse(Bytes::from_static(b"{\"header\":{}}")).is_err());
        assert!(ResponseEnvelope::parse(Bytes::from_static(b"<html>")).is_err());
    }
}
