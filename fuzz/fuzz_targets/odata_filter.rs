//! Fuzz target: `hubcast_server::fuzzing::odata_filter`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hubcast_server::fuzzing::odata_filter(data));
