//! What nodes say to each other over Redis pub/sub: one protobuf [`Envelope`] per Redis
//! message. Control-plane mutations travel as the `hubcast.v1.BatchOperation` the edges
//! already build, so a remote node applies exactly the request the caller made, through the
//! same code as a local call.

use hubcast_proto::v1 as pb;

/// One message between nodes.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Envelope {
    /// The sending node's id (its own broadcasts come back to it and are skipped).
    #[prost(string, tag = "1")]
    pub(crate) origin: String,
    /// Non-zero when the sender waits for a [`Reply`] with this id on its node channel.
    #[prost(uint64, tag = "2")]
    pub(crate) request_id: u64,
    /// What it carries.
    #[prost(oneof = "Body", tags = "3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 20")]
    pub(crate) body: Option<Body>,
    /// The W3C `traceparent` of the publishing span (empty when traces are off), so the
    /// receiving node's work continues the sender's trace.
    #[prost(string, tag = "7")]
    pub(crate) traceparent: String,
}

/// The payload of an [`Envelope`].
#[derive(Clone, PartialEq, prost::Oneof)]
pub(crate) enum Body {
    /// A control-plane mutation to apply to this node's connections.
    #[prost(message, tag = "3")]
    Op(pb::BatchOperation),
    /// A control-plane question about this node's connections.
    #[prost(message, tag = "4")]
    Query(Query),
    /// The answer to a request.
    #[prost(message, tag = "5")]
    Reply(Reply),
    /// A client's `sendToGroup` (it carries the sender's user id, which service sends lack).
    #[prost(message, tag = "6")]
    GroupSend(GroupSend),
    /// The sender's event-stream listeners, so that this node relays events to it.
    #[prost(message, tag = "8")]
    Listeners(ListenerAd),
    /// An event for this node's event-stream listeners, relayed by the node that holds the
    /// connection; answered with an [`EventAnswer`] in the [`Reply`] body.
    /// Boxed: the largest variant by far, and the rarest.
    #[prost(message, boxed, tag = "9")]
    Event(Box<pb::Event>),
    /// Changes of group state (presence) on the sender, for this node's subscribers.
    #[prost(message, tag = "10")]
    GroupState(GroupStates),
    // --- Azure's tunnel across nodes (see the block at the end of this file) ---
    /// A request for one of this node's Azure tunnels (a `tunnel:///` handler's CloudEvent,
    /// raised on the relaying node); answered with a [`TunnelAnswer`] in the [`Reply`] body.
    #[prost(message, tag = "11")]
    TunnelRequest(TunnelRequest),
    /// A Socket.IO `:invoke` of a tunnel on the sender, for this node's clients; answered
    /// with an [`InvokeSent`] in the [`Reply`] body.
    #[prost(message, tag = "12")]
    Invoke(InvokeCall),
    /// A client's answer to an `:invoke` of the receiving node.
    #[prost(message, tag = "13")]
    InvokeAck(InvokeAck),
    // --- Socket.IO long-polling across nodes (tags 20-29) ---
    /// A long-polling request for an Engine.IO session the receiving node holds, taken by
    /// another node (no sticky sessions); answered with a [`PollAnswer`] in the [`Reply`]
    /// body once the owner has served it (a `GET` may be held there up to
    /// `socketio.max_poll_duration`).
    #[prost(message, tag = "20")]
    SocketIoPoll(SocketIoPoll),
    // --- end of Socket.IO long-polling ---
}

/// A question a node answers from its own connections.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Query {
    /// Which question.
    #[prost(oneof = "Question", tags = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10")]
    pub(crate) question: Option<Question>,
}

/// The questions of [`Query`]: the control plane's read requests, as the edges build them.
#[derive(Clone, PartialEq, prost::Oneof)]
pub(crate) enum Question {
    /// Answered by the owner node.
    #[prost(message, tag = "1")]
    ConnectionExists(pb::ConnectionExistsRequest),
    /// Answered by the owner node.
    #[prost(message, tag = "2")]
    GetConnection(pb::GetConnectionRequest),
    /// Answered by the owner node.
    #[prost(message, tag = "3")]
    CheckPermission(pb::CheckPermissionRequest),
    /// Answered by every node.
    #[prost(message, tag = "4")]
    GroupExists(pb::GroupExistsRequest),
    /// Answered by every node.
    #[prost(message, tag = "5")]
    UserExists(pb::UserExistsRequest),
    /// Answered by every node (one page each, merged by the asker).
    #[prost(message, tag = "6")]
    ListGroupConnections(pb::ListGroupConnectionsRequest),
    /// Answered by every node (one page each, merged by the asker).
    #[prost(message, tag = "7")]
    ListConnections(pb::ListConnectionsRequest),
    /// Answered by every node (one page each, merged by the asker).
    #[prost(message, tag = "8")]
    ListGroups(pb::ListGroupsRequest),
    /// Answered by every node with its [`HubDetail`].
    #[prost(message, tag = "9")]
    HubDetail(pb::GetHubStatsRequest),
    /// Answered by every node with the [`GroupStates`] of its connections in the group
    /// (the question's `items` are empty).
    #[prost(message, tag = "10")]
    GroupStates(GroupStates),
}

/// A node's answer: success with an encoded response message, or an error.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Reply {
    /// 0 on success, else the error's [`ErrorCode`](crate::error::ErrorCode) number.
    #[prost(uint32, tag = "1")]
    pub(crate) error_code: u32,
    /// The error message.
    #[prost(string, tag = "2")]
    pub(crate) message: String,
    /// The request field the error is about (a `Field` number), 0 for none.
    #[prost(uint32, tag = "3")]
    pub(crate) field: u32,
    /// The encoded response message on success.
    #[prost(bytes = "vec", tag = "4")]
    pub(crate) body: Vec<u8>,
}

/// What one node holds of a hub, so the asker can count distinct users and groups.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct HubDetail {
    /// Connections on this node.
    #[prost(uint64, tag = "1")]
    pub(crate) connections: u64,
    /// Users with a connection on this node.
    #[prost(string, repeated, tag = "2")]
    pub(crate) users: Vec<String>,
    /// Groups with a member on this node.
    #[prost(string, repeated, tag = "3")]
    pub(crate) groups: Vec<String>,
}

/// A client's group send, forwarded to the other nodes.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct GroupSend {
    /// The hub routing key.
    #[prost(string, tag = "1")]
    pub(crate) hub: String,
    /// The group.
    #[prost(string, tag = "2")]
    pub(crate) group: String,
    /// The sender's user id.
    #[prost(string, optional, tag = "3")]
    pub(crate) from_user: Option<String>,
    /// The sender's connection id when it asked for `noEcho`.
    #[prost(string, optional, tag = "4")]
    pub(crate) excluded: Option<String>,
    /// Data type: 0 text, 1 json, 2 binary, 3 protobuf.
    #[prost(uint32, tag = "5")]
    pub(crate) data_type: u32,
    /// The payload.
    #[prost(bytes = "bytes", tag = "6")]
    pub(crate) payload: bytes::Bytes,
    /// Its place in a group stream, if any.
    #[prost(message, optional, tag = "7")]
    pub(crate) stream: Option<GroupSendStream>,
    // --- MQTT (tags 20-29) ---
    /// The QoS of the MQTT PUBLISH it came from (`Message::mqtt_qos`).
    #[prost(uint32, optional, tag = "20")]
    pub(crate) mqtt_qos: Option<u32>,
    /// Its MQTT 5 Message Expiry Interval in seconds (`Message::mqtt_expiry`).
    #[prost(uint32, optional, tag = "21")]
    pub(crate) mqtt_expiry: Option<u32>,
    // --- end MQTT ---
}

/// A group send's place in a group stream.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct GroupSendStream {
    /// The stream.
    #[prost(string, tag = "1")]
    pub(crate) stream_id: String,
    /// The chunk's number (the end's: one past the last chunk).
    #[prost(uint64, tag = "2")]
    pub(crate) sequence_id: u64,
    /// The last message of the stream.
    #[prost(bool, tag = "3")]
    pub(crate) end: bool,
    /// The error's name, when the stream failed.
    #[prost(string, optional, tag = "4")]
    pub(crate) error_name: Option<String>,
    /// The error's message.
    #[prost(string, optional, tag = "5")]
    pub(crate) error_message: Option<String>,
    /// The publisher's error code.
    #[prost(string, optional, tag = "6")]
    pub(crate) user_error_code: Option<String>,
}

/// What event-stream listeners one node has: the subscriptions of its `Listen` streams.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ListenerAd {
    /// Counts up with every change on the advertising node, so that an older advertisement
    /// (read from Redis before a newer one arrived on the channel) never replaces a newer one.
    #[prost(uint64, tag = "1")]
    pub(crate) version: u64,
    /// One per listener; empty when the node has none left.
    #[prost(message, repeated, tag = "2")]
    pub(crate) subscriptions: Vec<pb::Subscription>,
    /// The hubs (lower-cased) with an Azure tunnel connected to the node: the other nodes
    /// relay those hubs' tunnel requests here ([`TunnelRequest`]).
    #[prost(string, repeated, tag = "3")]
    pub(crate) tunnel_hubs: Vec<String>,
}

/// How a relayed event went on the node that holds the listeners.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct EventAnswer {
    /// The listener's reply to a blocking event (none for a non-blocking one).
    #[prost(message, optional, tag = "1")]
    pub(crate) reply: Option<pb::EventReply>,
    /// Why there is no reply: 0 delivered, [`EventAnswer::TIMEOUT`] or
    /// [`EventAnswer::NO_LISTENER`].
    #[prost(uint32, tag = "2")]
    pub(crate) failure: u32,
}

impl EventAnswer {
    /// The listener did not answer within the upstream timeout.
    pub(crate) const TIMEOUT: u32 = 1;
    /// No listener of that node takes the event (any more): try another node.
    pub(crate) const NO_LISTENER: u32 = 2;
}

/// Group states (presence) of connections in one group: a change to deliver, a question, or
/// the answer to it.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct GroupStates {
    /// The hub routing key.
    #[prost(string, tag = "1")]
    pub(crate) hub: String,
    /// The group.
    #[prost(string, tag = "2")]
    pub(crate) group: String,
    /// The states.
    #[prost(message, repeated, tag = "3")]
    pub(crate) items: Vec<GroupStateEntry>,
}

/// One connection's state in a group.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct GroupStateEntry {
    /// The connection.
    #[prost(string, tag = "1")]
    pub(crate) connection_id: String,
    /// Its user, if any.
    #[prost(string, optional, tag = "2")]
    pub(crate) user_id: Option<String>,
    /// The state (empty when cleared).
    #[prost(btree_map = "string, string", tag = "3")]
    pub(crate) state: std::collections::BTreeMap<String, String>,
    /// The state was cleared.
    #[prost(bool, tag = "4")]
    pub(crate) cleared: bool,
    /// When it changed, in Unix milliseconds.
    #[prost(uint64, tag = "5")]
    pub(crate) updated_at: u64,
}

// === Azure's tunnel across nodes ===
//
// A backend's tunnel ends on one node while the connections whose events it serves are on
// every node: the node that raises an event builds the HTTP request as for any `tunnel:///`
// handler and, with no tunnel of its own for the hub, relays the request to a node that
// advertises one ([`ListenerAd::tunnel_hubs`]), which sends it through its tunnel and answers
// with the response. The relay is the event relay's: [`Body::TunnelRequest`] travels and is
// answered exactly as [`Body::Event`] is.

/// An HTTP request for a tunnel of `hub` on the receiving node.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct TunnelRequest {
    /// The hub (lower-cased).
    #[prost(string, tag = "1")]
    pub(crate) hub: String,
    /// The HTTP method.
    #[prost(string, tag = "2")]
    pub(crate) method: String,
    /// The absolute URL, as the backend gets it.
    #[prost(string, tag = "3")]
    pub(crate) url: String,
    /// The headers, in order (a name may repeat).
    #[prost(message, repeated, tag = "4")]
    pub(crate) headers: Vec<HeaderPair>,
    /// The body.
    #[prost(bytes = "bytes", tag = "5")]
    pub(crate) body: bytes::Bytes,
    /// How long the tunnel may take to answer, in milliseconds.
    #[prost(uint64, tag = "6")]
    pub(crate) timeout_ms: u64,
}

/// One HTTP header.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct HeaderPair {
    /// The name.
    #[prost(string, tag = "1")]
    pub(crate) name: String,
    /// The value.
    #[prost(string, tag = "2")]
    pub(crate) value: String,
}

/// How a relayed [`TunnelRequest`] went on the node that holds the tunnel.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct TunnelAnswer {
    /// 0: answered (below); else one of the `TunnelAnswer` constants.
    #[prost(uint32, tag = "1")]
    pub(crate) failure: u32,
    /// Why it failed, for the log.
    #[prost(string, tag = "2")]
    pub(crate) message: String,
    /// The backend's HTTP status.
    #[prost(uint32, tag = "3")]
    pub(crate) status: u32,
    /// The backend's headers.
    #[prost(message, repeated, tag = "4")]
    pub(crate) headers: Vec<HeaderPair>,
    /// The backend's body.
    #[prost(bytes = "bytes", tag = "5")]
    pub(crate) body: bytes::Bytes,
}

impl TunnelAnswer {
    /// The tunnel did not answer within the timeout.
    pub(crate) const TIMEOUT: u32 = 1;
    /// That node has no tunnel for the hub (any more): try another node.
    pub(crate) const NO_TUNNEL: u32 = 2;
    /// The answer was larger than allowed.
    pub(crate) const TOO_LARGE: u32 = 3;
    /// The tunnel closed while the request was on it.
    pub(crate) const CLOSED: u32 = 4;
}

// A Socket.IO `:invoke` (`emitWithAck` to many sockets) arrives over a tunnel on one node
// while the sockets are on every node: that node sends the numbered packet to its own
// sockets and asks every other node to do the same ([`Body::Invoke`], gathered), adding up
// how many sockets got it; each node forwards the acks of its sockets for that call back to
// it ([`Body::InvokeAck`]), where they join the streamed answer.

/// One `:invoke`: the packet, numbered with the call's ack id, for the matching sockets.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct InvokeCall {
    /// The hub (lower-cased).
    #[prost(string, tag = "1")]
    pub(crate) hub: String,
    /// The call's ack id (unique in the cluster: each node numbers from its own base).
    #[prost(uint64, tag = "2")]
    pub(crate) id: u64,
    /// The Engine.IO payload, numbered with `id`.
    #[prost(string, tag = "3")]
    pub(crate) payload: String,
    /// The OData filter of the sockets' connections (empty: all of the hub's).
    #[prost(string, tag = "4")]
    pub(crate) filter: String,
    /// How long acks are forwarded, in milliseconds.
    #[prost(uint64, tag = "5")]
    pub(crate) timeout_ms: u64,
}

/// How many of its connections a node sent an [`InvokeCall`]'s packet to.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct InvokeSent {
    /// The number of connections.
    #[prost(uint64, tag = "1")]
    pub(crate) count: u64,
}

/// A socket's ack to an [`InvokeCall`], forwarded to the node that made the call.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct InvokeAck {
    /// The call's ack id.
    #[prost(uint64, tag = "1")]
    pub(crate) id: u64,
    /// The answering connection.
    #[prost(string, tag = "2")]
    pub(crate) connection_id: String,
    /// The ack's Engine.IO payload.
    #[prost(string, tag = "3")]
    pub(crate) payload: String,
}
// --- Socket.IO long-polling across nodes ---

/// A long-polling request relayed to the node that holds its Engine.IO session.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct SocketIoPoll {
    /// The hub of the request's path (the owner checks that the session belongs to it).
    #[prost(string, tag = "1")]
    pub(crate) hub: String,
    /// The Engine.IO `sid` (the connection id, which names its node).
    #[prost(string, tag = "2")]
    pub(crate) sid: String,
    /// `false`: a `GET` (wait for what is queued); `true`: a `POST` carrying `payload`.
    #[prost(bool, tag = "3")]
    pub(crate) post: bool,
    /// The body of a `POST`, already read and bounded by `socketio.max_payload_bytes` on the
    /// node that took the request.
    #[prost(bytes = "bytes", tag = "4")]
    pub(crate) payload: bytes::Bytes,
    /// Set when the node that took a `POST` refused its body (too large, too slow): the owner
    /// ends the session with this reason, as it would have for a body it read itself.
    #[prost(string, optional, tag = "5")]
    pub(crate) refused: Option<String>,
    /// A WebSocket upgrade of the session on the relaying node, which then serves that
    /// WebSocket by relaying polls and posts: [`SocketIoPoll::PROBED`] (pending polls end
    /// with a no-op so the client can switch) or [`SocketIoPoll::SWITCHED`] (the session is
    /// served over the relaying node's WebSocket from now on, or the upgrade was abandoned).
    #[prost(uint32, tag = "6")]
    pub(crate) upgrade: u32,
}

impl SocketIoPoll {
    /// The client probed a WebSocket on the relaying node.
    pub(crate) const PROBED: u32 = 1;
    /// The client switched to it (or the upgrade was abandoned).
    pub(crate) const SWITCHED: u32 = 2;
}

/// The owner's HTTP answer to a [`SocketIoPoll`], which the node that took the request
/// writes as is.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct PollAnswer {
    /// The HTTP status.
    #[prost(uint32, tag = "1")]
    pub(crate) status: u32,
    /// The `Content-Type`.
    #[prost(string, tag = "2")]
    pub(crate) content_type: String,
    /// The body (an Engine.IO payload, `ok`, or an Engine.IO error).
    #[prost(bytes = "bytes", tag = "3")]
    pub(crate) body: bytes::Bytes,
}
