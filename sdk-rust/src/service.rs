//! [`ServiceClient`]: the typed client of Hubcast's gRPC control plane.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hubcast_auth::{self as auth, ConnectionString, TokenRequest};
use hubcast_proto::v1 as pb;
use pb::control_client::ControlClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

mod error;

pub use error::ServiceError;

use ServiceError as Error;

pub use hubcast_proto::v1::{
    BatchResult, ConnectionInfo, GroupInfo, GroupMember, HubStats, batch_operation::Operation,
};

/// How long the service tokens the client mints live.
const SERVICE_TOKEN_TTL: Duration = Duration::from_secs(60 * 60);

/// A service token is replaced this long before it expires.
const SERVICE_TOKEN_RENEW_BEFORE: Duration = Duration::from_secs(5 * 60);

type Result<T> = std::result::Result<T, Error>;

// === messages and options ===

/// A message payload: text, JSON, binary or protobuf. What clients receive depends on it
/// (JSON clients see its `dataType`; simple WebSocket clients get a text frame for text and
/// JSON, a binary frame otherwise).
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    payload: pb::Payload,
}

impl Message {
    /// UTF-8 text (`dataType: text`).
    pub fn text(text: impl Into<String>) -> Self {
        Self::of(pb::payload::Data::Text(text.into()), "")
    }

    /// A JSON document given as its text (`dataType: json`); the service checks that it is
    /// valid JSON and forwards it verbatim.
    pub fn json(json: impl Into<String>) -> Self {
        Self::of(pb::payload::Data::Json(json.into()), "")
    }

    /// Raw bytes (`dataType: binary`).
    pub fn binary(bytes: impl Into<Bytes>) -> Self {
        Self::of(pb::payload::Data::Binary(bytes.into()), "")
    }

    /// A serialized `google.protobuf.Any` (`dataType: protobuf`).
    pub fn protobuf(any: impl Into<Bytes>) -> Self {
        Self::of(
            pb::payload::Data::Binary(any.into()),
            "application/x-protobuf",
        )
    }

    fn of(data: pb::payload::Data, content_type: &str) -> Self {
        Self {
            payload: pb::Payload {
                data: Some(data),
                content_type: content_type.to_owned(),
                ..Default::default()
            },
        }
    }

    /// Adds an entry of application metadata, delivered with the message (`metadata` on JSON
    /// clients). Keys are lower-cased by the service, which refuses more than 16 entries or
    /// 4096 bytes in all.
    #[must_use]
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.payload.metadata.insert(key.into(), value.into());
        self
    }

    /// The wire form.
    pub fn into_payload(self) -> pb::Payload {
        self.payload
    }
}

impl From<&str> for Message {
    fn from(text: &str) -> Self {
        Message::text(text)
    }
}

impl From<String> for Message {
    fn from(text: String) -> Self {
        Message::text(text)
    }
}

impl From<Vec<u8>> for Message {
    fn from(bytes: Vec<u8>) -> Self {
        Message::binary(bytes)
    }
}

impl From<Bytes> for Message {
    fn from(bytes: Bytes) -> Self {
        Message::binary(bytes)
    }
}

/// Options of a send. The default sends to everyone addressed, with no expiry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendOptions {
    excluded: Vec<String>,
    filter: String,
    ttl: Option<Duration>,
}

impl SendOptions {
    /// No options.
    pub fn new() -> Self {
        Self::default()
    }

    /// Skips this connection (sends to all, a group or a user).
    pub fn exclude(mut self, connection_id: impl Into<String>) -> Self {
        self.excluded.push(connection_id.into());
        self
    }

    /// Only connections matching this OData filter receive the message (sends to all, a
    /// group or a user), e.g. `userId eq 'alice' or 'vip' in groups`.
    pub fn filter(mut self, filter: impl Into<String>) -> Self {
        self.filter = filter.into();
        self
    }

    /// Drops the message for connections that cannot take it within `ttl` (whole seconds,
    /// at most 300).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    fn ttl_seconds(&self) -> Result<u32> {
        match self.ttl {
            None => Ok(0),
            Some(ttl) => u32::try_from(ttl.as_secs())
                .map_err(|_| Error::InvalidArgument("the message TTL is too large".into())),
        }
    }
}

/// Options of a close.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CloseOptions {
    excluded: Vec<String>,
    reason: String,
}

impl CloseOptions {
    /// No options: everyone addressed is closed with a generic reason.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps this connection open.
    pub fn exclude(mut self, connection_id: impl Into<String>) -> Self {
        self.excluded.push(connection_id.into());
        self
    }

    /// The reason clients see in their `disconnected` message.
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = reason.into();
        self
    }
}

/// A permission a connection can be granted at runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Publish to a group.
    SendToGroup,
    /// Join and leave a group.
    JoinLeaveGroup,
}

impl Permission {
    fn wire(self) -> i32 {
        match self {
            Permission::SendToGroup => pb::Permission::SendToGroup as i32,
            Permission::JoinLeaveGroup => pb::Permission::JoinLeaveGroup as i32,
        }
    }
}

/// What a client access token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTokenOptions {
    /// The user the connection authenticates as; `None` for anonymous.
    pub user_id: Option<String>,
    /// Roles, e.g. `webpubsub.joinLeaveGroup` or `webpubsub.sendToGroup.room1`.
    pub roles: Vec<String>,
    /// Groups joined at connect.
    pub groups: Vec<String>,
    /// Lifetime; the default is one hour.
    pub expires_in: Duration,
}

impl Default for ClientTokenOptions {
    fn default() -> Self {
        Self {
            user_id: None,
            roles: Vec::new(),
            groups: Vec::new(),
            expires_in: auth::DEFAULT_TOKEN_TTL,
        }
    }
}

impl ClientTokenOptions {
    /// A token for `user_id` with no roles or groups.
    pub fn user(user_id: impl Into<String>) -> Self {
        Self {
            user_id: Some(user_id.into()),
            ..Self::default()
        }
    }

    /// Adds a role.
    pub fn role(mut self, role: impl Into<String>) -> Self {
        self.roles.push(role.into());
        self
    }

    /// Adds a group joined at connect.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.groups.push(group.into());
        self
    }

    /// Sets the lifetime.
    pub fn expires_in(mut self, lifetime: Duration) -> Self {
        self.expires_in = lifetime;
        self
    }
}

/// A client access token and the URL that carries it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientAccess {
    /// The JWT.
    pub token: String,
    /// `ws(s)://<endpoint>/client/hubs/<hub>?access_token=<token>`.
    pub url: String,
}

impl fmt::Debug for ClientAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientAccess")
            .field("token", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Which page of a listing to fetch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageRequest {
    /// Items per page, 1..=1000; 0 means the service default (100).
    pub size: u32,
    /// The `next_page_token` of the previous page; `None` for the first page.
    pub token: Option<String>,
}

impl PageRequest {
    /// The first page, of at most `size` items.
    pub fn first(size: u32) -> Self {
        Self { size, token: None }
    }
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The items, in key order.
    pub items: Vec<T>,
    /// Pass it in [`PageRequest::token`] for the next page; `None` on the last page.
    pub next_page_token: Option<String>,
}

impl<T> Page<T> {
    fn new(items: Vec<T>, token: String) -> Self {
        Self {
            items,
            next_page_token: Some(token).filter(|t| !t.is_empty()),
        }
    }

    /// The request for the page after this one, if there is one.
    pub fn next(&self, size: u32) -> Option<PageRequest> {
        self.next_page_token.clone().map(|token| PageRequest {
            size,
            token: Some(token),
        })
    }
}

/// Operations applied in order by one [`ServiceClient::batch`] call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    operations: Vec<pb::BatchOperation>,
    continue_on_error: bool,
}

impl Batch {
    /// An empty batch that stops at the first failure.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends an operation (e.g. `Operation::AddUserToGroup(...)`).
    pub fn push(mut self, operation: Operation) -> Self {
        self.operations.push(pb::BatchOperation {
            operation: Some(operation),
        });
        self
    }

    /// Runs every operation even after a failure.
    pub fn continue_on_error(mut self) -> Self {
        self.continue_on_error = true;
        self
    }

    /// How many operations the batch holds.
    pub fn len(&self) -> usize {
        self.operations.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.operations.is_empty()
    }
}

// === the client ===

/// A client of the `hubcast.v1.Control` gRPC service, built from the Azure-style connection
/// string the server prints (`Endpoint=...;AccessKey=...;Version=1.0;`) and the address of
/// the server's gRPC listener.
///
/// It signs its calls itself (an HS256 service token for audience
/// `{endpoint}/hubcast.v1.Control`, renewed before it expires) and mints client access URLs
/// locally, without a round trip. Cloning is cheap and clones share one HTTP/2 connection.
///
/// # Examples
///
/// ```no_run
/// use hubcast_sdk::{ClientTokenOptions, Message, SendOptions, ServiceClient};
///
/// # async fn run() -> Result<(), hubcast_sdk::ServiceError> {
/// let client = ServiceClient::new(
///     "Endpoint=http://127.0.0.1:8080;AccessKey=<key>;Version=1.0;",
///     "127.0.0.1:50051",
/// )?;
/// let access = client.client_access(
///     "chat",
///     &ClientTokenOptions::user("alice").role("webpubsub.joinLeaveGroup"),
/// );
/// println!("connect a client to {}", access.url);
/// client.add_user_to_group("chat", "room1", "alice").await?;
/// client
///     .send_to_group("chat", "room1", Message::text("hello"), SendOptions::new())
///     .await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ServiceClient {
    grpc: ControlClient<InterceptedService<Channel, Bearer>>,
    endpoint: String,
    key: Arc<str>,
}

impl fmt::Debug for ServiceClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceClient")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl ServiceClient {
    /// A client that connects on first use (and reconnects as needed).
    ///
    /// `grpc_address` is `host:port` (plain HTTP/2) or a full `http://` / `https://` URI.
    ///
    /// # Errors
    /// [`Error::InvalidConnectionString`] or [`Error::InvalidAddress`].
    ///
    /// # Panics
    /// When called outside a Tokio runtime (the lazy channel needs one).
    pub fn new(connection_string: &str, grpc_address: &str) -> Result<Self> {
        ConnectionString::parse(connection_string)
            .map_err(|e| Error::InvalidConnectionString(e.to_string()))?;
        let endpoint = grpc_endpoint(grpc_address)?;
        Self::with_channel(connection_string, endpoint.connect_lazy())
    }

    /// A client connected now, so that an unreachable server is reported here.
    ///
    /// # Errors
    /// As [`ServiceClient::new`], or [`Error::Connect`].
    pub async fn connect(connection_string: &str, grpc_address: &str) -> Result<Self> {
        let endpoint = grpc_endpoint(grpc_address)?;
        let channel = endpoint.connect().await.map_err(Error::Connect)?;
        Self::with_channel(connection_string, channel)
    }

    /// A client over a channel you configured yourself (TLS, timeouts, load balancing).
    ///
    /// # Errors
    /// [`Error::InvalidConnectionString`].
    pub fn with_channel(connection_string: &str, channel: Channel) -> Result<Self> {
        let parsed = ConnectionString::parse(connection_string)
            .map_err(|e| Error::InvalidConnectionString(e.to_string()))?;
        let key: Arc<str> = parsed.access_key.into();
        let bearer = Bearer::new(
            key.clone(),
            format!("{}{}", parsed.endpoint, auth::GRPC_AUDIENCE_PATH),
        );
        Ok(Self {
            grpc: ControlClient::with_interceptor(channel, bearer),
            endpoint: parsed.endpoint,
            key,
        })
    }

    /// The service endpoint of the connection string (what token audiences name).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The generated tonic client, for anything this type does not wrap.
    pub fn raw(&self) -> ControlClient<InterceptedService<Channel, Bearer>> {
        self.grpc.clone()
    }

    // === tokens ===

    /// Mints a client access token and URL for `hub` locally (no call), exactly as Azure's
    /// server SDKs do.
    pub fn client_access(&self, hub: &str, options: &ClientTokenOptions) -> ClientAccess {
        let request = TokenRequest {
            hub: hub.to_owned(),
            user_id: options.user_id.clone(),
            roles: options.roles.clone(),
            groups: options.groups.clone(),
            ttl: options.expires_in,
        };
        let token = auth::mint_client_token(&self.key, &self.endpoint, &request);
        let url = auth::client_url(&self.endpoint, hub, &token);
        ClientAccess { token, url }
    }

    /// Asks the service to mint a client access token (`Control.GenerateClientToken`). Same
    /// result as [`ServiceClient::client_access`], signed with the service's primary key.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad hub name; transport and auth errors.
    pub async fn generate_client_token(
        &self,
        hub: &str,
        options: &ClientTokenOptions,
    ) -> Result<ClientAccess> {
        let minutes = options.expires_in.as_secs().div_ceil(60).max(1);
        let response = self
            .grpc
            .clone()
            .generate_client_token(pb::GenerateClientTokenRequest {
                hub: hub.to_owned(),
                user_id: options.user_id.clone().unwrap_or_default(),
                roles: options.roles.clone(),
                groups: options.groups.clone(),
                expires_in_minutes: u32::try_from(minutes).unwrap_or(u32::MAX),
                client_type: pb::ClientType::Default.into(),
            })
            .await?
            .into_inner();
        Ok(ClientAccess {
            token: response.token,
            url: response.url,
        })
    }

    // === sends ===

    /// Sends `message` to every connection of `hub` (`Control.SendToAll`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad hub, filter, TTL or JSON payload.
    pub async fn send_to_all(
        &self,
        hub: &str,
        message: impl Into<Message>,
        options: SendOptions,
    ) -> Result<()> {
        let ttl_seconds = options.ttl_seconds()?;
        self.grpc
            .clone()
            .send_to_all(pb::SendToAllRequest {
                hub: hub.to_owned(),
                payload: Some(message.into().payload),
                excluded: options.excluded,
                filter: options.filter,
                ttl_seconds,
            })
            .await?;
        Ok(())
    }

    /// Sends `message` to the members of `group` (`Control.SendToGroup`); they receive it as
    /// a group message.
    ///
    /// # Errors
    /// As [`ServiceClient::send_to_all`], or a bad group name.
    pub async fn send_to_group(
        &self,
        hub: &str,
        group: &str,
        message: impl Into<Message>,
        options: SendOptions,
    ) -> Result<()> {
        let ttl_seconds = options.ttl_seconds()?;
        self.grpc
            .clone()
            .send_to_group(pb::SendToGroupRequest {
                hub: hub.to_owned(),
                group: group.to_owned(),
                payload: Some(message.into().payload),
                excluded: options.excluded,
                filter: options.filter,
                ttl_seconds,
            })
            .await?;
        Ok(())
    }

    /// Sends `message` to every connection of `user_id` (`Control.SendToUser`).
    ///
    /// # Errors
    /// As [`ServiceClient::send_to_all`].
    pub async fn send_to_user(
        &self,
        hub: &str,
        user_id: &str,
        message: impl Into<Message>,
        options: SendOptions,
    ) -> Result<()> {
        let ttl_seconds = options.ttl_seconds()?;
        self.grpc
            .clone()
            .send_to_user(pb::SendToUserRequest {
                hub: hub.to_owned(),
                user_id: user_id.to_owned(),
                payload: Some(message.into().payload),
                filter: options.filter,
                ttl_seconds,
                excluded: options.excluded,
            })
            .await?;
        Ok(())
    }

    /// Sends `message` to one connection (`Control.SendToConnection`). Only the TTL option
    /// applies.
    ///
    /// # Errors
    /// As [`ServiceClient::send_to_all`]; [`Error::InvalidArgument`] if `options` has
    /// exclusions or a filter.
    pub async fn send_to_connection(
        &self,
        hub: &str,
        connection_id: &str,
        message: impl Into<Message>,
        options: SendOptions,
    ) -> Result<()> {
        if !options.excluded.is_empty() || !options.filter.is_empty() {
            return Err(Error::InvalidArgument(
                "a send to one connection takes no exclusions or filter".into(),
            ));
        }
        let ttl_seconds = options.ttl_seconds()?;
        self.grpc
            .clone()
            .send_to_connection(pb::SendToConnectionRequest {
                hub: hub.to_owned(),
                connection_id: connection_id.to_owned(),
                payload: Some(message.into().payload),
                ttl_seconds,
            })
            .await?;
        Ok(())
    }

    // === groups ===

    /// Adds a connection to a group (`Control.AddConnectionToGroup`).
    ///
    /// # Errors
    /// [`Error::NotFound`] if the connection does not exist.
    pub async fn add_connection_to_group(
        &self,
        hub: &str,
        group: &str,
        connection_id: &str,
    ) -> Result<()> {
        self.grpc
            .clone()
            .add_connection_to_group(pb::AddConnectionToGroupRequest {
                hub: hub.to_owned(),
                group: group.to_owned(),
                connection_id: connection_id.to_owned(),
            })
            .await?;
        Ok(())
    }

    /// Removes a connection from a group (`Control.RemoveConnectionFromGroup`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for bad names.
    pub async fn remove_connection_from_group(
        &self,
        hub: &str,
        group: &str,
        connection_id: &str,
    ) -> Result<()> {
        self.grpc
            .clone()
            .remove_connection_from_group(pb::RemoveConnectionFromGroupRequest {
                hub: hub.to_owned(),
                group: group.to_owned(),
                connection_id: connection_id.to_owned(),
            })
            .await?;
        Ok(())
    }

    /// Removes a connection from every group (`Control.RemoveConnectionFromAllGroups`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for bad names.
    pub async fn remove_connection_from_all_groups(
        &self,
        hub: &str,
        connection_id: &str,
    ) -> Result<()> {
        self.grpc
            .clone()
            .remove_connection_from_all_groups(pb::RemoveConnectionFromAllGroupsRequest {
                hub: hub.to_owned(),
                connection_id: connection_id.to_owned(),
            })
            .await?;
        Ok(())
    }

    /// Adds every current connection of a user to a group (`Control.AddUserToGroup`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for bad names.
    pub async fn add_user_to_group(&self, hub: &str, group: &str, user_id: &str) -> Result<()> {
        self.grpc
            .clone()
            .add_user_to_group(pb::AddUserToGroupRequest {
                hub: hub.to_owned(),
                group: group.to_owned(),
                user_id: user_id.to_owned(),
            })
            .await?;
        Ok(())
    }

    /// Removes every connection of a user from a group (`Control.RemoveUserFromGroup`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for bad names.
    pub async fn remove_user_from_group(
        &self,
        hub: &str,
        group: &str,
        user_id: &str,
    ) -> Result<()> {
        self.grpc
            .clone()
            .remove_user_from_group(pb::RemoveUserFromGroupRequest {
                hub: hub.to_owned(),
                group: group.to_owned(),
                user_id: user_id.to_owned(),
            })
            .await?;
        Ok(())
    }

    /// Removes every connection of a user from every group
    /// (`Control.RemoveUserFromAllGroups`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for bad names.
    pub async fn remove_user_from_all_groups(&self, hub: &str, user_id: &str) -> Result<()> {
        self.grpc
            .clone()
            .remove_user_from_all_groups(pb::RemoveUserFromAllGroupsRequest {
                hub: hub.to_owned(),
                user_id: user_id.to_owned(),
            })
            .await?;
        Ok(())
    }

    /// Adds the connections matching an OData `filter` (all of them if empty) to each of
    /// `groups` (`Control.AddConnectionsToGroups`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for bad names or an invalid filter.
    pub async fn add_connections_to_groups(
        &self,
        hub: &str,
        groups: &[&str],
        filter: &str,
    ) -> Result<()> {
        self.grpc
            .clone()
            .add_connections_to_groups(pb::AddConnectionsToGroupsRequest {
                hub: hub.to_owned(),
                groups: groups.iter().map(|g| (*g).to_owned()).collect(),
                filter: filter.to_owned(),
            })
            .await?;
        Ok(())
    }

    /// Removes the connections matching an OData `filter` (all of them if empty) from each
    /// of `groups` (`Control.RemoveConnectionsFromGroups`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for bad names or an invalid filter.
    pub async fn remove_connections_from_groups(
        &self,
        hub: &str,
        groups: &[&str],
        filter: &str,
    ) -> Result<()> {
        self.grpc
            .clone()
            .remove_connections_from_groups(pb::RemoveConnectionsFromGroupsRequest {
                hub: hub.to_owned(),
                groups: groups.iter().map(|g| (*g).to_owned()).collect(),
                filter: filter.to_owned(),
            })
            .await?;
        Ok(())
    }

    // === closing ===

    /// Closes a connection (`Control.CloseConnection`); it gets a `disconnected` message
    /// with `reason` first.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for bad names.
    pub async fn close_connection(
        &self,
        hub: &str,
        connection_id: &str,
        reason: &str,
    ) -> Result<()> {
        self.grpc
            .clone()
            .close_connection(pb::CloseConnectionRequest {
                hub: hub.to_owned(),
                connection_id: connection_id.to_owned(),
                reason: reason.to_owned(),
            })
            .await?;
        Ok(())
    }

    /// Closes every connection of a hub (`Control.CloseAllConnections`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for bad names.
    pub async fn close_all_connections(&self, hub: &str, options: CloseOptions) -> Result<()> {
        self.grpc
            .clone()
            .close_all_connections(pb::CloseAllConnectionsRequest {
                hub: hub.to_owned(),
                excluded: options.excluded,
                reason: options.reason,
            })
            .await?;
        Ok(())
    }

    /// Closes every connection in a group (`Control.CloseGroupConnections`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for bad names.
    pub async fn close_group_connections(
        &self,
        hub: &str,
        group: &str,
        options: CloseOptions,
    ) -> Result<()> {
        self.grpc
            .clone()
            .close_group_connections(pb::CloseGroupConnectionsRequest {
                hub: hub.to_owned(),
                group: group.to_owned(),
                excluded: options.excluded,
                reason: options.reason,
            })
            .await?;
        Ok(())
    }

    /// Closes every connection of a user (`Control.CloseUserConnections`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for bad names.
    pub async fn close_user_connections(
        &self,
        hub: &str,
        user_id: &str,
        options: CloseOptions,
    ) -> Result<()> {
        self.grpc
            .clone()
            .close_user_connections(pb::CloseUserConnectionsRequest {
                hub: hub.to_owned(),
                user_id: user_id.to_owned(),
                excluded: options.excluded,
                reason: options.reason,
            })
            .await?;
        Ok(())
    }

    // === existence ===

    /// Whether a connection is open (`Control.ConnectionExists`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for bad names.
    pub async fn connection_exists(&self, hub: &str, connection_id: &str) -> Result<bool> {
        Ok(self
            .grpc
            .clone()
            .connection_exists(pb::ConnectionExistsRequest {
                hub: hub.to_owned(),
                connection_id: connection_id.to_owned(),
            })
            .await?
            .into_inner()
            .exists)
    }

    /// Whether a group has at least one connection (`Control.GroupExists`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for bad names.
    pub async fn group_exists(&self, hub: &str, group: &str) -> Result<bool> {
        Ok(self
            .grpc
            .clone()
            .group_exists(pb::GroupExistsRequest {
                hub: hub.to_owned(),
                group: group.to_owned(),
            })
            .await?
            .into_inner()
            .exists)
    }

    /// Whether a user has at least one connection (`Control.UserExists`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for bad names.
    pub async fn user_exists(&self, hub: &str, user_id: &str) -> Result<bool> {
        Ok(self
            .grpc
            .clone()
            .user_exists(pb::UserExistsRequest {
                hub: hub.to_owned(),
                user_id: user_id.to_owned(),
            })
            .await?
            .into_inner()
            .exists)
    }

    // === permissions ===

    /// Grants `permission` on `target_group` (all groups if `None`) to a connection
    /// (`Control.GrantPermission`).
    ///
    /// # Errors
    /// [`Error::NotFound`] if the connection does not exist.
    pub async fn grant_permission(
        &self,
        hub: &str,
        connection_id: &str,
        permission: Permission,
        target_group: Option<&str>,
    ) -> Result<()> {
        self.grpc
            .clone()
            .grant_permission(pb::GrantPermissionRequest {
                hub: hub.to_owned(),
                connection_id: connection_id.to_owned(),
                permission: permission.wire(),
                target_group: target_group.unwrap_or_default().to_owned(),
            })
            .await?;
        Ok(())
    }

    /// Revokes `permission` (on `target_group`, or every grant of it if `None`) from a
    /// connection (`Control.RevokePermission`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for bad names.
    pub async fn revoke_permission(
        &self,
        hub: &str,
        connection_id: &str,
        permission: Permission,
        target_group: Option<&str>,
    ) -> Result<()> {
        self.grpc
            .clone()
            .revoke_permission(pb::RevokePermissionRequest {
                hub: hub.to_owned(),
                connection_id: connection_id.to_owned(),
                permission: permission.wire(),
                target_group: target_group.unwrap_or_default().to_owned(),
            })
            .await?;
        Ok(())
    }

    /// Whether a connection holds `permission` on `target_group` (or the all-groups grant
    /// if `None`) (`Control.CheckPermission`). False if it does not exist.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for bad names.
    pub async fn check_permission(
        &self,
        hub: &str,
        connection_id: &str,
        permission: Permission,
        target_group: Option<&str>,
    ) -> Result<bool> {
        Ok(self
            .grpc
            .clone()
            .check_permission(pb::CheckPermissionRequest {
                hub: hub.to_owned(),
                connection_id: connection_id.to_owned(),
                permission: permission.wire(),
                target_group: target_group.unwrap_or_default().to_owned(),
            })
            .await?
            .into_inner()
            .granted)
    }

    // === listings ===

    /// A page of the connections in a group (`Control.ListGroupConnections`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for bad names, page sizes or tokens.
    pub async fn list_group_connections(
        &self,
        hub: &str,
        group: &str,
        page: PageRequest,
    ) -> Result<Page<GroupMember>> {
        let response = self
            .grpc
            .clone()
            .list_group_connections(pb::ListGroupConnectionsRequest {
                hub: hub.to_owned(),
                group: group.to_owned(),
                page_size: page.size,
                page_token: page.token.unwrap_or_default(),
            })
            .await?
            .into_inner();
        Ok(Page::new(response.connections, response.next_page_token))
    }

    /// A page of the connections of a hub (or of `user_id`, if given) matching the OData
    /// `filter` (all if empty), with their details (`Control.ListConnections`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for bad names, filters, page sizes or tokens.
    pub async fn list_connections(
        &self,
        hub: &str,
        user_id: Option<&str>,
        filter: &str,
        page: PageRequest,
    ) -> Result<Page<ConnectionInfo>> {
        let response = self
            .grpc
            .clone()
            .list_connections(pb::ListConnectionsRequest {
                hub: hub.to_owned(),
                user_id: user_id.unwrap_or_default().to_owned(),
                filter: filter.to_owned(),
                page_size: page.size,
                page_token: page.token.unwrap_or_default(),
            })
            .await?
            .into_inner();
        Ok(Page::new(response.connections, response.next_page_token))
    }

    /// One connection's details (`Control.GetConnection`).
    ///
    /// # Errors
    /// [`Error::NotFound`] if it does not exist.
    pub async fn get_connection(&self, hub: &str, connection_id: &str) -> Result<ConnectionInfo> {
        Ok(self
            .grpc
            .clone()
            .get_connection(pb::GetConnectionRequest {
                hub: hub.to_owned(),
                connection_id: connection_id.to_owned(),
            })
            .await?
            .into_inner())
    }

    /// A page of the groups of a hub with their sizes (`Control.ListGroups`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for bad names, page sizes or tokens.
    pub async fn list_groups(&self, hub: &str, page: PageRequest) -> Result<Page<GroupInfo>> {
        let response = self
            .grpc
            .clone()
            .list_groups(pb::ListGroupsRequest {
                hub: hub.to_owned(),
                page_size: page.size,
                page_token: page.token.unwrap_or_default(),
            })
            .await?
            .into_inner();
        Ok(Page::new(response.groups, response.next_page_token))
    }

    /// Connection, user and group counts of a hub (`Control.GetHubStats`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad hub name.
    pub async fn hub_stats(&self, hub: &str) -> Result<HubStats> {
        Ok(self
            .grpc
            .clone()
            .get_hub_stats(pb::GetHubStatsRequest {
                hub: hub.to_owned(),
            })
            .await?
            .into_inner())
    }

    // === batches ===

    /// Applies `batch` in order in one call (`Control.Batch`). Returns one result per
    /// operation that ran; see [`Batch::continue_on_error`].
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a malformed batch (more than 1000 operations). Failures
    /// of single operations are in the results, not errors.
    pub async fn batch(&self, batch: Batch) -> Result<Vec<BatchResult>> {
        Ok(self
            .grpc
            .clone()
            .batch(pb::BatchRequest {
                operations: batch.operations,
                continue_on_error: batch.continue_on_error,
            })
            .await?
            .into_inner()
            .results)
    }
}

/// Parses `host:port` or an `http(s)://` URI into a tonic endpoint.
fn grpc_endpoint(address: &str) -> Result<Endpoint> {
    let uri = if address.contains("://") {
        address.to_owned()
    } else {
        format!("http://{address}")
    };
    Endpoint::from_shared(uri).map_err(|e| Error::InvalidAddress {
        address: address.to_owned(),
        reason: e.to_string(),
    })
}

/// Adds `authorization: Bearer <service token>` to every call, minting a new token shortly
/// before the current one expires.
#[derive(Clone)]
pub struct Bearer {
    inner: Arc<BearerInner>,
}

struct BearerInner {
    key: Arc<str>,
    audience: String,
    current: Mutex<Option<(MetadataValue<Ascii>, Instant)>>,
}

impl fmt::Debug for Bearer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bearer")
            .field("audience", &self.inner.audience)
            .finish_non_exhaustive()
    }
}

impl Bearer {
    fn new(key: Arc<str>, audience: String) -> Self {
        Self {
            inner: Arc::new(BearerInner {
                key,
                audience,
                current: Mutex::new(None),
            }),
        }
    }

    fn header(&self) -> MetadataValue<Ascii> {
        let mut current = self
            .inner
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        if let Some((value, renew_at)) = current.as_ref()
            && now < *renew_at
        {
            return value.clone();
        }
        let token =
            auth::mint_service_token(&self.inner.key, &self.inner.audience, SERVICE_TOKEN_TTL);
        let value: MetadataValue<Ascii> = format!("Bearer {token}")
            .parse()
            .expect("a JWT is printable ASCII");
        *current = Some((
            value.clone(),
            now + SERVICE_TOKEN_TTL - SERVICE_TOKEN_RENEW_BEFORE,
        ));
        value
    }
}

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.header());
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CS: &str = "Endpoint=http://127.0.0.1:8080;AccessKey=ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH;Version=1.0;";

    #[tokio::test]
    async fn client_access_urls_are_minted_locally_and_verify_on_the_server_side() {
        let client = ServiceClient::new(CS, "127.0.0.1:1").expect("valid");
        let access = client.client_access(
            "chat",
            &ClientTokenOptions::user("alice")
                .role("webpubsub.joinLeaveGroup")
                .group("g"),
        );
        assert!(
            access
                .url
                .starts_with("ws://127.0.0.1:8080/client/hubs/chat?access_token=")
        );
        let keys = auth::KeyRing::new(vec!["ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH".into()])
            .expect("valid key");
        let claims =
            auth::verify_client_token(&access.token, &keys, "http://127.0.0.1:8080", "chat")
                .expect("the server accepts the SDK's token");
        assert_eq!(claims.user_id.as_deref(), Some("alice"));
        assert_eq!(claims.groups, ["g"]);
        assert!(
            !format!("{access:?}").contains(&access.token),
            "Debug redacts the token"
        );
    }

    #[tokio::test]
    async fn service_tokens_name_the_control_service_and_are_reused() {
        assert!(ServiceClient::new(CS, "http://127.0.0.1:1").is_ok());
        let b = Bearer::new(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH".into(),
            "http://127.0.0.1:8080/hubcast.v1.Control".into(),
        );
        let first = b.header();
        assert_eq!(first, b.header(), "cached until close to expiry");
        // Two tokens minted in the same second are identical, so equality alone would pass
        // without a cache: plant a value the minting code can never produce and see it come
        // back while it is current, and be replaced once its renewal time has passed.
        let planted: MetadataValue<Ascii> = "Bearer planted".parse().expect("ascii");
        let now = Instant::now();
        *b.inner.current.lock().expect("not poisoned") =
            Some((planted.clone(), now + Duration::from_secs(60)));
        assert_eq!(
            b.header(),
            planted,
            "a current token is served from the cache"
        );
        *b.inner.current.lock().expect("not poisoned") = Some((planted.clone(), now));
        assert_ne!(
            b.header(),
            planted,
            "a token due for renewal is minted again"
        );
        let token = first
            .to_str()
            .expect("ascii")
            .strip_prefix("Bearer ")
            .expect("bearer");
        let keys = auth::KeyRing::new(vec!["ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH".into()])
            .expect("valid key");
        auth::verify_service_token(
            token,
            &keys,
            "http://127.0.0.1:8080",
            auth::GRPC_AUDIENCE_PATH,
        )
        .expect("the server accepts the SDK's service token");
    }

    #[tokio::test]
    async fn bad_inputs_are_typed_errors() {
        assert!(matches!(
            ServiceClient::new("Endpoint=http://x;Version=1.0;", "127.0.0.1:1"),
            Err(Error::InvalidConnectionString(_))
        ));
        assert!(matches!(
            ServiceClient::new(CS, "not a uri"),
            Err(Error::InvalidAddress { .. })
        ));
        let status = tonic::Status::not_found("connection 'x' does not exist");
        assert!(matches!(Error::from(status), Error::NotFound(m) if m.contains("'x'")));
        let status = tonic::Status::unavailable("down");
        assert!(Error::from(status).is_retryable());
    }

    #[test]
    fn messages_map_to_payloads() {
        let json = Message::json(r#"{"a":1}"#).into_payload();
        assert!(matches!(json.data, Some(pb::payload::Data::Json(ref j)) if j == r#"{"a":1}"#));
        let any = Message::protobuf(vec![1, 2]).into_payload();
        assert_eq!(any.content_type, "application/x-protobuf");
        assert_eq!(Message::from("hi"), Message::text("hi"));
        assert_eq!(Message::from(vec![0u8]), Message::binary(vec![0u8]));
    }
}
