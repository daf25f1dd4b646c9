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
    #[prost(oneof = "Body", tags = "3, 4, 5, 6, 8, 9, 10")]
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
