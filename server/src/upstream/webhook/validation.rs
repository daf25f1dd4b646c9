//! Abuse protection (spec §6.2): before the first event goes to a handler URL, an `OPTIONS`
//! request (with `{event}` = `validate`) must be answered 2xx with `WebHook-Allowed-Origin`
//! naming this service (or `*`).
//!
//! Results are cached per URL: a pass for the configured TTL, a failure with a backoff that
//! doubles from 1 s to 60 s. Requests to a URL wait while its validation runs (one
//! validation per URL at a time) and fail while it is failing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method, Uri};
use tokio::time::Instant;

use super::client::{HttpClient, OutboundRequest, SendError};
use super::cloudevents::{AWPS_VERSION, REQUEST_ORIGIN};

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
enum State {
    #[default]
    Unknown,
    Passed {
        until: Instant,
    },
    Failed {
        retry_at: Instant,
        backoff: Duration,
        why: String,
    },
}

/// The validation cache of every handler URL.
#[derive(Debug)]
pub(crate) struct Validator {
    client: HttpClient,
    origin: HeaderValue,
    ttl: Duration,
    urls: Mutex<HashMap<String, Arc<tokio::sync::Mutex<State>>>>,
}

impl Validator {
    pub(crate) fn new(client: HttpClient, origin: HeaderValue, ttl: Duration) -> Self {
        Self {
            client,
            origin,
            ttl,
            urls: Mutex::new(HashMap::new()),
        }
    }

    /// Resolves once `uri` is validated; fails while its validation fails.
    pub(crate) async fn ensure(
        &self,
        uri: &Uri,
        extra: &HeaderMap,
        http2: bool,
    ) -> Result<(), String> {
        let entry = self
            .urls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(uri.to_string())
            .or_default()
            .clone();
        // Held across the request: concurrent events to this URL wait for its outcome.
        let mut state = entry.lock().await;
        let now = Instant::now();
        let backoff = match &*state {
            State::Passed { until } if now < *until => return Ok(()),
            State::Failed { retry_at, why, .. } if now < *retry_at => return Err(why.clone()),
            State::Failed { backoff, .. } => (*backoff * 2).min(MAX_BACKOFF),
            _ => FIRST_BACKOFF,
        };
        match self.validate(uri, extra, http2).await {
            Ok(()) => {
                tracing::debug!(uri = %crate::redact::Url(&uri.to_string()), "event handler validated");
                *state = State::Passed {
                    until: Instant::now() + self.ttl,
                };
                Ok(())
            }
            Err(why) => {
                tracing::warn!(uri = %crate::redact::Url(&uri.to_string()), reason = %why, "event handler failed abuse protection validation");
                *state = State::Failed {
                    retry_at: Instant::now() + backoff,
                    backoff,
                    why: why.clone(),
                };
                Err(why)
            }
        }
    }

    /// One validation: `OPTIONS`, or `GET` if the handler does not know `OPTIONS` (404/405).
    async fn validate(&self, uri: &Uri, extra: &HeaderMap, http2: bool) -> Result<(), String> {
        let mut last = String::new();
        for method in [Method::OPTIONS, Method::GET] {
            let mut headers = extra.clone();
            headers.insert(REQUEST_ORIGIN, self.origin.clone());
            headers.insert(AWPS_VERSION.0, HeaderValue::from_static(AWPS_VERSION.1));
            let request = OutboundRequest {
                method: method.clone(),
                uri: uri.clone(),
                headers,
                body: Default::default(),
                http2,
            };
            let response = match self.client.send(request, false).await {
                Ok(r) => r,
                Err(SendError::Timeout) => return Err("no answer in time".into()),
                Err(SendError::Network(e)) => return Err(format!("unreachable: {e}")),
                Err(SendError::TooLarge) => return Err("answer too large".into()),
            };
            let status = response.status.as_u16();
            if response.status.is_success() {
                return if allows(&response.headers, &self.origin) {
                    Ok(())
                } else {
                    Err(format!(
                        "{method} answered {status} without a WebHook-Allowed-Origin naming {}",
                        self.origin.to_str().unwrap_or("this service")
                    ))
                };
            }
            last = format!("{method} answered {status}");
            if status != 404 && status != 405 {
                break;
            }
        }
        Err(last)
    }
}

/// Whether `WebHook-Allowed-Origin` is `*` or names `origin` (case-insensitive; values may
/// be lists separated by commas or spaces, and the header may repeat).
fn allows(headers: &HeaderMap, origin: &HeaderValue) -> bool {
    let origin = origin.to_str().unwrap_or("");
    headers
        .get_all("webhook-allowed-origin")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ' ']))
        .map(str::trim)
        .any(|allowed| allowed == "*" || allowed.eq_ignore_ascii_case(origin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_origin_accepts_star_or_the_host() {
        let origin = HeaderValue::from_static("example.com");
        let mut h = HeaderMap::new();
        assert!(!allows(&h, &origin));
        h.insert(
            "webhook-allowed-origin",
            HeaderValue::from_static("other.com, Example.COM"),
        );
        assert!(allows(&h, &origin));
        h.insert(
            "webhook-allowed-origin",
            HeaderValue::from_static("other.com"),
        );
        assert!(!allows(&h, &origin));
        h.insert("webhook-allowed-origin", HeaderValue::from_static("*"));
        assert!(allows(&h, &origin));
    }
}
