//! What the pipeline would do with an event, and why, without doing any of it: the same
//! rendering, the same record and the same planner as [`Pipeline::process_one`], but no SCWM
//! call, no store write, no publish. An operator asks it before deploying a route or after an
//! alert did something unexpected.

use std::{sync::Arc, time::SystemTime};

use http::HeaderMap;
use serde::Serialize;
use serde_json::Value;

use super::Pipeline;
use crate::{
    event::{AlertEvent, Event, EventKind},
    incident::Operation,
    plan::{self, Claimant, Plan, Record},
    publish::ResultEvent,
    scwm::{RequestEnvelope, ScwmRequest},
    template::Renderer,
};

/// One event, explained.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alertname: Option<String>,
    /// `firing` or `resolved`, for an alert.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<&'static str>,
    /// The route that took the alert, and what it matches on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<ExplainedRoute>,
    /// What the store holds for the key now (`null`: nothing, the key is unknown).
    pub stored: Option<Value>,
    /// The decision's label (`add`, `close`, `nothing_unchanged`, ...), or `command`, `busy`,
    /// `resume`, `reject`.
    pub decision: String,
    pub reason: String,
    /// Every request that would go to SCWM, in order, exactly as it would be sent.
    pub requests: Vec<ExplainedRequest>,
    /// Templates that would fail for this alert, and what would stand in.
    pub template_fallbacks: Vec<ExplainedFallback>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExplainedRoute {
    pub name: String,
    /// Every matcher matched (none: the route takes everything).
    pub matchers: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExplainedRequest {
    pub op: Operation,
    pub url: String,
    pub envelope: RequestEnvelope,
    /// The id of the result event SCWM's answer would be published as.
    pub result_id: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExplainedFallback {
    pub template: String,
    pub part: String,
    pub message: String,
}

/// A state to explain against instead of the store's (a test case's "given"): the key maps to
/// `item_id`, open or closed `closed_ago`, and SCWM last received this very content or other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Given {
    pub item_id: String,
    pub state: crate::lifecycle::IncidentState,
    pub closed_ago: Option<std::time::Duration>,
    pub same_content: bool,
}

/// What to explain against: the store and the clock (the default), or a given state and time.
#[derive(Debug, Clone, Default)]
pub struct Against {
    /// `Some(None)`: the key is unknown, whatever the store says.
    pub given: Option<Option<Given>>,
    pub now: Option<SystemTime>,
}

/// What a request that needs the id of an incident the same intent adds carries before SCWM
/// has answered the add.
const ID_FROM_THE_ADD: &str = "<the id SCWM answers the add with>";

impl Pipeline {
    /// What [`Pipeline::process_one`] would do with `event` now. Reads the key's record; writes
    /// nothing and calls nothing.
    pub async fn explain(&self, event: &Event) -> Explanation {
        self.explain_against(event, &Against::default()).await
    }

    /// [`Pipeline::explain`] against a given state and time instead of the store's and now.
    pub async fn explain_against(&self, event: &Event, against: &Against) -> Explanation {
        match &event.kind {
            EventKind::Command(cmd) => {
                let request = super::command_request(event, cmd);
                Explanation {
                    key: event.key.to_string(),
                    alertname: None,
                    status: None,
                    route: None,
                    stored: None,
                    decision: "command".into(),
                    reason: format!("a native {} command goes to SCWM as it is", cmd.op),
                    requests: vec![self.explained(&request)],
                    template_fallbacks: Vec::new(),
                }
            }
            EventKind::Alert(alert) => self.explain_alert(event, alert, against).await,
        }
    }

    async fn explain_alert(&self, event: &Event, alert: &AlertEvent, against: &Against) -> Explanation {
        let now = against.now.unwrap_or_else(SystemTime::now);
        let target = &alert.target;
        let mut explained = Explanation {
            key: event.key.to_string(),
            alertname: alert.alertname().map(str::to_owned),
            status: Some(target.status.as_str()),
            route: Some(ExplainedRoute {
                name: target.route.name.clone(),
                matchers: target.route.matchers.iter().map(ToString::to_string).collect(),
            }),
            stored: None,
            decision: String::new(),
            reason: String::new(),
            requests: Vec::new(),
            template_fallbacks: Vec::new(),
        };
        let reject = |mut e: Explanation, reason: String| {
            e.decision = "reject".into();
            e.reason = reason;
            e
        };
        let Some((spec, settings)) =
            self.sources.get(&event.source.name).and_then(|spec| Some((spec, spec.alerts.as_ref()?)))
        else {
            return reject(explained, format!("source `{}` has no alert settings", event.source.name));
        };
        let renderer = Renderer::new(&spec.name, &settings.templates, &alert.notification, target.subject());
        // Rendered up front, as the hash is part of the explanation.
        let contents = plan::Contents::new(&renderer);
        let content = contents.get();
        let fallbacks = |r: &Renderer<'_>, into: &mut Vec<ExplainedFallback>| {
            into.extend(r.take_fallbacks().into_iter().map(|f| ExplainedFallback {
                template: f.template,
                part: f.part,
                message: f.message,
            }));
        };
        fallbacks(&renderer, &mut explained.template_fallbacks);
        let content = match content {
            Ok(c) => c,
            Err(e) => return reject(explained, format!("dead-lettered: template: {e}")),
        };
        let record = match &against.given {
            Some(given) => given.as_ref().map(|g| given_record(g, &content.hash, now)),
            None => match self.read_record(event).await {
                Ok(record) => record,
                Err(reason) => return reject(explained, reason),
            },
        };
        explained.stored = record.as_ref().and_then(|r| serde_json::to_value(r).ok());
        let record = record.unwrap_or_default();
        let facts = super::alert::facts(spec, settings, event, alert);
        let claimant = Claimant { instance: "explain", claim_ttl: self.claim_ttl };
        let planned = plan::plan(&record, &facts, &contents, claimant, now, None);
        fallbacks(&renderer, &mut explained.template_fallbacks);
        let (decision, reason, to_run) = match planned {
            Err(e) => return reject(explained, format!("dead-lettered: template: {e}")),
            Ok(Plan::Busy { retry_after }) => (
                "busy".to_owned(),
                format!(
                    "another replica is working on this key; the event would wait {} and be planned again",
                    humantime::format_duration(retry_after)
                ),
                None,
            ),
            Ok(Plan::Resume) => (
                "resume".to_owned(),
                "an earlier intent for this key is unfinished: its remaining steps go first, then the event \
                 is planned again"
                    .to_owned(),
                Some(record),
            ),
            Ok(Plan::Nothing { decision, .. }) => (decision.label().to_owned(), decision.reason, None),
            Ok(Plan::Run { decision, record }) => {
                (decision.label().to_owned(), decision.reason, Some(record))
            }
        };
        explained.decision = decision;
        explained.reason = reason;
        if let Some(record) = to_run {
            explained.requests = self.steps_of(&record);
        }
        explained
    }

    /// The record of the event's key, read only; `None` when the key has none (or there is no
    /// store: every key is unknown then).
    async fn read_record(&self, event: &Event) -> Result<Option<Record>, String> {
        let Some(store) = &self.store else { return Ok(None) };
        match super::records::read(store.as_ref(), &event.key).await {
            Ok(found) => Ok(found.map(|(record, _)| record)),
            Err(e) => Err(format!("the key's record cannot be read: {e}")),
        }
    }

    /// The requests of an intent's steps that are not done, with the ids they would carry.
    fn steps_of(&self, record: &Record) -> Vec<ExplainedRequest> {
        let Some(pending) = &record.pending else { return Vec::new() };
        let mut item = pending.progress.as_ref().map(|s| s.item_id.to_string());
        let mut requests = Vec::new();
        for step in pending.steps.iter().filter(|s| !s.done) {
            let mut payload = step.payload.clone();
            if step.op.requires_id() {
                payload.insert("id".into(), item.clone().unwrap_or_else(|| ID_FROM_THE_ADD.into()).into());
            }
            if step.op == Operation::Add {
                item = Some(ID_FROM_THE_ADD.into());
            }
            let request = ScwmRequest {
                op: step.op,
                license_plate: step.license_plate.clone(),
                owner_id: step.owner_id.clone(),
                payload: Arc::new(payload),
                headers: HeaderMap::new(),
            };
            requests.push(self.explained(&request));
        }
        requests
    }

    fn explained(&self, request: &ScwmRequest) -> ExplainedRequest {
        let (url, envelope) = self.scwm.envelope(request);
        ExplainedRequest {
            op: request.op,
            url,
            envelope,
            result_id: ResultEvent::id_for(&request.license_plate, true),
        }
    }
}

/// The record a given state stands for.
fn given_record(given: &Given, content_hash: &str, now: SystemTime) -> Record {
    let hash =
        if given.same_content { content_hash.to_owned() } else { format!("other than {content_hash}") };
    let mut stored = crate::lifecycle::Stored::opened(
        crate::ids::ItemId::new(given.item_id.clone()),
        &hash,
        now,
        crate::ids::LicensePlate::derived(0, given.item_id.as_bytes()),
    );
    stored.state = given.state;
    if given.state == crate::lifecycle::IncidentState::Closed {
        stored.closed_at = Some(now - given.closed_ago.unwrap_or_default());
    }
    Record { stored: Some(stored), ..Record::default() }
}
