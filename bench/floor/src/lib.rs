//! The floor `make bench` measures the filter against: the two wasm filters a design that reads
//! the body before routing cannot do without, doing nothing else. The HCM filter holds the
//! request headers until the whole body is in (as the router role does) and continues; the
//! upstream filter continues at once. Any cost above this is the filter's own.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { pause: false }) });
}}

/// `pause`: the plugin configuration says `hold` (the HCM filter); anything else continues.
struct Root {
    pause: bool,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        self.pause = self.get_plugin_configuration().is_some_and(|c| c == b"hold");
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Filter { pause: self.pause }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Filter {
    pause: bool,
}

impl Context for Filter {}

impl HttpContext for Filter {
    fn on_http_request_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        if self.pause && !end_of_stream {
            Action::Pause
        } else {
            Action::Continue
        }
    }

    fn on_http_request_body(&mut self, _body_size: usize, end_of_stream: bool) -> Action {
        if self.pause && !end_of_stream {
            Action::Pause
        } else {
            Action::Continue
        }
    }
}
