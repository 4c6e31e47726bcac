//! What each caller has already been told of the chain's tags: a later answer at the same tag
//! must not be older (a provider behind is passed over for it).

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::{Mutex, PoisonError};

use lru::LruCache;

use super::blocks::Tag;

/// Who a floor belongs to: an HTTP client by address, a WebSocket connection by its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Caller {
    Address(IpAddr),
    Session(u64),
}

/// Callers remembered at most; the least recent are forgotten first (a forgotten caller starts
/// again from what the providers say).
const CALLERS: usize = 65_536;

pub struct Floors {
    seen: Mutex<LruCache<Caller, [u64; 3]>>,
}

impl Floors {
    pub fn new() -> Floors {
        Floors {
            seen: Mutex::new(LruCache::new(
                NonZeroUsize::new(CALLERS).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }

    /// The heights `caller` has seen, per tag (0: nothing yet).
    pub fn get(&self, caller: Caller) -> [u64; 3] {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.get(&caller).copied().unwrap_or_default()
    }

    /// Records that `caller` was told `height` at `tag`.
    pub fn raise(&self, caller: Caller, tag: Tag, height: u64) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let floors = seen.get_or_insert_mut(caller, <[u64; 3]>::default);
        let slot = &mut floors[tag.slot()];
        *slot = (*slot).max(height);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floors_only_rise_and_are_per_caller() {
        let floors = Floors::new();
        let a = Caller::Session(1);
        floors.raise(a, Tag::Latest, 10);
        floors.raise(a, Tag::Latest, 7);
        floors.raise(a, Tag::Finalized, 3);
        assert_eq!(floors.get(a), [10, 0, 3]);
        assert_eq!(floors.get(Caller::Session(2)), [0, 0, 0]);
    }
}
