//! An operator's pause of a provider: while paused no permit is granted, so nothing (request,
//! connection, probe) reaches it, and it reports unhealthy with the reason `paused`.

use super::{ChainHealth, lock};

impl ChainHealth {
    /// Pauses or resumes `index`.
    pub fn set_paused(&self, index: usize, paused: bool) {
        if let Some(slot) = self.inner.slots.get(index) {
            lock(slot).paused = paused;
        }
    }

    pub fn is_paused(&self, index: usize) -> bool {
        self.inner
            .slots
            .get(index)
            .is_some_and(|slot| lock(slot).paused)
    }
}
