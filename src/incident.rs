//! The incident vocabulary every layer speaks: the seven SCWM operations, the payload shape,
//! a native command, and the contract's `errCode` spelling. Plain data and pure functions; the
//! wire format (envelopes) and the calls belong to [`crate::scwm`].

use std::{fmt, str::FromStr, sync::Arc};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

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

/// One SCWM operation requested directly by a client (a "native command").
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub op: Operation,
    /// Shared with the SCWM request built from it.
    pub payload: Arc<Payload>,
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
}
