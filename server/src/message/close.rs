//! WebSocket close codes the server sends, in one place: the router, the edges and the
//! upstream all close connections, and a client's next step depends on the code.
//!
//! How Azure's clients react (spec §2.5 and the JavaScript client's notes): a reliable
//! client treats every code but 1008 as an unexpected drop and tries to recover its logical
//! connection (new socket with `awps_connection_id`, every second for up to 30 s); on 1008
//! it gives up recovering, emits `disconnected` and, with `autoReconnect` (the default),
//! starts a new connection. A non-reliable client emits `disconnected` on any code and,
//! with `autoReconnect`, starts a new connection. Simple clients do what their code does.
//!
//! Two names share 1008 on purpose: [`POLICY_VIOLATION`] and [`UNRECOVERABLE`] are told
//! apart by who closes and why, not by the client, which reacts to both the same way.

/// 1000, normal closure: a connection closed through the service API (REST
/// `closeConnection`, gRPC), after its `disconnected` message carrying the reason. A reliable
/// client still tries to recover, is refused with [`UNRECOVERABLE`], then starts afresh.
pub const BY_SERVICE: u16 = 1000;

/// 1001, going away: the server is shutting down (after a `disconnected` message). Clients
/// reconnect (reliable ones first try to recover, which another node of a cluster cannot
/// grant, so they start afresh there).
pub const GOING_AWAY: u16 = 1001;

/// 1002, protocol error: a frame that breaks the WebSocket protocol itself. Azure's clients
/// treat it as an unexpected drop (recover or reconnect).
pub const PROTOCOL_ERROR: u16 = 1002;

/// 1003, unsupported data: a frame of the wrong kind for the subprotocol (a binary frame on
/// the JSON subprotocol, as Azure's emulator does). Azure's clients treat it as an
/// unexpected drop.
pub const UNSUPPORTED_DATA: u16 = 1003;

/// 1007, invalid payload data: a message the subprotocol cannot parse (invalid JSON PubSub
/// or protobuf message, as Azure's emulator does). Azure's clients treat it as an
/// unexpected drop.
pub const INVALID_PAYLOAD: u16 = 1007;

/// 1008, policy violation: a client broke a rule of this server (a rate limit) or asked for
/// a recovery that cannot be granted (unknown or expired connection, bad reconnection
/// token). Azure's reliable clients stop recovering on 1008 and start a new connection.
pub const POLICY_VIOLATION: u16 = 1008;

/// 1008, a reliable connection that cannot be recovered: its unacknowledged buffer
/// overflowed (Azure: 1000 messages or 16 MB), so resending would lose messages. The same
/// code as [`POLICY_VIOLATION`] because 1008 is what makes Azure's clients stop recovering
/// and start afresh.
pub const UNRECOVERABLE: u16 = 1008;

/// 1009, message too big: a client frame above the listener's limit (Azure: 1 MB). Azure's
/// clients treat it as an unexpected drop and resend nothing of it.
pub const TOO_BIG: u16 = 1009;

/// 1011, internal error: a simple client's frame could not be handled upstream (non-2xx or
/// no handler; spec §2.5, as Azure's emulator does). Protocol clients get an error ack
/// instead and keep their connection.
pub const INTERNAL_ERROR: u16 = 1011;

/// 1013, try again later: a non-reliable connection whose outbox overflowed because it did
/// not read fast enough (a slow consumer). The client may reconnect; messages queued for it
/// are lost.
pub const SLOW_CONSUMER: u16 = 1013;
