//! A real HTTP event handler for webhook tests: a hyper server on `127.0.0.1:0` (HTTP/1.1
//! and h2c) that records every request and answers as the test says.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::TIMEOUT;

/// A request the handler received.
#[derive(Debug, Clone)]
pub struct Received {
    /// `OPTIONS`, `POST`, ...
    pub method: Method,
    /// Path and query.
    pub path: String,
    /// HTTP version spoken.
    pub version: Version,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl Received {
    /// A header's value as text (panics if absent).
    ///
    /// # Panics
    /// The header is absent or not text.
    pub fn header(&self, name: &str) -> &str {
        self.try_header(name)
            .unwrap_or_else(|| panic!("header {name} missing in {self:#?}"))
    }

    /// A header's value as text, if present.
    pub fn try_header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("text header"))
    }

    /// `ce-eventName`, or `""` (validation requests have none).
    pub fn event(&self) -> &str {
        self.try_header("ce-eventname").unwrap_or("")
    }

    /// `ce-connectionId`, or `""`.
    pub fn connection_id(&self) -> &str {
        self.try_header("ce-connectionid").unwrap_or("")
    }

    /// The body as JSON.
    ///
    /// # Panics
    /// It is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }
}

/// What the handler answers.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: Vec<(&'static str, String)>,
    /// Body.
    pub body: Bytes,
    /// Wait this long before answering.
    pub delay: Duration,
}

impl Answer {
    /// An answer with `status`, no headers, no body.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Bytes::new(),
            delay: Duration::ZERO,
        }
    }

    /// `200` with a JSON body.
    pub fn json(value: &Value) -> Self {
        Self::status(200)
            .header("content-type", "application/json; charset=utf-8")
            .body(value.to_string())
    }

    /// Adds a header.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Answers after `delay`.
    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// The answer to a validation request that allows every origin.
    pub fn allow_any_origin() -> Self {
        Self::status(200).header("webhook-allowed-origin", "*")
    }
}

type Respond = dyn Fn(&Received) -> Answer + Send + Sync;

/// A running event handler.
pub struct WebhookReceiver {
    addr: SocketAddr,
    requests: mpsc::UnboundedReceiver<Received>,
    respond: Arc<Mutex<Arc<Respond>>>,
    stop: CancellationToken,
}

impl std::fmt::Debug for WebhookReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookReceiver")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl WebhookReceiver {
    /// Starts a handler that allows every origin on validation and answers events `204`.
    ///
    /// # Panics
    /// It cannot bind.
    pub async fn start() -> Self {
        Self::start_with(default_answer).await
    }

    /// Starts a handler that answers with `respond`.
    ///
    /// # Panics
    /// It cannot bind.
    pub async fn start_with(respond: impl Fn(&Received) -> Answer + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind handler");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = mpsc::unbounded_channel();
        let respond: Arc<Mutex<Arc<Respond>>> = Arc::new(Mutex::new(Arc::new(respond)));
        let stop = CancellationToken::new();
        tokio::spawn(serve(listener, tx, respond.clone(), stop.clone()));
        Self {
            addr,
            requests: rx,
            respond,
            stop,
        }
    }

    /// Changes how the handler answers from now on.
    ///
    /// # Panics
    /// Never (a poisoned lock is recovered).
    pub fn respond_with(&self, respond: impl Fn(&Received) -> Answer + Send + Sync + 'static) {
        *self.respond.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(respond);
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The next request, within [`TIMEOUT`].
    ///
    /// # Panics
    /// None arrives in time.
    pub async fn next(&mut self) -> Received {
        tokio::time::timeout(TIMEOUT, self.requests.recv())
            .await
            .unwrap_or_else(|_| panic!("no request reached the handler within {TIMEOUT:?}"))
            .expect("handler running")
    }

    /// The next request that is an event (a `POST`), skipping validation requests.
    ///
    /// # Panics
    /// None arrives in time.
    pub async fn next_event(&mut self) -> Received {
        loop {
            let r = self.next().await;
            if r.method == Method::POST {
                return r;
            }
        }
    }

    /// The next event named `name` (skipping others and validation requests).
    ///
    /// # Panics
    /// None arrives in time.
    pub async fn next_named(&mut self, name: &str) -> Received {
        loop {
            let r = self.next_event().await;
            if r.event() == name {
                return r;
            }
        }
    }

    /// Every request received so far and not yet taken.
    pub fn drain(&mut self) -> Vec<Received> {
        let mut all = Vec::new();
        while let Ok(r) = self.requests.try_recv() {
            all.push(r);
        }
        all
    }
}

/// Validation allowed for any origin, every event `204`.
pub fn default_answer(request: &Received) -> Answer {
    if request.method == Method::OPTIONS {
        Answer::allow_any_origin()
    } else {
        Answer::status(204)
    }
}

async fn serve(
    listener: TcpListener,
    tx: mpsc::UnboundedSender<Received>,
    respond: Arc<Mutex<Arc<Respond>>>,
    stop: CancellationToken,
) {
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r { Ok(pair) => pair, Err(_) => continue },
            () = stop.cancelled() => return,
        };
        let tx = tx.clone();
        let respond = respond.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: hyper::Request<Incoming>| {
                let tx = tx.clone();
                let respond = respond.clone();
                async move {
                    let (parts, body) = request.into_parts();
                    let body = body
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let received = Received {
                        method: parts.method,
                        path: parts
                            .uri
                            .path_and_query()
                            .map(|p| p.to_string())
                            .unwrap_or_default(),
                        version: parts.version,
                        headers: parts.headers,
                        body,
                    };
                    let respond = respond.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    let answer = respond(&received);
                    let _ = tx.send(received);
                    if !answer.delay.is_zero() {
                        tokio::time::sleep(answer.delay).await;
                    }
                    let mut response = hyper::Response::new(Full::new(answer.body));
                    *response.status_mut() =
                        StatusCode::from_u16(answer.status).expect("valid status");
                    for (name, value) in answer.headers {
                        response.headers_mut().append(
                            HeaderName::from_bytes(name.as_bytes()).expect("valid header name"),
                            HeaderValue::from_str(&value).expect("valid header value"),
                        );
                    }
                    Ok::<_, Infallible>(response)
                }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                () = stop.cancelled() => {}
            }
        });
    }
}
