//! Liveness and readiness. The process is alive while it runs; it is ready while it is not
//! shutting down and every component that reports readiness (e.g. the NATS connection) says so.

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
    components: Mutex<BTreeMap<&'static str, bool>>,
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

    /// Records whether a component can do its work now.
    pub fn set_component(&self, name: &'static str, ready: bool) {
        self.inner.components.lock().unwrap_or_else(|e| e.into_inner()).insert(name, ready);
    }

    pub fn readiness(&self) -> Result<(), NotReady> {
        let mut reasons = Vec::new();
        if self.is_draining() {
            reasons.push("shutting down".to_owned());
        }
        for (name, ready) in self.inner.components.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            if !ready {
                reasons.push(format!("{name} not ready"));
            }
        }
        if reasons.is_empty() { Ok(()) } else { Err(NotReady(reasons)) }
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
}
