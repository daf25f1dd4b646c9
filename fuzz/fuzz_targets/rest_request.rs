//! Fuzz target: `hubcast_server::fuzzing::rest_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hubcast_server::fuzzing::rest_request(data));
