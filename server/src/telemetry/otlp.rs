//! OTLP export, configured by the standard `OTEL_*` environment variables.
//!
//! Off unless an endpoint is configured. Traces go through a batch span processor; metrics
//! are read from the [`Metrics`] registry by observable instruments at each export interval,
//! so recording never touches the SDK. Only the gRPC protocol is built in (tonic is already
//! part of the server); `http/protobuf` and `http/json` are refused with a clear error rather
//! than silently ignored.
//!
//! Variables read (as the OpenTelemetry specification defines them):
//! `OTEL_SDK_DISABLED`, `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
//! `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`, `OTEL_EXPORTER_OTLP_PROTOCOL` (and the per-signal
//! `..._TRACES_PROTOCOL`/`..._METRICS_PROTOCOL`), `OTEL_EXPORTER_OTLP_TIMEOUT` (ms),
//! `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`,
//! `OTEL_TRACES_EXPORTER` / `OTEL_METRICS_EXPORTER` (`otlp` or `none`),
//! `OTEL_METRIC_EXPORT_INTERVAL` (ms). `OTEL_EXPORTER_OTLP_HEADERS` and
//! `OTEL_RESOURCE_ATTRIBUTES` are applied by the OpenTelemetry SDK itself.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{Instrument, PeriodicReader, SdkMeterProvider, Stream};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};

use super::metrics::{Collect, Kind, LATENCY_BUCKETS, Metrics, Value};

/// Default `service.name`.
pub const DEFAULT_SERVICE_NAME: &str = "hubcast";

/// Why the `OTEL_*` configuration cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OtlpError {
    /// A variable has a value we cannot use.
    #[error("{var}={value:?}: {why}")]
    Invalid {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What is wrong, and what would be right.
        why: String,
    },
    /// The exporter could not be built.
    #[error("cannot start the OTLP exporter: {0}")]
    Exporter(String),
}

/// Which traces are recorded (`OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SamplerSetting {
    /// `always_on`.
    AlwaysOn,
    /// `always_off`.
    AlwaysOff,
    /// `traceidratio` with the ratio.
    Ratio(f64),
    /// `parentbased_always_on` (the default): follow the caller's decision, else record.
    ParentBasedAlwaysOn,
    /// `parentbased_always_off`.
    ParentBasedAlwaysOff,
    /// `parentbased_traceidratio` with the ratio.
    ParentBasedRatio(f64),
}

impl SamplerSetting {
    fn sampler(self) -> Sampler {
        match self {
            SamplerSetting::AlwaysOn => Sampler::AlwaysOn,
            SamplerSetting::AlwaysOff => Sampler::AlwaysOff,
            SamplerSetting::Ratio(r) => Sampler::TraceIdRatioBased(r),
            SamplerSetting::ParentBasedAlwaysOn => {
                Sampler::ParentBased(Box::new(Sampler::AlwaysOn))
            }
            SamplerSetting::ParentBasedAlwaysOff => {
                Sampler::ParentBased(Box::new(Sampler::AlwaysOff))
            }
            SamplerSetting::ParentBasedRatio(r) => {
                Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(r)))
            }
        }
    }
}

/// Where and what to export.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpSettings {
    /// gRPC endpoint for traces, `None` when traces are not exported.
    pub traces_endpoint: Option<String>,
    /// gRPC endpoint for metrics, `None` when metrics are not exported.
    pub metrics_endpoint: Option<String>,
    /// `service.name` of the resource.
    pub service_name: String,
    /// The trace sampler.
    pub sampler: SamplerSetting,
    /// How often metrics are exported.
    pub metric_interval: Duration,
    /// Time one export may take.
    pub timeout: Duration,
}

impl OtlpSettings {
    /// Export to `endpoint` (traces and metrics), with the defaults of everything else.
    pub fn new(endpoint: &str) -> Self {
        Self {
            traces_endpoint: Some(endpoint.to_owned()),
            metrics_endpoint: Some(endpoint.to_owned()),
            service_name: DEFAULT_SERVICE_NAME.to_owned(),
            sampler: SamplerSetting::ParentBasedAlwaysOn,
            metric_interval: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
        }
    }

    /// Reads the `OTEL_*` variables through `var` (`|k| std::env::var(k).ok()` in the
    /// binary). `Ok(None)`: export is off (no endpoint, or `OTEL_SDK_DISABLED=true`).
    ///
    /// # Errors
    /// A variable with a value that cannot be used: an unsupported protocol, an endpoint
    /// that is not an `http(s)://` URL, an unknown sampler, a ratio outside 0..=1, a
    /// non-numeric interval or timeout.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, OtlpError> {
        let get = |name: &str| {
            var(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        if let Some(v) = get("OTEL_SDK_DISABLED") {
            match v.to_ascii_lowercase().as_str() {
                "true" => return Ok(None),
                "false" => {}
                _ => return Err(invalid("OTEL_SDK_DISABLED", &v, "use true or false")),
            }
        }
        let general = get("OTEL_EXPORTER_OTLP_ENDPOINT");
        let signal = |exporter_var: &'static str,
                      endpoint_var: &'static str,
                      protocol_var: &'static str|
         -> Result<Option<String>, OtlpError> {
            if let Some(e) = get(exporter_var) {
                match e.as_str() {
                    "none" => return Ok(None),
                    "otlp" => {}
                    _ => return Err(invalid(exporter_var, &e, "use otlp or none")),
                }
            }
            let Some(endpoint) = get(endpoint_var).or_else(|| general.clone()) else {
                return Ok(None);
            };
            let protocol_source = if get(protocol_var).is_some() {
                protocol_var
            } else {
                "OTEL_EXPORTER_OTLP_PROTOCOL"
            };
            if let Some(p) = get(protocol_source)
                && p != "grpc"
            {
                return Err(invalid(
                    protocol_source,
                    &p,
                    "only grpc is supported by this build (send to a collector's OTLP gRPC \
                     port, 4317 by default)",
                ));
            }
            let rest = endpoint
                .strip_prefix("http://")
                .or_else(|| endpoint.strip_prefix("https://"));
            if rest.is_none_or(|r| r.is_empty()) {
                let var = if get(endpoint_var).is_some() {
                    endpoint_var
                } else {
                    "OTEL_EXPORTER_OTLP_ENDPOINT"
                };
                return Err(invalid(
                    var,
                    &endpoint,
                    "expected an http:// or https:// URL, e.g. http://127.0.0.1:4317",
                ));
            }
            Ok(Some(endpoint))
        };
        let traces_endpoint = signal(
            "OTEL_TRACES_EXPORTER",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        )?;
        let metrics_endpoint = signal(
            "OTEL_METRICS_EXPORTER",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
        )?;
        if traces_endpoint.is_none() && metrics_endpoint.is_none() {
            return Ok(None);
        }
        let ratio = || -> Result<f64, OtlpError> {
            match get("OTEL_TRACES_SAMPLER_ARG") {
                None => Ok(1.0),
                Some(v) => match v.parse::<f64>() {
                    Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
                    _ => Err(invalid(
                        "OTEL_TRACES_SAMPLER_ARG",
                        &v,
                        "expected a ratio between 0 and 1",
                    )),
                },
            }
        };
        let sampler = match get("OTEL_TRACES_SAMPLER").as_deref() {
            None | Some("parentbased_always_on") => SamplerSetting::ParentBasedAlwaysOn,
            Some("always_on") => SamplerSetting::AlwaysOn,
            Some("always_off") => SamplerSetting::AlwaysOff,
            Some("traceidratio") => SamplerSetting::Ratio(ratio()?),
            Some("parentbased_always_off") => SamplerSetting::ParentBasedAlwaysOff,
            Some("parentbased_traceidratio") => SamplerSetting::ParentBasedRatio(ratio()?),
            Some(other) => {
                return Err(invalid(
                    "OTEL_TRACES_SAMPLER",
                    other,
                    "use always_on, always_off, traceidratio, parentbased_always_on, \
                     parentbased_always_off or parentbased_traceidratio",
                ));
            }
        };
        let millis = |name: &'static str, default: u64| -> Result<Duration, OtlpError> {
            match get(name) {
                None => Ok(Duration::from_millis(default)),
                Some(v) => match v.parse::<u64>() {
                    Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
                    _ => Err(invalid(
                        name,
                        &v,
                        "expected a positive number of milliseconds",
                    )),
                },
            }
        };
        Ok(Some(Self {
            traces_endpoint,
            metrics_endpoint,
            service_name: get("OTEL_SERVICE_NAME").unwrap_or_else(|| DEFAULT_SERVICE_NAME.into()),
            sampler,
            metric_interval: millis("OTEL_METRIC_EXPORT_INTERVAL", 60_000)?,
            timeout: millis("OTEL_EXPORTER_OTLP_TIMEOUT", 10_000)?,
        }))
    }

    fn resource(&self) -> Resource {
        Resource::builder()
            .with_service_name(self.service_name.clone())
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build()
    }
}

fn invalid(var: &'static str, value: &str, why: &str) -> OtlpError {
    OtlpError::Invalid {
        var,
        value: value.to_owned(),
        why: why.to_owned(),
    }
}

/// The trace pipeline: a tracer provider exporting over OTLP/gRPC. Process-wide in effect,
/// because `tracing`'s subscriber is: the binary installs [`TraceExport::layer`] once.
#[derive(Debug)]
pub struct TraceExport {
    provider: SdkTracerProvider,
}

impl TraceExport {
    /// Builds the exporter and provider. Must run inside a Tokio runtime (tonic's channel
    /// lives there). `Ok(None)` when `settings` exports no traces.
    ///
    /// # Errors
    /// [`OtlpError::Exporter`] when the exporter cannot be built (a malformed endpoint URI).
    pub fn start(settings: &OtlpSettings) -> Result<Option<Self>, OtlpError> {
        let Some(endpoint) = &settings.traces_endpoint else {
            return Ok(None);
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .with_timeout(settings.timeout)
            .build()
            .map_err(|e| OtlpError::Exporter(e.to_string()))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(settings.sampler.sampler())
            .with_resource(settings.resource())
            .build();
        Ok(Some(Self { provider }))
    }

    /// The `tracing` layer that turns spans into OTLP spans. Installing it is the caller's
    /// business (a library does not install global subscribers); doing so should go with
    /// [`super::trace::set_enabled`]`(true)`, which [`TraceExport::layer`] does.
    pub fn layer<S>(
        &self,
    ) -> tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        super::trace::set_enabled(true);
        tracing_opentelemetry::layer().with_tracer(self.provider.tracer("hubcast"))
    }

    /// Exports the spans the batch processor holds now (blocks until done).
    pub fn flush(&self) {
        if let Err(e) = self.provider.force_flush() {
            tracing::warn!(error = %e, "trace export flush failed");
        }
    }

    /// Exports what is buffered and stops.
    pub fn shutdown(self) {
        super::trace::set_enabled(false);
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "trace export did not shut down cleanly");
        }
    }
}

/// Metric export: a meter provider whose observable instruments read a [`Metrics`]
/// registry at each export. Each server owns its own (nothing global), so several servers
/// in one process export their own numbers.
#[derive(Debug)]
pub struct MetricExport {
    provider: SdkMeterProvider,
}

impl MetricExport {
    /// Starts periodic export of `metrics`. Must run inside a Tokio runtime. `Ok(None)` when
    /// `settings` exports no metrics.
    ///
    /// # Errors
    /// [`OtlpError::Exporter`] when the exporter cannot be built.
    pub fn start(settings: &OtlpSettings, metrics: &Metrics) -> Result<Option<Self>, OtlpError> {
        let Some(endpoint) = &settings.metrics_endpoint else {
            return Ok(None);
        };
        let exporter = opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .with_timeout(settings.timeout)
            .build()
            .map_err(|e| OtlpError::Exporter(e.to_string()))?;
        let reader = PeriodicReader::builder(exporter)
            .with_interval(settings.metric_interval)
            .build();
        // The SDK folds attribute sets beyond its own limit (2,000 per instrument by default)
        // into an `otel.metric.overflow` point. The registry already bounds its series (the
        // cap, then `_overflow`), so the SDK's limit is set to hold every series the registry
        // can have: OTLP then shows the very series `/metrics` shows.
        let families = metrics.registry().families().len();
        let series = metrics
            .max_series_per_metric()
            .max(families)
            .saturating_add(1);
        let provider = SdkMeterProvider::builder()
            .with_reader(reader)
            .with_view(move |instrument: &Instrument| {
                // A histogram's `_bucket` instrument has one point per bucket of a series.
                let points = if instrument.name().ends_with("_bucket") {
                    LATENCY_BUCKETS.len() + 1
                } else {
                    1
                };
                Stream::builder()
                    .with_cardinality_limit(series.saturating_mul(points).saturating_add(1))
                    .build()
                    .ok()
            })
            .with_resource(settings.resource())
            .build();
        let meter = provider.meter("hubcast");
        for index in 0..families {
            register(&meter, metrics, index);
        }
        Ok(Some(Self { provider }))
    }

    /// Exports once more and stops.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "metric export did not shut down cleanly");
        }
    }
}

/// Attributes of one series.
fn attributes(names: &[&'static str], values: &[Box<str>], le: Option<String>) -> Vec<KeyValue> {
    let mut attrs: Vec<KeyValue> = names
        .iter()
        .zip(values)
        .map(|(n, v)| KeyValue::new(*n, v.to_string()))
        .collect();
    if let Some(le) = le {
        attrs.push(KeyValue::new("le", le));
    }
    attrs
}

/// Registers the observable instruments of family number `index` of the registry.
///
/// OpenTelemetry has no asynchronous histogram, so a histogram family is exported the way
/// Prometheus exposes it: cumulative `<name>_bucket` (with `le`), `<name>_sum` and
/// `<name>_count` counters. Recording stays a few atomic adds.
fn register(meter: &opentelemetry::metrics::Meter, metrics: &Metrics, index: usize) {
    let family = |m: &Metrics| -> Option<(&'static str, Kind)> {
        m.registry()
            .families()
            .get(index)
            .map(|f| (f.name(), f.kind()))
    };
    let Some((name, kind)) = family(metrics) else {
        return;
    };
    let help = metrics.registry().families()[index].help();
    // Each callback reads the registry through its own handle (a cheap clone). Only gauges
    // can be set by collect hooks (which walk every connection); every family first gets
    // the series bounds applied (expired hubs out, returning hubs back, overflow counts),
    // so an export shows the series `/metrics` shows.
    let read = {
        let metrics = metrics.clone();
        Arc::new(move |f: &mut dyn FnMut(&dyn Collect)| {
            if kind == Kind::Gauge {
                metrics.refresh();
            } else {
                metrics.maintain();
            }
            f(metrics.registry().families()[index]);
        })
    };
    match kind {
        Kind::Counter => {
            let read = read.clone();
            meter
                .u64_observable_counter(name)
                .with_description(help)
                .with_callback(move |obs| {
                    read(&mut |family| {
                        let names = family.label_names();
                        family.collect(&mut |values, value| {
                            if let Value::Counter(n) = value {
                                obs.observe(n, &attributes(names, values, None));
                            }
                        });
                    });
                })
                .build();
        }
        Kind::Gauge => {
            let read = read.clone();
            meter
                .i64_observable_gauge(name)
                .with_description(help)
                .with_callback(move |obs| {
                    read(&mut |family| {
                        let names = family.label_names();
                        family.collect(&mut |values, value| {
                            if let Value::Gauge(n) = value {
                                obs.observe(n, &attributes(names, values, None));
                            }
                        });
                    });
                })
                .build();
        }
        Kind::Histogram => {
            let buckets = read.clone();
            meter
                .u64_observable_counter(format!("{name}_bucket"))
                .with_description(help)
                .with_callback(move |obs| {
                    buckets(&mut |family| {
                        let names = family.label_names();
                        family.collect(&mut |values, value| {
                            if let Value::Histogram(h) = value {
                                let mut cumulative = 0;
                                for (i, count) in h.buckets.iter().enumerate() {
                                    cumulative += count;
                                    let le = LATENCY_BUCKETS
                                        .get(i)
                                        .map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
                                    obs.observe(cumulative, &attributes(names, values, Some(le)));
                                }
                            }
                        });
                    });
                })
                .build();
            let sums = read.clone();
            meter
                .f64_observable_counter(format!("{name}_sum"))
                .with_description(help)
                .with_callback(move |obs| {
                    sums(&mut |family| {
                        let names = family.label_names();
                        family.collect(&mut |values, value| {
                            if let Value::Histogram(h) = value {
                                obs.observe(h.sum, &attributes(names, values, None));
                            }
                        });
                    });
                })
                .build();
            let counts = read;
            meter
                .u64_observable_counter(format!("{name}_count"))
                .with_description(help)
                .with_callback(move |obs| {
                    counts(&mut |family| {
                        let names = family.label_names();
                        family.collect(&mut |values, value| {
                            if let Value::Histogram(h) = value {
                                obs.observe(h.count, &attributes(names, values, None));
                            }
                        });
                    });
                })
                .build();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn off_unless_an_endpoint_is_set() {
        assert_eq!(OtlpSettings::from_env(env(&[])), Ok(None));
        assert_eq!(
            OtlpSettings::from_env(env(&[("OTEL_SERVICE_NAME", "x")])),
            Ok(None)
        );
        assert_eq!(
            OtlpSettings::from_env(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
                ("OTEL_SDK_DISABLED", "true"),
            ])),
            Ok(None)
        );
    }

    #[test]
    fn reads_the_standard_variables() {
        let s = OtlpSettings::from_env(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_SERVICE_NAME", "edge-1"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ("OTEL_METRICS_EXPORTER", "none"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "5000"),
        ]))
        .expect("valid")
        .expect("on");
        assert_eq!(s.traces_endpoint.as_deref(), Some("http://127.0.0.1:4317"));
        assert_eq!(s.metrics_endpoint, None);
        assert_eq!(s.service_name, "edge-1");
        assert_eq!(s.sampler, SamplerSetting::ParentBasedRatio(0.25));
        assert_eq!(s.metric_interval, Duration::from_secs(5));
    }

    #[test]
    fn bad_values_are_refused_with_the_variable_named() {
        let base = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317");
        for (pairs, var) in [
            (
                vec![base, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")],
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "127.0.0.1:4317")],
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ),
            (
                vec![base, ("OTEL_TRACES_SAMPLER", "sometimes")],
                "OTEL_TRACES_SAMPLER",
            ),
            (
                vec![
                    base,
                    ("OTEL_TRACES_SAMPLER", "traceidratio"),
                    ("OTEL_TRACES_SAMPLER_ARG", "2"),
                ],
                "OTEL_TRACES_SAMPLER_ARG",
            ),
            (
                vec![base, ("OTEL_METRIC_EXPORT_INTERVAL", "soon")],
                "OTEL_METRIC_EXPORT_INTERVAL",
            ),
            (
                vec![base, ("OTEL_SDK_DISABLED", "maybe")],
                "OTEL_SDK_DISABLED",
            ),
            (
                vec![base, ("OTEL_TRACES_EXPORTER", "jaeger")],
                "OTEL_TRACES_EXPORTER",
            ),
        ] {
            let err = OtlpSettings::from_env(env(&pairs)).expect_err("must be refused");
            assert!(err.to_string().starts_with(var), "{err}");
        }
    }
}
