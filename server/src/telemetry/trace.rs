//! Traces: W3C trace context in and out, and the switch that keeps span creation off the hot
//! path unless traces are exported.
//!
//! Spans are `tracing` spans; the OpenTelemetry layer (installed by the binary, see
//! [`super::otlp`]) turns them into OTLP spans. Hot-path spans (each client message, each
//! fan-out, each delivery) are only created when [`enabled`] says a trace exporter is
//! installed: otherwise the `info` log level would make `tracing` build every one of them
//! for nothing. Per-connection and per-call spans that logs use anyway are always created.
//!
//! Context crosses process boundaries as W3C `traceparent`/`tracestate`: extracted from
//! gRPC metadata and HTTP request headers ([`extract_http`], [`extract_grpc`]), injected into
//! webhook requests ([`inject_http`]). Inside the server a data message carries its fan-out
//! span's context ([`TraceParent`]) beside each recipient's copy, so the socket writer's
//! delivery span joins the trace of the call that sent it.
//!
//! Adding a span for a new component (the cluster backplane, say): create it with
//! `tracing::info_span!` under `if trace::enabled()` (or unconditionally if it is not per
//! message), and to continue a trace that arrives from elsewhere call [`set_parent`] with the
//! extracted context; to hand the trace on, [`inject_http`] or [`current_parent`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::{SpanContext, TraceContextExt as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The span context a data message carries to the socket writer.
pub type TraceParent = Arc<SpanContext>;

/// Whether a trace exporter is installed (process-wide, like `tracing`'s subscriber).
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether per-message spans should be created. One relaxed load.
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Turns per-message spans on or off; [`super::otlp::TraceExport::layer`] turns them on.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// The trace id of `span`, when traces are on and it has a valid one; else empty.
pub fn trace_id_of(span: &tracing::Span) -> String {
    if !enabled() {
        return String::new();
    }
    let cx = span.context();
    let span = cx.span();
    let sc = span.span_context();
    if sc.is_valid() {
        sc.trace_id().to_string()
    } else {
        String::new()
    }
}

/// The current span's context, to carry with a message, when traces are on and the span is
/// sampled.
pub fn current_parent() -> Option<TraceParent> {
    if !enabled() {
        return None;
    }
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    (sc.is_valid() && sc.is_sampled()).then(|| Arc::new(sc.clone()))
}

/// Makes `parent` (a remote or carried span context) the parent of `span`. Does nothing when
/// traces are off or `parent` carries no valid span.
pub fn set_parent(span: &tracing::Span, parent: Context) {
    if enabled() && parent.span().span_context().is_valid() {
        // Fails only for a span that has already been entered; ours never have been.
        let _ = span.set_parent(parent);
    }
}

/// A context whose (remote) parent is `parent`.
pub fn context_of(parent: &SpanContext) -> Context {
    Context::new().with_remote_span_context(parent.clone())
}

/// The trace context of HTTP request headers (`traceparent`, `tracestate`).
pub fn extract_http(headers: &http::HeaderMap) -> Context {
    if !enabled() {
        return Context::new();
    }
    TraceContextPropagator::new().extract(&HeaderCarrier(headers))
}

/// The trace context of gRPC request metadata.
pub fn extract_grpc(metadata: &tonic::metadata::MetadataMap) -> Context {
    if !enabled() {
        return Context::new();
    }
    extract_http(&metadata.clone().into_headers())
}

/// Adds `traceparent` (and `tracestate`) naming the current span to outgoing headers.
pub fn inject_http(headers: &mut http::HeaderMap) {
    if !enabled() {
        return;
    }
    let cx = tracing::Span::current().context();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(headers));
    }
}

/// The current span's `traceparent` value, to carry inside a message that has no headers
/// (the cluster backplane's envelopes); empty when traces are off or nothing is sampled.
pub fn current_traceparent() -> String {
    if !enabled() {
        return String::new();
    }
    let cx = tracing::Span::current().context();
    if !cx.span().span_context().is_valid() {
        return String::new();
    }
    let mut headers = http::HeaderMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(&mut headers));
    headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// The trace context named by a `traceparent` value carried in a message (see
/// [`current_traceparent`]); an empty context for an empty or malformed value.
pub fn extract_traceparent(traceparent: &str) -> Context {
    if !enabled() || traceparent.is_empty() {
        return Context::new();
    }
    let mut headers = http::HeaderMap::new();
    if let Ok(value) = http::HeaderValue::from_str(traceparent) {
        headers.insert("traceparent", value);
    }
    extract_http(&headers)
}

struct HeaderCarrier<'a>(&'a http::HeaderMap);

impl Extractor for HeaderCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// Enters a `fanout` span for one send when traces are on (nothing otherwise). Its context
/// travels with every recipient's copy, so each delivery span is its child.
pub fn fanout_span(hub: &str, kind: super::SendKind) -> Option<tracing::span::EnteredSpan> {
    enabled().then(|| {
        tracing::info_span!(
            "fanout",
            hub,
            kind = kind.label(),
            recipients = tracing::field::Empty,
        )
        .entered()
    })
}

/// Records `value` as `field` of the current span, when traces are on.
pub fn record(field: &'static str, value: impl tracing::Value) {
    if enabled() {
        tracing::Span::current().record(field, value);
    }
}
