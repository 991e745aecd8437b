//! What the simulator remembers and the rules it applies, without HTTP: the incidents and their
//! lifecycle (open, closed, copied, submitted to a partner), the log of operation requests, and
//! the record of answers by licensePlate that makes a repeated request harmless.
//!
//! Everything here is synchronous and takes the time as an argument, so the rules can be tested
//! exactly; the HTTP layer decides when to lock, what time it is and how answers look on the wire.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    ids::ItemId,
    scwm::envelope::{Operation, Payload},
};

/// How long an answer is replayed for a repeated licensePlate; the contract assumes SCWM keeps
/// them for 24 hours.
pub const DEDUP_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

/// Whether an incident is open or closed, as `read` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IncidentStatus {
    Open,
    Closed,
}

impl IncidentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentStatus::Open => "open",
            IncidentStatus::Closed => "closed",
        }
    }
}

/// One incident as the simulator stores it. Tests decode `GET /_sim/incidents` into this.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Incident {
    pub id: ItemId,
    pub status: IncidentStatus,
    /// The payload fields from add, merged by every edit; never contains `id`.
    pub fields: Payload,
    /// Set by submit, so tests can see which partner an incident went to.
    #[serde(default)]
    pub partner_id: Option<Value>,
    #[serde(default)]
    pub note: Option<Value>,
    /// The incident this one was copied from.
    #[serde(default)]
    pub copied_from: Option<ItemId>,
    /// When the current closure happened (RFC 3339, milliseconds); cleared by reopen.
    #[serde(default)]
    pub closed_at: Option<String>,
    #[serde(default)]
    pub resolution: Option<Value>,
    #[serde(default)]
    pub close_notes: Option<Value>,
    /// The reason given by the last reopen.
    #[serde(default)]
    pub reopen_reason: Option<Value>,
}

impl Incident {
    fn new(id: ItemId, fields: Payload) -> Self {
        Self {
            id,
            status: IncidentStatus::Open,
            fields,
            partner_id: None,
            note: None,
            copied_from: None,
            closed_at: None,
            resolution: None,
            close_notes: None,
            reopen_reason: None,
        }
    }

    /// The payload `read` answers with: the stored fields (which never hold `id`), then the
    /// simulator's own keys, which win over a field of the same name because they describe the
    /// incident's real state.
    fn read_payload(&self) -> Payload {
        let mut payload = Payload::new();
        payload.insert("id".into(), Value::String(self.id.to_string()));
        payload.extend(self.fields.clone());
        payload.insert("status".into(), self.status.as_str().into());
        if let Some(partner) = &self.partner_id {
            payload.insert("partnerId".into(), partner.clone());
        }
        let mut closure = |name: &str, value: Option<Value>| {
            if let Some(value) = value {
                payload.insert(name.into(), value);
            }
        };
        closure("closedAt", self.closed_at.clone().map(Value::String));
        closure("resolution", self.resolution.clone());
        closure("closeNotes", self.close_notes.clone());
        payload
    }
}

/// What a person does to an incident in SCWM itself, outside the bridge: no licensePlate, no
/// entry in the request log. Tests and users rehearse with it how the bridge copes with SCWM
/// changing under it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", rename_all_fields = "camelCase", deny_unknown_fields)]
pub enum PersonAction {
    Close {
        #[serde(default)]
        resolution: Option<Value>,
        #[serde(default)]
        close_notes: Option<Value>,
    },
    Reopen {
        #[serde(default)]
        reason: Option<Value>,
    },
    /// The incident is gone: every operation on its id answers 404.
    Delete,
    /// Handed over to a partner.
    Submit {
        partner_id: Value,
        #[serde(default)]
        note: Option<Value>,
    },
    /// The incident moves to a new id; the old one answers 404.
    Renumber,
}

/// One operation request as received, and how it was answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedRequest {
    /// Position in arrival order, from 1; restarts after a reset.
    pub seq: u64,
    /// RFC 3339 with milliseconds.
    pub received_at: String,
    pub method: String,
    /// Path and query as requested.
    pub path: String,
    /// `[name, value]` pairs in the order received (names lowercase).
    pub headers: Vec<(String, String)>,
    /// The body as JSON if it parsed, otherwise its text as a JSON string.
    pub body: Value,
    /// The answer's HTTP status; `None` while the request is still being answered.
    pub status: Option<u16>,
    /// The `kind` of the injected failure, if one was, or `shutdown` when the server stopped
    /// while the request was waiting out injected latency.
    pub fault: Option<String>,
    /// Whether the answer was replayed from an earlier request with the same licensePlate.
    pub duplicate: bool,
}

/// An answer as sent, kept byte for byte so a repeated licensePlate gets exactly the same one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredAnswer {
    pub status: StatusCode,
    pub body: Bytes,
}

/// Why an operation was refused. Each maps to the contract status that reports it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    #[error("payload.id is required for {0}")]
    MissingId(Operation),
    #[error("payload.id must be a string or a number")]
    BadId,
    #[error("payload.{field} is required for {op}")]
    MissingField { op: Operation, field: &'static str },
    #[error("no incident with id {0}")]
    UnknownId(String),
    #[error("incident {0} is already closed")]
    AlreadyClosed(ItemId),
    #[error("incident {0} is already open")]
    AlreadyOpen(ItemId),
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::MissingId(_) | Refusal::BadId | Refusal::MissingField { .. } => StatusCode::BAD_REQUEST,
            Refusal::UnknownId(_) => StatusCode::NOT_FOUND,
            Refusal::AlreadyClosed(_) | Refusal::AlreadyOpen(_) => StatusCode::CONFLICT,
        }
    }
}

/// Identifies one log entry across resets, so a request that was in flight during a reset
/// cannot fill in the answer of an unrelated entry that reused its `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket {
    epoch: u64,
    seq: u64,
}

impl Ticket {
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

/// How a logged request was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Completion {
    pub status: u16,
    pub fault: Option<&'static str>,
    pub duplicate: bool,
}

/// An answer remembered for a licensePlate.
#[derive(Debug, Clone)]
struct Remembered {
    at: SystemTime,
    answer: StoredAnswer,
}

/// All the simulator's memory. The HTTP layer holds it behind one mutex so that looking up a
/// licensePlate, applying the operation and remembering the answer happen as one step.
#[derive(Debug, Default)]
pub(crate) struct Store {
    /// Keyed by the number in the id, so listing is in creation order even past `IT-999999`.
    incidents: BTreeMap<u64, Incident>,
    last_number: u64,
    answers: HashMap<String, Remembered>,
    /// The newest requests, at most `log_limit` of them.
    requests: VecDeque<RecordedRequest>,
    /// Every request received since the start or the last reset, also those no longer logged.
    received: u64,
    log_limit: Option<usize>,
    epoch: u64,
}

fn format_id(number: u64) -> String {
    format!("IT-{number:06}")
}

/// The number inside an id this simulator issued; any other spelling is an unknown id.
fn parse_id(id: &str) -> Option<u64> {
    let number: u64 = id.strip_prefix("IT-")?.parse().ok()?;
    (format_id(number) == id).then_some(number)
}

/// `payload.id` as text; SCWM ids are strings, but a number is what a JSON template may produce.
fn requested_id(op: Operation, payload: &Payload) -> Result<String, Refusal> {
    match payload.get("id") {
        None | Some(Value::Null) => Err(Refusal::MissingId(op)),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(_) => Err(Refusal::BadId),
    }
}

fn check_required_fields(op: Operation, payload: &Payload) -> Result<(), Refusal> {
    for field in op.required_fields() {
        if matches!(payload.get(*field), None | Some(Value::Null)) {
            return Err(Refusal::MissingField { op, field });
        }
    }
    Ok(())
}

/// The payload without `id`: what add stores and what edit and copy merge.
fn fields_of(payload: &Payload) -> Payload {
    let mut fields = payload.clone();
    fields.remove("id");
    fields
}

fn id_payload(id: &ItemId) -> Payload {
    let mut payload = Payload::new();
    payload.insert("id".into(), Value::String(id.to_string()));
    payload
}

impl Store {
    /// Applies one operation and returns the success payload, or why it was refused. A refused
    /// operation changes nothing.
    pub fn apply(&mut self, op: Operation, payload: &Payload, now: SystemTime) -> Result<Payload, Refusal> {
        match op {
            Operation::Add => {
                check_required_fields(op, payload)?;
                Ok(id_payload(&self.add(fields_of(payload))))
            }
            Operation::Copy => {
                let source = self.target(op, payload)?;
                Ok(id_payload(&self.copy(source, payload)?))
            }
            Operation::Read => Ok(self.get(self.target(op, payload)?)?.read_payload()),
            Operation::Edit | Operation::Close | Operation::Reopen | Operation::Submit => {
                let number = self.target(op, payload)?;
                self.change(number, op, payload, now)
            }
        }
    }

    /// The existing incident an operation addresses, once the payload has what it needs.
    fn target(&self, op: Operation, payload: &Payload) -> Result<u64, Refusal> {
        let id = requested_id(op, payload)?;
        check_required_fields(op, payload)?;
        parse_id(&id).filter(|n| self.incidents.contains_key(n)).ok_or(Refusal::UnknownId(id))
    }

    fn add(&mut self, fields: Payload) -> ItemId {
        self.last_number += 1;
        let id = ItemId::new(format_id(self.last_number));
        self.incidents.insert(self.last_number, Incident::new(id.clone(), fields));
        id
    }

    fn copy(&mut self, source: u64, payload: &Payload) -> Result<ItemId, Refusal> {
        let original = self.get(source)?;
        let mut fields = original.fields.clone();
        fields.extend(fields_of(payload));
        let from = original.id.clone();
        let id = self.add(fields);
        if let Some(copy) = self.incidents.get_mut(&self.last_number) {
            copy.copied_from = Some(from);
        }
        Ok(id)
    }

    fn change(
        &mut self,
        number: u64,
        op: Operation,
        payload: &Payload,
        now: SystemTime,
    ) -> Result<Payload, Refusal> {
        let incident =
            self.incidents.get_mut(&number).ok_or_else(|| Refusal::UnknownId(format_id(number)))?;
        let field = |name: &str| payload.get(name).cloned();
        match op {
            Operation::Edit => incident.fields.extend(fields_of(payload)),
            Operation::Close => {
                if incident.status == IncidentStatus::Closed {
                    return Err(Refusal::AlreadyClosed(incident.id.clone()));
                }
                incident.status = IncidentStatus::Closed;
                incident.resolution = field("resolution");
                incident.close_notes = field("closeNotes");
                incident.closed_at = Some(humantime::format_rfc3339_millis(now).to_string());
            }
            Operation::Reopen => {
                if incident.status == IncidentStatus::Open {
                    return Err(Refusal::AlreadyOpen(incident.id.clone()));
                }
                incident.status = IncidentStatus::Open;
                incident.reopen_reason = field("reason");
                incident.closed_at = None;
                incident.resolution = None;
                incident.close_notes = None;
            }
            Operation::Submit => {
                incident.partner_id = field("partnerId");
                incident.note = field("note");
            }
            Operation::Add | Operation::Copy | Operation::Read => {}
        }
        Ok(id_payload(&incident.id))
    }

    /// Applies what a person did to incident `id`; the incident as it is now, `None` once
    /// deleted. Refused like the operation it resembles (404, 409).
    pub fn act(
        &mut self,
        id: &str,
        action: &PersonAction,
        now: SystemTime,
    ) -> Result<Option<Incident>, Refusal> {
        let number =
            parse_id(id).filter(|n| self.incidents.contains_key(n)).ok_or(Refusal::UnknownId(id.into()))?;
        let mut payload = id_payload(&ItemId::new(id));
        let mut put = |name: &str, value: &Option<Value>| {
            if let Some(value) = value {
                payload.insert(name.into(), value.clone());
            }
        };
        let op = match action {
            PersonAction::Delete => {
                self.incidents.remove(&number);
                return Ok(None);
            }
            PersonAction::Renumber => {
                let mut incident = self.incidents.remove(&number).expect("checked above");
                self.last_number += 1;
                incident.id = ItemId::new(format_id(self.last_number));
                self.incidents.insert(self.last_number, incident.clone());
                return Ok(Some(incident));
            }
            PersonAction::Close { resolution, close_notes } => {
                put("resolution", resolution);
                put("closeNotes", close_notes);
                Operation::Close
            }
            PersonAction::Reopen { reason } => {
                put("reason", reason);
                Operation::Reopen
            }
            PersonAction::Submit { partner_id, note } => {
                put("partnerId", &Some(partner_id.clone()));
                put("note", note);
                Operation::Submit
            }
        };
        self.change(number, op, &payload, now)?;
        Ok(self.incidents.get(&number).cloned())
    }

    fn get(&self, number: u64) -> Result<&Incident, Refusal> {
        self.incidents.get(&number).ok_or_else(|| Refusal::UnknownId(format_id(number)))
    }

    /// All incidents in id order.
    pub fn incidents(&self) -> Vec<Incident> {
        self.incidents.values().cloned().collect()
    }

    /// The answer given to this licensePlate within the dedup window, if any.
    pub fn remembered(&self, plate: &str, now: SystemTime) -> Option<StoredAnswer> {
        let r = self.answers.get(plate)?;
        // A clock that went backwards counts as "just now": replaying is the safe side.
        let age = now.duration_since(r.at).unwrap_or(Duration::ZERO);
        (age < DEDUP_WINDOW).then(|| r.answer.clone())
    }

    pub fn remember(&mut self, plate: &str, answer: StoredAnswer, now: SystemTime) {
        self.answers.insert(plate.to_owned(), Remembered { at: now, answer });
    }

    /// Logs a request on arrival, before anything can fail, and returns the ticket with which
    /// its answer is filled in.
    pub fn record(
        &mut self,
        now: SystemTime,
        method: String,
        path: String,
        headers: Vec<(String, String)>,
        body: Value,
    ) -> Ticket {
        self.received += 1;
        let seq = self.received;
        if self.log_limit.is_some_and(|limit| self.requests.len() >= limit) {
            self.requests.pop_front();
        }
        self.requests.push_back(RecordedRequest {
            seq,
            received_at: humantime::format_rfc3339_millis(now).to_string(),
            method,
            path,
            headers,
            body,
            status: None,
            fault: None,
            duplicate: false,
        });
        Ticket { epoch: self.epoch, seq }
    }

    /// Fills in how a logged request was answered. A ticket from before a reset is ignored.
    pub fn complete(&mut self, ticket: Ticket, done: Completion) {
        if ticket.epoch != self.epoch {
            return;
        }
        // The log holds requests `received - len + 1 ..= received`.
        let first = self.received + 1 - self.requests.len() as u64;
        let entry = ticket
            .seq
            .checked_sub(first)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| self.requests.get_mut(i));
        if let Some(entry) = entry {
            entry.status = Some(done.status);
            entry.fault = done.fault.map(str::to_owned);
            entry.duplicate = done.duplicate;
        }
    }

    /// A store whose request log keeps only the newest `log_limit` requests (`None`: all).
    pub fn with_log_limit(log_limit: Option<usize>) -> Self {
        Self { log_limit, ..Self::default() }
    }

    pub fn reserve_plates(&mut self, additional: usize) {
        self.answers.reserve(additional);
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.requests.iter().cloned().collect()
    }

    /// Requests received, including those the log no longer holds.
    pub fn request_count(&self) -> usize {
        usize::try_from(self.received).unwrap_or(usize::MAX)
    }

    /// Forgets incidents, answers and requests and restarts ids at `IT-000001`.
    pub fn reset(&mut self) {
        let epoch = self.epoch + 1;
        *self = Store { epoch, log_limit: self.log_limit, ..Store::default() };
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn obj(v: Value) -> Payload {
        match v {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    fn add(store: &mut Store, fields: Value) -> String {
        let answer = store.apply(Operation::Add, &obj(fields), t0()).unwrap();
        answer["id"].as_str().unwrap().to_owned()
    }

    fn run(store: &mut Store, op: Operation, payload: Value) -> Result<Payload, Refusal> {
        store.apply(op, &obj(payload), t0())
    }

    fn incident(store: &Store, id: &str) -> Incident {
        store.incidents().into_iter().find(|i| i.id.as_str() == id).unwrap()
    }

    #[test]
    fn add_issues_sequential_ids_starting_at_one() {
        let mut store = Store::default();
        assert_eq!(add(&mut store, json!({})), "IT-000001");
        assert_eq!(add(&mut store, json!({})), "IT-000002");
    }

    #[test]
    fn add_stores_the_payload_fields_as_an_open_incident_and_ignores_a_given_id() {
        let mut store = Store::default();
        let id = add(&mut store, json!({"id": "mine", "title": "disk full", "labels": {"team": "ops"}}));
        let i = incident(&store, &id);
        assert_eq!(i.status, IncidentStatus::Open);
        assert_eq!(Value::Object(i.fields), json!({"title": "disk full", "labels": {"team": "ops"}}));
    }

    #[test]
    fn ids_past_six_digits_still_list_in_creation_order() {
        let mut store = Store { last_number: 999_998, ..Store::default() };
        let a = add(&mut store, json!({}));
        let b = add(&mut store, json!({}));
        assert_eq!((a.as_str(), b.as_str()), ("IT-999999", "IT-1000000"));
        let ids: Vec<_> = store.incidents().into_iter().map(|i| i.id).collect();
        assert_eq!(ids, [ItemId::new(a), ItemId::new(b)]);
    }

    #[test]
    fn every_operation_but_add_needs_an_id() {
        let mut store = Store::default();
        for op in Operation::ALL.into_iter().filter(|op| op.requires_id()) {
            let refusal = run(&mut store, op, json!({"partnerId": "P"})).unwrap_err();
            assert_eq!(refusal, Refusal::MissingId(op));
            assert_eq!(refusal.status(), StatusCode::BAD_REQUEST);
        }
        assert_eq!(
            run(&mut store, Operation::Read, json!({"id": null})),
            Err(Refusal::MissingId(Operation::Read))
        );
    }

    #[test]
    fn an_id_that_is_neither_string_nor_number_is_a_bad_request() {
        let mut store = Store::default();
        let refusal = run(&mut store, Operation::Read, json!({"id": ["IT-000001"]})).unwrap_err();
        assert_eq!(refusal, Refusal::BadId);
        assert_eq!(refusal.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn unknown_ids_are_not_found() {
        let mut store = Store::default();
        add(&mut store, json!({}));
        for id in [json!("IT-000002"), json!("IT-1"), json!("x"), json!(""), json!(1)] {
            let refusal = run(&mut store, Operation::Edit, json!({"id": id})).unwrap_err();
            assert!(matches!(refusal, Refusal::UnknownId(_)), "{refusal:?}");
            assert_eq!(refusal.status(), StatusCode::NOT_FOUND);
        }
    }

    #[test]
    fn edit_merges_fields_except_the_id() {
        let mut store = Store::default();
        let id = add(&mut store, json!({"title": "a", "severity": "minor"}));
        let answer =
            run(&mut store, Operation::Edit, json!({"id": id, "severity": "major", "service": "db"}))
                .unwrap();
        assert_eq!(Value::Object(answer), json!({"id": id}));
        assert_eq!(
            Value::Object(incident(&store, &id).fields),
            json!({"title": "a", "severity": "major", "service": "db"})
        );
    }

    #[test]
    fn copy_creates_an_open_incident_from_the_source_with_overrides() {
        let mut store = Store::default();
        let id = add(&mut store, json!({"title": "a", "service": "db"}));
        run(&mut store, Operation::Close, json!({"id": id})).unwrap();
        let answer = run(&mut store, Operation::Copy, json!({"id": id, "title": "b"})).unwrap();
        assert_eq!(Value::Object(answer), json!({"id": "IT-000002"}));
        let copy = incident(&store, "IT-000002");
        assert_eq!(copy.status, IncidentStatus::Open);
        assert_eq!(copy.copied_from, Some(ItemId::new(id.clone())));
        assert_eq!(Value::Object(copy.fields), json!({"title": "b", "service": "db"}));
        assert_eq!(Value::Object(incident(&store, &id).fields), json!({"title": "a", "service": "db"}));
    }

    #[test]
    fn close_records_resolution_notes_and_time() {
        let mut store = Store::default();
        let id = add(&mut store, json!({}));
        let answer = run(
            &mut store,
            Operation::Close,
            json!({"id": id, "resolution": "fixed", "closeNotes": "restarted"}),
        )
        .unwrap();
        assert_eq!(Value::Object(answer), json!({"id": id}));
        let i = incident(&store, &id);
        assert_eq!(i.status, IncidentStatus::Closed);
        assert_eq!(i.resolution, Some(json!("fixed")));
        assert_eq!(i.close_notes, Some(json!("restarted")));
        assert_eq!(i.closed_at.as_deref(), Some("2023-11-14T22:13:20.000Z"));
    }

    #[test]
    fn closing_a_closed_incident_conflicts_and_changes_nothing() {
        let mut store = Store::default();
        let id = add(&mut store, json!({}));
        run(&mut store, Operation::Close, json!({"id": id, "resolution": "fixed"})).unwrap();
        let refusal =
            run(&mut store, Operation::Close, json!({"id": id, "resolution": "other"})).unwrap_err();
        assert_eq!(refusal, Refusal::AlreadyClosed(ItemId::new(id.clone())));
        assert_eq!(refusal.status(), StatusCode::CONFLICT);
        assert_eq!(incident(&store, &id).resolution, Some(json!("fixed")));
    }

    #[test]
    fn reopening_an_open_incident_conflicts() {
        let mut store = Store::default();
        let id = add(&mut store, json!({}));
        let refusal = run(&mut store, Operation::Reopen, json!({"id": id})).unwrap_err();
        assert_eq!(refusal, Refusal::AlreadyOpen(ItemId::new(id)));
        assert_eq!(refusal.status(), StatusCode::CONFLICT);
    }

    #[test]
    fn reopen_records_the_reason_and_clears_the_closure() {
        let mut store = Store::default();
        let id = add(&mut store, json!({}));
        run(&mut store, Operation::Close, json!({"id": id, "resolution": "fixed"})).unwrap();
        run(&mut store, Operation::Reopen, json!({"id": id, "reason": "back"})).unwrap();
        let i = incident(&store, &id);
        assert_eq!(i.status, IncidentStatus::Open);
        assert_eq!(i.reopen_reason, Some(json!("back")));
        assert_eq!((i.closed_at, i.resolution, i.close_notes), (None, None, None));
    }

    #[test]
    fn submit_records_partner_and_note() {
        let mut store = Store::default();
        let id = add(&mut store, json!({}));
        run(&mut store, Operation::Submit, json!({"id": id, "partnerId": "P-7", "note": "yours"})).unwrap();
        let i = incident(&store, &id);
        assert_eq!(i.partner_id, Some(json!("P-7")));
        assert_eq!(i.note, Some(json!("yours")));
    }

    #[test]
    fn submit_without_partner_is_a_bad_request() {
        let mut store = Store::default();
        let id = add(&mut store, json!({}));
        for payload in [json!({"id": id}), json!({"id": id, "partnerId": null})] {
            let refusal = run(&mut store, Operation::Submit, payload).unwrap_err();
            assert_eq!(refusal, Refusal::MissingField { op: Operation::Submit, field: "partnerId" });
            assert_eq!(refusal.status(), StatusCode::BAD_REQUEST);
        }
        assert_eq!(incident(&store, &id).partner_id, None);
    }

    #[test]
    fn read_returns_fields_status_partner_and_closure() {
        let mut store = Store::default();
        let id = add(&mut store, json!({"title": "a", "status": "spoofed"}));
        let answer = run(&mut store, Operation::Read, json!({"id": id})).unwrap();
        assert_eq!(Value::Object(answer), json!({"id": id, "title": "a", "status": "open"}));
        run(&mut store, Operation::Submit, json!({"id": id, "partnerId": "P"})).unwrap();
        run(&mut store, Operation::Close, json!({"id": id, "resolution": "fixed"})).unwrap();
        let answer = run(&mut store, Operation::Read, json!({"id": id})).unwrap();
        assert_eq!(
            Value::Object(answer),
            json!({"id": id, "title": "a", "status": "closed", "partnerId": "P",
                   "closedAt": "2023-11-14T22:13:20.000Z", "resolution": "fixed"})
        );
    }

    #[test]
    fn a_person_closes_reopens_hands_over_renumbers_and_deletes_without_a_logged_request() {
        let mut store = Store::default();
        let id = add(&mut store, json!({"title": "t", "externalRef": "k"}));
        let close = PersonAction::Close { resolution: Some(json!("won't fix")), close_notes: None };
        let closed = store.act(&id, &close, t0()).unwrap().unwrap();
        assert_eq!(closed.status, IncidentStatus::Closed);
        let read = run(&mut store, Operation::Read, json!({"id": id})).unwrap();
        assert_eq!(read["status"], "closed");
        assert_eq!(read["resolution"], "won't fix");
        assert!(read["closedAt"].is_string());
        assert_eq!(store.act(&id, &close, t0()), Err(Refusal::AlreadyClosed(ItemId::new(id.clone()))));
        let reopened = store.act(&id, &PersonAction::Reopen { reason: None }, t0()).unwrap().unwrap();
        assert_eq!(reopened.status, IncidentStatus::Open);
        let submit = PersonAction::Submit { partner_id: json!("P-7"), note: None };
        assert_eq!(store.act(&id, &submit, t0()).unwrap().unwrap().partner_id, Some(json!("P-7")));

        let moved = store.act(&id, &PersonAction::Renumber, t0()).unwrap().unwrap();
        assert_ne!(moved.id.as_str(), id);
        assert!(matches!(run(&mut store, Operation::Read, json!({"id": id})), Err(Refusal::UnknownId(_))));
        assert_eq!(moved.fields["externalRef"], "k", "the incident is the same, under a new id");
        assert_eq!(store.act(moved.id.as_str(), &PersonAction::Delete, t0()), Ok(None));
        assert!(store.incidents().is_empty());
        assert_eq!(store.request_count(), 0, "a person's actions are not requests from the bridge");
    }

    #[test]
    fn a_numeric_id_is_read_as_text() {
        let mut store = Store::default();
        add(&mut store, json!({}));
        assert_eq!(run(&mut store, Operation::Read, json!({"id": 1})), Err(Refusal::UnknownId("1".into())));
    }

    #[test]
    fn answers_are_remembered_for_24_hours() {
        let mut store = Store::default();
        let answer = StoredAnswer { status: StatusCode::OK, body: Bytes::from_static(b"{}") };
        store.remember("plate", answer.clone(), t0());
        assert_eq!(store.remembered("plate", t0()), Some(answer.clone()));
        let almost = t0() + DEDUP_WINDOW - Duration::from_millis(1);
        assert_eq!(store.remembered("plate", almost), Some(answer));
        assert_eq!(store.remembered("plate", t0() + DEDUP_WINDOW), None);
        assert_eq!(store.remembered("other", t0()), None);
    }

    #[test]
    fn the_log_keeps_arrival_order_and_fills_in_answers() {
        let mut store = Store::default();
        let first = store.record(t0(), "POST".into(), "/a".into(), vec![], json!(1));
        let second = store.record(t0(), "POST".into(), "/b".into(), vec![], json!(2));
        store.complete(second, Completion { status: 429, fault: Some("rate_limited"), duplicate: false });
        store.complete(first, Completion { status: 200, fault: None, duplicate: true });
        let log = store.requests();
        assert_eq!(log.len(), 2);
        assert_eq!((log[0].seq, log[0].path.as_str()), (1, "/a"));
        assert_eq!((log[0].status, log[0].duplicate), (Some(200), true));
        assert_eq!(log[0].received_at, "2023-11-14T22:13:20.000Z");
        assert_eq!((log[1].seq, log[1].status), (2, Some(429)));
        assert_eq!(log[1].fault.as_deref(), Some("rate_limited"));
    }

    #[test]
    fn an_unanswered_request_has_no_status() {
        let mut store = Store::default();
        store.record(t0(), "POST".into(), "/".into(), vec![], Value::Null);
        assert_eq!(store.requests()[0].status, None);
    }

    #[test]
    fn a_limited_log_keeps_the_newest_requests_and_counts_them_all() {
        let mut store = Store::with_log_limit(Some(2));
        let tickets: Vec<_> = (0..3)
            .map(|i| {
                store.record(SystemTime::UNIX_EPOCH, "POST".into(), format!("/{i}"), vec![], Value::Null)
            })
            .collect();
        // The first request left the log: completing it changes nothing and does not panic.
        store.complete(tickets[0], Completion { status: 500, fault: None, duplicate: false });
        store.complete(tickets[2], Completion { status: 200, fault: None, duplicate: false });
        let log = store.requests();
        assert_eq!(log.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(), ["/1", "/2"]);
        assert_eq!(log.iter().map(|r| r.seq).collect::<Vec<_>>(), [2, 3]);
        assert_eq!((log[0].status, log[1].status), (None, Some(200)));
        assert_eq!(store.request_count(), 3);
        store.reset();
        store.record(SystemTime::UNIX_EPOCH, "POST".into(), "/a".into(), vec![], Value::Null);
        store.record(SystemTime::UNIX_EPOCH, "POST".into(), "/b".into(), vec![], Value::Null);
        store.record(SystemTime::UNIX_EPOCH, "POST".into(), "/c".into(), vec![], Value::Null);
        assert_eq!(store.requests().len(), 2, "the limit survives a reset");
    }

    #[test]
    fn reset_forgets_everything_and_restarts_ids() {
        let mut store = Store::default();
        add(&mut store, json!({}));
        store.remember("plate", StoredAnswer { status: StatusCode::OK, body: Bytes::new() }, t0());
        let stale = store.record(t0(), "POST".into(), "/".into(), vec![], Value::Null);
        store.reset();
        assert!(store.incidents().is_empty());
        assert_eq!(store.request_count(), 0);
        assert_eq!(store.remembered("plate", t0()), None);
        assert_eq!(add(&mut store, json!({})), "IT-000001");

        store.record(t0(), "POST".into(), "/new".into(), vec![], Value::Null);
        store.complete(stale, Completion { status: 500, fault: None, duplicate: false });
        assert_eq!(store.requests()[0].status, None);
    }
}
