//! Upstream events: telling the backend about connections and client events, and applying
//! its answers (spec §6).
//!
//! Events are raised by the WebSocket edge through one API, [`Upstream`], and delivered by
//! one of two transports behind the [`EventSink`] role:
//! - webhooks ([`webhook::WebhookHandler`]): Azure's CloudEvents HTTP binary mode, one sink
//!   per configured event handler;
//! - the gRPC event stream ([`stream::Listeners`]): backends that dial in with
//!   `hubcast.v1.Events/Listen` and answer on the same stream.
//!
//! Which sink takes an event is decided here, per hub ([`EventStreamMode`]): a listener that
//! subscribes to the event first, then the first webhook handler that selects it. Everything
//! else is shared by both transports: the event model ([`event`]), the connection state and
//! event numbering ([`session::Session`]), the application of `connect` answers and user-event
//! replies, and the bounded, ordered delivery of the non-blocking `connected` and
//! `disconnected` events.
//!
//! # Layout
//! - [`event`]: transport-agnostic events, replies and delivery errors.
//! - [`handler`]: event selection (user-event patterns, system events).
//! - [`session`]: per-connection state, and the calls the WebSocket edge makes for client
//!   frames and `event` messages.
//! - [`webhook`]: CloudEvents over HTTP: request building, abuse protection, the client.
//! - [`stream`]: the gRPC event stream: listener registry and the tonic service.
//!
//! # Bounds
//! Every resource is bounded ([`UpstreamConfig`](crate::config::UpstreamConfig)): one
//! timeout per attempt, one concurrency limit for all webhook requests, a fixed number of
//! delivery workers each with a bounded queue, bounded listener queues, and a response-size
//! limit. A slow backend slows its own events down; it cannot exhaust memory.

pub(crate) mod event;
pub(crate) mod handler;
pub(crate) mod session;
pub(crate) mod stream;
pub(crate) mod tunnel;
pub(crate) mod webhook;

use crate::telemetry::Metrics;
use std::collections::HashMap;
use std::future::Future;
use std::hash::BuildHasher;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tracing::Instrument as _;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::{Cluster, RelayedEvents};
use crate::config::{Config, EventStreamMode, UpstreamConfig};
use hubcast_auth::KeyRing;

pub(crate) use event::{
    ConnectResponse, DeliveryError, Event, EventKind, MqttDisconnectPacket, MqttDisconnected,
    MqttIds, MqttRefusal, MqttUserProperty, Reply, SocketIoSocket,
};
pub(crate) use session::{
    Invocation, JsonEvent, Session, apply_connect, connect_body, disconnect_reason, on_invoke,
    on_json_event, on_simple_frame,
};

use event::{EventName, ReplyBody};
use stream::Listeners;
use tunnel::Tunnels;
use webhook::{WebhookHandler, WebhookShared};

/// A boxed future, for the dyn-compatible [`EventSink`].
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Something that delivers events to a backend: the role both transports play.
///
/// Contract: `deliver` resolves once the event is delivered. For blocking events (`connect`,
/// user events) that is when the backend has answered, and the answer is the [`Reply`]; for
/// non-blocking ones the reply is empty. It never takes longer than the configured timeout
/// per attempt; a webhook retries non-blocking events itself (408, 5xx, network errors), so
/// callers never retry. Errors say what the client should learn ([`DeliveryError`]).
pub(crate) trait EventSink: Send + Sync + std::fmt::Debug {
    /// Delivers `event`.
    fn deliver<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<Reply, DeliveryError>>;
}

/// Why the configuration of upstream events is unusable.
#[derive(Debug, thiserror::Error)]
#[error("hub '{hub}', event handler #{index}: {message}")]
pub(crate) struct HandlerConfigError {
    hub: String,
    index: usize,
    message: String,
}

/// Where the package `@azure/web-pubsub-socket.io` takes its events (its `TUNNEL_PATH`).
const SOCKETIO_DEFAULT_PATH: &str = "tunnel:///eventhandler/";

/// The webhook handlers and stream mode of one `[hubs.X]` entry.
#[derive(Debug)]
struct HubUpstream {
    handlers: Vec<Arc<WebhookHandler>>,
    mode: EventStreamMode,
}

/// The refusal of a `connect`: the HTTP status and reason the upgrade request gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConnectRefusal {
    /// HTTP status of the refused upgrade.
    pub(crate) status: u16,
    /// Plain-text reason for the client.
    pub(crate) message: String,
    /// For an MQTT client: the CONNACK code the backend chose, if it chose one.
    pub(crate) mqtt: Option<MqttRefusal>,
}

/// An accepted `connect`: what the backend changed (nothing when no handler took the event).
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnectAccepted {
    /// The backend's answer.
    pub(crate) response: ConnectResponse,
    /// The connection state it set.
    pub(crate) state: Option<String>,
}

/// The outcome of a user event.
#[derive(Debug)]
pub(crate) enum UserEventOutcome {
    /// Nothing selects the event: the edge keeps its behaviour without a handler.
    NoHandler,
    /// The backend answered; `Some` data goes back to the sender, with the metadata the
    /// backend gave it.
    Replied(
        Option<crate::message::Data>,
        Option<crate::message::Metadata>,
    ),
    /// Delivery failed (the reason is logged): the sender learns of a failure (an invoking
    /// client also of its kind).
    Failed(DeliveryError),
}

/// The upstream of every hub: decides where each event goes and delivers it.
#[derive(Debug)]
pub(crate) struct Upstream {
    hubs: HashMap<String, HubUpstream>,
    listeners: Arc<Listeners>,
    /// Azure's tunnels (`tunnel:///` handlers).
    tunnels: Arc<Tunnels>,
    /// The implicit handler of Socket.IO default mode: every event to a tunnel of the hub,
    /// at the package's path.
    socketio_default: Arc<WebhookHandler>,
    settings: UpstreamConfig,
    /// One queue per delivery worker; a connection's events always use the same one.
    queues: Vec<mpsc::Sender<Event>>,
    hasher: std::collections::hash_map::RandomState,
    workers: TaskTracker,
    closing: CancellationToken,
}

impl Upstream {
    /// Builds the upstream from the configuration and starts its delivery workers (so it
    /// must be called within a tokio runtime). With a `cluster`, event-stream listeners and
    /// Azure's tunnels receive the events of every node's connections.
    ///
    /// # Errors
    /// An event handler setting is invalid (URL, event names, auth).
    pub(crate) fn new(
        config: &Config,
        keys: KeyRing,
        endpoint: &str,
        metrics: Metrics,
        cluster: Option<(Arc<Cluster>, RelayedEvents)>,
    ) -> Result<Arc<Self>, HandlerConfigError> {
        let (cluster, relayed) = cluster.unzip();
        let cluster_for_relay = cluster.clone();
        let settings = config.upstream.clone();
        let origin = settings
            .request_origin
            .clone()
            .unwrap_or_else(|| endpoint_host(endpoint));
        let tunnels = Tunnels::new(settings.max_response_bytes, cluster.clone());
        let shared = Arc::new(WebhookShared::new(
            &settings,
            keys.clone(),
            origin,
            metrics,
            tunnels.clone(),
        ));
        let socketio_default = WebhookHandler::new(
            &crate::config::EventHandlerConfig {
                url_template: SOCKETIO_DEFAULT_PATH.into(),
                user_event_pattern: Some("*".into()),
                system_events: vec!["connect".into(), "connected".into(), "disconnected".into()],
                auth: None,
                http2: false,
            },
            shared.clone(),
        )
        .map(Arc::new)
        .expect("the built-in Socket.IO handler is valid");
        let mut hubs = HashMap::new();
        for (name, hub) in &config.hubs {
            let handlers = hub
                .event_handlers
                .iter()
                .enumerate()
                .map(|(i, h)| {
                    WebhookHandler::new(h, shared.clone())
                        .map(Arc::new)
                        .map_err(|message| HandlerConfigError {
                            hub: name.clone(),
                            index: i + 1,
                            message,
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            hubs.insert(
                name.to_ascii_lowercase(),
                HubUpstream {
                    handlers,
                    mode: hub.event_stream,
                },
            );
        }
        let workers = TaskTracker::new();
        let closing = CancellationToken::new();
        let count = settings.workers.max(1);
        let per_worker = (settings.queue_capacity / count).max(1);
        let upstream = Arc::new_cyclic(|this: &Weak<Self>| {
            let queues = (0..count)
                .map(|_| {
                    let (tx, rx) = mpsc::channel(per_worker);
                    spawn_worker(&workers, rx, closing.clone(), this.clone());
                    tx
                })
                .collect();
            Self {
                hubs,
                listeners: Listeners::new(settings.timeout, cluster.clone()),
                tunnels,
                socketio_default,
                settings,
                queues,
                hasher: Default::default(),
                workers,
                closing,
            }
        });
        if let (Some(cluster), Some(relayed)) = (cluster_for_relay, relayed) {
            upstream.workers.spawn(stream::serve_relayed(
                Arc::downgrade(upstream.listeners()),
                Arc::downgrade(upstream.tunnels()),
                cluster,
                relayed,
                upstream.workers.clone(),
                upstream.closing.clone(),
            ));
        }
        Ok(upstream)
    }

    /// The tunnel registry, for the tunnel edge.
    pub(crate) fn tunnels(&self) -> &Arc<Tunnels> {
        &self.tunnels
    }

    /// The listener registry, for the gRPC service.
    pub(crate) fn listeners(&self) -> &Arc<Listeners> {
        &self.listeners
    }

    /// Whether a new Socket.IO connection of `hub` runs in Azure's default mode: the hub has
    /// no event handler configured and a backend has a tunnel open for it (as
    /// `useAzureSocketIO` does). Its events then all go to the tunnels; without a tunnel the
    /// hub stays in serverless mode.
    pub(crate) fn socketio_default_mode(&self, hub: &str) -> bool {
        self.hub(hub).is_none_or(|h| h.handlers.is_empty()) && self.tunnels.any_for_hub(hub)
    }

    fn hub(&self, hub: &str) -> Option<&HubUpstream> {
        self.hubs.get(hub).or_else(|| self.hubs.get("*"))
    }

    /// Whether anything may take an event named `name` of `hub` (so that connections of hubs
    /// without handlers or listeners cost no task and no queue slot).
    fn routes(&self, hub: &str, name: &EventName<'_>) -> bool {
        if self.listeners.wants(hub, name) {
            return true;
        }
        match self.hub(hub) {
            None => false,
            Some(h) => match h.mode {
                EventStreamMode::Required => true,
                EventStreamMode::Fallback => h.handlers.iter().any(|w| w.selects(name)),
            },
        }
    }

    /// Delivers `event` to whoever takes it. `Ok(None)`: nothing selects the event.
    async fn dispatch(&self, event: &Event) -> Result<Option<Reply>, DeliveryError> {
        if event.default_mode {
            return self.socketio_default.deliver(event).await.map(Some);
        }
        let name = event.kind.name();
        let mode = self.hub(&event.hub).map(|h| h.mode).unwrap_or_default();
        let mut stream_failed = false;
        if self.listeners.wants(&event.hub, &name) {
            match self.listeners.deliver(event).await {
                // Every listener that took it went away: fall back below.
                Err(DeliveryError::NoListener) => stream_failed = true,
                other => return other.map(Some),
            }
        }
        match mode {
            EventStreamMode::Required => {
                if stream_failed || !self.listeners.any_for_hub(&event.hub) {
                    Err(DeliveryError::NoListener)
                } else {
                    Ok(None)
                }
            }
            EventStreamMode::Fallback => {
                let handler = self
                    .hub(&event.hub)
                    .and_then(|h| h.handlers.iter().find(|h| h.selects(&name)));
                match handler {
                    Some(h) => h.deliver(event).await.map(Some),
                    None if stream_failed => Err(DeliveryError::NoListener),
                    None => Ok(None),
                }
            }
        }
    }

    /// Raises the blocking `connect` event (built with [`Session::connect_event`]) and decides
    /// on the connection; an accepted connection gets its [`Session`].
    ///
    /// The delivery runs in a task of its own: if the client gives up (the handshake future
    /// is dropped) after the backend accepted, the backend still gets its `disconnected`.
    pub(crate) async fn connect(
        self: &Arc<Self>,
        event: Event,
    ) -> Result<(ConnectAccepted, Session), ConnectRefusal> {
        if !event.default_mode && !self.routes(&event.hub, &EventName::Connect) {
            let accepted = ConnectAccepted::default();
            let session = Session::new(&event, &accepted);
            return Ok((accepted, session));
        }
        let offered = match &event.kind {
            EventKind::Connect(body) => body.subprotocols.clone(),
            _ => Vec::new(),
        };
        let (tx, rx) = oneshot::channel();
        let this = self.clone();
        self.workers.spawn(
            async move {
                let outcome =
                    decide_connect(this.dispatch(&event).await, &offered).map(|accepted| {
                        let session = Session::new(&event, &accepted);
                        (accepted, session)
                    });
                if let Err(Ok((_, session))) = tx.send(outcome) {
                    tracing::debug!("client left while its connect event was handled");
                    this.disconnected(&session, Some("The client left during the handshake."))
                        .await;
                }
            }
            // The webhook call belongs to the handshake's trace.
            .in_current_span(),
        );
        rx.await.unwrap_or_else(|_| {
            Err(ConnectRefusal {
                status: 500,
                message: "the connect event handler failed".into(),
                mqtt: None,
            })
        })
    }

    /// Queues the non-blocking `connected` event. Never waits: with the queue full, the event
    /// is dropped and logged.
    pub(crate) fn connected(&self, session: &Session) {
        if !session.default_mode() && !self.routes(session.hub(), &EventName::Connected) {
            return;
        }
        let event = session.event(EventKind::Connected);
        if let Err(e) = self.queue_for(session).try_send(event) {
            tracing::warn!(error = %e, "upstream queue full: `connected` event dropped");
        }
    }

    /// Queues the non-blocking group presence event `gp.joined` (`joined`) or `gp.left` of a
    /// client's join or leave of `group`, when a handler or listener takes it. Never waits:
    /// with the queue full, the event is dropped and logged.
    pub(crate) fn group_presence(&self, session: &Session, group: &str, joined: bool) {
        let name = if joined {
            EventName::Joined
        } else {
            EventName::Left
        };
        if !self.routes(session.hub(), &name) {
            return;
        }
        let group = group.to_owned();
        let event = session.event(if joined {
            EventKind::GroupJoined { group }
        } else {
            EventKind::GroupLeft { group }
        });
        if let Err(e) = self.queue_for(session).try_send(event) {
            tracing::warn!(error = %e, "upstream queue full: group presence event dropped");
        }
    }

    /// Queues the non-blocking `disconnected` event, waiting up to the upstream timeout for
    /// room in a full queue. Raised at most once per session.
    pub(crate) async fn disconnected(&self, session: &Session, reason: Option<&str>) {
        self.disconnected_mqtt(session, reason, None).await;
    }

    /// [`Upstream::disconnected`] of an MQTT session, with the `mqtt` member of its body.
    pub(crate) async fn disconnected_mqtt(
        &self,
        session: &Session,
        reason: Option<&str>,
        mqtt: Option<MqttDisconnected>,
    ) {
        if !session.mark_disconnected()
            || !(session.default_mode() || self.routes(session.hub(), &EventName::Disconnected))
        {
            return;
        }
        let event = session.event(EventKind::Disconnected {
            reason: reason.map(str::to_owned),
            mqtt,
        });
        let queue = self.queue_for(session);
        match tokio::time::timeout(self.settings.timeout, queue.send(event)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => tracing::warn!("upstream stopped: `disconnected` event dropped"),
            Err(_) => tracing::warn!("upstream queue full: `disconnected` event dropped"),
        }
    }

    /// Raises a blocking user event and applies the connection state of the answer.
    pub(crate) async fn user_event(
        &self,
        session: &Session,
        name: &str,
        data: Option<crate::message::Data>,
        metadata: Option<crate::message::Metadata>,
    ) -> UserEventOutcome {
        match self.user_event_reply(session, name, data, metadata).await {
            Ok(None) => UserEventOutcome::NoHandler,
            Ok(Some(Reply { body, metadata, .. })) => match body {
                ReplyBody::Data(data) => UserEventOutcome::Replied(Some(data), metadata),
                ReplyBody::Empty | ReplyBody::Connect(_) => {
                    UserEventOutcome::Replied(None, metadata)
                }
            },
            Err(e) => {
                tracing::warn!(event = name, error = %e, "user event failed");
                UserEventOutcome::Failed(e)
            }
        }
    }

    /// [`Upstream::user_event`], with the failure as it came, for an edge that tells its
    /// client why (MQTT's `azure-status-code`): `Ok(None)` when nothing selects the event,
    /// `Ok(Some(data))` when the backend answered.
    pub(crate) async fn user_event_answer(
        &self,
        session: &Session,
        name: &str,
        data: Option<crate::message::Data>,
        mqtt_properties: Vec<MqttUserProperty>,
    ) -> Result<Option<(Option<crate::message::Data>, Vec<MqttUserProperty>)>, DeliveryError> {
        let mut event = session.event(EventKind::User {
            name: name.to_owned(),
            data,
            metadata: None,
        });
        event.mqtt_properties = mqtt_properties;
        let Some(mut reply) = self.dispatch(&event).await? else {
            return Ok(None);
        };
        session.apply_state(reply.state.take());
        let data = match reply.body {
            ReplyBody::Data(data) => Some(data),
            ReplyBody::Empty | ReplyBody::Connect(_) => None,
        };
        Ok(Some((data, reply.mqtt_properties)))
    }

    /// Raises a blocking user event and applies the connection state of the answer; `None`
    /// when nothing selects the event.
    async fn user_event_reply(
        &self,
        session: &Session,
        name: &str,
        data: Option<crate::message::Data>,
        metadata: Option<crate::message::Metadata>,
    ) -> Result<Option<Reply>, DeliveryError> {
        let event = session.event(EventKind::User {
            name: name.to_owned(),
            data,
            metadata,
        });
        let Some(mut reply) = self.dispatch(&event).await? else {
            return Ok(None);
        };
        session.apply_state(reply.state.take());
        Ok(Some(reply))
    }

    fn queue_for(&self, session: &Session) -> &mpsc::Sender<Event> {
        let hash = self.hasher.hash_one(session.connection_id());
        &self.queues[(hash % self.queues.len() as u64) as usize]
    }

    /// Stops: the listeners' streams end, queued non-blocking events are delivered for at
    /// most `grace`, then the workers stop.
    pub(crate) async fn shutdown(&self, grace: Duration) {
        self.closing.cancel();
        self.workers.close();
        if tokio::time::timeout(grace, self.workers.wait())
            .await
            .is_err()
        {
            tracing::warn!("upstream events still queued at the end of the grace period");
        }
        self.listeners.close_all().await;
        self.tunnels.close_all().await;
    }
}

/// Turns the outcome of a `connect` delivery into the decision on the connection.
fn decide_connect(
    outcome: Result<Option<Reply>, DeliveryError>,
    offered: &[String],
) -> Result<ConnectAccepted, ConnectRefusal> {
    let refuse = |status: u16, message: String| {
        Err(ConnectRefusal {
            status,
            message,
            mqtt: None,
        })
    };
    match outcome {
        Ok(None) => Ok(ConnectAccepted::default()),
        Ok(Some(reply)) => {
            let mut response = match reply.body {
                ReplyBody::Connect(r) => r,
                ReplyBody::Empty | ReplyBody::Data(_) => ConnectResponse::default(),
            };
            if let Some(chosen) = response.subprotocol.take().filter(|s| !s.is_empty()) {
                // Echoed in the client's own spelling: clients compare it byte for byte.
                let Some(offered) = offered.iter().find(|o| o.eq_ignore_ascii_case(&chosen)) else {
                    tracing::warn!(subprotocol = %chosen, "connect handler chose a subprotocol the client did not offer");
                    return refuse(
                        500,
                        "the event handler selected a subprotocol the client did not offer".into(),
                    );
                };
                response.subprotocol = Some(offered.clone());
            }
            Ok(ConnectAccepted {
                response,
                state: reply.state.filter(|s| !s.is_empty()),
            })
        }
        Err(e) => {
            tracing::info!(error = %e, "connect refused by upstream");
            let status = e.connect_status();
            let message = e.client_message();
            match e {
                DeliveryError::RejectedMqtt(_, refusal) => Err(ConnectRefusal {
                    status,
                    message,
                    mqtt: Some(refusal),
                }),
                _ => refuse(status, message),
            }
        }
    }
}

/// Runs one delivery worker: takes the events of its queue in order and delivers each
/// (with the webhook's retries) before the next, so a connection's `connected` always
/// precedes its `disconnected`. After `closing` it drains what is queued and stops.
fn spawn_worker(
    tracker: &TaskTracker,
    mut rx: mpsc::Receiver<Event>,
    closing: CancellationToken,
    upstream: Weak<Upstream>,
) {
    tracker.spawn(async move {
        loop {
            let event = tokio::select! {
                biased;
                event = rx.recv() => event,
                () = closing.cancelled() => rx.try_recv().ok(),
            };
            let Some(event) = event else { break };
            let Some(this) = upstream.upgrade() else {
                break;
            };
            if let Err(e) = this.dispatch(&event).await {
                tracing::warn!(
                    hub = %event.hub,
                    connection.id = %event.connection_id,
                    event = %event.kind.name(),
                    error = %e,
                    "non-blocking event not delivered"
                );
            }
        }
    });
}

/// The host name of an endpoint URL (no scheme, no port): the default
/// `WebHook-Request-Origin` (spec §6.2).
fn endpoint_host(endpoint: &str) -> String {
    let rest = endpoint
        .split_once("://")
        .map(|(_, r)| r)
        .unwrap_or(endpoint);
    let authority = rest.split('/').next().unwrap_or(rest);
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6).to_owned();
    }
    authority
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(authority)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_is_the_bare_host() {
        assert_eq!(endpoint_host("http://127.0.0.1:8080"), "127.0.0.1");
        assert_eq!(endpoint_host("https://x.example.com"), "x.example.com");
        assert_eq!(endpoint_host("http://[::1]:80"), "::1");
    }

    #[test]
    fn connect_subprotocol_must_be_offered() {
        let reply = |sub: &str| {
            Ok(Some(Reply {
                body: ReplyBody::Connect(ConnectResponse {
                    subprotocol: Some(sub.into()),
                    ..Default::default()
                }),
                state: Some("s".into()),
                metadata: None,
                mqtt_properties: Vec::new(),
            }))
        };
        let offered = ["json.webpubsub.azure.v1".to_owned()];
        let ok = decide_connect(reply("JSON.webpubsub.azure.v1"), &offered).expect("offered");
        assert_eq!(ok.state.as_deref(), Some("s"));
        let refused = decide_connect(reply("mqtt"), &offered).expect_err("not offered");
        assert_eq!(refused.status, 500);
        let refused = decide_connect(Err(DeliveryError::Rejected(403, None)), &offered)
            .expect_err("rejected");
        assert_eq!(refused.status, 403);
        let refused = decide_connect(Err(DeliveryError::Timeout), &offered).expect_err("timeout");
        assert_eq!(refused.status, 504);
    }
}
