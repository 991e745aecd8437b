//! Liveness and readiness. The process is alive while it runs; it is ready while it is not
//! shutting down and it can accept work durably: every component that work depends on (the NATS
//! connection when the correlation store lives in NATS) says so. A component the bridge can do
//! without for a while (NATS when the store is a local file: HTTP work goes on, results wait in
//! the outbox) is reported but does not make the bridge unready.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

#[derive(Clone, Default)]
pub struct Health {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    draining: AtomicBool,
    /// Each component: whether it can do its work now, and whether accepting work needs it.
    components: Mutex<BTreeMap<&'static str, (bool, bool)>>,
}

/// Why the bridge is not ready, for the `/readyz` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotReady(pub Vec<String>);

impl Health {
    /// From now on `/readyz` answers 503 so load balancers stop sending work.
    pub fn set_draining(&self) {
        self.inner.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    /// Registers a component whose readiness the bridge's depends on (`needed`), or that is only
    /// reported; it starts not ready.
    pub fn register(&self, name: &'static str, needed: bool) {
        self.inner.components.lock().unwrap_or_else(|e| e.into_inner()).insert(name, (false, needed));
    }

    /// Records whether a component can do its work now (a component not registered is needed).
    pub fn set_component(&self, name: &'static str, ready: bool) {
        let mut components = self.inner.components.lock().unwrap_or_else(|e| e.into_inner());
        let needed = components.get(name).is_none_or(|(_, needed)| *needed);
        components.insert(name, (ready, needed));
    }

    pub fn readiness(&self) -> Result<(), NotReady> {
        let mut reasons = Vec::new();
        if self.is_draining() {
            reasons.push("shutting down".to_owned());
        }
        for (name, (ready, needed)) in self.inner.components.lock().unwrap_or_else(|e| e.into_inner()).iter()
        {
            if !ready && *needed {
                reasons.push(format!("{name} not ready"));
            }
        }
        if reasons.is_empty() { Ok(()) } else { Err(NotReady(reasons)) }
    }

    /// Every component and its state, for the `/readyz` answer.
    pub fn components(&self) -> BTreeMap<&'static str, &'static str> {
        let components = self.inner.components.lock().unwrap_or_else(|e| e.into_inner());
        components
            .iter()
            .map(|(name, (ready, needed))| {
                let state = match (ready, needed) {
                    (true, _) => "ready",
                    (false, true) => "not ready",
                    (false, false) => "not ready (work goes on without it)",
                };
                (*name, state)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_until_draining_or_a_component_is_down() {
        let h = Health::default();
        assert_eq!(h.readiness(), Ok(()));
        h.set_component("nats", false);
        assert_eq!(h.readiness(), Err(NotReady(vec!["nats not ready".into()])));
        h.set_component("nats", true);
        assert_eq!(h.readiness(), Ok(()));
        h.set_draining();
        assert_eq!(h.readiness(), Err(NotReady(vec!["shutting down".into()])));
    }

    #[test]
    fn a_component_work_does_not_need_is_reported_but_does_not_make_it_unready() {
        let h = Health::default();
        h.register("nats", false);
        h.set_component("nats", false);
        assert_eq!(h.readiness(), Ok(()));
        assert_eq!(h.components()["nats"], "not ready (work goes on without it)");
        h.set_component("nats", true);
        assert_eq!(h.components()["nats"], "ready");
    }
}
