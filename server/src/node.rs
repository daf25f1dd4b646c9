//! The service layer: one implementation of every operation this node offers, called by
//! every edge ([`crate::edge`]): the typed gRPC API ([`grpc`](crate::edge::grpc), package
//! `hubcast.v1`), Azure's REST API ([`rest`](crate::edge::rest)) and the WebSocket edge.
//!
//! The control edges turn a call into the same `hubcast.v1` request message and hand it to
//! [`Node`], which validates it (names, payload, TTL, OData filter, page tokens) and calls
//! the [`Router`]. So a REST call and the matching RPC cannot behave differently: the REST
//! edge only parses HTTP into the request message and maps the outcome to Azure's status
//! codes. Failures are [`NodeError`]s, classified by [`ErrorCode`]; each edge maps them to
//! its wire form in exactly one function.
//!
//! The `local_*` methods act on this node's connections; the edges call the async methods of
//! [`routing`], which run them here, on the node that owns a connection, or on every node of
//! a cluster (and merge the answers).

mod client;
mod polling;
mod presence;
mod routing;

pub(crate) use polling::{PollOwner, PollReply, PollRequest, RelayedPoll};
pub(crate) use presence::PresenceError;
pub(crate) use routing::Forwarded;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hubcast_proto::v1 as pb;

use crate::cluster::{Cluster, ClusterError};
use crate::error::{Classify, ErrorCode};
use crate::filter::{Filter, FilterError};
use crate::message::{Data, Message, Utf8Bytes};
use crate::router::{
    self, Connection, HubKey, Page, PageRequest, Permission, Router, RouterError, SendOptions,
    Target,
};
use crate::telemetry::live_trace::{Category, LiveTrace, TraceRecord};
use hubcast_auth::{self as auth, KeyRing, TokenRequest};

/// Longest message TTL (Azure: 300 s).
pub(crate) const MAX_TTL_SECONDS: u32 = 300;

/// Page size when the caller asks for none.
pub(crate) const DEFAULT_PAGE_SIZE: usize = 100;

/// Largest page a listing returns.
pub(crate) const MAX_PAGE_SIZE: usize = 1000;

/// Reason given to clients closed without one.
pub(crate) const DEFAULT_CLOSE_REASON: &str = "The connection was closed by the service.";

/// The request field a validation error is about, named as each edge names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    Hub,
    Group,
    Groups,
    UserId,
    ConnectionId,
    Payload,
    Ttl,
    Permission,
    TargetGroup,
    PageSize,
    PageToken,
    Filter,
    ClientType,
}

impl Field {
    /// The REST name (path or query parameter), for Azure's error `target`.
    pub(crate) fn rest_name(self) -> &'static str {
        match self {
            Field::Hub => "hub",
            Field::Group => "group",
            Field::Groups => "groups",
            Field::UserId => "userId",
            Field::ConnectionId => "connectionId",
            Field::Payload => "message",
            Field::Ttl => "messageTtlSeconds",
            Field::Permission => "permission",
            Field::TargetGroup => "targetName",
            Field::PageSize => "maxpagesize",
            Field::PageToken => "continuationToken",
            Field::Filter => "filter",
            Field::ClientType => "clientType",
        }
    }
}

/// Why a control-plane operation failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NodeError {
    /// A request field is missing or invalid.
    #[error("{message}")]
    Invalid {
        /// Which field.
        field: Field,
        /// What is wrong with it.
        message: String,
    },
    /// A name the router refused, or a connection that does not exist.
    #[error(transparent)]
    Router(#[from] RouterError),
    /// An OData filter that does not parse or type-check.
    #[error(transparent)]
    Filter(#[from] FilterError),
    /// The other nodes of the cluster cannot be reached now.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// Another node refused the operation (its error, as it classified it).
    #[error("{message}")]
    Remote {
        /// The other node's classification.
        code: ErrorCode,
        /// Its message.
        message: String,
        /// The field it is about.
        field: Option<Field>,
    },
}

impl NodeError {
    fn invalid(field: Field, message: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            message: message.into(),
        }
    }

    /// The field the error is about, if any.
    pub(crate) fn field(&self) -> Option<Field> {
        match self {
            NodeError::Invalid { field, .. } => Some(*field),
            NodeError::Router(RouterError::InvalidHub(_)) => Some(Field::Hub),
            NodeError::Router(RouterError::InvalidGroup) => Some(Field::Group),
            NodeError::Router(RouterError::NoConnection(_)) => Some(Field::ConnectionId),
            NodeError::Filter(_) => Some(Field::Filter),
            NodeError::Cluster(_) => None,
            NodeError::Remote { field, .. } => *field,
        }
    }
}

impl Classify for NodeError {
    fn code(&self) -> ErrorCode {
        match self {
            NodeError::Invalid { .. } => ErrorCode::BadRequest,
            NodeError::Router(e) => e.code(),
            NodeError::Filter(e) => e.code(),
            NodeError::Cluster(_) => ErrorCode::Unavailable,
            NodeError::Remote { code, .. } => *code,
        }
    }
}

type Result<T> = std::result::Result<T, NodeError>;

/// The control plane's operations, shared by the REST and gRPC edges. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    router: Router,
    /// The Redis backplane, handed in by the composition root; `None` on a single node.
    cluster: Option<Arc<Cluster>>,
    keys: KeyRing,
    /// The public endpoint, without a trailing slash (token audiences, client URLs).
    endpoint: String,
    /// Group presence: this node's connections' states and subscribers.
    presence: presence::Presence,
    /// Where long-polling requests relayed from other nodes go (the Socket.IO edge).
    polls: polling::PollHost,
    /// The live trace of this node.
    live_trace: LiveTrace,
}

impl Node {
    /// The service layer of `router`, and in a cluster of its backplane `cluster` (what the
    /// other nodes ask of this one comes through [`Node::serve_cluster`]).
    pub(crate) fn new(
        router: Router,
        cluster: Option<Arc<Cluster>>,
        keys: KeyRing,
        endpoint: String,
        live_trace: LiveTrace,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                router,
                cluster,
                keys,
                endpoint,
                presence: presence::Presence::default(),
                polls: polling::PollHost::default(),
                live_trace,
            }),
        }
    }

    /// The live trace: what the edges and the node record while operators listen.
    pub(crate) fn live_trace(&self) -> &LiveTrace {
        &self.inner.live_trace
    }

    pub(crate) fn keys(&self) -> &KeyRing {
        &self.inner.keys
    }

    pub(crate) fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    /// The metric registry the control plane records into.
    pub(crate) fn metrics(&self) -> &crate::telemetry::Metrics {
        self.router().metrics()
    }

    fn router(&self) -> &Router {
        &self.inner.router
    }

    fn presence(&self) -> &presence::Presence {
        &self.inner.presence
    }

    /// The backplane; `None` on a single node.
    fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.inner.cluster.as_ref()
    }

    // === sends ===

    fn local_send_to_all(&self, req: pb::SendToAllRequest) -> Result<pb::SendToAllResponse> {
        let hub = HubKey::new(&req.hub)?;
        let message = server_message(req.payload)?;
        self.send(
            &hub,
            Target::All,
            &message,
            &req.excluded,
            &req.filter,
            req.ttl_seconds,
        )?;
        Ok(pb::SendToAllResponse {})
    }

    /// Sends an Engine.IO payload to the connections of this node that `filter` matches (all
    /// of the hub's when empty) and says how many took it: the send of a Socket.IO `:invoke`,
    /// whose answers are awaited per recipient (spec part 2 §2.4a). This node only.
    ///
    /// # Errors
    /// An invalid hub or filter.
    pub(crate) fn send_counted(&self, hub: &str, payload: String, filter: &str) -> Result<usize> {
        let hub = HubKey::new(hub)?;
        let message = Message::from_server(Data::Text(payload.into()));
        self.send(&hub, Target::All, &message, &[], filter, 0)
    }

    fn local_send_to_group(&self, req: pb::SendToGroupRequest) -> Result<pb::SendToGroupResponse> {
        let hub = HubKey::new(&req.hub)?;
        router::check_group_name(&req.group)?;
        let message = {
            let (data, metadata) = payload(req.payload)?;
            Message::to_group(req.group.as_str(), None, data).with_metadata(metadata)
        };
        self.send(
            &hub,
            Target::Group(&req.group),
            &message,
            &req.excluded,
            &req.filter,
            req.ttl_seconds,
        )?;
        Ok(pb::SendToGroupResponse {})
    }

    fn local_send_to_user(&self, req: pb::SendToUserRequest) -> Result<pb::SendToUserResponse> {
        let hub = HubKey::new(&req.hub)?;
        required(Field::UserId, &req.user_id)?;
        let message = server_message(req.payload)?;
        self.send(
            &hub,
            Target::User(&req.user_id),
            &message,
            &req.excluded,
            &req.filter,
            req.ttl_seconds,
        )?;
        Ok(pb::SendToUserResponse {})
    }

    fn local_send_to_connection(
        &self,
        req: pb::SendToConnectionRequest,
    ) -> Result<pb::SendToConnectionResponse> {
        let hub = HubKey::new(&req.hub)?;
        required(Field::ConnectionId, &req.connection_id)?;
        let message = server_message(req.payload)?;
        self.send(
            &hub,
            Target::Connection(&req.connection_id),
            &message,
            &[],
            "",
            req.ttl_seconds,
        )?;
        Ok(pb::SendToConnectionResponse {})
    }

    fn send(
        &self,
        hub: &HubKey,
        target: Target<'_>,
        message: &Message,
        excluded: &[String],
        filter: &str,
        ttl_seconds: u32,
    ) -> Result<usize> {
        if ttl_seconds > MAX_TTL_SECONDS {
            return Err(NodeError::invalid(
                Field::Ttl,
                format!(
                    "the message TTL must be 0 to {MAX_TTL_SECONDS} seconds, not {ttl_seconds}"
                ),
            ));
        }
        let filter = Filter::parse_optional(filter)?;
        let matches = |c: &Connection| filter.as_ref().is_some_and(|f| f.matches(c));
        let excluded: Vec<&str> = excluded.iter().map(String::as_str).collect();
        let options = SendOptions {
            excluded: &excluded,
            filter: filter
                .as_ref()
                .map(|_| &matches as router::manage::Predicate<'_>),
            ttl: (ttl_seconds > 0).then(|| Duration::from_secs(u64::from(ttl_seconds))),
        };
        let recipients = self.router().send(hub, target, message, &options);
        self.trace_send(hub, target, &message.data, recipients, None);
        Ok(recipients)
    }

    /// A `MessageSent` live-trace record: a send from the control plane (`from` `None`) or
    /// a client reached `recipients` connections of this node.
    pub(crate) fn trace_send(
        &self,
        hub: &HubKey,
        target: Target<'_>,
        data: &Data,
        recipients: usize,
        from: Option<&Connection>,
    ) {
        let trace = self.live_trace();
        trace.emit(|| {
            let sender = match from {
                Some(conn) => format!("connection {}", conn.id()),
                None => "the service".to_owned(),
            };
            let to = match target {
                Target::All => "the hub".to_owned(),
                Target::Group(g) => format!("group '{g}'"),
                Target::User(u) => format!("user '{u}'"),
                Target::Connection(c) => format!("connection {c}"),
            };
            let mut r = TraceRecord::new(
                Category::Messaging,
                "MessageSent",
                format!(
                    "{sender} sent a {} message of {} bytes to {to}: {recipients} recipient(s) on this node",
                    data.data_type(),
                    data.len()
                ),
            );
            r.hub = hub.as_str().to_owned();
            match (target, from) {
                (_, Some(conn)) => {
                    r.connection_id = conn.id().as_str().to_owned();
                    r.user_id = conn.user_id().map(|u| u.to_string()).unwrap_or_default();
                }
                (Target::User(u), None) => r.user_id = u.to_owned(),
                (Target::Connection(c), None) => r.connection_id = c.to_owned(),
                _ => {}
            }
            if let Target::Group(g) = target {
                r.group = g.to_owned();
            }
            if trace.include_payloads() {
                r.payload = match data {
                    Data::Text(t) | Data::Json(t) => t.to_string(),
                    Data::Binary(b) | Data::Protobuf(b) => {
                        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b)
                    }
                };
            }
            r
        });
    }

    // === group membership ===

    fn local_add_connection_to_group(
        &self,
        req: pb::AddConnectionToGroupRequest,
    ) -> Result<pb::AddConnectionToGroupResponse> {
        let hub = HubKey::new(&req.hub)?;
        required(Field::ConnectionId, &req.connection_id)?;
        self.router()
            .add_connection_to_group(&hub, &req.group, &req.connection_id)?;
        Ok(pb::AddConnectionToGroupResponse {})
    }

    fn local_remove_connection_from_group(
        &self,
        req: pb::RemoveConnectionFromGroupRequest,
    ) -> Result<pb::RemoveConnectionFromGroupResponse> {
        let hub = HubKey::new(&req.hub)?;
        router::check_group_name(&req.group)?;
        required(Field::ConnectionId, &req.connection_id)?;
        self.router()
            .remove_connection_from_group(&hub, &req.group, &req.connection_id);
        Ok(pb::RemoveConnectionFromGroupResponse {})
    }

    fn local_remove_connection_from_all_groups(
        &self,
        req: pb::RemoveConnectionFromAllGroupsRequest,
    ) -> Result<pb::RemoveConnectionFromAllGroupsResponse> {
        let hub = HubKey::new(&req.hub)?;
        required(Field::ConnectionId, &req.connection_id)?;
        self.router()
            .remove_connection_from_all_groups(&hub, &req.connection_id);
        Ok(pb::RemoveConnectionFromAllGroupsResponse {})
    }

    fn local_add_user_to_group(
        &self,
        req: pb::AddUserToGroupRequest,
    ) -> Result<pb::AddUserToGroupResponse> {
        let hub = HubKey::new(&req.hub)?;
        required(Field::UserId, &req.user_id)?;
        self.router()
            .add_user_to_group(&hub, &req.user_id, &req.group)?;
        Ok(pb::AddUserToGroupResponse {})
    }

    fn local_remove_user_from_group(
        &self,
        req: pb::RemoveUserFromGroupRequest,
    ) -> Result<pb::RemoveUserFromGroupResponse> {
        let hub = HubKey::new(&req.hub)?;
        router::check_group_name(&req.group)?;
        required(Field::UserId, &req.user_id)?;
        self.router()
            .remove_user_from_group(&hub, &req.user_id, &req.group);
        Ok(pb::RemoveUserFromGroupResponse {})
    }

    fn local_remove_user_from_all_groups(
        &self,
        req: pb::RemoveUserFromAllGroupsRequest,
    ) -> Result<pb::RemoveUserFromAllGroupsResponse> {
        let hub = HubKey::new(&req.hub)?;
        required(Field::UserId, &req.user_id)?;
        self.router()
            .remove_user_from_all_groups(&hub, &req.user_id);
        Ok(pb::RemoveUserFromAllGroupsResponse {})
    }

    fn local_add_connections_to_groups(
        &self,
        req: pb::AddConnectionsToGroupsRequest,
    ) -> Result<pb::AddConnectionsToGroupsResponse> {
        let hub = HubKey::new(&req.hub)?;
        let groups = group_list(&req.groups)?;
        let filter = Filter::parse_optional(&req.filter)?;
        let matches = |c: &Connection| filter.as_ref().is_some_and(|f| f.matches(c));
        self.router().add_to_groups(
            &hub,
            &groups,
            filter
                .as_ref()
                .map(|_| &matches as router::manage::Predicate<'_>),
        )?;
        Ok(pb::AddConnectionsToGroupsResponse {})
    }

    fn local_remove_connections_from_groups(
        &self,
        req: pb::RemoveConnectionsFromGroupsRequest,
    ) -> Result<pb::RemoveConnectionsFromGroupsResponse> {
        let hub = HubKey::new(&req.hub)?;
        let groups = group_list(&req.groups)?;
        let filter = Filter::parse_optional(&req.filter)?;
        let matches = |c: &Connection| filter.as_ref().is_some_and(|f| f.matches(c));
        self.router().remove_from_groups(
            &hub,
            &groups,
            filter
                .as_ref()
                .map(|_| &matches as router::manage::Predicate<'_>),
        );
        Ok(pb::RemoveConnectionsFromGroupsResponse {})
    }

    // === closing ===

    fn local_close_connection(
        &self,
        req: pb::CloseConnectionRequest,
    ) -> Result<pb::CloseConnectionResponse> {
        let hub = HubKey::new(&req.hub)?;
        required(Field::ConnectionId, &req.connection_id)?;
        self.close(
            &hub,
            Target::Connection(&req.connection_id),
            &[],
            &req.reason,
        );
        Ok(pb::CloseConnectionResponse {})
    }

    fn local_close_all_connections(
        &self,
        req: pb::CloseAllConnectionsRequest,
    ) -> Result<pb::CloseAllConnectionsResponse> {
        let hub = HubKey::new(&req.hub)?;
        self.close(&hub, Target::All, &req.excluded, &req.reason);
        Ok(pb::CloseAllConnectionsResponse {})
    }

    fn local_close_group_connections(
        &self,
        req: pb::CloseGroupConnectionsRequest,
    ) -> Result<pb::CloseGroupConnectionsResponse> {
        let hub = HubKey::new(&req.hub)?;
        router::check_group_name(&req.group)?;
        self.close(&hub, Target::Group(&req.group), &req.excluded, &req.reason);
        Ok(pb::CloseGroupConnectionsResponse {})
    }

    fn local_close_user_connections(
        &self,
        req: pb::CloseUserConnectionsRequest,
    ) -> Result<pb::CloseUserConnectionsResponse> {
        let hub = HubKey::new(&req.hub)?;
        required(Field::UserId, &req.user_id)?;
        self.close(&hub, Target::User(&req.user_id), &req.excluded, &req.reason);
        Ok(pb::CloseUserConnectionsResponse {})
    }

    fn close(&self, hub: &HubKey, target: Target<'_>, excluded: &[String], reason: &str) {
        let excluded: Vec<&str> = excluded.iter().map(String::as_str).collect();
        let reason = if reason.is_empty() {
            DEFAULT_CLOSE_REASON
        } else {
            reason
        };
        self.router()
            .close_connections(hub, target, &excluded, reason);
    }

    // === existence ===

    fn local_connection_exists(
        &self,
        req: pb::ConnectionExistsRequest,
    ) -> Result<pb::ExistsResponse> {
        let hub = HubKey::new(&req.hub)?;
        required(Field::ConnectionId, &req.connection_id)?;
        Ok(pb::ExistsResponse {
            exists: self.router().connection_exists(&hub, &req.connection_id),
        })
    }

    fn local_group_exists(&self, req: pb::GroupExistsRequest) -> Result<pb::ExistsResponse> {
        let hub = HubKey::new(&req.hub)?;
        router::check_group_name(&req.group)?;
        Ok(pb::ExistsResponse {
            exists: self.router().group_exists(&hub, &req.group),
        })
    }

    fn local_user_exists(&self, req: pb::UserExistsRequest) -> Result<pb::ExistsResponse> {
        let hub = HubKey::new(&req.hub)?;
        required(Field::UserId, &req.user_id)?;
        Ok(pb::ExistsResponse {
            exists: self.router().user_exists(&hub, &req.user_id),
        })
    }

    // === permissions ===

    fn local_grant_permission(
        &self,
        req: pb::GrantPermissionRequest,
    ) -> Result<pb::GrantPermissionResponse> {
        let (hub, permission, target) = permission_args(
            &req.hub,
            &req.connection_id,
            req.permission,
            &req.target_group,
        )?;
        self.router()
            .grant_permission(&hub, &req.connection_id, permission, target)?;
        Ok(pb::GrantPermissionResponse {})
    }

    fn local_revoke_permission(
        &self,
        req: pb::RevokePermissionRequest,
    ) -> Result<pb::RevokePermissionResponse> {
        let (hub, permission, target) = permission_args(
            &req.hub,
            &req.connection_id,
            req.permission,
            &req.target_group,
        )?;
        self.router()
            .revoke_permission(&hub, &req.connection_id, permission, target);
        Ok(pb::RevokePermissionResponse {})
    }

    fn local_check_permission(
        &self,
        req: pb::CheckPermissionRequest,
    ) -> Result<pb::CheckPermissionResponse> {
        let (hub, permission, target) = permission_args(
            &req.hub,
            &req.connection_id,
            req.permission,
            &req.target_group,
        )?;
        let granted = self
            .router()
            .check_permission(&hub, &req.connection_id, permission, target)
            .unwrap_or(false);
        Ok(pb::CheckPermissionResponse { granted })
    }

    // === tokens ===

    pub(crate) fn generate_client_token(
        &self,
        req: pb::GenerateClientTokenRequest,
    ) -> Result<pb::GenerateClientTokenResponse> {
        HubKey::new(&req.hub)?;
        let minutes = if req.expires_in_minutes == 0 {
            60
        } else {
            req.expires_in_minutes
        };
        let request = TokenRequest {
            hub: req.hub,
            user_id: Some(req.user_id).filter(|u| !u.is_empty()),
            roles: req.roles,
            groups: req.groups,
            ttl: Duration::from_secs(u64::from(minutes) * 60),
        };
        let protocol = match pb::ClientType::try_from(req.client_type) {
            Ok(pb::ClientType::Mqtt) => auth::ClientProtocol::Mqtt,
            Ok(pb::ClientType::SocketIo) => auth::ClientProtocol::SocketIo,
            Ok(pb::ClientType::Default | pb::ClientType::Unspecified) => {
                auth::ClientProtocol::Default
            }
            Err(_) => {
                return Err(NodeError::invalid(
                    Field::ClientType,
                    format!("unknown client type {}", req.client_type),
                ));
            }
        };
        let token =
            auth::mint_client_token_for(self.keys().primary(), self.endpoint(), protocol, &request);
        let url = auth::client_url_for(self.endpoint(), protocol, &request.hub, &token);
        Ok(pb::GenerateClientTokenResponse { token, url })
    }

    // === listings ===

    fn local_list_group_connections(
        &self,
        req: pb::ListGroupConnectionsRequest,
    ) -> Result<pb::ListGroupConnectionsResponse> {
        let hub = HubKey::new(&req.hub)?;
        router::check_group_name(&req.group)?;
        let after = PageToken::decode(&req.page_token, PageToken::CONNECTIONS)?;
        let page = self.router().list_connections(
            &hub,
            Target::Group(&req.group),
            None,
            page_request(after.as_deref(), req.page_size)?,
        );
        let next_page_token = next_token(&page, PageToken::CONNECTIONS, |c| c.id().as_str());
        Ok(pb::ListGroupConnectionsResponse {
            connections: page
                .items
                .iter()
                .map(|c| pb::GroupMember {
                    connection_id: c.id().to_string(),
                    user_id: c.user_id().map(|u| u.to_string()),
                })
                .collect(),
            next_page_token,
        })
    }

    fn local_list_connections(
        &self,
        req: pb::ListConnectionsRequest,
    ) -> Result<pb::ListConnectionsResponse> {
        let hub = HubKey::new(&req.hub)?;
        let filter = Filter::parse_optional(&req.filter)?;
        let matches = |c: &Connection| filter.as_ref().is_some_and(|f| f.matches(c));
        let after = PageToken::decode(&req.page_token, PageToken::CONNECTIONS)?;
        let target = if req.user_id.is_empty() {
            Target::All
        } else {
            Target::User(&req.user_id)
        };
        let page = self.router().list_connections(
            &hub,
            target,
            filter
                .as_ref()
                .map(|_| &matches as router::manage::Predicate<'_>),
            page_request(after.as_deref(), req.page_size)?,
        );
        let next_page_token = next_token(&page, PageToken::CONNECTIONS, |c| c.id().as_str());
        Ok(pb::ListConnectionsResponse {
            connections: page.items.iter().map(|c| connection_info(c)).collect(),
            next_page_token,
        })
    }

    fn local_get_connection(&self, req: pb::GetConnectionRequest) -> Result<pb::ConnectionInfo> {
        let hub = HubKey::new(&req.hub)?;
        required(Field::ConnectionId, &req.connection_id)?;
        self.router()
            .connection(&hub, &req.connection_id)
            .map(|c| connection_info(&c))
            .ok_or_else(|| RouterError::NoConnection(req.connection_id).into())
    }

    fn local_list_groups(&self, req: pb::ListGroupsRequest) -> Result<pb::ListGroupsResponse> {
        let hub = HubKey::new(&req.hub)?;
        let after = PageToken::decode(&req.page_token, PageToken::GROUPS)?;
        let page = self
            .router()
            .list_groups(&hub, page_request(after.as_deref(), req.page_size)?);
        let next_page_token = next_token(&page, PageToken::GROUPS, |(name, _)| name);
        Ok(pb::ListGroupsResponse {
            groups: page
                .items
                .into_iter()
                .map(|(name, count)| pb::GroupInfo {
                    name: name.to_string(),
                    connection_count: u64::try_from(count).unwrap_or(u64::MAX),
                })
                .collect(),
            next_page_token,
        })
    }

    fn local_get_hub_stats(&self, req: pb::GetHubStatsRequest) -> Result<pb::HubStats> {
        let hub = HubKey::new(&req.hub)?;
        let stats = self.router().hub_stats(&hub);
        Ok(pb::HubStats {
            hub: hub.to_string(),
            connections: stats.connections,
            users: stats.users,
            groups: stats.groups,
        })
    }
}

/// A required string field must not be empty.
fn required(field: Field, value: &str) -> Result<()> {
    if value.is_empty() {
        Err(NodeError::invalid(
            field,
            format!("{} is required", field.rest_name()),
        ))
    } else {
        Ok(())
    }
}

/// The group names of a filtered group operation: at least one, each valid.
fn group_list(groups: &[String]) -> Result<Vec<&str>> {
    if groups.is_empty() {
        return Err(NodeError::invalid(
            Field::Groups,
            "groups must name at least one group",
        ));
    }
    groups
        .iter()
        .map(|g| {
            router::check_group_name(g).map_err(|e| {
                NodeError::invalid(Field::Groups, format!("{e} (in groups: '{g}')"))
            })?;
            Ok(g.as_str())
        })
        .collect()
}

fn permission_args<'a>(
    hub: &str,
    connection_id: &str,
    permission: i32,
    target: &'a str,
) -> Result<(HubKey, Permission, Option<&'a str>)> {
    let hub = HubKey::new(hub)?;
    required(Field::ConnectionId, connection_id)?;
    let permission = match pb::Permission::try_from(permission) {
        Ok(pb::Permission::SendToGroup) => Permission::SendToGroup,
        Ok(pb::Permission::JoinLeaveGroup) => Permission::JoinLeaveGroup,
        _ => {
            return Err(NodeError::invalid(
                Field::Permission,
                "permission must be sendToGroup or joinLeaveGroup",
            ));
        }
    };
    let target = if target.is_empty() {
        None
    } else {
        router::check_group_name(target)
            .map_err(|e| NodeError::invalid(Field::TargetGroup, e.to_string()))?;
        Some(target)
    };
    Ok((hub, permission, target))
}

/// A server message from a send request's payload.
fn server_message(payload: Option<pb::Payload>) -> Result<Message> {
    let (data, metadata) = self::payload(payload)?;
    Ok(Message::from_server(data).with_metadata(metadata))
}

/// A payload and its metadata as the router carries them.
fn payload(payload: Option<pb::Payload>) -> Result<(Data, Option<crate::message::Metadata>)> {
    let metadata = match &payload {
        Some(p) if !p.metadata.is_empty() => crate::message::metadata_from(p.metadata.clone())
            .map_err(|e| NodeError::invalid(Field::Payload, format!("message {e}")))?,
        _ => None,
    };
    Ok((data(payload)?, metadata))
}

/// A payload as the router carries it.
fn data(payload: Option<pb::Payload>) -> Result<Data> {
    use pb::payload::Data as P;
    let missing = || NodeError::invalid(Field::Payload, "a message payload is required");
    let payload = payload.ok_or_else(missing)?;
    let content_type = payload.content_type.trim();
    let wrong_type = |variant: &str, expected: &str| {
        NodeError::invalid(
            Field::Payload,
            format!(
                "content type '{content_type}' does not fit a {variant} payload (expected \
                 {expected} or nothing)"
            ),
        )
    };
    let is = |name: &str| content_type.is_empty() || content_type.eq_ignore_ascii_case(name);
    match payload.data.ok_or_else(missing)? {
        P::Text(text) if is("text/plain") => Ok(Data::Text(Utf8Bytes::from(text))),
        P::Text(_) => Err(wrong_type("text", "text/plain")),
        P::Json(json) if is("application/json") => {
            if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&json) {
                return Err(NodeError::invalid(
                    Field::Payload,
                    format!("the JSON payload is not valid JSON: {e}"),
                ));
            }
            Ok(Data::Json(Utf8Bytes::from(json)))
        }
        P::Json(_) => Err(wrong_type("json", "application/json")),
        P::Binary(bytes) if is("application/octet-stream") => Ok(Data::Binary(bytes)),
        P::Binary(bytes) if content_type.eq_ignore_ascii_case("application/x-protobuf") => {
            Ok(Data::Protobuf(bytes))
        }
        P::Binary(_) => Err(wrong_type(
            "binary",
            "application/octet-stream, application/x-protobuf",
        )),
    }
}

/// Page tokens are opaque to callers: base64url of `<listing kind>:<last key>`, so a token
/// from one listing is refused by another instead of silently misread.
pub(crate) struct PageToken;

impl PageToken {
    pub(crate) const CONNECTIONS: &'static str = "c";
    pub(crate) const GROUPS: &'static str = "g";

    pub(crate) fn encode(kind: &str, after: &str) -> String {
        URL_SAFE_NO_PAD.encode(format!("{kind}:{after}"))
    }

    pub(crate) fn decode(token: &str, kind: &str) -> Result<Option<String>> {
        if token.is_empty() {
            return Ok(None);
        }
        let invalid = || {
            NodeError::invalid(
                Field::PageToken,
                "the page token is invalid: pass back the token of the previous page of the \
                 same listing",
            )
        };
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
        let text = String::from_utf8(bytes).map_err(|_| invalid())?;
        match text.split_once(':') {
            Some((k, after)) if k == kind => Ok(Some(after.to_owned())),
            _ => Err(invalid()),
        }
    }
}

fn page_request(after: Option<&str>, page_size: u32) -> Result<PageRequest<'_>> {
    let limit = match usize::try_from(page_size).unwrap_or(usize::MAX) {
        0 => DEFAULT_PAGE_SIZE,
        n if n > MAX_PAGE_SIZE => {
            return Err(NodeError::invalid(
                Field::PageSize,
                format!("the page size must be 1 to {MAX_PAGE_SIZE}, not {n}"),
            ));
        }
        n => n,
    };
    Ok(PageRequest { after, limit })
}

fn next_token<T>(page: &Page<T>, kind: &str, key: impl Fn(&T) -> &str) -> String {
    match page.items.last() {
        Some(last) if page.more => PageToken::encode(kind, key(last)),
        _ => String::new(),
    }
}

fn connection_info(conn: &Connection) -> pb::ConnectionInfo {
    let mut groups: Vec<String> = conn.groups().iter().map(|g| g.to_string()).collect();
    groups.sort_unstable();
    let since = conn
        .connected_at()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    pb::ConnectionInfo {
        connection_id: conn.id().to_string(),
        hub: conn.hub().to_string(),
        user_id: conn.user_id().map(|u| u.to_string()),
        groups,
        subprotocol: conn.subprotocol().unwrap_or_default().to_owned(),
        connected_at: Some(prost_types::Timestamp {
            seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(since.subsec_nanos()).unwrap_or(0),
        }),
        remote_address: conn
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_default(),
    }
}
