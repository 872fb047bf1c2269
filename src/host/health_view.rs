//! This worker's view of the shared health table: one shared-data read per request, decoded
//! only when another write changed it. Roles in the same VM share it.

use std::cell::RefCell;
use std::rc::Rc;

use super::abi::HostStore;
use crate::health::{self, HealthTable};

struct Seen {
    version: u32,
    table: Rc<HealthTable>,
    read_at_ms: u64,
}

thread_local! {
    static SEEN: RefCell<Seen> = RefCell::new(Seen { version: 0, table: Rc::new(HealthTable::default()), read_at_ms: 0 });
}

/// The table as it is now.
pub fn current(now_ms: u64) -> Rc<HealthTable> {
    let Some((bytes, version)) = health::SharedStore::get(&HostStore, health::TABLE_KEY) else {
        return SEEN.with(|seen| seen.borrow().table.clone());
    };
    SEEN.with(|seen| {
        let mut seen = seen.borrow_mut();
        if seen.version != version || version == 0 {
            seen.version = version;
            seen.table = Rc::new(HealthTable::decode(&bytes));
        }
        seen.read_at_ms = now_ms;
        seen.table.clone()
    })
}

/// The table as this worker read it at most `max_age_ms` ago: no host call while the router
/// role (which reads it for every request) keeps it fresh, one when nothing did.
pub fn recent(now_ms: u64, max_age_ms: u64) -> Rc<HealthTable> {
    let fresh = SEEN.with(|seen| {
        let seen = seen.borrow();
        (now_ms.saturating_sub(seen.read_at_ms) <= max_age_ms).then(|| seen.table.clone())
    });
    fresh.unwrap_or_else(|| current(now_ms))
}
