//! Observability: metrics ([`metrics`]: Hubcast's own atomics, served as Prometheus text at
//! `GET /metrics` and exported over OTLP when configured) and traces ([`trace`]: `tracing`
//! spans, W3C trace context in and out, exported over OTLP by [`otlp`]).
//!
//! Export is off unless the standard `OTEL_*` environment variables configure it
//! ([`otlp::OtlpSettings::from_env`]); `/metrics` is on unless `metrics.enabled = false`.

pub mod live_trace;
pub mod metrics;
pub mod otlp;
pub mod trace;

pub use metrics::{HubMetrics, Metrics, Protocol, SendKind};

use std::time::{Duration, Instant};

/// One control-plane call (gRPC or REST): its span, continued from the caller's trace
/// context, and its entry in `hubcast_control_call_duration_seconds`. Both edges use it, so
/// the two transports are observed alike.
#[derive(Debug)]
pub(crate) struct ControlCall {
    /// The call's span; run the call in it.
    pub(crate) span: tracing::Span,
    transport: &'static str,
    started: Instant,
}

impl ControlCall {
    /// Starts a call of `transport` (`grpc`, `rest`) whose caller's context is `parent`.
    pub(crate) fn start(transport: &'static str, parent: opentelemetry::Context) -> Self {
        let span = tracing::info_span!(
            "control",
            otel.kind = "server",
            transport,
            operation = tracing::field::Empty,
            status = tracing::field::Empty,
        );
        trace::set_parent(&span, parent);
        Self {
            span,
            transport,
            started: Instant::now(),
        }
    }

    /// Ends the call: records its operation (`sendToGroup`, ...) and status (a gRPC code
    /// name or an HTTP status) on the span and in the histogram.
    /// Returns how long the call took.
    pub(crate) fn finish(self, metrics: &Metrics, operation: &str, status: &str) -> Duration {
        self.span.record("operation", operation);
        self.span.record("status", status);
        let elapsed = self.started.elapsed();
        metrics
            .registry()
            .control_latency
            .with(&[self.transport, operation, status])
            .observe(elapsed);
        elapsed
    }

    /// The W3C trace id of the call, when traces are exported (else empty).
    pub(crate) fn trace_id(&self) -> String {
        trace::trace_id_of(&self.span)
    }
}
