//! The SCWM wire format (see the contract in the README): the seven operations, the request
//! envelope the bridge sends and the response envelope SCWM answers with.
//!
//! This module only describes and parses bytes; it never performs I/O. The response header is
//! kept byte for byte as received because result events must carry it unmodified.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Value, value::RawValue};

use crate::ids::{ItemId, LicensePlate};
pub use crate::incident::{Operation, Payload, UnknownOperation, err_code_for, err_code_status};

/// The header version every envelope carries.
pub const HEADER_VERSION: u32 = 1;

/// The response `eventName` SCWM documents for every operation. Reported, never checked.
pub const DEFAULT_RESPONSE_EVENT_NAME: &str = "agile-process-teams:add-change-response:v3";

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
