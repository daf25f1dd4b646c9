//! The gRPC event stream (`hubcast.v1.Events/Listen`): backends dial in, subscribe, receive
//! events and answer the blocking ones on the same stream.
//!
//! [`Listeners`] is the registry and the [`EventSink`]: it picks one subscribed listener per
//! event (round robin), and re-offers a blocking event to another listener when the one that
//! had it goes away before answering. In a cluster it also knows the other nodes' listeners
//! ([`remote`]) and relays to them what no listener of this node takes. [`EventsService`] is
//! the tonic service that registers a listener per `Listen` call.

mod remote;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, UNIX_EPOCH};

use hubcast_proto::v1 as pb;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::event::{
    ConnectBody, ConnectResponse, DeliveryError, Event, EventKind, EventName, MqttIds, MqttRefusal,
    MqttUserProperty, Reply, ReplyBody,
};
use super::handler::Selection;
use super::{BoxFuture, EventSink};
use crate::cluster::Cluster;
use crate::cluster::wire::ListenerAd;
use crate::message::{Data, Utf8Bytes};
use remote::RemoteListeners;
pub(crate) use remote::serve_relayed;

/// Events that may wait for one listener's stream before senders wait.
const LISTENER_QUEUE: usize = 1024;

/// One backend's `Listen` stream.
#[derive(Debug)]
struct Listener {
    id: u64,
    /// Lower-cased hub names; `*` is every hub.
    hubs: Vec<String>,
    selection: Selection,
    /// As the backend sent it, for the other nodes of a cluster.
    subscription: pb::Subscription,
    tx: mpsc::Sender<Result<pb::Event, Status>>,
    /// Blocking events sent and not answered yet, by stream event id.
    pending: Mutex<HashMap<u64, oneshot::Sender<pb::EventReply>>>,
    next_event_id: AtomicU64,
    /// Fires when the stream ends: unanswered events are offered elsewhere.
    gone: CancellationToken,
}

/// Why one listener could not take an event.
enum SendFailure {
    /// It went away; another listener may take the event.
    Gone,
    /// A final failure.
    Failed(DeliveryError),
}

impl Listener {
    fn has_hub(&self, hub: &str) -> bool {
        self.hubs.iter().any(|h| h == "*" || h == hub)
    }

    fn wants(&self, hub: &str, event: &EventName<'_>) -> bool {
        !self.gone.is_cancelled() && self.has_hub(hub) && self.selection.selects(event)
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<pb::EventReply>>> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sends `message` (numbered here) and, if it is blocking, waits for the reply.
    async fn send(
        &self,
        mut message: pb::Event,
        timeout: Duration,
    ) -> Result<Option<pb::EventReply>, SendFailure> {
        let id = self.next_event_id.fetch_add(1, Ordering::Relaxed);
        message.event_id = id;
        let answer = if message.reply_expected {
            let (tx, rx) = oneshot::channel();
            self.pending().insert(id, tx);
            Some(rx)
        } else {
            None
        };
        let exchange = async {
            self.tx
                .send(Ok(message))
                .await
                .map_err(|_| SendFailure::Gone)?;
            let Some(answer) = answer else {
                return Ok(None);
            };
            tokio::select! {
                reply = answer => reply.map(Some).map_err(|_| SendFailure::Gone),
                () = self.gone.cancelled() => Err(SendFailure::Gone),
            }
        };
        let outcome = tokio::time::timeout(timeout, exchange).await;
        self.pending().remove(&id);
        match outcome {
            Err(_) => Err(SendFailure::Failed(DeliveryError::Timeout)),
            Ok(outcome) => outcome,
        }
    }

    /// Hands a reply to the event waiting for it (late or unknown replies are dropped).
    fn complete(&self, reply: pb::EventReply) {
        if let Some(waiter) = self.pending().remove(&reply.event_id) {
            let _ = waiter.send(reply);
        }
    }
}

/// Every listening backend: this node's, and in a cluster the other nodes'.
#[derive(Debug)]
pub(crate) struct Listeners {
    list: RwLock<Vec<Arc<Listener>>>,
    cursor: AtomicUsize,
    next_id: AtomicU64,
    timeout: Duration,
    /// The other nodes' listeners (cluster only).
    remote: Option<RemoteListeners>,
}

impl Listeners {
    /// The registry; with a cluster, it also takes the events other nodes relay here.
    pub(crate) fn new(timeout: Duration, cluster: Option<Arc<Cluster>>) -> Arc<Self> {
        Arc::new(Self {
            list: RwLock::new(Vec::new()),
            cursor: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            timeout,
            remote: cluster.map(|c| RemoteListeners::new(c, timeout)),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<Listener>>> {
        self.list
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Arc<Listener>>> {
        self.list
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether a listener (of any node) subscribes to `event` of `hub`.
    pub(crate) fn wants(&self, hub: &str, event: &EventName<'_>) -> bool {
        self.wants_here(hub, event) || self.remote.as_ref().is_some_and(|r| r.wants(hub, event))
    }

    /// Whether a listener of this node subscribes to `event` of `hub`.
    fn wants_here(&self, hub: &str, event: &EventName<'_>) -> bool {
        self.read().iter().any(|l| l.wants(hub, event))
    }

    /// Whether any listener (of any node) subscribes to `hub` at all.
    pub(crate) fn any_for_hub(&self, hub: &str) -> bool {
        self.read()
            .iter()
            .any(|l| !l.gone.is_cancelled() && l.has_hub(hub))
            || self.remote.as_ref().is_some_and(|r| r.any_for_hub(hub))
    }

    /// What the other nodes should know of this node's listeners now (cluster only). Made
    /// while `list` is locked, so a later version always describes a later list.
    fn ad(&self, list: &[Arc<Listener>]) -> Option<ListenerAd> {
        let remote = self.remote.as_ref()?;
        Some(ListenerAd {
            version: remote.next_ad_version(),
            subscriptions: list
                .iter()
                .filter(|l| !l.gone.is_cancelled())
                .map(|l| l.subscription.clone())
                .collect(),
            // The cluster keeps this node's tunnels in the advertisement.
            tunnel_hubs: Vec::new(),
        })
    }

    /// Tells the other nodes (cluster only); with `wait`, returns once all of them know.
    async fn advertise(&self, ad: Option<ListenerAd>, wait: bool) {
        if let (Some(remote), Some(ad)) = (&self.remote, ad) {
            remote.advertise(ad, wait).await;
        }
    }

    /// The next listener (round robin) that wants the event and has not been tried.
    fn pick(&self, hub: &str, event: &EventName<'_>, tried: &[u64]) -> Option<Arc<Listener>> {
        let list = self.read();
        let n = list.len();
        if n == 0 {
            return None;
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| &list[(start + i) % n])
            .find(|l| l.wants(hub, event) && !tried.contains(&l.id))
            .cloned()
    }

    fn add(
        &self,
        subscription: pb::Subscription,
        hubs: Vec<String>,
        selection: Selection,
    ) -> (
        Arc<Listener>,
        ReceiverStream<Result<pb::Event, Status>>,
        Option<ListenerAd>,
    ) {
        let (tx, rx) = mpsc::channel(LISTENER_QUEUE);
        let listener = Arc::new(Listener {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            hubs,
            selection,
            subscription,
            tx,
            pending: Mutex::new(HashMap::new()),
            next_event_id: AtomicU64::new(1),
            gone: CancellationToken::new(),
        });
        let mut list = self.write();
        list.push(listener.clone());
        let ad = self.ad(&list);
        drop(list);
        (listener, ReceiverStream::new(rx), ad)
    }

    fn remove(&self, listener: &Listener) -> Option<ListenerAd> {
        listener.gone.cancel();
        let mut list = self.write();
        list.retain(|l| l.id != listener.id);
        let ad = self.ad(&list);
        drop(list);
        // Waiters see `gone` and move on; dropping their senders wakes any that missed it.
        listener.pending().clear();
        ad
    }

    /// Ends every stream (shutdown), and tells the other nodes.
    pub(crate) async fn close_all(&self) {
        let (all, ad) = {
            let mut list = self.write();
            let all = std::mem::take(&mut *list);
            (all, self.ad(&list))
        };
        for listener in all {
            listener.gone.cancel();
            listener.pending().clear();
            let _ = listener
                .tx
                .try_send(Err(Status::unavailable("the server is shutting down")));
        }
        self.advertise(ad, false).await;
    }

    /// Offers `event` to this node's listeners, then to the other nodes'.
    async fn send(&self, event: &Event) -> Result<Reply, DeliveryError> {
        let name = event.kind.name();
        if self.wants_here(&event.hub, &name) {
            let message = to_proto(event, 0, name.is_blocking());
            match self.send_here(&event.hub, &name, message).await {
                Ok(Some(reply)) => return from_proto(&event.kind, reply),
                Ok(None) => return Ok(Reply::default()),
                // Every listener here that took it went away: the other nodes may have one.
                Err(DeliveryError::NoListener) => {}
                Err(e) => return Err(e),
            }
        }
        match &self.remote {
            Some(remote) => remote.send(event).await,
            None => Err(DeliveryError::NoListener),
        }
    }

    /// Offers an event another node relayed here to this node's listeners.
    async fn send_local(
        &self,
        message: pb::Event,
    ) -> Result<Option<pb::EventReply>, DeliveryError> {
        // The hub is lower-cased already: the relaying node built the message from its event.
        let name = match &message.kind {
            Some(pb::event::Kind::Connect(_)) => EventName::Connect,
            Some(pb::event::Kind::Connected(_)) => EventName::Connected,
            Some(pb::event::Kind::Disconnected(_)) => EventName::Disconnected,
            Some(pb::event::Kind::GroupJoined(_)) => EventName::Joined,
            Some(pb::event::Kind::GroupLeft(_)) => EventName::Left,
            Some(pb::event::Kind::UserEvent(u)) => EventName::User(&u.name),
            None => return Err(DeliveryError::NoListener),
        };
        self.send_here(&message.hub, &name, message.clone()).await
    }

    /// Offers `message` to this node's listeners that want it, one after the other until one
    /// takes it.
    async fn send_here(
        &self,
        hub: &str,
        name: &EventName<'_>,
        message: pb::Event,
    ) -> Result<Option<pb::EventReply>, DeliveryError> {
        let mut tried = Vec::new();
        loop {
            let Some(listener) = self.pick(hub, name, &tried) else {
                return Err(DeliveryError::NoListener);
            };
            tried.push(listener.id);
            match listener.send(message.clone(), self.timeout).await {
                Ok(reply) => return Ok(reply),
                Err(SendFailure::Failed(e)) => return Err(e),
                Err(SendFailure::Gone) => {
                    tracing::info!(listener = listener.id, event = %name, "listener went away; offering the event to another");
                }
            }
        }
    }
}

impl EventSink for Listeners {
    fn deliver<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<Reply, DeliveryError>> {
        Box::pin(self.send(event))
    }
}

// === impl EventsService ===

/// The tonic service of `hubcast.v1.Events`.
#[derive(Debug, Clone)]
pub(crate) struct EventsService {
    listeners: Arc<Listeners>,
    tasks: tokio_util::task::TaskTracker,
}

impl EventsService {
    pub(crate) fn new(listeners: Arc<Listeners>) -> Self {
        Self {
            listeners,
            tasks: tokio_util::task::TaskTracker::new(),
        }
    }
}

#[tonic::async_trait]
impl pb::events_server::Events for EventsService {
    type ListenStream = ReceiverStream<Result<pb::Event, Status>>;

    async fn listen(
        &self,
        request: Request<Streaming<pb::ListenRequest>>,
    ) -> Result<Response<Self::ListenStream>, Status> {
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("the stream ended before a subscription"))?;
        let Some(pb::listen_request::Request::Subscription(subscription)) = first.request else {
            return Err(Status::invalid_argument(
                "the first message of Listen must be a subscription",
            ));
        };
        let (hubs, selection) = parse_subscription(&subscription)?;
        let (listener, stream, ad) = self.listeners.add(subscription, hubs, selection);
        tracing::info!(listener = listener.id, hubs = ?listener.hubs, "event stream listener connected");
        // In a cluster, the stream opens once every node relays events to it.
        self.listeners.advertise(ad, true).await;
        let listeners = self.listeners.clone();
        self.tasks.spawn(async move {
            loop {
                let message = tokio::select! {
                    m = inbound.message() => m,
                    () = listener.gone.cancelled() => break,
                };
                match message {
                    Ok(Some(pb::ListenRequest {
                        request: Some(pb::listen_request::Request::Reply(reply)),
                    })) => listener.complete(reply),
                    Ok(Some(_)) => {
                        let _ = listener
                            .tx
                            .send(Err(Status::invalid_argument(
                                "after the subscription, only replies may be sent",
                            )))
                            .await;
                        break;
                    }
                    Ok(None) => break,
                    Err(status) => {
                        tracing::debug!(listener = listener.id, %status, "listener stream failed");
                        break;
                    }
                }
            }
            let ad = listeners.remove(&listener);
            tracing::info!(listener = listener.id, "event stream listener disconnected");
            listeners.advertise(ad, false).await;
        });
        Ok(Response::new(stream))
    }
}

fn parse_subscription(s: &pb::Subscription) -> Result<(Vec<String>, Selection), Status> {
    let hubs: Vec<String> = s
        .hubs
        .iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect();
    if hubs.is_empty() {
        return Err(Status::invalid_argument("the subscription names no hub"));
    }
    let pattern = (!s.user_event_pattern.is_empty()).then_some(s.user_event_pattern.as_str());
    let mut selection = Selection::new(pattern, []).map_err(Status::invalid_argument)?;
    for kind in &s.system_events {
        selection = selection.with_system(match pb::SystemEventKind::try_from(*kind) {
            Ok(pb::SystemEventKind::Connect) => EventName::Connect,
            Ok(pb::SystemEventKind::Connected) => EventName::Connected,
            Ok(pb::SystemEventKind::Disconnected) => EventName::Disconnected,
            Ok(pb::SystemEventKind::GroupJoined) => EventName::Joined,
            Ok(pb::SystemEventKind::GroupLeft) => EventName::Left,
            _ => {
                return Err(Status::invalid_argument(format!(
                    "invalid system event kind {kind}"
                )));
            }
        });
    }
    Ok((hubs, selection))
}

// === conversions ===

fn string_lists(
    map: &std::collections::BTreeMap<String, Vec<String>>,
) -> HashMap<String, pb::StringList> {
    map.iter()
        .map(|(k, v)| (k.clone(), pb::StringList { values: v.clone() }))
        .collect()
}

fn to_payload(data: &Data) -> pb::Payload {
    use pb::payload::Data as P;
    let (data, content_type) = match data {
        Data::Text(t) => (P::Text(t.as_str().to_owned()), ""),
        Data::Json(t) => (P::Json(t.as_str().to_owned()), ""),
        Data::Binary(b) => (P::Binary(b.clone()), ""),
        Data::Protobuf(b) => (P::Binary(b.clone()), "application/x-protobuf"),
    };
    pb::Payload {
        data: Some(data),
        content_type: content_type.to_owned(),
        ..Default::default()
    }
}

fn from_payload(payload: pb::Payload) -> Result<Data, DeliveryError> {
    use pb::payload::Data as P;
    match payload.data {
        Some(P::Text(t)) => Ok(Data::Text(t.into())),
        Some(P::Json(j)) => {
            serde_json::from_str::<serde::de::IgnoredAny>(&j).map_err(|e| {
                DeliveryError::InvalidResponse(format!("the reply's json payload is not JSON: {e}"))
            })?;
            Ok(Data::Json(Utf8Bytes::from(j)))
        }
        Some(P::Binary(b)) if payload.content_type == "application/x-protobuf" => {
            Ok(Data::Protobuf(b))
        }
        Some(P::Binary(b)) => Ok(Data::Binary(b)),
        None => Err(DeliveryError::InvalidResponse(
            "the reply's payload has no data".into(),
        )),
    }
}

fn to_proto(event: &Event, id: u64, blocking: bool) -> pb::Event {
    use pb::event::Kind;
    let time = event.time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let kind = match &event.kind {
        EventKind::Connect(body) => Kind::Connect(pb::ConnectEvent {
            claims: string_lists(&body.claims),
            query: string_lists(&body.query),
            headers: string_lists(&body.headers),
            subprotocols: body.subprotocols.clone(),
            client_certificates: Vec::new(),
        }),
        EventKind::Connected => Kind::Connected(pb::ConnectedEvent {}),
        EventKind::Disconnected { reason, .. } => Kind::Disconnected(pb::DisconnectedEvent {
            reason: reason.clone().unwrap_or_default(),
        }),
        EventKind::GroupJoined { group } => Kind::GroupJoined(pb::GroupPresenceEvent {
            group: group.clone(),
        }),
        EventKind::GroupLeft { group } => Kind::GroupLeft(pb::GroupPresenceEvent {
            group: group.clone(),
        }),
        EventKind::User {
            name,
            data,
            metadata,
        } => Kind::UserEvent(pb::UserEvent {
            name: name.clone(),
            data: data.as_ref().map(to_payload),
            metadata: metadata
                .iter()
                .flat_map(|m| m.iter())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }),
    };
    pb::Event {
        event_id: id,
        hub: event.hub.to_string(),
        connection_id: event.connection_id.to_string(),
        user_id: event.user_id.as_deref().unwrap_or_default().to_owned(),
        subprotocol: event.subprotocol.as_deref().unwrap_or_default().to_owned(),
        connection_state: event.state.as_deref().unwrap_or_default().to_owned(),
        time: Some(prost_types::Timestamp {
            seconds: time.as_secs() as i64,
            nanos: time.subsec_nanos() as i32,
        }),
        reply_expected: blocking,
        sequence: event.sequence,
        kind: Some(kind),
        socketio: event.socketio.as_ref().map(|s| pb::SocketIoSocket {
            namespace: s.namespace.clone(),
            socket_id: s.socket_id.clone(),
        }),
        mqtt: event.mqtt.as_ref().map(|ids| mqtt_event(ids, &event.kind)),
    }
}

/// The MQTT side of an MQTT client's event: what the webhook sends as `ce-*` headers and
/// `mqtt` body members.
fn mqtt_event(ids: &MqttIds, kind: &EventKind) -> pb::MqttEvent {
    let properties = |props: &[MqttUserProperty]| {
        props
            .iter()
            .map(|p| pb::MqttUserProperty {
                name: p.name.clone(),
                value: p.value.clone(),
            })
            .collect()
    };
    let connect = match kind {
        EventKind::Connect(ConnectBody {
            mqtt: Some(mqtt), ..
        }) => Some(pb::MqttConnect {
            protocol_version: u32::from(mqtt.protocol_version),
            clean_start: mqtt.clean_start,
            username: mqtt.username.clone(),
            password: mqtt.password.as_ref().and_then(|p| {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD
                    .decode(p)
                    .ok()
                    .map(Into::into)
            }),
            user_properties: mqtt
                .user_properties
                .as_deref()
                .map_or_else(Vec::new, properties),
        }),
        _ => None,
    };
    let disconnected = match kind {
        EventKind::Disconnected {
            mqtt: Some(mqtt), ..
        } => Some(pb::MqttDisconnected {
            initiated_by_client: mqtt.initiated_by_client,
            disconnect_packet: mqtt
                .disconnect_packet
                .as_ref()
                .map(|p| pb::MqttDisconnectPacket {
                    code: u32::from(p.code),
                    user_properties: properties(&p.user_properties),
                }),
        }),
        _ => None,
    };
    pb::MqttEvent {
        physical_connection_id: ids.physical_connection_id.clone(),
        session_id: match kind {
            EventKind::Connect(_) => String::new(),
            _ => ids.session_id.clone(),
        },
        connect,
        disconnected,
    }
}

fn from_proto(kind: &EventKind, reply: pb::EventReply) -> Result<Reply, DeliveryError> {
    use pb::event_reply::Result as R;
    let mut metadata = None;
    let body = match (reply.result, kind) {
        (None, _) => ReplyBody::Empty,
        (Some(R::Error(error)), _) => {
            let status = match pb::EventErrorCode::try_from(error.code) {
                Ok(pb::EventErrorCode::BadRequest) => 400,
                Ok(pb::EventErrorCode::Unauthorized) => 401,
                Ok(pb::EventErrorCode::Forbidden) => 403,
                _ => 500,
            };
            tracing::debug!(status, message = %error.message, "listener failed the event");
            if let (Some(code), EventKind::Connect(_)) = (error.mqtt_code, kind) {
                return Err(DeliveryError::RejectedMqtt(
                    status,
                    MqttRefusal {
                        code,
                        reason: (!error.message.is_empty()).then_some(error.message),
                        user_properties: Vec::new(),
                    },
                ));
            }
            let detail = (!error.message.is_empty()).then_some(error.message);
            return Err(DeliveryError::Rejected(status, detail));
        }
        (Some(R::Connect(c)), EventKind::Connect(_)) => ReplyBody::Connect(ConnectResponse {
            user_id: c.user_id,
            groups: (!c.groups.is_empty()).then_some(c.groups),
            roles: c.roles.map(|r| r.values),
            subprotocol: c.subprotocol,
            mqtt: None,
        }),
        (Some(R::UserEvent(u)), EventKind::User { .. }) => match u.data {
            Some(mut payload) => {
                metadata = crate::message::metadata_from(std::mem::take(&mut payload.metadata))
                    .map_err(|e| {
                        DeliveryError::InvalidResponse(format!("the reply's payload {e}"))
                    })?;
                ReplyBody::Data(from_payload(payload)?)
            }
            None => ReplyBody::Empty,
        },
        (Some(_), _) => {
            return Err(DeliveryError::InvalidResponse(
                "the reply's result does not match the event".into(),
            ));
        }
    };
    Ok(Reply {
        body,
        state: reply.connection_state,
        metadata,
        mqtt_properties: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::ConnectionId;

    fn user_event() -> Event {
        Event {
            hub: "chat".into(),
            connection_id: ConnectionId::generate(),
            user_id: None,
            subprotocol: None,
            state: Some("st".into()),
            sequence: 3,
            time: std::time::SystemTime::now(),
            kind: EventKind::User {
                name: "e".into(),
                data: Some(Data::Protobuf(bytes::Bytes::from_static(b"\x01"))),
                metadata: crate::message::metadata_from([("k".into(), "v".into())]).expect("valid"),
            },
            socketio: None,
            mqtt: None,
            default_mode: false,
            mqtt_properties: Vec::new(),
        }
    }

    #[test]
    fn events_and_replies_convert() {
        let event = user_event();
        let pb_event = to_proto(&event, 7, true);
        assert_eq!((pb_event.event_id, pb_event.sequence), (7, 3));
        assert_eq!(pb_event.connection_state, "st");
        let Some(pb::event::Kind::UserEvent(u)) = pb_event.kind else {
            panic!("user event expected");
        };
        assert_eq!(u.metadata.get("k").map(String::as_str), Some("v"));
        let data = from_payload(u.data.expect("payload")).expect("valid");
        assert!(matches!(data, Data::Protobuf(_)));
        let reply = pb::EventReply {
            event_id: 7,
            result: Some(pb::event_reply::Result::Error(pb::EventError {
                code: pb::EventErrorCode::Forbidden as i32,
                message: "not you".into(),
                mqtt_code: None,
            })),
            connection_state: None,
        };
        assert_eq!(
            from_proto(&event.kind, reply).map(|_| ()),
            Err(DeliveryError::Rejected(403, Some("not you".into())))
        );
    }

    #[test]
    fn subscriptions_are_checked() {
        let bad = pb::Subscription::default();
        assert!(parse_subscription(&bad).is_err());
        let ok = pb::Subscription {
            hubs: vec!["Chat".into()],
            user_event_pattern: "*".into(),
            system_events: vec![pb::SystemEventKind::Connect as i32],
        };
        let (hubs, selection) = parse_subscription(&ok).expect("valid");
        assert_eq!(hubs, ["chat"]);
        assert!(selection.selects(&EventName::Connect));
        assert!(!selection.selects(&EventName::Disconnected));
    }
}
