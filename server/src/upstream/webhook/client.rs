//! The HTTP client of the webhooks: hyper-util's pooled client under tower layers.
//!
//! ```text
//! blocking:    ConcurrencyLimit (shared) → Timeout → Transport
//! background:  Retry (backoff) → ConcurrencyLimit (shared) → Timeout → Transport
//! ```
//! The transport sends the request and reads the whole body (bounded), so the per-attempt
//! timeout covers the body too. The retry layer sits outside the concurrency limit, so a
//! request waiting out its backoff holds no slot. Connections are pooled and kept alive;
//! `https://` negotiates HTTP/2 or HTTP/1.1 by ALPN, and a handler marked `http2` gets HTTP/2
//! with prior knowledge over plain TCP (h2c).

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, Uri};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::retry::{Policy, RetryLayer};
use tower::timeout::TimeoutLayer;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt as _};

use super::super::BoxFuture;
use crate::config::UpstreamConfig;

/// A request to a handler. Cheap to clone (the body is shared), which retries need.
#[derive(Debug, Clone)]
pub(crate) struct OutboundRequest {
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    /// HTTP/2 with prior knowledge.
    pub(crate) http2: bool,
}

/// A handler's response, body read in full.
#[derive(Debug, Clone)]
pub(crate) struct InboundResponse {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// Why a request failed, once the layers have had their say.
#[derive(Debug)]
pub(crate) enum SendError {
    /// The attempt took longer than the timeout.
    Timeout,
    /// Connecting, writing or reading failed.
    Network(String),
    /// The response body is larger than allowed.
    TooLarge,
}

type Connector = HttpsConnector<HttpConnector>;
type Stack = BoxCloneSyncService<OutboundRequest, InboundResponse, BoxError>;

/// The webhook HTTP client. Clones share the connection pools and the concurrency limit.
#[derive(Clone)]
pub(crate) struct HttpClient {
    blocking: Stack,
    background: Stack,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient").finish_non_exhaustive()
    }
}

impl HttpClient {
    /// Builds the client from the upstream settings.
    pub(crate) fn new(settings: &UpstreamConfig) -> Self {
        let transport = Transport::new(settings);
        let limit = GlobalConcurrencyLimitLayer::new(settings.max_concurrency.max(1));
        let timeout = TimeoutLayer::new(settings.timeout);
        let blocking = ServiceBuilder::new()
            .layer(limit.clone())
            .layer(timeout.clone())
            .service(transport.clone());
        let background = ServiceBuilder::new()
            .layer(RetryLayer::new(RetryPolicy {
                backoff: settings.retry_backoff.clone().into(),
                attempt: 0,
            }))
            .layer(limit)
            .layer(timeout)
            .service(transport);
        Self {
            blocking: BoxCloneSyncService::new(blocking),
            background: BoxCloneSyncService::new(background),
        }
    }

    /// Sends one request; `retry` selects the stack that retries 408, 5xx and network errors
    /// with backoff (for non-blocking events).
    pub(crate) async fn send(
        &self,
        request: OutboundRequest,
        retry: bool,
    ) -> Result<InboundResponse, SendError> {
        let stack = if retry {
            self.background.clone()
        } else {
            self.blocking.clone()
        };
        stack.oneshot(request).await.map_err(classify)
    }
}

fn classify(error: BoxError) -> SendError {
    if error.is::<tower::timeout::error::Elapsed>() {
        SendError::Timeout
    } else if is_network(&error) {
        SendError::Network(error_chain(&*error))
    } else {
        SendError::TooLarge
    }
}

/// An error and its sources, for logs (hyper's top-level messages say little).
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// Retries non-blocking events on 408, 5xx and network errors, once per backoff entry
/// (spec §6.3); never on timeouts, 429 or other 4xx.
#[derive(Debug, Clone)]
struct RetryPolicy {
    backoff: Arc<[Duration]>,
    attempt: usize,
}

impl Policy<OutboundRequest, InboundResponse, BoxError> for RetryPolicy {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        request: &mut OutboundRequest,
        result: &mut Result<InboundResponse, BoxError>,
    ) -> Option<Self::Future> {
        let retryable = match result {
            Ok(response) => {
                response.status == StatusCode::REQUEST_TIMEOUT || response.status.is_server_error()
            }
            Err(error) => is_network(error),
        };
        if !retryable {
            return None;
        }
        let delay = *self.backoff.get(self.attempt)?;
        self.attempt += 1;
        tracing::debug!(uri = %crate::redact::Url(&request.uri.to_string()), attempt = self.attempt, ?delay, "retrying webhook");
        Some(tokio::time::sleep(delay))
    }

    fn clone_request(&mut self, request: &OutboundRequest) -> Option<OutboundRequest> {
        Some(request.clone())
    }
}

/// Whether a failure is the network's (worth a retry), not a timeout or an oversized body.
fn is_network(error: &BoxError) -> bool {
    !(error.is::<tower::timeout::error::Elapsed>()
        || error.is::<http_body_util::LengthLimitError>())
}

/// Sends a request with the right pooled client and reads the body, bounded.
#[derive(Clone)]
struct Transport {
    /// HTTP/1.1 over TCP, HTTP/2 or HTTP/1.1 by ALPN over TLS.
    negotiated: Client<Connector, Full<Bytes>>,
    /// HTTP/2 only (prior knowledge over TCP).
    http2: Client<Connector, Full<Bytes>>,
    max_body: usize,
}

impl Transport {
    fn new(settings: &UpstreamConfig) -> Self {
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(settings.connect_timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .expect("the ring provider supports the default protocol versions")
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(tcp);
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(32);
        let negotiated = builder.build(connector.clone());
        let http2 = builder.http2_only(true).build(connector);
        Self {
            negotiated,
            http2,
            max_body: settings.max_response_bytes,
        }
    }
}

impl Service<OutboundRequest> for Transport {
    type Response = InboundResponse;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<InboundResponse, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // hyper's client queues internally; the concurrency limit above bounds it.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: OutboundRequest) -> Self::Future {
        let client = if request.http2 {
            self.http2.clone()
        } else {
            self.negotiated.clone()
        };
        let max_body = self.max_body;
        Box::pin(async move {
            let mut http = http::Request::new(Full::new(request.body));
            *http.method_mut() = request.method;
            *http.uri_mut() = request.uri;
            *http.headers_mut() = request.headers;
            let response = client.request(http).await?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, max_body).collect().await?.to_bytes();
            Ok(InboundResponse {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        })
    }
}
