//! Fuzz target: `hubcast_server::fuzzing::tunnel_frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hubcast_server::fuzzing::tunnel_frame(data));
