//! Breaker transitions saved before they are announced. The breaker itself acts on a
//! transition at once (an open breaker refuses the next request); everything that shows it —
//! `/v1/providers`, the breaker metrics, the log line — waits until the monitor has saved it.
//! A transition anyone saw therefore survives a `kill -9`; one the process dies before saving
//! was never shown, and the failures that caused it simply count again after the restart.

use std::sync::atomic::Ordering;

use super::{BREAKER_HISTORY, ChainHealth, SlotState, lock};
use crate::breaker::{BreakerState, Clock, Snapshot, Transition};
use crate::telemetry::metrics as m;

/// A breaker to save: its state now, and the transitions that led there since the last save.
#[derive(Debug)]
pub struct Unsaved {
    pub index: usize,
    pub provider: String,
    pub snapshot: Snapshot,
    pub transitions: Vec<Transition>,
}

impl ChainHealth {
    /// Breakers with a transition not yet saved, each once (until [`ChainHealth::saved`] or
    /// [`ChainHealth::not_saved`] answers for it). The transitions stay pending, unshown,
    /// until saved.
    pub fn take_dirty(&self) -> Vec<Unsaved> {
        self.inner
            .slots
            .iter()
            .enumerate()
            .filter(|(_, slot)| slot.dirty.swap(false, Ordering::AcqRel))
            .map(|(index, slot)| {
                let state = lock(slot);
                Unsaved {
                    index,
                    provider: slot.id.clone(),
                    snapshot: state.breaker.snapshot(),
                    transitions: state.pending.clone(),
                }
            })
            .collect()
    }

    /// Waits until a breaker has a transition to save.
    pub async fn dirty(&self) {
        self.inner.persist.notified().await;
    }

    /// `unsaved` is in the database: its transitions are announced (history, log, metrics).
    pub fn saved(&self, unsaved: Unsaved) {
        let Some(slot) = self.inner.slots.get(unsaved.index) else {
            return;
        };
        {
            let mut state = lock(slot);
            state.announced = unsaved.snapshot;
            // Those made while it was being saved stay pending, in order.
            let done = unsaved.transitions.len().min(state.pending.len());
            state.pending.drain(..done);
            for transition in &unsaved.transitions {
                if state.transitions.len() == BREAKER_HISTORY {
                    state.transitions.pop_front();
                }
                state.transitions.push_back(*transition);
            }
        }
        let chain = self.inner.chain.to_string();
        for t in &unsaved.transitions {
            if t.to == BreakerState::Open {
                tracing::warn!(chain = %chain, provider = %slot.id, old_state = %t.from, new_state = %t.to, consecutive_failures = t.consecutive_failures, "breaker transition");
            } else {
                tracing::info!(chain = %chain, provider = %slot.id, old_state = %t.from, new_state = %t.to, consecutive_failures = t.consecutive_failures, "breaker transition");
            }
            metrics::counter!(m::BREAKER_TRANSITIONS, "chain" => chain.clone(), "provider" => slot.id.clone(), "from" => t.from.as_str(), "to" => t.to.as_str())
                .increment(1);
        }
        self.publish_state(unsaved.index);
    }

    /// Saving `unsaved` failed: its transitions stay pending for the next try.
    pub fn not_saved(&self, unsaved: Unsaved) {
        if let Some(slot) = self.inner.slots.get(unsaved.index) {
            slot.dirty.store(true, Ordering::Release);
        }
    }

    /// `index`'s breaker has a transition [`SlotState::keep`] kept: wakes the monitor.
    pub(super) fn to_save(&self, index: usize) {
        let Some(slot) = self.inner.slots.get(index) else {
            return;
        };
        slot.dirty.store(true, Ordering::Release);
        // `notify_one` keeps a permit when nobody waits yet: the monitor cannot miss it.
        self.inner.persist.notify_one();
    }

    /// The breaker state gauge, as announced.
    pub(super) fn publish_state(&self, index: usize) {
        if let Some(slot) = self.inner.slots.get(index) {
            let state = lock(slot).announced.state;
            metrics::gauge!(m::BREAKER_STATE, "chain" => self.inner.chain.to_string(), "provider" => slot.id.clone())
                .set(state.metric_value());
        }
    }
}

impl SlotState {
    /// Keeps `transition`, made under the same lock, until it is saved; whether there was one.
    pub(super) fn keep(&mut self, transition: Option<Transition>) -> bool {
        match transition {
            Some(t) => {
                self.pending.push(t);
                true
            }
            None => false,
        }
    }
}

/// The breaker as shown: live when nothing waits to be saved, the last saved one otherwise.
pub(super) fn shown(state: &SlotState, clock: &dyn Clock) -> (BreakerState, Snapshot) {
    if state.pending.is_empty() {
        (state.breaker.state(clock), state.breaker.snapshot())
    } else {
        (state.announced.state, state.announced)
    }
}
