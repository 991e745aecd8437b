//! Native commands: a JSON object of incident fields for one SCWM operation, the same body on
//! `POST /v1/incidents/{op}` and on the NATS subject `incidents.commands.<op>`.
//!
//! The object becomes the SCWM payload as is. `id` is required for every operation but `add`,
//! `partnerId` for `submit`. The correlation key (what orders commands) is the item id when
//! there is one, else `externalRef`, else nothing: such a command is ordered with no other.

use serde_json::Value;

use super::DecodeError;
use crate::{
    ids::CorrelationKey,
    incident::{Command, Operation, Payload},
};

/// A decoded native command and the key it is ordered by.
#[derive(Debug, Clone, PartialEq)]
pub struct NativeCommand {
    pub command: Command,
    pub key: Option<CorrelationKey>,
}

pub fn decode(op: Operation, body: &[u8]) -> Result<NativeCommand, DecodeError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| DecodeError::NotJson(e.to_string()))?;
    let Value::Object(payload) = value else {
        return Err(DecodeError::NotAnObject);
    };
    let id = non_empty_string(&payload, "id")?;
    if op.requires_id() && id.is_none() {
        return Err(DecodeError::MissingField("id"));
    }
    for field in op.required_fields() {
        if non_empty_string(&payload, field)?.is_none() {
            return Err(DecodeError::MissingField(field));
        }
    }
    let key = match id {
        Some(id) => Some(CorrelationKey::new(format!("item:{id}"))),
        None => non_empty_string(&payload, "externalRef")?.map(|r| CorrelationKey::new(format!("ref:{r}"))),
    };
    Ok(NativeCommand { command: Command { op, payload: std::sync::Arc::new(payload) }, key })
}

/// The field as a non-empty string, `None` when absent or null, an error for any other type.
fn non_empty_string<'a>(payload: &'a Payload, field: &'static str) -> Result<Option<&'a str>, DecodeError> {
    match payload.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s)),
        Some(Value::String(_)) => Err(DecodeError::WrongType { field, expected: "a non-empty string" }),
        Some(_) => Err(DecodeError::WrongType { field, expected: "a string" }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_needs_no_id_and_is_keyed_by_external_ref() {
        let c = decode(Operation::Add, br#"{"title":"disk full","externalRef":"am:123"}"#).unwrap();
        assert_eq!(c.command.op, Operation::Add);
        assert_eq!(c.command.payload["title"], "disk full");
        assert_eq!(c.key, Some(CorrelationKey::new("ref:am:123")));
        assert_eq!(decode(Operation::Add, br#"{"title":"t"}"#).unwrap().key, None);
    }

    #[test]
    fn operations_on_an_item_need_its_id_and_are_keyed_by_it() {
        for op in Operation::ALL.into_iter().filter(|op| op.requires_id() && *op != Operation::Submit) {
            assert_eq!(decode(op, br#"{"title":"x"}"#), Err(DecodeError::MissingField("id")), "{op}");
            let c = decode(op, br#"{"id":"IT-1","externalRef":"r"}"#).unwrap();
            assert_eq!(c.key, Some(CorrelationKey::new("item:IT-1")), "{op}");
        }
    }

    #[test]
    fn submit_needs_a_partner() {
        assert_eq!(
            decode(Operation::Submit, br#"{"id":"IT-1"}"#),
            Err(DecodeError::MissingField("partnerId"))
        );
        assert!(decode(Operation::Submit, br#"{"id":"IT-1","partnerId":"P"}"#).is_ok());
    }

    #[test]
    fn malformed_and_wrongly_shaped_bodies_are_distinguished() {
        assert!(matches!(decode(Operation::Add, b"{nope"), Err(DecodeError::NotJson(_))));
        assert!(matches!(decode(Operation::Add, b"\xff\xfe"), Err(DecodeError::NotJson(_))));
        assert_eq!(decode(Operation::Add, b"[1,2]"), Err(DecodeError::NotAnObject));
        assert_eq!(decode(Operation::Add, b"\"s\""), Err(DecodeError::NotAnObject));
        assert_eq!(
            decode(Operation::Edit, br#"{"id":42}"#),
            Err(DecodeError::WrongType { field: "id", expected: "a string" })
        );
        assert_eq!(
            decode(Operation::Edit, br#"{"id":"  "}"#),
            Err(DecodeError::WrongType { field: "id", expected: "a non-empty string" })
        );
        assert!(matches!(decode(Operation::Add, b""), Err(DecodeError::NotJson(_))));
        assert_eq!(decode(Operation::Add, b"[]"), Err(DecodeError::NotAnObject));
    }
}
