//! The history checker: what went in (each key's alert steps, in order), what SCWM saw (its
//! request log and incidents) and what came out (dead letters), checked against the invariants
//! every chaos run must keep, whatever its nemesis did:
//!
//! - every key ends in the state a sequential run of its steps leaves (an open incident, a
//!   closed one, or none), with exactly one incident;
//! - no licensePlate takes effect twice (a repeat SCWM recognised is fine);
//! - SCWM refuses no operation (a 4xx the test did not inject means the bridge acted on stale
//!   state: a close of a closed incident, an edit of a deleted one);
//! - no dead letter, unless the scenario allows them.
//!
//! On a violation it names the first key that breaks one, with its story: the steps that went
//! in, every SCWM request about it (operation, licensePlate, status), its incidents and the
//! dead letters that name it. It only reads; running the scenario is the caller's.

use std::collections::{BTreeMap, HashMap};

use incident_bridge::sim::{IncidentStatus, SimState};

use super::{SOURCE, Step, correlation_key, final_state};

/// What went in: each key's steps, in the order they were sent.
#[derive(Debug, Default, Clone)]
pub(super) struct History {
    steps: BTreeMap<String, Vec<Step>>,
    /// A key whose alert fired again after resolving may have had its closed incident replaced
    /// by a new one (a clock that jumped past the reopen window decides so): the older ones
    /// closed, the newest in the end state.
    replacements: bool,
}

/// One broken invariant, with the story of the key that broke it.
#[derive(Debug)]
pub(super) struct Violation {
    pub key: String,
    pub what: String,
    pub story: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}\n{}", self.key, self.what, self.story)
    }
}

impl History {
    /// Key `k`'s scripted steps (the chaos scenarios' keys are numbers).
    pub fn of_scripts(scripts: &[Vec<Step>]) -> Self {
        let mut h = Self::default();
        for (k, steps) in scripts.iter().enumerate() {
            for step in steps {
                h.sent(k, *step);
            }
        }
        h
    }

    /// Allows the closed incident of a key whose alert fired again to be replaced by a new one.
    pub fn allowing_replacements(mut self) -> Self {
        self.replacements = true;
        self
    }

    pub fn sent(&mut self, k: usize, step: Step) {
        self.steps.entry(correlation_key(SOURCE, k)).or_default().push(step);
    }

    /// Every violation, the keys in order; `dead_letters` are the (key, reason) of those
    /// published.
    pub fn check(&self, scwm: &SimState, dead_letters: &[(String, String)]) -> Vec<Violation> {
        let requests = scwm.requests();
        let incidents = scwm.incidents();
        // Which key each incident belongs to: the add's externalRef, kept by SCWM.
        let key_of_item: HashMap<String, String> = incidents
            .iter()
            .filter_map(|i| Some((i.id.to_string(), i.fields.get("externalRef")?.as_str()?.to_owned())))
            .collect();
        let key_of_request = |body: &serde_json::Value| -> Option<String> {
            let payload = &body["payload"];
            payload["externalRef"]
                .as_str()
                .map(str::to_owned)
                .or_else(|| payload["id"].as_str().and_then(|id| key_of_item.get(id).cloned()))
        };
        let mut effects: HashMap<String, u32> = HashMap::new();
        let mut by_key: HashMap<String, Vec<String>> = HashMap::new();
        let mut refused: HashMap<String, Vec<String>> = HashMap::new();
        let mut doubled_plates: HashMap<String, Vec<String>> = HashMap::new();
        for r in &requests {
            let op = r.body["header"]["eventName"].as_str().unwrap_or("?");
            let op = op.split(':').nth(1).unwrap_or(op).to_owned();
            let plate = r.body["header"]["licensePlate"].as_str().unwrap_or_default().to_owned();
            let key = key_of_request(&r.body).unwrap_or_else(|| "<no key>".into());
            let line = format!(
                "  #{} {op} {plate} -> {}{}{}",
                r.seq,
                r.status.map_or("no answer".into(), |s| s.to_string()),
                if r.duplicate { " (a repeat SCWM recognised)" } else { "" },
                r.fault.as_deref().map(|f| format!(" (injected: {f})")).unwrap_or_default()
            );
            by_key.entry(key.clone()).or_default().push(line);
            match r.status {
                Some(200..=299) if !r.duplicate => {
                    let n = effects.entry(plate.clone()).or_default();
                    *n += 1;
                    if *n == 2 {
                        doubled_plates.entry(key).or_default().push(plate);
                    }
                }
                Some(s @ 400..=499) if r.fault.is_none() => {
                    refused.entry(key).or_default().push(format!("{op} {plate} -> {s}"))
                }
                _ => {}
            }
        }
        let mut incidents_of: HashMap<String, Vec<(String, IncidentStatus)>> = HashMap::new();
        for i in &incidents {
            let key = key_of_item.get(i.id.as_str()).cloned().unwrap_or_else(|| "<no key>".into());
            incidents_of.entry(key).or_default().push((i.id.to_string(), i.status));
        }
        let letters_of = |key: &str| -> Vec<&String> {
            dead_letters.iter().filter(|(k, _)| k == key).map(|(_, reason)| reason).collect()
        };
        let story = |key: &str| -> String {
            let steps = self.steps.get(key).map(|s| format!("{s:?}")).unwrap_or_else(|| "none".into());
            let calls = by_key.get(key).map(|c| c.join("\n")).unwrap_or_else(|| "  none".into());
            format!(
                " went in: {steps}\n SCWM saw:\n{calls}\n incidents: {:?}\n dead letters: {:?}",
                incidents_of.get(key).cloned().unwrap_or_default(),
                letters_of(key)
            )
        };
        let mut violations = Vec::new();
        let mut keys: Vec<&String> = self.steps.keys().collect();
        let unknown: Vec<&String> = incidents_of.keys().filter(|k| !self.steps.contains_key(*k)).collect();
        keys.extend(unknown);
        keys.sort();
        keys.dedup();
        for key in keys {
            let want = self.steps.get(key).and_then(|s| final_state(s));
            let mut found = incidents_of.get(key).cloned().unwrap_or_default();
            if self.replacements && found.len() > 1 {
                found.sort_by(|a, b| a.0.cmp(&b.0));
                let refires = self.steps.get(key).map_or(0, |s| {
                    s.windows(2).filter(|w| w[0] == Step::Resolve && w[1] == Step::Fire).count()
                });
                let older_closed = found[..found.len() - 1].iter().all(|(_, s)| *s == IncidentStatus::Closed);
                if older_closed && found.len() - 1 <= refires {
                    found = found.split_off(found.len() - 1);
                }
            }
            let what = match (want, found.as_slice()) {
                (_, [_, _, ..]) => Some(format!("{} incidents, want one ({want:?})", found.len())),
                (None, [one]) if !self.steps.contains_key(key) => {
                    Some(format!("an incident {one:?} for a key no alert named"))
                }
                (None, [one]) => Some(format!("an incident {one:?}, want none")),
                (Some(s), []) => Some(format!("lost: no incident, want one {s:?}")),
                (Some(s), [(_, got)]) if *got != s => {
                    Some(format!("incident {:?} is {got:?}, want {s:?}", found[0].0))
                }
                _ => None,
            }
            .or_else(|| doubled_plates.get(key).map(|p| format!("licensePlate(s) {p:?} took effect twice")))
            .or_else(|| refused.get(key).map(|r| format!("SCWM refused {r:?}")))
            .or_else(|| {
                let letters = letters_of(key);
                (!letters.is_empty()).then(|| format!("{} dead letter(s)", letters.len()))
            });
            if let Some(what) = what {
                violations.push(Violation { key: key.clone(), what, story: story(key) });
            }
        }
        violations
    }

    /// Fails the test on the first violation, with its story, and says how many there are.
    pub fn assert_kept(&self, scwm: &SimState, dead_letters: &[(String, String)]) {
        let violations = self.check(scwm, dead_letters);
        if let Some(first) = violations.first() {
            panic!("{} keys break the invariants; the first:\n{first}", violations.len());
        }
    }
}

/// Dead letters on the rig's stream as (key, reason).
pub(super) async fn dead_letters(rig: &super::Rig) -> Vec<(String, String)> {
    rig.dead_letters()
        .await
        .iter()
        .map(|m| {
            let header = |name: &str| m.headers.get(name).map(|v| v.as_str().to_owned()).unwrap_or_default();
            (header("Incident-Bridge-Key"), header("Incident-Bridge-Error"))
        })
        .collect()
}

/// The checker is only worth its word if it catches what it says it does: a second incident
/// added for a key behind the bridge's back (a planted double add) is named, with the key's story.
#[tokio::test]
async fn the_history_checker_flags_a_planted_double_add_with_the_key_s_story() {
    use incident_bridge::scwm::{ClientSettings, Operation, ScwmClient, ScwmRequest};
    let sim = crate::kit::start_simulator().await;
    let client = ScwmClient::new(ClientSettings::single_url(
        sim.url().parse().unwrap(),
        incident_bridge::secret::Secret::new(crate::kit::TOKEN),
        "TEAM",
    ))
    .unwrap();
    let add = |key: &str| {
        let payload = serde_json::json!({"title": "Queue backing up", "externalRef": key});
        ScwmRequest::new(Operation::Add, payload.as_object().unwrap().clone())
    };
    let (ok, planted) = (correlation_key(SOURCE, 1), correlation_key(SOURCE, 2));
    let mut history = History::default();
    history.sent(1, Step::Fire);
    history.sent(2, Step::Fire);
    client.call(&add(&ok)).await.unwrap();
    client.call(&add(&planted)).await.unwrap();
    assert!(history.check(&sim.state(), &[]).is_empty(), "one incident each: nothing to say");

    // The plant: a second add for key 2, with its own licensePlate.
    client.call(&add(&planted)).await.unwrap();
    let violations = history.check(&sim.state(), &[]);
    assert_eq!(violations.len(), 1, "{violations:?}");
    let v = &violations[0];
    assert_eq!(v.key, planted);
    assert!(v.what.starts_with("2 incidents"), "{}", v.what);
    assert!(
        v.story.contains("went in: [Fire]") && v.story.matches("add-incident").count() == 2,
        "{}",
        v.story
    );
    // A dead letter for a key is a violation too, unless the scenario allows it.
    let letters = [(ok.clone(), "gave up".to_owned())];
    assert!(history.check(&sim.state(), &letters).iter().any(|v| v.key == ok));
}
