//! Fuzz target: `hubcast_server::fuzzing::socketio_packet`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hubcast_server::fuzzing::socketio_packet(data));
