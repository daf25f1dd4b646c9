//! Binding the listeners and running until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use warp::Filter;

use crate::auth::{AuthError, ConnectionString, KeyRing};
use crate::config::Config;
use crate::router::{Router, RouterConfig};
use crate::ws::{self, Edge};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The access keys are unusable.
    #[error(transparent)]
    Keys(#[from] AuthError),
    /// The configuration asks for something this build does not do.
    #[error("{0}")]
    Unsupported(String),
    /// The configuration is inconsistent.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// A bound, not yet running, Hubcast server.
///
/// Binding and running are separate so that callers (tests, the binary) can learn the real
/// address of a port-0 listener and print the connection string before serving.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    endpoint: String,
    keys: KeyRing,
    config: Arc<Config>,
    router: Router,
}

impl Server {
    /// Validates `config` and binds the HTTP listener.
    ///
    /// # Errors
    /// Invalid keys or endpoint, unsupported settings, or a listener that cannot be bound.
    pub async fn bind(config: Config) -> Result<Self, Error> {
        if config.cluster.redis_url.is_some() {
            return Err(Error::Unsupported(
                "the Redis backplane (--redis / HUBCAST_REDIS_URL / cluster.redis_url) is not \
                 available in this version; remove it to run a single node"
                    .into(),
            ));
        }
        if let Some((hub, _)) = config
            .hubs
            .iter()
            .find(|(_, h)| !h.event_handlers.is_empty())
        {
            return Err(Error::Unsupported(format!(
                "hub '{hub}' configures event_handlers, but upstream event delivery is not \
                 available in this version; remove them"
            )));
        }
        if config.client.max_message_bytes == 0 || config.client.outbox_bytes == 0 {
            return Err(Error::Invalid(
                "client.max_message_bytes and client.outbox_bytes must be positive".into(),
            ));
        }
        let keys = if config.access_keys.is_empty() {
            KeyRing::random_dev()
        } else {
            KeyRing::new(config.access_keys.clone())?
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: config.listen,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: config.listen,
            source,
        })?;
        let endpoint = match &config.endpoint {
            Some(e) => normalize_endpoint(e)?,
            None => format!("http://{local_addr}"),
        };
        let router = Router::new(RouterConfig {
            outbox_bytes: config.client.outbox_bytes,
        });
        Ok(Self {
            listener,
            local_addr,
            endpoint,
            keys,
            config: Arc::new(config),
            router,
        })
    }

    /// The bound HTTP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The public endpoint that token audiences name, without a trailing slash.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The access keys in use (a random one when none was configured).
    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// The Azure-style connection string for the primary key.
    pub fn connection_string(&self) -> String {
        ConnectionString::format(&self.endpoint, self.keys.primary())
    }

    /// The router, for in-process callers and tests.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// Serves until `shutdown` resolves, then drains: new upgrades are refused, every client
    /// gets a `disconnected` message and a 1001 close, and the call returns once they have
    /// gone or `shutdown_grace` has passed.
    ///
    /// # Errors
    /// None yet; the signature leaves room for listeners that fail at run time.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let edge = Arc::new(Edge {
            router: self.router.clone(),
            config: self.config.clone(),
            keys: self.keys.clone(),
            endpoint: self.endpoint.clone(),
            tracker: TaskTracker::new(),
            draining: CancellationToken::new(),
            kill: CancellationToken::new(),
        });
        let health = warp::path!("api" / "health")
            .and(warp::head().or(warp::get()).unify())
            .map(warp::reply);
        let routes = ws::routes(edge.clone()).or(health);
        let stop_accepting = CancellationToken::new();
        let http = warp::serve(routes)
            .incoming(self.listener)
            .graceful(stop_accepting.clone().cancelled_owned())
            .run();
        let http = tokio::spawn(http);
        tracing::info!(addr = %self.local_addr, endpoint = %self.endpoint, "listening");

        shutdown.await;
        let grace = self.config.shutdown_grace;
        tracing::info!(
            connections = self.router.stats().connections,
            grace = ?grace,
            "shutting down"
        );
        edge.draining.cancel();
        stop_accepting.cancel();
        ws::close_all(&self.router);
        edge.tracker.close();
        if tokio::time::timeout(grace, edge.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = self.router.stats().connections,
                "shutdown grace period over; dropping the remaining connections"
            );
            edge.kill.cancel();
            edge.tracker.wait().await;
        }
        // Plain HTTP requests in flight get what is left of a short grace; then the task goes.
        if tokio::time::timeout(std::time::Duration::from_secs(1), http)
            .await
            .is_err()
        {
            tracing::debug!("HTTP listener did not stop in time");
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Checks an endpoint (`http(s)://host[:port]`, no path) and strips a trailing slash.
fn normalize_endpoint(endpoint: &str) -> Result<String, Error> {
    let trimmed = endpoint.trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("http://")
        .or_else(|| trimmed.strip_prefix("https://"));
    match rest {
        Some(authority) if !authority.is_empty() && !authority.contains('/') => {
            Ok(trimmed.to_owned())
        }
        _ => Err(Error::Invalid(format!(
            "endpoint '{endpoint}' must be http(s)://host[:port] without a path"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_normalized_and_checked() {
        assert_eq!(
            normalize_endpoint("https://x.example.com/").expect("valid"),
            "https://x.example.com"
        );
        assert!(normalize_endpoint("ws://x").is_err());
        assert!(normalize_endpoint("http://x/path").is_err());
        assert!(normalize_endpoint("http://").is_err());
    }
}
