//! One connection as the upstream sees it (identity, connection state, event numbering), and
//! the calls the WebSocket edge makes when a client raises a user event.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::event::{ConnectBody, DeliveryError, Event, EventKind, MqttIds, SocketIoSocket};
use super::{ConnectAccepted, Upstream, UserEventOutcome};
use crate::message::{Data, Frame, Message, Metadata, close};
use crate::node::Node;
use crate::protocol::{self, AckError};
use crate::router::{Close, Connection, ConnectionId};

/// The upstream side of one accepted connection. The connection task owns it; events are
/// numbered from it and carry its connection state.
#[derive(Debug)]
pub(crate) struct Session {
    hub: Arc<str>,
    connection_id: ConnectionId,
    user_id: Option<Arc<str>>,
    subprotocol: Option<Arc<str>>,
    /// Set by `ce-connectionState` (or the stream's `connection_state`) of blocking answers.
    state: Mutex<Option<Arc<str>>>,
    /// `connect` was 0.
    next_sequence: AtomicU64,
    /// Whether `disconnected` has been raised: it is raised exactly once.
    disconnected: AtomicBool,
    /// For a Socket.IO socket: which one (every event carries it).
    socketio: Option<Arc<SocketIoSocket>>,
    /// For an MQTT session: its ids (every event carries them). The physical connection
    /// changes when a client resumes its session on a new socket.
    mqtt: Mutex<Option<Arc<MqttIds>>>,
    /// A Socket.IO connection in default mode (every event carries it).
    default_mode: bool,
}

impl Session {
    /// The session of a connection whose `connect` event was accepted: the user id and
    /// subprotocol are the backend's choice, else those of the `connect` event.
    pub(crate) fn new(connect: &Event, accepted: &ConnectAccepted) -> Self {
        let user_id = match &accepted.response.user_id {
            Some(user) if user.is_empty() => None,
            Some(user) => Some(user.as_str().into()),
            None => connect.user_id.clone(),
        };
        let subprotocol = match &accepted.response.subprotocol {
            Some(chosen) => Some(chosen.as_str().into()),
            None => connect.subprotocol.clone(),
        };
        Self {
            hub: connect.hub.clone(),
            connection_id: connect.connection_id.clone(),
            user_id,
            subprotocol,
            state: Mutex::new(accepted.state.as_deref().map(Into::into)),
            next_sequence: AtomicU64::new(1),
            disconnected: AtomicBool::new(false),
            socketio: connect.socketio.clone(),
            mqtt: Mutex::new(connect.mqtt.clone()),
            default_mode: connect.default_mode,
        }
    }

    /// The `connect` event of a connection being opened.
    pub(crate) fn connect_event(
        hub: Arc<str>,
        connection_id: ConnectionId,
        user_id: Option<&str>,
        subprotocol: Option<&str>,
        body: ConnectBody,
    ) -> Event {
        Event {
            hub,
            connection_id,
            user_id: user_id.map(Into::into),
            subprotocol: subprotocol.map(Into::into),
            state: None,
            sequence: 0,
            time: SystemTime::now(),
            kind: EventKind::Connect(body),
            socketio: None,
            mqtt: None,
            default_mode: false,
            mqtt_properties: Vec::new(),
        }
    }

    /// The hub (lower-cased).
    pub(crate) fn hub(&self) -> &str {
        &self.hub
    }

    /// Whether this is a Socket.IO connection in default mode.
    pub(crate) fn default_mode(&self) -> bool {
        self.default_mode
    }

    /// The connection id.
    pub(crate) fn connection_id(&self) -> &ConnectionId {
        &self.connection_id
    }

    /// The final user id (the backend's choice at connect, else the token's).
    #[cfg(test)]
    pub(crate) fn user_id(&self) -> Option<&str> {
        self.user_id.as_deref()
    }

    /// A new event of this connection, numbered and carrying the current state.
    pub(crate) fn event(&self, kind: EventKind) -> Event {
        Event {
            hub: self.hub.clone(),
            connection_id: self.connection_id.clone(),
            user_id: self.user_id.clone(),
            subprotocol: self.subprotocol.clone(),
            state: self.lock_state().clone(),
            sequence: self.next_sequence.fetch_add(1, Ordering::Relaxed),
            time: SystemTime::now(),
            kind,
            socketio: self.socketio.clone(),
            mqtt: self
                .mqtt
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
            default_mode: self.default_mode,
            mqtt_properties: Vec::new(),
        }
    }

    /// An MQTT session resumed on a new socket: later events name that socket
    /// (`ce-physicalConnectionId`); the session id stays.
    pub(crate) fn set_physical_connection(&self, physical_connection_id: String) {
        let mut ids = self
            .mqtt
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(current) = ids.as_ref() {
            *ids = Some(Arc::new(MqttIds {
                physical_connection_id,
                session_id: current.session_id.clone(),
            }));
        }
    }

    /// Applies the state of an answer: `None` keeps it, an empty string clears it.
    pub(crate) fn apply_state(&self, state: Option<String>) {
        if let Some(state) = state {
            *self.lock_state() = (!state.is_empty()).then(|| state.into());
        }
    }

    /// Marks `disconnected` as raised; false if it already was.
    pub(crate) fn mark_disconnected(&self) -> bool {
        !self.disconnected.swap(true, Ordering::AcqRel)
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, Option<Arc<str>>> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// An `event` message of a PubSub client (JSON or protobuf), taken out of the message parser
/// for the upstream.
#[derive(Debug)]
pub(crate) struct JsonEvent {
    /// The event name.
    pub(crate) name: String,
    /// Ack requested with this id.
    pub(crate) ack_id: Option<u64>,
    /// The payload, if any.
    pub(crate) data: Option<Data>,
    /// Its metadata, if any.
    pub(crate) metadata: Option<Metadata>,
}

/// Event names that are refused (acked `BadRequest`, never delivered): the dot-segments of
/// RFC 3986. As `{event}` of a webhook URL template they would not name a resource but
/// remove one path segment or none (`/api/{event}` → `/api/..` is `/`), so the event would
/// be posted to another URL than its own. Azure's emulator refuses both too (its names
/// start with a letter).
const REFUSED_EVENT_NAMES: [&str; 2] = [".", ".."];

/// Handles a JSON client's `event` message (spec §6.6): delivered as
/// `azure.webpubsub.user.<event>`; a reply with data goes back as a server message *before*
/// the ack; a failure is acked `InternalServerError`. Without a handler the event is acked and
/// dropped. Ack ids already processed are answered `Duplicate` without a delivery; the names
/// `.` and `..` are acked `BadRequest` without a delivery (the connection stays).
pub(crate) async fn on_json_event(
    upstream: &Upstream,
    node: &Node,
    session: &Session,
    conn: &Connection,
    event: JsonEvent,
) {
    let format = conn.format();
    let reply = |frame: Option<Frame>| {
        if let Some(frame) = frame {
            conn.send_frame(frame);
        }
    };
    if REFUSED_EVENT_NAMES.contains(&event.name.as_str()) {
        tracing::debug!(event = %event.name, "event name refused");
        if let Some(id) = event.ack_id {
            let why = format!(
                "The event name '{}' is not allowed: '.' and '..' are not event names.",
                event.name
            );
            reply(protocol::ack(
                format,
                id,
                Some((AckError::BadRequest, &why)),
            ));
        }
        return;
    }
    if let Some(id) = event.ack_id
        && conn.acks().is_duplicate(id)
    {
        let why = format!("Message with ack-id: {id} has been processed");
        return reply(protocol::ack(format, id, Some((AckError::Duplicate, &why))));
    }
    let outcome = upstream
        .user_event(session, &event.name, event.data, event.metadata)
        .await;
    let ok = match outcome {
        UserEventOutcome::NoHandler | UserEventOutcome::Replied(None, _) => true,
        UserEventOutcome::Replied(Some(data), metadata) => {
            // A server message, numbered like any other for reliable clients.
            node.send_to_client(conn, &Message::from_server(data).with_metadata(metadata));
            true
        }
        UserEventOutcome::Failed(_) => false,
    };
    if let Some(id) = event.ack_id {
        if ok {
            conn.acks().record(id);
            reply(protocol::ack(format, id, None));
        } else {
            reply(protocol::ack(
                format,
                id,
                Some((AckError::InternalServerError, "Internal server error")),
            ));
        }
    }
}

/// An `invoke` of a JSON client, taken out of the message parser for the upstream.
#[derive(Debug)]
pub(crate) struct Invocation {
    /// The client's id of the call.
    pub(crate) id: String,
    /// The event name.
    pub(crate) name: String,
    /// The payload, if any.
    pub(crate) data: Option<Data>,
    /// Its metadata, if any.
    pub(crate) metadata: Option<Metadata>,
}

/// Handles a JSON client's `invoke` (spec part 2 §4.1): delivered as the blocking user event
/// `azure.webpubsub.user.<event>`, like an `event` message, and answered with an
/// `invokeResponse` of the same id: the handler's data, or an error. Error names: the
/// handler's refusal by status (`BadRequest` for 4xx but `Unauthorized` 401, `Forbidden` 403
/// and `NotFound` 404, with the handler's own text as the message), `InternalServerError` for
/// a 5xx or a handler that cannot be reached or understood, `Timeout` past `timeout`, and
/// `NotFound` when no handler takes the event. The caller bounds the wait and may drop this
/// future to cancel the call (a client's `cancelInvocation`, or its socket's end): nothing is
/// sent then.
pub(crate) async fn on_invoke(
    upstream: &Upstream,
    session: &Session,
    conn: &Connection,
    invocation: Invocation,
    timeout: std::time::Duration,
) {
    let format = conn.format();
    let respond = |result: Result<Option<&Data>, (&str, &str)>| {
        if let Some(frame) = protocol::invoke_response(format, &invocation.id, result) {
            conn.send_frame(frame);
        }
    };
    if REFUSED_EVENT_NAMES.contains(&invocation.name.as_str()) {
        let why = format!(
            "The event name '{}' is not allowed: '.' and '..' are not event names.",
            invocation.name
        );
        return respond(Err(("BadRequest", &why)));
    }
    let call = upstream.user_event(
        session,
        &invocation.name,
        invocation.data.clone(),
        invocation.metadata.clone(),
    );
    let outcome = match tokio::time::timeout(timeout, call).await {
        Ok(outcome) => outcome,
        Err(_) => UserEventOutcome::Failed(DeliveryError::Timeout),
    };
    match outcome {
        UserEventOutcome::Replied(data, _) => respond(Ok(data.as_ref())),
        UserEventOutcome::NoHandler => {
            let why = format!("No event handler takes the event '{}'.", invocation.name);
            respond(Err(("NotFound", &why)));
        }
        UserEventOutcome::Failed(e) => {
            let (name, why) = invoke_error(&e, timeout);
            respond(Err((name, &why)));
        }
    }
}

/// The error name and message of a failed invocation.
fn invoke_error(e: &DeliveryError, timeout: std::time::Duration) -> (&'static str, String) {
    match e {
        DeliveryError::Rejected(status, detail) => {
            let name = match status {
                401 => "Unauthorized",
                403 => "Forbidden",
                404 => "NotFound",
                400..=499 => "BadRequest",
                _ => "InternalServerError",
            };
            let why = detail
                .clone()
                .unwrap_or_else(|| format!("The event handler answered HTTP {status}."));
            (name, why)
        }
        // Only a `connect` of an MQTT client is refused this way, never an invocation.
        DeliveryError::RejectedMqtt(status, _) => (
            "InternalServerError",
            format!("The event handler answered HTTP {status}."),
        ),
        DeliveryError::Timeout => (
            "Timeout",
            format!(
                "The event handler did not answer within {} s.",
                timeout.as_secs_f64()
            ),
        ),
        DeliveryError::NoListener => (
            "InternalServerError",
            "No backend listens on the event stream for this hub.".into(),
        ),
        DeliveryError::Unreachable(_)
        | DeliveryError::InvalidResponse(_)
        | DeliveryError::NotValidated(_) => (
            "InternalServerError",
            "The event handler failed to handle the invocation.".into(),
        ),
    }
}

/// Handles a simple client's frame (spec §2.4): delivered as `azure.webpubsub.user.message`;
/// a reply with data goes back as a frame. Without a handler, or when delivery fails, the
/// connection is closed with 1011.
pub(crate) async fn on_simple_frame(
    upstream: &Upstream,
    session: &Session,
    conn: &Connection,
    data: Data,
) {
    let reason = match upstream
        .user_event(session, "message", Some(data), None)
        .await
    {
        UserEventOutcome::Replied(reply, _) => {
            if let Some(data) = reply {
                conn.send_frame(match data {
                    Data::Text(t) | Data::Json(t) => Frame::Text(t),
                    Data::Binary(b) | Data::Protobuf(b) => Frame::Binary(b),
                });
            }
            return;
        }
        UserEventOutcome::NoHandler => "No event handler is configured for the 'message' event.",
        UserEventOutcome::Failed(_) => "The event handler failed to handle the 'message' event.",
    };
    conn.close(Close::Server {
        code: close::INTERNAL_ERROR,
        reason: reason.into(),
        discard_queued: false,
    });
}

/// The body of the `connect` event of an upgrade request (spec §6.4): the token's claims
/// (already verified), the query without `access_token`, the headers without
/// `Authorization` and the WebSocket handshake's own, and the offered subprotocols.
pub(crate) fn connect_body(
    query: &[(String, String)],
    headers: &http::HeaderMap,
    token: Option<&str>,
) -> ConnectBody {
    const LEFT_OUT: &[&str] = &[
        "authorization",
        "connection",
        "upgrade",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
    ];
    let mut body = ConnectBody::default();
    if let Some(claims) = token.and_then(token_claims) {
        for (name, value) in claims {
            let values = match value {
                serde_json::Value::Array(items) => items.into_iter().map(claim_text).collect(),
                serde_json::Value::Null => Vec::new(),
                other => vec![claim_text(other)],
            };
            body.claims.insert(name, values);
        }
    }
    for (name, value) in query {
        if name != "access_token" {
            body.query
                .entry(name.clone())
                .or_default()
                .push(value.clone());
        }
    }
    for (name, value) in headers {
        if LEFT_OUT.contains(&name.as_str()) {
            continue;
        }
        if let Ok(value) = value.to_str() {
            body.headers
                .entry(name.as_str().to_owned())
                .or_default()
                .push(value.to_owned());
        }
    }
    body.subprotocols = headers
        .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    body
}

/// The claims of a JWT whose signature has already been verified.
fn token_claims(token: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A claim value as text: strings as they are, anything else as JSON.
fn claim_text(value: serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    }
}

/// Applies an accepted `connect` to the token's claims: `userId` replaces the user (empty:
/// anonymous), `roles` replace the roles, `groups` are joined too. Returns the subprotocol to
/// use: its canonical name if this server speaks it (else the client is a simple client) and
/// the value to echo in `Sec-WebSocket-Protocol`.
pub(crate) fn apply_connect(
    accepted: &ConnectAccepted,
    claims: &mut hubcast_auth::ClientClaims,
    negotiated: Option<(crate::protocol::Subprotocol, &str)>,
) -> (Option<crate::protocol::Subprotocol>, Option<String>) {
    let response = &accepted.response;
    if let Some(user) = &response.user_id {
        claims.user_id = (!user.is_empty()).then(|| user.clone());
    }
    if let Some(roles) = &response.roles {
        claims.roles = roles.clone();
    }
    for group in response.groups.iter().flatten() {
        if !claims.groups.contains(group) {
            claims.groups.push(group.clone());
        }
    }
    match &response.subprotocol {
        Some(chosen) => (
            crate::protocol::negotiate([chosen.as_str()]).map(|(p, _)| p),
            Some(chosen.clone()),
        ),
        None => (
            negotiated.map(|(p, _)| p),
            negotiated.map(|(_, offered)| offered.to_owned()),
        ),
    }
}

/// Why a connection ended, for its `disconnected` event: the server's close reason, or none
/// when the client closed it.
pub(crate) fn disconnect_reason(conn: &Connection) -> Option<String> {
    match conn.outbox().current_close() {
        Some(Close::Server { reason, .. }) => Some(reason),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect() -> Event {
        Session::connect_event(
            "chat".into(),
            ConnectionId::generate(),
            Some("alice"),
            Some("json.webpubsub.azure.v1"),
            ConnectBody::default(),
        )
    }

    #[test]
    fn events_count_up_after_connect_and_carry_state() {
        let connect = connect();
        assert_eq!(connect.sequence, 0);
        let session = Session::new(&connect, &ConnectAccepted::default());
        assert_eq!(session.user_id(), Some("alice"));
        let first = session.event(EventKind::Connected);
        assert_eq!((first.sequence, first.state.as_deref()), (1, None));
        session.apply_state(Some("s1".into()));
        session.apply_state(None);
        assert_eq!(
            session.event(EventKind::Connected).state.as_deref(),
            Some("s1")
        );
        session.apply_state(Some(String::new()));
        assert_eq!(session.event(EventKind::Connected).state, None);
        assert!(session.mark_disconnected());
        assert!(!session.mark_disconnected(), "exactly once");
    }

    #[test]
    fn the_backend_may_change_user_and_subprotocol() {
        let connect = connect();
        let mut accepted = ConnectAccepted::default();
        accepted.response.user_id = Some("bob".into());
        accepted.state = Some("st".into());
        let session = Session::new(&connect, &accepted);
        let event = session.event(EventKind::Connected);
        assert_eq!(event.user_id.as_deref(), Some("bob"));
        assert_eq!(event.state.as_deref(), Some("st"));
        accepted.response.user_id = Some(String::new());
        assert_eq!(Session::new(&connect, &accepted).user_id(), None);
    }
}
