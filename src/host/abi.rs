//! Host calls the SDK would panic on when Envoy answers with an ordinary error (a header map
//! that can no longer change, say): here every status is handled, and nothing panics the VM.

use std::ptr::{null, null_mut};

use proxy_wasm::hostcalls;
use proxy_wasm::types::{MapType, Status};

use crate::config::Environment;
use crate::health::{SharedStore, StoreError};
use crate::provider::HeaderMap;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_replace_header_map_value(
        map_type: MapType,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> Status;
    fn proxy_remove_header_map_value(map_type: MapType, key_data: *const u8, key_size: usize) -> Status;
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

pub fn set_header(map: MapType, name: &str, value: &str) -> bool {
    let status = unsafe { proxy_replace_header_map_value(map, name.as_ptr(), name.len(), value.as_ptr(), value.len()) };
    matches!(status, Status::Ok)
}

pub fn remove_header(map: MapType, name: &str) {
    unsafe {
        proxy_remove_header_map_value(map, name.as_ptr(), name.len());
    }
}

/// The request headers of the current stream, for the plain-Rust rewrites.
pub struct RequestHeaders;

impl HeaderMap for RequestHeaders {
    fn set(&mut self, name: &str, value: &str) {
        set_header(MapType::HttpRequestHeaders, name, value);
    }

    fn remove(&mut self, name: &str) {
        remove_header(MapType::HttpRequestHeaders, name);
    }
}

pub fn header(map: MapType, name: &str) -> Option<String> {
    hostcalls::get_map_value(map, name).ok().flatten()
}

/// A local reply; `details` shows in Envoy's access log as %RESPONSE_CODE_DETAILS%.
pub fn send_response(status: u32, details: &str, headers: &[(&str, &str)], body: &[u8]) -> bool {
    let serialized = serialize_headers(headers);
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

/// Proxy-wasm's map encoding: count, then each key and value size, then the NUL-ended bytes.
fn serialize_headers(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(headers.len() as u32).to_le_bytes());
    for (name, value) in headers {
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    }
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value.as_bytes());
        out.push(0);
    }
    out
}

pub struct HostStore;

impl SharedStore for HostStore {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        match hostcalls::get_shared_data(key) {
            Ok((Some(bytes), version)) => Some((bytes, version.unwrap_or(0))),
            _ => None,
        }
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
