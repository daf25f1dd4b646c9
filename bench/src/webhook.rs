//! The echo scenario's upstream: a fast CloudEvents receiver that answers every user event
//! with its own body (Azure's "echo" performance scenario), so the service sends it back to
//! the client that raised it.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Method, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A running receiver; stops when dropped.
pub(crate) struct EchoReceiver {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl EchoReceiver {
    pub(crate) async fn start() -> Result<Self, String> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("cannot bind the echo receiver: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let service = service_fn(answer);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self { addr, task })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for EchoReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(request: http::Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut response = Response::new(Full::new(Bytes::new()));
    if request.method() == Method::OPTIONS {
        // Abuse protection: allow any origin.
        response.headers_mut().insert(
            "WebHook-Allowed-Origin",
            http::HeaderValue::from_static("*"),
        );
        return Ok(response);
    }
    let content_type = request.headers().get(header::CONTENT_TYPE).cloned();
    match request.into_body().collect().await {
        Ok(body) => {
            *response.body_mut() = Full::new(body.to_bytes());
            if let Some(content_type) = content_type {
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, content_type);
            }
        }
        Err(_) => *response.status_mut() = StatusCode::BAD_REQUEST,
    }
    Ok(response)
}
