//! What background components report for `/readyz` and the status API:
//! each names its problem while it has one and clears it when it recovers.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Background components report problems here; `/readyz` lists them.
#[derive(Default)]
pub struct Health {
    problems: Mutex<BTreeMap<&'static str, String>>,
}

impl Health {
    pub fn problem(&self, component: &'static str, what: impl Into<String>) {
        if let Ok(mut p) = self.problems.lock() {
            p.insert(component, what.into());
        }
    }

    pub fn ok(&self, component: &'static str) {
        if let Ok(mut p) = self.problems.lock() {
            p.remove(component);
        }
    }

    pub fn problems(&self) -> BTreeMap<&'static str, String> {
        self.problems.lock().map(|p| p.clone()).unwrap_or_default()
    }
}
