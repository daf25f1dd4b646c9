//! The `hubcast` binary refuses unusable `OTEL_*` settings at start, naming the variable,
//! rather than running without the export the operator asked for.

use std::process::Command;

#[test]
fn unusable_otel_settings_stop_the_server_with_exit_64() {
    for (var, value) in [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_TRACES_SAMPLER", "sometimes"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_hubcast"))
            .args(["--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0"])
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
            .env(var, value)
            .output()
            .expect("the binary runs");
        assert_eq!(output.status.code(), Some(64), "{var}={value}: {output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(var), "{var} named in: {stderr}");
    }
}
