//! Fuzz target: `hubcast_server::fuzzing::protobuf_protocol`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hubcast_server::fuzzing::protobuf_protocol(data));
