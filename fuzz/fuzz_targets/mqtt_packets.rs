//! Fuzz target: `hubcast_server::fuzzing::mqtt_packets`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hubcast_server::fuzzing::mqtt_packets(data));
