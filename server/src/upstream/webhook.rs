//! Webhooks: events as CloudEvents HTTP requests to the configured event handlers
//! (spec §6), each handler an [`EventSink`].

pub(crate) mod client;
pub(crate) mod cloudevents;
pub(crate) mod validation;

use crate::telemetry::{Metrics, trace};
use std::sync::Arc;
use tracing::Instrument as _;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::event::{
    ConnectResponse, DeliveryError, Event, EventKind, EventName, MqttRefusal, MqttUserProperty,
    Reply, ReplyBody,
};
use super::handler::Selection;
use super::tunnel::Tunnels;
use super::{BoxFuture, EventSink};
use crate::config::{EventHandlerConfig, UpstreamConfig};
use crate::message::{Data, Utf8Bytes};
use client::{HttpClient, InboundResponse, OutboundRequest, SendError};
use hubcast_auth::KeyRing;
use validation::Validator;

/// Characters kept as they are when a value replaces `{hub}` or `{event}` in a URL path
/// (RFC 3986 unreserved).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// What every handler shares: the HTTP client, the validation cache, the keys that sign.
#[derive(Debug)]
pub(crate) struct WebhookShared {
    client: HttpClient,
    validator: Validator,
    keys: KeyRing,
    origin: HeaderValue,
    metrics: Metrics,
    /// Where `tunnel:///` handlers send their requests.
    tunnels: Arc<Tunnels>,
    /// The upstream timeout (per attempt), for requests over a tunnel.
    timeout: std::time::Duration,
}

impl WebhookShared {
    pub(crate) fn new(
        settings: &UpstreamConfig,
        keys: KeyRing,
        origin: String,
        metrics: Metrics,
        tunnels: Arc<Tunnels>,
    ) -> Self {
        let client = HttpClient::new(settings);
        let origin = HeaderValue::from_str(&origin).unwrap_or_else(|_| {
            tracing::warn!(origin = %origin, "request origin is not a valid header value; using localhost");
            HeaderValue::from_static("localhost")
        });
        Self {
            validator: Validator::new(client.clone(), origin.clone(), settings.validation_ttl),
            client,
            keys,
            origin,
            metrics,
            tunnels,
            timeout: settings.timeout,
        }
    }
}

/// One configured event handler.
#[derive(Debug)]
pub(crate) struct WebhookHandler {
    url_template: String,
    selection: Selection,
    /// The `auth` header, if any.
    auth_header: Option<(HeaderName, HeaderValue)>,
    /// The `?code=` value, percent-encoded.
    code: Option<String>,
    http2: bool,
    /// A `tunnel:///<path>` handler: requests go through a tunnel of the event's hub.
    tunnel: bool,
    shared: Arc<WebhookShared>,
}

impl WebhookHandler {
    /// Checks and builds a handler from its settings.
    ///
    /// # Errors
    /// A readable description of what is wrong with the settings.
    pub(crate) fn new(
        config: &EventHandlerConfig,
        shared: Arc<WebhookShared>,
    ) -> Result<Self, String> {
        let template = config.url_template.trim();
        // `tunnel:///<path>`: the request goes through a tunnel, with an absolute URL on
        // this service's host (the backend reads only its path).
        let tunnel_path = template.strip_prefix("tunnel:///");
        let rewritten;
        let template = match tunnel_path {
            Some(path) => {
                let host = shared.origin.to_str().unwrap_or("localhost");
                rewritten = format!("https://{host}/{path}");
                rewritten.as_str()
            }
            None => template,
        };
        let rest = template
            .strip_prefix("http://")
            .or_else(|| template.strip_prefix("https://"))
            .ok_or_else(|| {
                format!("url_template '{template}' must start with http://, https:// or tunnel:///")
            })?;
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        if authority.is_empty() || authority.contains('{') {
            return Err(format!(
                "url_template '{template}' needs a host, without {{hub}} or {{event}} in it"
            ));
        }
        let selection = Selection::new(
            config.user_event_pattern.as_deref(),
            config.system_events.iter().map(String::as_str),
        )?;
        let (auth_header, code) = match &config.auth {
            None => (None, None),
            Some(auth) => match (&auth.header, &auth.value, &auth.code) {
                (Some(name), Some(value), None) => {
                    let name = HeaderName::from_bytes(name.as_bytes())
                        .map_err(|_| format!("auth.header '{name}' is not a header name"))?;
                    let value = HeaderValue::from_str(value)
                        .map_err(|_| "auth.value is not a valid header value".to_owned())?;
                    (Some((name, value)), None)
                }
                (None, None, Some(code)) => {
                    (None, Some(utf8_percent_encode(code, SEGMENT).to_string()))
                }
                _ => {
                    return Err(
                        "auth must be either { header = \"..\", value = \"..\" } or { code = \"..\" }"
                            .into(),
                    );
                }
            },
        };
        let handler = Self {
            url_template: template.to_owned(),
            selection,
            auth_header,
            code,
            http2: config.http2,
            tunnel: tunnel_path.is_some(),
            shared,
        };
        handler
            .url("hub", "event")
            .map_err(|e| format!("url_template '{template}' does not make a valid URL: {e}"))?;
        Ok(handler)
    }

    /// Whether this handler takes the event.
    pub(crate) fn selects(&self, event: &EventName<'_>) -> bool {
        self.selection.selects(event)
    }

    /// The URL for `hub` and `event` (both percent-encoded into the template), with `code`.
    ///
    /// A value is one path segment: `/` is encoded, and so are the dots of a value that is
    /// only `.` or `..`, which would otherwise be a dot-segment. Events with those names are
    /// refused before they get here ([`super::session::on_json_event`]) and hub names start
    /// with a letter; this keeps the URL one segment longer than the template whatever
    /// changes around it.
    fn url(&self, hub: &str, event: &str) -> Result<Uri, http::uri::InvalidUri> {
        let mut url = self
            .url_template
            .replace("{hub}", &segment(hub))
            .replace("{event}", &segment(event));
        if let Some(code) = &self.code {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str("code=");
            url.push_str(code);
        }
        url.parse()
    }

    fn auth_headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some((name, value)) = &self.auth_header {
            headers.insert(name.clone(), value.clone());
        }
        headers
    }

    /// One webhook call, in a `webhook` span (child of whatever raised the event), timed and
    /// counted by event and outcome; the handler gets the span as its `traceparent`.
    async fn send(&self, event: &Event) -> Result<Reply, DeliveryError> {
        let name = event.kind.name();
        let label = name.metric_label();
        let span = tracing::info_span!(
            "webhook",
            otel.kind = "client",
            hub = %event.hub,
            event = %name,
            http.response.status_code = tracing::field::Empty,
            error = tracing::field::Empty,
        );
        let started = std::time::Instant::now();
        let result = self.call(event).instrument(span.clone()).await;
        let metrics = self.shared.metrics.registry();
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => {
                let error = delivery_error_label(e);
                span.record("error", error);
                metrics.webhook_errors.with(&[label, error]).inc();
                "error"
            }
        };
        metrics
            .webhook_latency
            .with(&[label, outcome])
            .observe(started.elapsed());
        result
    }

    async fn call(&self, event: &Event) -> Result<Reply, DeliveryError> {
        let name = event.kind.name();
        let shared = &self.shared;
        let invalid = |e: http::uri::InvalidUri| DeliveryError::InvalidResponse(e.to_string());
        let auth = self.auth_headers();
        // A tunnel is authenticated by the backend's own token: no abuse-protection check.
        if !self.tunnel {
            let validate_url = self.url(&event.hub, "validate").map_err(invalid)?;
            shared
                .validator
                .ensure(&validate_url, &auth, self.http2)
                .await
                .map_err(DeliveryError::NotValidated)?;
        }
        let mut headers = cloudevents::headers(event, &shared.origin, &shared.keys);
        headers.extend(auth);
        trace::inject_http(&mut headers);
        let request = OutboundRequest {
            method: Method::POST,
            uri: self.url(&event.hub, &name.to_string()).map_err(invalid)?,
            headers,
            body: cloudevents::body(&event.kind),
            http2: self.http2,
        };
        let sent = if self.tunnel {
            shared
                .tunnels
                .request(&event.hub, &request, shared.timeout)
                .await
        } else {
            shared.client.send(request, !name.is_blocking()).await
        };
        let response = sent.map_err(|e| match e {
            SendError::Timeout => DeliveryError::Timeout,
            SendError::Network(e) => DeliveryError::Unreachable(e),
            SendError::TooLarge => {
                DeliveryError::InvalidResponse("the response body is too large".into())
            }
        })?;
        tracing::Span::current().record("http.response.status_code", response.status.as_u16());
        parse_response(&event.kind, response)
    }
}

/// `value` percent-encoded as one URL path segment (never a dot-segment).
fn segment(value: &str) -> String {
    match value {
        "." => "%2E".to_owned(),
        ".." => "%2E%2E".to_owned(),
        _ => utf8_percent_encode(value, SEGMENT).to_string(),
    }
}

/// The `error` label of `hubcast_webhook_errors_total`.
fn delivery_error_label(error: &DeliveryError) -> &'static str {
    match error {
        DeliveryError::Rejected(..) | DeliveryError::RejectedMqtt(..) => "rejected",
        DeliveryError::Timeout => "timeout",
        DeliveryError::Unreachable(_) => "unreachable",
        DeliveryError::InvalidResponse(_) => "invalid_response",
        DeliveryError::NotValidated(_) => "not_validated",
        DeliveryError::NoListener => "no_listener",
    }
}

impl EventSink for WebhookHandler {
    fn deliver<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<Reply, DeliveryError>> {
        Box::pin(self.send(event))
    }
}

/// Entry points for the parser fuzz targets and property tests (`crate::fuzzing`).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod fuzz {
    use bytes::Bytes;
    use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

    use super::client::InboundResponse;
    use crate::upstream::event::{ConnectBody, EventKind, MqttConnectBody};

    /// Reads `body` with the given headers as the answer to a `connect` and to a user event.
    pub(crate) fn response(status: u16, headers: &[(&[u8], &[u8])], body: &[u8]) {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
                map.append(n, v);
            }
        }
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
        let kinds = [
            EventKind::Connect(ConnectBody::default()),
            EventKind::Connect(ConnectBody {
                mqtt: Some(MqttConnectBody::default()),
                ..ConnectBody::default()
            }),
            EventKind::User {
                name: "message".into(),
                data: None,
                metadata: None,
            },
        ];
        for kind in &kinds {
            let answer = InboundResponse {
                status,
                headers: map.clone(),
                body: Bytes::copy_from_slice(body),
            };
            let _ = super::parse_response(kind, answer);
        }
    }
}

/// Reads a handler's answer (spec §6.4–6.6).
fn parse_response(kind: &EventKind, response: InboundResponse) -> Result<Reply, DeliveryError> {
    if !response.status.is_success() {
        let status = response.status.as_u16();
        // An MQTT client's refusal may name its CONNACK code (`{"mqtt":{"code":…}}`).
        if let EventKind::Connect(body) = kind
            && body.mqtt.is_some()
            && let Some(refusal) = MqttRefusal::from_body(&response.body)
        {
            return Err(DeliveryError::RejectedMqtt(status, refusal));
        }
        return Err(DeliveryError::Rejected(
            status,
            error_detail(&response.body),
        ));
    }
    let blocking = kind.name().is_blocking();
    let state = if blocking {
        let mut values = response
            .headers
            .get_all(cloudevents::CONNECTION_STATE)
            .iter();
        match (values.next(), values.next()) {
            (None, _) => None,
            (Some(v), None) => Some(
                v.to_str()
                    .map_err(|_| invalid("ce-connectionState is not a valid string"))?
                    .to_owned(),
            ),
            (Some(_), Some(_)) => return Err(invalid("ce-connectionState is sent more than once")),
        }
    } else {
        None
    };
    let metadata = if blocking {
        crate::message::metadata_from(
            response
                .headers
                .iter()
                .filter_map(|(name, value)| {
                    let key = name.as_str().strip_prefix(cloudevents::METADATA_PREFIX)?;
                    Some((key, value))
                })
                .map(|(key, value)| {
                    let value = value
                        .to_str()
                        .map_err(|_| invalid(&format!("metadata header of '{key}' is not text")))?;
                    Ok((key.to_owned(), value.to_owned()))
                })
                .collect::<Result<Vec<_>, DeliveryError>>()?,
        )
        .map_err(|e| invalid(&format!("the answer's {e}")))?
    } else {
        None
    };
    let empty = response.status.as_u16() == 204 || response.body.is_empty();
    let body = match kind {
        _ if empty || !blocking => ReplyBody::Empty,
        EventKind::Connect(_) => ReplyBody::Connect(
            serde_json::from_slice::<ConnectResponse>(&response.body)
                .map_err(|e| invalid(&format!("the connect answer is not valid JSON: {e}")))?,
        ),
        _ => ReplyBody::Data(data_of(&response.headers, response.body)?),
    };
    // The `mqtt-{name}` headers of a user event's answer: its MQTT reply's user properties.
    let mqtt_properties = match kind {
        EventKind::User { .. } if blocking => response
            .headers
            .iter()
            .filter_map(|(name, value)| {
                let name = name
                    .as_str()
                    .strip_prefix(cloudevents::MQTT_PROPERTY_PREFIX)?;
                Some(MqttUserProperty {
                    name: name.to_owned(),
                    value: value.to_str().ok()?.to_owned(),
                })
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok(Reply {
        body,
        state,
        metadata,
        mqtt_properties,
    })
}

/// The data of a user-event answer, by its media type (parameters ignored). No
/// `Content-Type` means binary, HTTP's default.
fn data_of(headers: &HeaderMap, body: Bytes) -> Result<Data, DeliveryError> {
    let media = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|| "application/octet-stream".into());
    let text = |body: Bytes| {
        Utf8Bytes::try_from(body).map_err(|_| invalid("the answer is not valid UTF-8"))
    };
    match media.as_str() {
        "application/json" => {
            serde_json::from_slice::<serde::de::IgnoredAny>(&body)
                .map_err(|e| invalid(&format!("the answer is not valid JSON: {e}")))?;
            Ok(Data::Json(text(body)?))
        }
        "text/plain" => Ok(Data::Text(text(body)?)),
        "application/octet-stream" => Ok(Data::Binary(body)),
        "application/x-protobuf" => Ok(Data::Protobuf(body)),
        other => Err(invalid(&format!("unsupported content type '{other}'"))),
    }
}

/// Most characters of a refusal's body kept as its detail.
const MAX_ERROR_DETAIL_CHARS: usize = 512;

/// The detail of a refusal: its body when that is non-empty UTF-8 text, cut to
/// [`MAX_ERROR_DETAIL_CHARS`] (`res.fail(400, "why")` of Azure's middleware writes `why`).
fn error_detail(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?.trim();
    (!text.is_empty()).then(|| text.chars().take(MAX_ERROR_DETAIL_CHARS).collect())
}

fn invalid(why: &str) -> DeliveryError {
    DeliveryError::InvalidResponse(why.to_owned())
}

#[cfg(test)]
mod tests {
    use http::StatusCode;

    use super::*;
    use crate::config::EventHandlerAuth;

    fn shared() -> Arc<WebhookShared> {
        let keys = KeyRing::new(vec!["k".repeat(32)]).expect("key");
        Arc::new(WebhookShared::new(
            &UpstreamConfig::default(),
            keys,
            "localhost".into(),
            Metrics::new(),
            Tunnels::new(1024, None),
        ))
    }

    fn config(url: &str) -> EventHandlerConfig {
        EventHandlerConfig {
            url_template: url.into(),
            user_event_pattern: Some("*".into()),
            system_events: vec!["connect".into()],
            auth: None,
            http2: false,
        }
    }

    #[tokio::test]
    async fn templates_expand_and_carry_the_code() {
        let mut c = config("http://127.0.0.1:1/api/{hub}/{event}");
        c.auth = Some(EventHandlerAuth {
            header: None,
            value: None,
            code: Some("s e/cret".into()),
        });
        let h = WebhookHandler::new(&c, shared()).expect("valid");
        assert_eq!(
            h.url("chat", "my event").expect("url").to_string(),
            "http://127.0.0.1:1/api/chat/my%20event?code=s%20e%2Fcret"
        );
        // A value stays one segment: never a dot-segment, never a separator.
        for (event, path) in [
            (".", "%2E"),
            ("..", "%2E%2E"),
            ("...", "..."),
            ("a/..", "a%2F.."),
        ] {
            assert_eq!(
                h.url("chat", event).expect("url").path(),
                format!("/api/chat/{path}")
            );
        }
        for bad in ["ftp://x/{event}", "http://{hub}.example.com/", "http:///x"] {
            assert!(
                WebhookHandler::new(&config(bad), shared()).is_err(),
                "{bad}"
            );
        }
    }

    fn response(
        status: u16,
        headers: &[(&'static str, &'static str)],
        body: &str,
    ) -> InboundResponse {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(*k, HeaderValue::from_static(v));
        }
        InboundResponse {
            status: StatusCode::from_u16(status).expect("status"),
            headers: h,
            body: Bytes::copy_from_slice(body.as_bytes()),
        }
    }

    #[test]
    fn user_event_answers_map_to_data_types() {
        let user = EventKind::User {
            name: "e".into(),
            data: None,
            metadata: None,
        };
        let data = |ct: &'static str, body: &str| match parse_response(
            &user,
            response(200, &[("content-type", ct)], body),
        ) {
            Ok(Reply {
                body: ReplyBody::Data(d),
                ..
            }) => Ok(d),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e),
        };
        assert_eq!(
            data("application/json; charset=utf-8", r#"{"a":1}"#),
            Ok(Data::Json(r#"{"a":1}"#.into()))
        );
        assert_eq!(
            data("text/plain; charset=utf-8", "hi"),
            Ok(Data::Text("hi".into()))
        );
        assert!(matches!(
            data("application/octet-stream", "x"),
            Ok(Data::Binary(_))
        ));
        assert!(data("application/json", "not json").is_err());
        assert!(data("text/html", "x").is_err());
        assert!(matches!(
            parse_response(&user, response(204, &[], "")),
            Ok(Reply {
                body: ReplyBody::Empty,
                state: None,
                metadata: None,
                ..
            })
        ));
        assert_eq!(
            parse_response(&user, response(503, &[], "")).map(|_| ()),
            Err(DeliveryError::Rejected(503, None))
        );
        let two = response(
            200,
            &[("ce-connectionstate", "a"), ("ce-connectionstate", "b")],
            "",
        );
        assert!(parse_response(&user, two).is_err());
    }

    #[test]
    fn an_mqtt_refusal_names_its_connack_code() {
        use crate::upstream::event::{ConnectBody, MqttConnectBody};
        let mqtt = EventKind::Connect(ConnectBody {
            mqtt: Some(MqttConnectBody::default()),
            ..ConnectBody::default()
        });
        let body = r#"{"mqtt":{"code":138,"reason":"banned","userProperties":[{"name":"k","value":"v"}]}}"#;
        assert_eq!(
            parse_response(&mqtt, response(403, &[], body)).map(|_| ()),
            Err(DeliveryError::RejectedMqtt(
                403,
                MqttRefusal {
                    code: 138,
                    reason: Some("banned".into()),
                    user_properties: vec![crate::upstream::event::MqttUserProperty {
                        name: "k".into(),
                        value: "v".into(),
                    }],
                }
            ))
        );
        // Without an `mqtt` member, or for another client, the status alone decides.
        for (kind, body) in [
            (&mqtt, r#"{"code":138}"#),
            (&mqtt, "not json"),
            (&EventKind::Connect(ConnectBody::default()), body),
        ] {
            assert!(matches!(
                parse_response(kind, response(403, &[], body)),
                Err(DeliveryError::Rejected(403, _))
            ));
        }
    }
}
