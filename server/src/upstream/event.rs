//! Transport-agnostic events, replies and delivery errors.
//!
//! Both transports carry the same [`Event`] and come back with the same [`Reply`] or
//! [`DeliveryError`]; only the encoding differs (CloudEvents over HTTP, protobuf over gRPC).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::message::{Data, Metadata};
use crate::router::ConnectionId;

/// One event of one connection.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    /// The hub (lower-cased).
    pub(crate) hub: Arc<str>,
    /// The connection.
    pub(crate) connection_id: ConnectionId,
    /// The user: on `connect` the token's `sub`, later the final user id.
    pub(crate) user_id: Option<Arc<str>>,
    /// The subprotocol: on `connect` the one the server would pick, later the selected one.
    pub(crate) subprotocol: Option<Arc<str>>,
    /// The connection state set by earlier answers (never on `connect`).
    pub(crate) state: Option<Arc<str>>,
    /// Per-connection sequence number (`ce-id`): `connect` is 0, later events count up.
    pub(crate) sequence: u64,
    /// When the event was raised.
    pub(crate) time: SystemTime,
    /// What happened.
    pub(crate) kind: EventKind,
    /// For a Socket.IO client: the namespace socket the event is about.
    pub(crate) socketio: Option<Arc<SocketIoSocket>>,
    /// An event of a Socket.IO connection in Azure's default mode (spec part 2 §2.4): it
    /// goes to the hub's tunnels (`@azure/web-pubsub-socket.io`), whatever handlers say.
    pub(crate) default_mode: bool,
    /// For an MQTT client: its session and WebSocket (`ce-sessionId`,
    /// `ce-physicalConnectionId`).
    pub(crate) mqtt: Option<Arc<MqttIds>>,
    /// The MQTT 5 user properties of a request on `$webpubsub/server/events/{event}`: one
    /// `mqtt-{name}: {value}` header each (Azure's CloudEvents for MQTT).
    pub(crate) mqtt_properties: Vec<MqttUserProperty>,
}

/// What Azure's MQTT CloudEvents name besides the connection (the client id): the MQTT
/// session, and the WebSocket that carries it. The JS middleware knows an MQTT event by
/// `ce-physicalConnectionId` (with `ce-subprotocol: mqtt`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MqttIds {
    /// One per WebSocket.
    pub(crate) physical_connection_id: String,
    /// One per MQTT session; not sent on `connect` (no session exists yet).
    pub(crate) session_id: String,
}

/// A Socket.IO socket (one namespace of an Engine.IO connection): Socket.IO clients raise
/// their events per socket, with `ce-namespace` and `ce-socketId` (Azure's serverless mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SocketIoSocket {
    /// The namespace, e.g. `/chat`.
    pub(crate) namespace: String,
    /// The socket id.
    pub(crate) socket_id: String,
}

/// What happened.
#[derive(Debug, Clone)]
pub(crate) enum EventKind {
    /// A client is connecting (blocking).
    Connect(ConnectBody),
    /// A client has connected (non-blocking).
    Connected,
    /// A client has gone (non-blocking).
    Disconnected {
        /// Why, if the server closed the connection.
        reason: Option<String>,
        /// For an MQTT session: who ended it, and the DISCONNECT packet if there was one.
        mqtt: Option<MqttDisconnected>,
    },
    /// A client joined a group (non-blocking, `azure.webpubsub.gp.joined`).
    GroupJoined {
        /// The group.
        group: String,
    },
    /// A client left a group, or ended while in it (non-blocking, `azure.webpubsub.gp.left`).
    GroupLeft {
        /// The group.
        group: String,
    },
    /// A user event (blocking): a JSON client's `event` message or a simple client's frame
    /// (`message`).
    User {
        /// The event name.
        name: String,
        /// Its data, if any.
        data: Option<Data>,
        /// The client's metadata for it (`x-webpubsub-metadata-<key>` headers upstream).
        metadata: Option<Metadata>,
    },
}

impl EventKind {
    /// The event's name, for selection and logs.
    pub(crate) fn name(&self) -> EventName<'_> {
        match self {
            EventKind::Connect(_) => EventName::Connect,
            EventKind::Connected => EventName::Connected,
            EventKind::Disconnected { .. } => EventName::Disconnected,
            EventKind::GroupJoined { .. } => EventName::Joined,
            EventKind::GroupLeft { .. } => EventName::Left,
            EventKind::User { name, .. } => EventName::User(name),
        }
    }
}

/// An event's name: a system event or a user event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventName<'a> {
    /// `connect`.
    Connect,
    /// `connected`.
    Connected,
    /// `disconnected`.
    Disconnected,
    /// Group presence `joined`.
    Joined,
    /// Group presence `left`.
    Left,
    /// A user event.
    User(&'a str),
}

impl EventName<'_> {
    /// Whether the event waits for the backend's answer.
    pub(crate) fn is_blocking(&self) -> bool {
        matches!(self, EventName::Connect | EventName::User(_))
    }

    /// The `event` label of the webhook metrics: the system event's name, or `user` for
    /// every user event. Clients choose user event names, so they never become label values
    /// (each would be a series of its own).
    pub(crate) fn metric_label(&self) -> &'static str {
        match self {
            EventName::Connect => "connect",
            EventName::Connected => "connected",
            EventName::Disconnected => "disconnected",
            EventName::Joined => "joined",
            EventName::Left => "left",
            EventName::User(_) => "user",
        }
    }

    /// The CloudEvents `ce-type`.
    pub(crate) fn ce_type(&self) -> String {
        match self {
            EventName::User(name) => format!("azure.webpubsub.user.{name}"),
            EventName::Joined | EventName::Left => format!("azure.webpubsub.gp.{self}"),
            system => format!("azure.webpubsub.sys.{system}"),
        }
    }
}

impl fmt::Display for EventName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EventName::Connect => "connect",
            EventName::Connected => "connected",
            EventName::Disconnected => "disconnected",
            EventName::Joined => "joined",
            EventName::Left => "left",
            EventName::User(name) => name,
        })
    }
}

/// The body of a `connect` event (spec §6.4). Every map value is a list of strings.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct ConnectBody {
    /// The claims of the access token.
    pub(crate) claims: BTreeMap<String, Vec<String>>,
    /// The query parameters, without `access_token`.
    pub(crate) query: BTreeMap<String, Vec<String>>,
    /// The request headers, without `Authorization` and the WebSocket handshake headers.
    pub(crate) headers: BTreeMap<String, Vec<String>>,
    /// The subprotocols the client offered, in order.
    pub(crate) subprotocols: Vec<String>,
    /// TLS client certificates: always empty (the client listener speaks plain HTTP; a TLS
    /// terminator in front does not pass certificates on).
    #[serde(rename = "clientCertificates")]
    pub(crate) client_certificates: Vec<serde_json::Value>,
    /// MQTT clients: what their CONNECT packet said (spec part 2 §1.3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) mqtt: Option<MqttConnectBody>,
}

/// The `mqtt` member of an MQTT client's `connect` event.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct MqttConnectBody {
    /// 4 for MQTT 3.1.1, 5 for MQTT 5.0.
    #[serde(rename = "protocolVersion")]
    pub(crate) protocol_version: u8,
    /// The CONNECT's clean session (3.1.1) or clean start (5.0) flag.
    #[serde(rename = "cleanStart")]
    pub(crate) clean_start: bool,
    /// The CONNECT's user name.
    pub(crate) username: Option<String>,
    /// The CONNECT's password, base64-encoded (it is binary data).
    pub(crate) password: Option<String>,
    /// The CONNECT's MQTT 5 user properties.
    #[serde(rename = "userProperties")]
    pub(crate) user_properties: Option<Vec<MqttUserProperty>>,
}

/// An MQTT 5 user property.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MqttUserProperty {
    /// Its name.
    pub(crate) name: String,
    /// Its value.
    pub(crate) value: String,
}

/// The `mqtt` member of an MQTT session's `disconnected` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct MqttDisconnected {
    /// Whether the client ended the session (a DISCONNECT, or its socket went away).
    #[serde(rename = "initiatedByClient")]
    pub(crate) initiated_by_client: bool,
    /// The DISCONNECT packet the client sent or the server sent; none after an IO error (and
    /// for a server close of an MQTT 3.1.1 session, which has no server DISCONNECT).
    #[serde(rename = "disconnectPacket")]
    pub(crate) disconnect_packet: Option<MqttDisconnectPacket>,
}

/// A DISCONNECT packet, as the `disconnected` event describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct MqttDisconnectPacket {
    /// Its reason code (0 for MQTT 3.1.1, whose DISCONNECT has none).
    pub(crate) code: u8,
    /// Its MQTT 5 user properties.
    #[serde(rename = "userProperties")]
    pub(crate) user_properties: Vec<MqttUserProperty>,
}

/// A backend's refusal of an MQTT client's `connect`: the CONNACK code it chose (the body
/// `{"mqtt":{"code":…,"reason":…}}` of a 4xx/5xx answer, or the gRPC `EventError.mqtt_code`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MqttRefusal {
    /// The CONNACK return code (3.1.1) or reason code (5.0), as the backend sent it; the edge
    /// checks it against the client's protocol version.
    pub(crate) code: u32,
    /// The reason, for the MQTT 5 CONNACK's reason string.
    pub(crate) reason: Option<String>,
    /// User properties for the MQTT 5 CONNACK.
    pub(crate) user_properties: Vec<MqttUserProperty>,
}

/// The body of a refused MQTT `connect`, as `@azure/web-pubsub-express` writes it.
#[derive(Debug, Deserialize)]
struct MqttRefusalBody {
    mqtt: MqttRefusalFields,
}

#[derive(Debug, Deserialize)]
struct MqttRefusalFields {
    code: u32,
    #[serde(default)]
    reason: Option<String>,
    #[serde(rename = "userProperties", default)]
    user_properties: Option<Vec<MqttUserProperty>>,
}

impl MqttRefusal {
    /// Reads the body of a refused `connect`; `None` when it is not an MQTT refusal.
    pub(crate) fn from_body(body: &[u8]) -> Option<Self> {
        let body: MqttRefusalBody = serde_json::from_slice(body).ok()?;
        Some(Self {
            code: body.mqtt.code,
            reason: body.mqtt.reason.filter(|r| !r.is_empty()),
            user_properties: body.mqtt.user_properties.unwrap_or_default(),
        })
    }
}

/// A backend's acceptance of a `connect`; every field optional (spec §6.4).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub(crate) struct ConnectResponse {
    /// Replaces the token's user id.
    #[serde(rename = "userId", default)]
    pub(crate) user_id: Option<String>,
    /// Groups to join, in addition to the token's.
    #[serde(default)]
    pub(crate) groups: Option<Vec<String>>,
    /// Replaces the token's roles when present.
    #[serde(default)]
    pub(crate) roles: Option<Vec<String>>,
    /// The subprotocol to select (one the client offered).
    #[serde(default)]
    pub(crate) subprotocol: Option<String>,
    /// For an MQTT client: what its CONNACK carries (MQTT 5 user properties).
    #[serde(default)]
    pub(crate) mqtt: Option<MqttConnectAnswer>,
}

/// The `mqtt` member of an accepted MQTT `connect`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub(crate) struct MqttConnectAnswer {
    /// User properties for the MQTT 5 CONNACK.
    #[serde(rename = "userProperties", default)]
    pub(crate) user_properties: Option<Vec<MqttUserProperty>>,
}

/// A successful answer of the backend.
#[derive(Debug, Clone, Default)]
pub(crate) struct Reply {
    /// What it said.
    pub(crate) body: ReplyBody,
    /// The new connection state: `None` keeps it, `Some("")` clears it.
    pub(crate) state: Option<String>,
    /// Metadata for the message that carries a user event's answer to its sender (webhook
    /// `X-WebPubSub-Metadata-<key>` response headers, the reply payload's `metadata`).
    pub(crate) metadata: Option<Metadata>,
    /// The `mqtt-{name}` headers of an answer to a user event: the MQTT 5 user properties
    /// of its reply to an MQTT client.
    pub(crate) mqtt_properties: Vec<MqttUserProperty>,
}

/// What a successful answer carries.
#[derive(Debug, Clone, Default)]
pub(crate) enum ReplyBody {
    /// Nothing (`204`, an empty body, or a non-blocking event).
    #[default]
    Empty,
    /// The answer to `connect`.
    Connect(ConnectResponse),
    /// Data for the sender of a user event.
    Data(Data),
}

/// Why an event could not be delivered or was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DeliveryError {
    /// The backend answered with this non-2xx HTTP status (or the stream equivalent), with
    /// its detail (a webhook's text body, a listener's error message) when it gave one. The
    /// detail reaches a client only as the error of an `invoke`: the caller asked the backend
    /// directly, and the backend chose what to say.
    #[error("the event handler answered HTTP {0}")]
    Rejected(u16, Option<String>),
    /// The backend refused an MQTT client's `connect` with this HTTP status (or the stream
    /// equivalent) and a CONNACK code.
    #[error("the event handler refused the MQTT connection (HTTP {0}, code {code})", code = .1.code)]
    RejectedMqtt(u16, MqttRefusal),
    /// No answer within the upstream timeout.
    #[error("the event handler did not answer in time")]
    Timeout,
    /// The handler could not be reached (connection refused, reset, DNS, TLS).
    #[error("the event handler is unreachable: {0}")]
    Unreachable(String),
    /// The answer could not be understood.
    #[error("invalid answer from the event handler: {0}")]
    InvalidResponse(String),
    /// The handler URL did not pass abuse-protection validation (spec §6.2).
    #[error("the event handler did not pass abuse protection validation: {0}")]
    NotValidated(String),
    /// The hub needs a listener on the event stream and none is there (or every listener
    /// that took the event went away).
    #[error("no backend listens on the event stream for this hub")]
    NoListener,
}

impl DeliveryError {
    /// The HTTP status a refused `connect` gets.
    pub(crate) fn connect_status(&self) -> u16 {
        match self {
            DeliveryError::Rejected(status @ 400..=599, _)
            | DeliveryError::RejectedMqtt(status @ 400..=599, _) => *status,
            DeliveryError::Rejected(..) | DeliveryError::RejectedMqtt(..) => 500,
            DeliveryError::Timeout => 504,
            DeliveryError::Unreachable(_)
            | DeliveryError::InvalidResponse(_)
            | DeliveryError::NotValidated(_) => 502,
            DeliveryError::NoListener => 503,
        }
    }

    /// What a refused client is told: the kind of failure, never the backend's details.
    pub(crate) fn client_message(&self) -> String {
        match self {
            DeliveryError::Rejected(status, _) => {
                format!("the connection was rejected by the event handler (HTTP {status})")
            }
            DeliveryError::RejectedMqtt(_, refusal) => match &refusal.reason {
                Some(reason) => reason.clone(),
                None => "the connection was rejected by the event handler".into(),
            },
            DeliveryError::Timeout => "the connect event handler did not answer in time".into(),
            DeliveryError::Unreachable(_) => "the connect event handler is unreachable".into(),
            DeliveryError::InvalidResponse(_) => {
                "the connect event handler gave an invalid answer".into()
            }
            DeliveryError::NotValidated(_) => {
                "the connect event handler did not pass abuse protection validation".into()
            }
            DeliveryError::NoListener => {
                "no backend is available for this hub; try again later".into()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_types() {
        assert_eq!(EventName::Connect.ce_type(), "azure.webpubsub.sys.connect");
        assert_eq!(
            EventName::Disconnected.ce_type(),
            "azure.webpubsub.sys.disconnected"
        );
        assert_eq!(
            EventName::User("chat").ce_type(),
            "azure.webpubsub.user.chat"
        );
        assert!(EventName::User("x").is_blocking());
        assert!(!EventName::Connected.is_blocking());
    }

    #[test]
    fn connect_response_fields_are_optional() {
        let r: ConnectResponse = serde_json::from_str("{}").expect("empty object");
        assert_eq!(r, ConnectResponse::default());
        let r: ConnectResponse = serde_json::from_str(
            r#"{"userId":"u","groups":["g"],"roles":[],"subprotocol":"json.webpubsub.azure.v1","extra":1}"#,
        )
        .expect("full object");
        assert_eq!(r.user_id.as_deref(), Some("u"));
        assert_eq!(r.roles, Some(vec![]));
    }
}
