//! Fuzz target: `hubcast_server::fuzzing::json_protocol`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hubcast_server::fuzzing::json_protocol(data));
