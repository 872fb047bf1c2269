//! This worker's view of the shared health table: one shared-data read per request, decoded
//! only when another write changed it. Roles share it because they share the VM.

use std::cell::RefCell;
use std::rc::Rc;

use super::abi::HostStore;
use crate::health::{self, HealthTable};

thread_local! {
    static SEEN: RefCell<(u32, Rc<HealthTable>)> = RefCell::new((0, Rc::new(HealthTable::default())));
}

/// The table as it is now.
pub fn current() -> Rc<HealthTable> {
    let Some((bytes, version)) = health::SharedStore::get(&HostStore, health::TABLE_KEY) else {
        return last_seen();
    };
    SEEN.with(|seen| {
        let mut seen = seen.borrow_mut();
        if seen.0 != version || version == 0 {
            *seen = (version, Rc::new(HealthTable::decode(&bytes)));
        }
        seen.1.clone()
    })
}

/// The table as this worker last read it, without a host call.
pub fn last_seen() -> Rc<HealthTable> {
    SEEN.with(|seen| seen.borrow().1.clone())
}
