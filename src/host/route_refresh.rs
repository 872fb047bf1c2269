//! Runs after `header_to_metadata` has turned the order header into metadata. That filter
//! resolved the route before writing it, so the route (and its chosen cluster) must be picked
//! again, or the first attempt goes to the default group.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

pub struct RouteRefresh;

impl Context for RouteRefresh {}

impl HttpContext for RouteRefresh {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let _ = hostcalls::call_foreign_function("clear_route_cache", None);
        Action::Continue
    }
}
