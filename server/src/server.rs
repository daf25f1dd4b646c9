//! Binding the listeners and running until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::{Service as _, service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;
use warp::Filter;

use crate::cluster::{Cluster, ClusterSettings, Requests};
use crate::config::Config;
use crate::demo::{self, Demo};
use crate::edge::grpc::GrpcEdge;
use crate::edge::ws::{self, Edge};
use crate::limits::LimitCounters;
use crate::node::Node;
use crate::router::{Router, RouterConfig};
use crate::sockets::{self, Backoff, ClientAddr, GrpcAccept, Listener, PendingSockets, Slot};
use crate::telemetry::Metrics;
use crate::telemetry::live_trace::LiveTrace;
use crate::telemetry::metrics::PROMETHEUS_CONTENT_TYPE;
use crate::telemetry::otlp::MetricExport;
use crate::tls::Tls;
use crate::upstream::Upstream;
use hubcast_auth::{AuthError, ConnectionString, KeyRing};

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
    grpc_listener: TcpListener,
    grpc_addr: SocketAddr,
    upstream: Arc<Upstream>,
    endpoint: String,
    keys: KeyRing,
    config: Arc<Config>,
    router: Router,
    /// The Redis backplane (`None` on a single node): owned here, handed to the service
    /// layer and the upstream, never to the router or an edge.
    cluster: Option<Arc<Cluster>>,
    /// The requests of other nodes, until [`Server::run`] gives them to the service layer.
    cluster_requests: Option<Requests>,
    /// The service layer every edge calls.
    node: Node,
    limits: Arc<LimitCounters>,
    tls: Option<Tls>,
    /// OTLP metric export of this server's registry, when configured.
    metric_export: Option<MetricExport>,
    /// The listeners' background tasks (the gRPC accept loop, TLS handshakes, HTTP
    /// connections), closed and awaited at shutdown so none outlives [`Server::run`].
    tasks: TaskTracker,
}

impl Server {
    /// Validates `config` and binds the HTTP listener.
    ///
    /// # Errors
    /// Invalid keys or endpoint, unsupported settings, or a listener that cannot be bound.
    pub async fn bind(config: Config) -> Result<Self, Error> {
        config.check().map_err(Error::Invalid)?;
        if config.client.outbox_bytes == 0 {
            return Err(Error::Invalid(
                "client.outbox_bytes must be positive".into(),
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
        let grpc_listener = TcpListener::bind(config.grpc_listen)
            .await
            .map_err(|source| Error::Bind {
                addr: config.grpc_listen,
                source,
            })?;
        let grpc_addr = grpc_listener.local_addr().map_err(|source| Error::Bind {
            addr: config.grpc_listen,
            source,
        })?;
        let tls = config
            .tls
            .as_ref()
            .map(Tls::load)
            .transpose()
            .map_err(Error::Invalid)?;
        let endpoint = match &config.endpoint {
            Some(e) => normalize_endpoint(e)?,
            None if tls.is_some() => format!("https://{local_addr}"),
            None => format!("http://{local_addr}"),
        };
        // The backplane hands out what other nodes ask of this one (for the service layer)
        // and the events they relay to this node's listeners (for the upstream) once, here.
        let (cluster, cluster_requests, relayed_events) = match config.cluster.redis_target() {
            None => (None, None, None),
            Some(redis) => {
                let (cluster, requests, relayed) = Cluster::start(ClusterSettings {
                    redis,
                    key_prefix: config.cluster.key_prefix.clone(),
                    lease: config.cluster.lease,
                })
                .await
                .map_err(|e| Error::Invalid(e.to_string()))?;
                (Some(cluster), Some(requests), Some(relayed))
            }
        };
        // The router knows only this node's id (for connection ids), not the backplane.
        let router = Router::with_node_id(
            RouterConfig {
                outbox_bytes: config.client.outbox_bytes,
            },
            cluster.as_ref().map(|c| Arc::from(c.node())),
        );
        router.metrics().set_series_limits(
            config.metrics.max_series_per_metric,
            config.metrics.hub_series_expiry,
        );
        if let Some(cluster) = &cluster {
            cluster.export_metrics(router.metrics());
        }
        let upstream = Upstream::new(
            &config,
            keys.clone(),
            &endpoint,
            router.metrics().clone(),
            cluster.clone().zip(relayed_events),
        )
        .map_err(|e| Error::Invalid(e.to_string()))?;
        let limits = Arc::new(LimitCounters::default());
        limits.export_to(router.metrics());
        let metric_export = match &config.otlp {
            Some(settings) => MetricExport::start(settings, router.metrics())
                .map_err(|e| Error::Invalid(e.to_string()))?,
            None => None,
        };
        let live_trace = LiveTrace::new(
            config.live_trace.clone(),
            cluster
                .as_ref()
                .map(|c| c.node().to_owned())
                .unwrap_or_default(),
        );
        let node = Node::new(
            router.clone(),
            cluster.clone(),
            keys.clone(),
            endpoint.clone(),
            live_trace,
        );
        Ok(Self {
            listener,
            local_addr,
            grpc_listener,
            grpc_addr,
            upstream,
            endpoint,
            keys,
            config: Arc::new(config),
            router,
            cluster,
            cluster_requests,
            node,
            limits,
            tls,
            metric_export,
            tasks: TaskTracker::new(),
        })
    }

    /// The tracker of the listeners' background tasks; empty once [`Server::run`] returned.
    #[doc(hidden)]
    pub fn tasks(&self) -> TaskTracker {
        self.tasks.clone()
    }

    /// The bound HTTP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The bound gRPC address (control plane, event stream, health, reflection).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
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

    /// The Redis backplane of this node (`None` on a single node), for in-process callers
    /// and tests.
    pub fn cluster(&self) -> Option<Arc<Cluster>> {
        self.cluster.clone()
    }

    /// How often each limit has refused something; shared with the running server.
    pub fn limit_counters(&self) -> Arc<LimitCounters> {
        self.limits.clone()
    }

    /// Serves until `shutdown` resolves, then drains: new upgrades are refused, every client
    /// gets a `disconnected` message and a 1001 close, and the call returns once they have
    /// gone or `shutdown_grace` has passed.
    ///
    /// # Errors
    /// None yet; the signature leaves room for listeners that fail at run time.
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        // What the other nodes ask of this one goes to the service layer, in one task.
        let cluster_requests = match (&self.cluster, self.cluster_requests.take()) {
            (Some(cluster), Some(requests)) => Some(tokio::spawn(
                self.node.clone().serve_cluster(cluster.clone(), requests),
            )),
            _ => None,
        };
        let edge = Arc::new(Edge {
            node: self.node.clone(),
            config: self.config.clone(),
            keys: self.keys.clone(),
            endpoint: self.endpoint.clone(),
            tracker: TaskTracker::new(),
            draining: CancellationToken::new(),
            kill: CancellationToken::new(),
            upstream: self.upstream.clone(),
            sessions: dashmap::DashMap::new(),
            limits: self.limits.clone(),
            handshakes: Arc::new(tokio::sync::Semaphore::new(
                self.config.limits.max_concurrent_handshakes,
            )),
        });
        let draining = edge.draining.clone();
        let health = warp::path!("api" / "health")
            .and(warp::head().or(warp::get()).unify())
            .map(move || {
                let status = if draining.is_cancelled() {
                    warp::http::StatusCode::SERVICE_UNAVAILABLE
                } else {
                    warp::http::StatusCode::OK
                };
                warp::reply::with_status(warp::reply(), status)
            });
        // The service layer: one implementation behind every edge (REST here, gRPC on its
        // listener).
        let node = self.node.clone();
        let events = self.upstream.listeners().clone();
        // One cap for the pending sockets of both listeners: they share one descriptor table.
        let pending = PendingSockets::new(
            self.config.limits.max_pending_sockets,
            self.limits.clone(),
            self.router.metrics(),
        );
        let keepalive = self.config.client.keepalive_interval;
        let grpc = GrpcEdge::start(
            self.grpc_listener,
            node.clone(),
            events,
            GrpcAccept {
                pending: pending.clone(),
                tls: self.tls.as_ref().map(|t| t.grpc.clone()),
                handshake_timeout: self.config.limits.handshake_timeout,
                tasks: self.tasks.clone(),
            },
            // A peer that acknowledges nothing, not even our pings, for `idle_timeout` is
            // gone, as on the WebSocket side (`check` makes the difference positive).
            (
                keepalive,
                self.config.limits.idle_timeout.saturating_sub(keepalive),
            ),
            self.cluster.as_ref().map(|c| c.serving()),
        )
        .await;
        let demo = Arc::new(Demo {
            dev: self.config.dev,
            endpoint: self.endpoint.clone(),
            key: self.keys.primary().to_owned(),
        });
        if demo.dev {
            tracing::warn!("{}", demo::DEV_WARNING);
        }
        let metrics = metrics_route(self.config.metrics.enabled, self.router.metrics().clone());
        let routes = ws::routes(edge.clone())
            .or(crate::edge::mqtt::routes(crate::edge::mqtt::MqttEdge::new(
                edge.clone(),
            )))
            .or(crate::edge::socketio::routes(
                crate::edge::socketio::SocketIoEdge::new(edge.clone()),
            ))
            .or(crate::edge::tunnel::routes(edge.clone()))
            .or(health)
            .or(metrics)
            .or(crate::edge::admin::sse_route(
                node.clone(),
                edge.draining.clone(),
            ))
            .or(crate::edge::rest::routes(
                node,
                self.config.limits.request_body_timeout,
                self.limits.clone(),
            ))
            .or(demo::routes(demo));
        let stop_accepting = CancellationToken::new();
        // Joined below, once the drain is over.
        let http = tokio::spawn(serve_http(
            self.listener,
            routes,
            stop_accepting.clone(),
            HttpAccept {
                pending,
                handshake_timeout: self.config.limits.handshake_timeout,
                tls: self.tls.as_ref().map(|t| t.http.clone()),
                tasks: self.tasks.clone(),
            },
        ));
        tracing::info!(
            addr = %self.local_addr,
            grpc.addr = %self.grpc_addr,
            endpoint = %self.endpoint,
            "listening"
        );

        shutdown.await;
        let started = tokio::time::Instant::now();
        grpc.draining().await;
        let grace = self.config.shutdown_grace;
        tracing::info!(
            connections = self.router.stats().connections,
            grace = ?grace,
            "shutting down"
        );
        // The HTTP listener keeps accepting while connections drain, so that newcomers (and
        // load balancers polling /api/health) get a clear 503 rather than a refused TCP
        // connect; it stops once the drain is over.
        edge.draining.cancel();
        ws::close_all(&self.node);
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
        stop_accepting.cancel();
        if let Err(e) = http.await {
            tracing::warn!(error = %e, "HTTP listener task failed");
        }
        // Every connection has raised its `disconnected` by now: deliver what is queued
        // within what is left of the grace period, then end the event streams and gRPC.
        self.upstream
            .shutdown(grace.saturating_sub(started.elapsed()))
            .await;
        grpc.stop().await;
        if let Some(cluster) = &self.cluster {
            cluster.stop().await;
        }
        if let Some(task) = cluster_requests
            && let Err(e) = task.await
        {
            tracing::warn!(error = %e, "cluster request task failed");
        }
        // The listeners have stopped: their last tasks (connections, handshakes) end within
        // what is left of the grace period, or are reported and left to the runtime.
        self.tasks.close();
        let left = grace.saturating_sub(started.elapsed());
        if tokio::time::timeout(left, self.tasks.wait()).await.is_err() {
            tracing::warn!(
                remaining = self.tasks.len(),
                "listener tasks still running after the shutdown grace period"
            );
        }
        // Last, so the final export has the counts of the drain.
        // The SDK's shutdown blocks until the final export is done, and that export runs on
        // this runtime: block a thread of the blocking pool, not a runtime thread.
        if let Some(export) = self.metric_export {
            let _ = tokio::task::spawn_blocking(move || export.shutdown()).await;
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// `GET /metrics`: the registry as Prometheus text. When disabled the path is not routed
/// (404), so a scraper misconfigured against it fails visibly.
fn metrics_route(
    enabled: bool,
    metrics: Metrics,
) -> impl Filter<Extract = (warp::http::Response<String>,), Error = warp::Rejection> + Clone {
    warp::path!("metrics").and(warp::get()).and_then(move || {
        let metrics = metrics.clone();
        async move {
            if !enabled {
                return Err(warp::reject::not_found());
            }
            let mut response = warp::http::Response::new(metrics.render());
            response.headers_mut().insert(
                warp::http::header::CONTENT_TYPE,
                warp::http::HeaderValue::from_static(PROMETHEUS_CONTENT_TYPE),
            );
            Ok(response)
        }
    })
}

/// How long plain HTTP requests in flight may take to finish at shutdown.
const HTTP_DRAIN: Duration = Duration::from_secs(1);

/// Settings of the HTTP listener's accept loop.
struct HttpAccept {
    pending: Arc<PendingSockets>,
    /// See [`Limits::handshake_timeout`](crate::limits::Limits).
    handshake_timeout: Duration,
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// Where each connection's task is spawned (the server's tracker).
    tasks: TaskTracker,
}

/// Accepts HTTP/1.1 connections until `stop` fires, then lets requests in flight finish for
/// [`HTTP_DRAIN`]. Our own accept loop (rather than `warp::serve`) so that every socket gets
/// `TCP_NODELAY` (without it small messages wait for delayed ACKs (Nagle), tens of
/// milliseconds per message), a handshake deadline from accept, and a place among the
/// pending sockets (see [`sockets`](crate::sockets)).
async fn serve_http<F>(
    listener: TcpListener,
    filter: F,
    stop: CancellationToken,
    accept: HttpAccept,
) where
    F: Filter + Clone + Send + Sync + 'static,
    F::Extract: warp::Reply,
{
    let graceful = GracefulShutdown::new();
    let mut http = auto::Builder::new(TokioExecutor::new());
    // HTTP/1.1 only: WebSocket upgrades and REST; gRPC has a listener of its own.
    http = http.http1_only();
    // The headers of every request after the first must arrive within
    // `limits.handshake_timeout` of the end of the previous response, so that a kept-alive
    // connection cannot idle, nor trickle its headers (slow loris), for longer. (The first
    // request's deadline runs from accept, below: the auto builder waits for a first byte to
    // tell the HTTP version before hyper's timer starts, and would wait for ever.)
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(accept.handshake_timeout);
    let mut backoff = Backoff::new(Listener::Http);
    loop {
        let (stream, addr) = tokio::select! {
            accepted = sockets::accept(&listener, &accept.pending, &mut backoff) => accepted,
            () = stop.cancelled() => break,
        };
        let deadline = tokio::time::Instant::now() + accept.handshake_timeout;
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let slot = Arc::new(accept.pending.admit(Listener::Http));
        let warp_service = TowerToHyperService::new(warp::service(filter.clone()));
        let request_slot = slot.clone();
        let service = service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ClientAddr(addr));
            // Not pending while a request is handled; pending again, as the newest, after.
            let busy = request_slot.busy();
            let response = warp_service.call(request);
            async move {
                let response = response.await;
                drop(busy);
                response
            }
        });
        let watcher = graceful.watcher();
        let http = http.clone();
        let tls = accept.tls.clone();
        let stop = stop.clone();
        accept.tasks.spawn(async move {
            let mut evicted = std::pin::pin!(slot.evicted());
            let served = match tls {
                None => {
                    let connection =
                        http.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    let connection = watcher.watch(connection.into_owned());
                    until_deadline(connection, &slot, deadline, evicted).await
                }
                Some(acceptor) => {
                    // The TLS handshake counts against the same deadline as the headers.
                    let handshake = tokio::time::timeout_at(deadline, acceptor.accept(stream));
                    let stream = tokio::select! {
                        handshake = handshake => match handshake {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(e)) => {
                                tracing::debug!(error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                slot.timed_out();
                                tracing::debug!("TLS handshake timed out");
                                return;
                            }
                        },
                        () = &mut evicted => return,
                        // Shutdown awaits this task: a stalled handshake must not hold it.
                        () = stop.cancelled() => return,
                    };
                    let connection =
                        http.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    let connection = watcher.watch(connection.into_owned());
                    until_deadline(connection, &slot, deadline, evicted).await
                }
            };
            if let Some(Err(e)) = served {
                tracing::debug!(error = %e, "HTTP connection error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(HTTP_DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("HTTP requests still in flight at shutdown");
    }
}

/// Serves `connection` unless its first request's headers are not in by `deadline`, or it
/// is closed to make room while it waits for a request; `None` when it was dropped for
/// either (which closes the socket).
async fn until_deadline<C: Future>(
    connection: C,
    slot: &Slot,
    deadline: tokio::time::Instant,
    mut evicted: Pin<&mut WaitForCancellationFutureOwned>,
) -> Option<C::Output> {
    let mut connection = std::pin::pin!(connection);
    let mut first_request = std::pin::pin!(tokio::time::sleep_until(deadline));
    let mut waiting_for_first = true;
    loop {
        tokio::select! {
            served = &mut connection => return Some(served),
            () = &mut first_request, if waiting_for_first => {
                if !slot.is_proven() {
                    slot.timed_out();
                    tracing::debug!("no request within limits.handshake_timeout of accept");
                    return None;
                }
                waiting_for_first = false;
            }
            () = &mut evicted => {
                tracing::debug!("closed to make room (limits.max_pending_sockets)");
                return None;
            }
        }
    }
}

// === gRPC ===
//
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
