//! Control-plane helpers: a REST client for Azure's data-plane API.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hubcast_auth::mint_service_token;
use hyper::Request;
use hyper_util::rt::TokioIo;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;
use tokio::net::TcpStream;

use crate::TIMEOUT;

/// Percent-encodes a path segment or query value the way the Azure SDKs do
/// (`encodeURIComponent`: `a b/c` → `a%20b%2Fc`).
pub fn enc(value: &str) -> String {
    const KEEP: &percent_encoding::AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'!')
        .remove(b'~')
        .remove(b'*')
        .remove(b'\'')
        .remove(b'(')
        .remove(b')');
    utf8_percent_encode(value, KEEP).to_string()
}

/// A REST response.
#[derive(Debug)]
pub struct RestResponse {
    /// The status code.
    pub status: u16,
    /// The headers (names lower-case).
    pub headers: hyper::HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl RestResponse {
    /// The body as JSON.
    ///
    /// # Panics
    /// The body is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "HTTP {} body is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// A header value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the status and an Azure error body (`code`, `message`, optional `target`) with
    /// a matching `x-ms-error-code`; returns the body.
    ///
    /// # Panics
    /// The response is not such an error.
    pub fn expect_error(&self, status: u16, target: Option<&str>) -> Value {
        assert_eq!(
            self.status,
            status,
            "expected HTTP {status}; body {:?}",
            String::from_utf8_lossy(&self.body)
        );
        let body = self.json();
        let code = body["code"].as_str().expect("error code is a string");
        assert!(code.starts_with("Error."), "{body}");
        assert!(body["message"].is_string(), "{body}");
        assert_eq!(self.header("x-ms-error-code"), Some(code), "{body}");
        if let Some(target) = target {
            assert_eq!(body["target"], target, "{body}");
        }
        body
    }
}

/// Azure's REST data plane over plain HTTP/1.1, one TCP connection per request. Requests
/// are signed as the official JS SDK signs them: an HS256 token whose `aud` is the full
/// request URL, query included.
#[derive(Debug, Clone)]
pub struct Rest {
    addr: SocketAddr,
    endpoint: String,
    key: String,
}

impl Rest {
    pub(crate) fn new(addr: SocketAddr, endpoint: &str, key: &str) -> Self {
        Self {
            addr,
            endpoint: endpoint.to_owned(),
            key: key.to_owned(),
        }
    }

    /// A token for `path_and_query` as the JS SDK mints it.
    pub fn token_for(&self, path_and_query: &str) -> String {
        mint_service_token(
            &self.key,
            &format!("{}{path_and_query}", self.endpoint),
            Duration::from_secs(3600),
        )
    }

    /// Sends a signed request; `body` with its content type, if any.
    ///
    /// # Panics
    /// The request fails or times out.
    pub async fn call(
        &self,
        method: &str,
        path_and_query: &str,
        body: Option<(&str, &[u8])>,
    ) -> RestResponse {
        let token = self.token_for(path_and_query);
        self.call_with(method, path_and_query, body, Some(&token), &[])
            .await
    }

    /// Sends a request with an explicit bearer token (or none) and extra headers.
    ///
    /// # Panics
    /// The request fails or times out.
    pub async fn call_with(
        &self,
        method: &str,
        path_and_query: &str,
        body: Option<(&str, &[u8])>,
        token: Option<&str>,
        headers: &[(&str, &str)],
    ) -> RestResponse {
        let mut request = Request::builder()
            .method(method)
            .uri(path_and_query)
            .header("host", self.addr.to_string())
            .header("accept", "application/json");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let payload = match body {
            Some((content_type, bytes)) => {
                request = request.header("content-type", content_type);
                Bytes::copy_from_slice(bytes)
            }
            None => Bytes::new(),
        };
        let request = request.body(Full::new(payload)).expect("valid request");
        let work = async {
            let stream = TcpStream::connect(self.addr).await.expect("TCP connect");
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .expect("HTTP handshake");
            tokio::spawn(connection);
            let response = sender.send_request(request).await.expect("HTTP request");
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = response
                .into_body()
                .collect()
                .await
                .expect("HTTP body")
                .to_bytes();
            RestResponse {
                status,
                headers,
                body,
            }
        };
        tokio::time::timeout(TIMEOUT, work)
            .await
            .unwrap_or_else(|_| panic!("{method} {path_and_query} timed out"))
    }
}
