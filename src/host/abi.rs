//! Host calls made directly, where the SDK would panic on an ordinary answer from Envoy: a
//! header value that is not UTF-8, a header map that can no longer change. Every status is
//! handled here, and nothing panics the VM.

use std::ptr::{null, null_mut};

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType, Status};

use crate::config::{Environment, EnvoyVersion};
use crate::health::{self, SharedStore, StoreError};
use crate::provider::HeaderMap;
use crate::proxy_map::{self, HeaderPairs};

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_pairs(map_type: MapType, return_map_data: *mut *mut u8, return_map_size: *mut usize)
        -> Status;
    fn proxy_get_header_map_value(
        map_type: MapType,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> Status;
    fn proxy_replace_header_map_value(
        map_type: MapType,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> Status;
    fn proxy_remove_header_map_value(map_type: MapType, key_data: *const u8, key_size: usize) -> Status;
    fn proxy_get_property(path_data: *const u8, path_size: usize, return_value_data: *mut *mut u8, return_value_size: *mut usize)
        -> Status;
    fn proxy_set_property(path_data: *const u8, path_size: usize, value_data: *const u8, value_size: usize) -> Status;
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> Status;
}

/// Takes ownership of memory the host filled: it was allocated through the SDK's exported
/// allocator, as a `Vec<u8>` of exactly `size` bytes.
unsafe fn host_bytes(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() {
        Vec::new()
    } else {
        Vec::from_raw_parts(data, size, size)
    }
}

/// A request or response body as buffered so far (empty when the host has none).
pub fn body(kind: BufferType, size: usize) -> Vec<u8> {
    hostcalls::get_buffer(kind, 0, size).ok().flatten().unwrap_or_default()
}

/// Every header of a map in one host call.
pub fn headers(map: MapType) -> HeaderPairs {
    let mut data = null_mut();
    let mut size = 0;
    match unsafe { proxy_get_header_map_pairs(map, &mut data, &mut size) } {
        Status::Ok => HeaderPairs::parse(unsafe { host_bytes(data, size) }),
        _ => HeaderPairs::default(),
    }
}

/// One header's value as bytes.
pub fn header(map: MapType, name: &str) -> Option<Vec<u8>> {
    let mut data = null_mut();
    let mut size = 0;
    match unsafe { proxy_get_header_map_value(map, name.as_ptr(), name.len(), &mut data, &mut size) } {
        Status::Ok => Some(unsafe { host_bytes(data, size) }),
        _ => None,
    }
}

/// One header's value as text; `None` when absent or not UTF-8.
pub fn header_str(map: MapType, name: &str) -> Option<String> {
    header(map, name).and_then(|v| String::from_utf8(v).ok())
}

pub fn set_header(map: MapType, name: &str, value: &str) -> bool {
    let status = unsafe { proxy_replace_header_map_value(map, name.as_ptr(), name.len(), value.as_ptr(), value.len()) };
    matches!(status, Status::Ok)
}

pub fn remove_header(map: MapType, name: &str) {
    unsafe {
        proxy_remove_header_map_value(map, name.as_ptr(), name.len());
    }
}

/// The request headers of the current stream, as the plain-Rust rewrites see them; `present`
/// is the snapshot read at the start, so absent headers cost no host call.
pub struct RequestHeaders<'a> {
    pub present: &'a HeaderPairs,
}

impl HeaderMap for RequestHeaders<'_> {
    fn contains(&self, name: &str) -> bool {
        self.present.contains(name)
    }

    fn set(&mut self, name: &str, value: &str) {
        set_header(MapType::HttpRequestHeaders, name, value);
    }

    fn remove(&mut self, name: &str) {
        remove_header(MapType::HttpRequestHeaders, name);
    }
}

/// Sets a value in the request's filter state (Envoy's key: `wasm.<name>`), which an access
/// log can format. Envoy refuses a second write of the same name: `false` then.
pub fn set_filter_state(name: &str, value: &[u8]) -> bool {
    let status = unsafe { proxy_set_property(name.as_ptr(), name.len(), value.as_ptr(), value.len()) };
    matches!(status, Status::Ok)
}

/// A value of the request's filter state that this filter (or an attempt's) set.
pub fn filter_state(name: &str) -> Option<Vec<u8>> {
    let mut data = null_mut();
    let mut size = 0;
    match unsafe { proxy_get_property(name.as_ptr(), name.len(), &mut data, &mut size) } {
        Status::Ok => Some(unsafe { host_bytes(data, size) }),
        _ => None,
    }
}

/// A local reply; `details` shows in Envoy's access log as %RESPONSE_CODE_DETAILS%.
pub fn send_response(status: u32, details: &str, headers: &[(&str, &str)], body: &[u8]) -> bool {
    let serialized = proxy_map::serialize(headers);
    let result = unsafe {
        proxy_send_local_response(
            status,
            details.as_ptr(),
            details.len(),
            if body.is_empty() { null() } else { body.as_ptr() },
            body.len(),
            serialized.as_ptr(),
            serialized.len(),
            -1,
        )
    };
    matches!(result, Status::Ok)
}

pub struct HostStore;

impl SharedStore for HostStore {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        let (value, version) = hostcalls::get_shared_data(key).ok()?;
        health::stored(value, version)
    }

    fn set(&self, key: &str, value: &[u8], version: Option<u32>) -> Result<(), StoreError> {
        hostcalls::set_shared_data(key, Some(value), version).map_err(|status| match status {
            Status::CasMismatch => StoreError::CasMismatch,
            other => StoreError::Failed(format!("{other:?}")),
        })
    }
}

#[link(wasm_import_module = "wasi_snapshot_preview1")]
extern "C" {
    fn environ_sizes_get(count: *mut usize, buffer_size: *mut usize) -> u16;
    fn environ_get(entries: *mut *mut u8, buffer: *mut u8) -> u16;
}

/// The VM's environment as Envoy's `vm_config.environment_variables` sets it, read through
/// WASI (the `std::env` of wasm32-unknown-unknown has none).
pub struct VmEnvironment;

impl Environment for VmEnvironment {
    fn var(&self, name: &str) -> Option<String> {
        let mut count = 0usize;
        let mut size = 0usize;
        if unsafe { environ_sizes_get(&mut count, &mut size) } != 0 || count == 0 {
            return None;
        }
        let mut entries: Vec<*mut u8> = vec![null_mut(); count];
        let mut buffer = vec![0u8; size];
        if unsafe { environ_get(entries.as_mut_ptr(), buffer.as_mut_ptr()) } != 0 {
            return None;
        }
        buffer
            .split(|&b| b == 0)
            .filter_map(|entry| std::str::from_utf8(entry).ok())
            .find_map(|entry| entry.strip_prefix(name)?.strip_prefix('=').map(str::to_string))
    }
}

/// The Envoy this VM runs in, from the node's build version (`None` if the build does not say).
pub fn envoy_version() -> Option<EnvoyVersion> {
    let number = |part: &str| {
        let bytes = hostcalls::get_property(vec!["xds", "node", "user_agent_build_version", "version", part]).ok().flatten()?;
        Some(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?))
    };
    Some(EnvoyVersion(number("major_number")?, number("minor_number")?))
}
