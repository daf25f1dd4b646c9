//! Where each control-plane operation runs: on this node alone (single node), or across the
//! cluster through the [`Cluster`] backplane.
//!
//! The edges call the async methods here; they call the `local_*` methods of [`Node`],
//! which act on this node's connections, on the nodes that must act:
//!
//! - an operation on one connection (send, group membership, permission, close, exists,
//!   details) runs on the node that owns it: this one when the connection is here, else the
//!   node its id starts with. An id that names no live node (an MQTT client id is the
//!   connection id, and the client chose it) is asked of every node and the answers merged:
//!   the one node that has the connection acts, the others have nothing to do. When no node
//!   has it, the answer is the one a single node gives (not found, or a no-op);
//! - any other mutation runs here and then on every other node (one broadcast);
//! - any other question is asked of every live node and the answers are merged (pages by key,
//!   counts of distinct users and groups).
//!
//! So one implementation serves every operation on one node and on many, and what a remote
//! node runs is the very request the caller made.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use hubcast_proto::v1 as pb;
use pb::batch_operation::Operation;
use prost::Message as _;

use super::{Field, Node, NodeError, PageToken, Result, page_request};
use crate::cluster::wire::{Body, GroupSend, GroupSendStream, HubDetail, Query, Question, Reply};
use crate::cluster::{Cluster, ClusterError, Published, Requests};
use crate::error::{Classify, ErrorCode};
use crate::message::{Data, Message, Source, StreamError, StreamInfo, Utf8Bytes};
use crate::router::{Connection, HubKey, Target};
use crate::telemetry::trace;

/// Declares the async mutation methods and [`Node::apply_local`] from one list, so the
/// two can never disagree about which local method an operation runs.
macro_rules! mutations {
    ($($name:ident => $local:ident($request:ident) -> $response:ident, $variant:ident;)*) => {
        impl Node {
            $(
                #[doc = concat!("`", stringify!($request), "`, wherever its targets are.")]
                pub(crate) async fn $name(&self, req: pb::$request) -> Result<pb::$response> {
                    self.mutate(Operation::$variant(req)).await?;
                    Ok(pb::$response::default())
                }
            )*

            /// Applies one mutation to this node's connections.
            pub(crate) fn apply_local(&self, op: Operation) -> Result<()> {
                match op {
                    $(Operation::$variant(r) => self.$local(r).map(drop),)*
                }
            }
        }
    };
}

mutations! {
    send_to_all => local_send_to_all(SendToAllRequest) -> SendToAllResponse, SendToAll;
    send_to_group => local_send_to_group(SendToGroupRequest) -> SendToGroupResponse, SendToGroup;
    send_to_user => local_send_to_user(SendToUserRequest) -> SendToUserResponse, SendToUser;
    send_to_connection => local_send_to_connection(SendToConnectionRequest) -> SendToConnectionResponse, SendToConnection;
    add_connection_to_group => local_add_connection_to_group(AddConnectionToGroupRequest) -> AddConnectionToGroupResponse, AddConnectionToGroup;
    remove_connection_from_group => local_remove_connection_from_group(RemoveConnectionFromGroupRequest) -> RemoveConnectionFromGroupResponse, RemoveConnectionFromGroup;
    remove_connection_from_all_groups => local_remove_connection_from_all_groups(RemoveConnectionFromAllGroupsRequest) -> RemoveConnectionFromAllGroupsResponse, RemoveConnectionFromAllGroups;
    add_user_to_group => local_add_user_to_group(AddUserToGroupRequest) -> AddUserToGroupResponse, AddUserToGroup;
    remove_user_from_group => local_remove_user_from_group(RemoveUserFromGroupRequest) -> RemoveUserFromGroupResponse, RemoveUserFromGroup;
    remove_user_from_all_groups => local_remove_user_from_all_groups(RemoveUserFromAllGroupsRequest) -> RemoveUserFromAllGroupsResponse, RemoveUserFromAllGroups;
    add_connections_to_groups => local_add_connections_to_groups(AddConnectionsToGroupsRequest) -> AddConnectionsToGroupsResponse, AddConnectionsToGroups;
    remove_connections_from_groups => local_remove_connections_from_groups(RemoveConnectionsFromGroupsRequest) -> RemoveConnectionsFromGroupsResponse, RemoveConnectionsFromGroups;
    close_connection => local_close_connection(CloseConnectionRequest) -> CloseConnectionResponse, CloseConnection;
    close_all_connections => local_close_all_connections(CloseAllConnectionsRequest) -> CloseAllConnectionsResponse, CloseAllConnections;
    close_group_connections => local_close_group_connections(CloseGroupConnectionsRequest) -> CloseGroupConnectionsResponse, CloseGroupConnections;
    close_user_connections => local_close_user_connections(CloseUserConnectionsRequest) -> CloseUserConnectionsResponse, CloseUserConnections;
    grant_permission => local_grant_permission(GrantPermissionRequest) -> GrantPermissionResponse, GrantPermission;
    revoke_permission => local_revoke_permission(RevokePermissionRequest) -> RevokePermissionResponse, RevokePermission;
}

/// The hub and connection an operation addresses, when it addresses exactly one.
fn connection_of(op: &Operation) -> Option<(&str, &str)> {
    match op {
        Operation::SendToConnection(r) => Some((&r.hub, &r.connection_id)),
        Operation::AddConnectionToGroup(r) => Some((&r.hub, &r.connection_id)),
        Operation::RemoveConnectionFromGroup(r) => Some((&r.hub, &r.connection_id)),
        Operation::RemoveConnectionFromAllGroups(r) => Some((&r.hub, &r.connection_id)),
        Operation::CloseConnection(r) => Some((&r.hub, &r.connection_id)),
        Operation::GrantPermission(r) => Some((&r.hub, &r.connection_id)),
        Operation::RevokePermission(r) => Some((&r.hub, &r.connection_id)),
        _ => None,
    }
}

/// Where an operation on one connection runs.
enum Place {
    /// On this node: the connection is here, or its id names this node, or there is no
    /// cluster.
    Here,
    /// On the node its id names, which answered.
    Owner(Reply),
    /// On every node: the id names no live node, and the connection is not here.
    Everywhere,
}

impl Node {
    /// Finds where the operation `body` on connection `id` of `hub` runs, and when that is
    /// the node the id names, runs it there.
    async fn place(&self, hub: &str, id: &str, body: impl FnOnce() -> Body) -> Result<Place> {
        let Some(cluster) = self.cluster() else {
            return Ok(Place::Here);
        };
        if self.router().connection_exists(hub, id) {
            return Ok(Place::Here);
        }
        match cluster.owner_of(id) {
            Some(owner) if owner == cluster.node() => return Ok(Place::Here),
            Some(owner) => {
                if let Some(reply) = cluster.ask(owner, body()).await? {
                    return Ok(Place::Owner(reply));
                }
            }
            None => {}
        }
        Ok(Place::Everywhere)
    }

    /// Asks every other node to run `body` and reads each answer; on a single node, none.
    async fn ask_everyone(&self, body: Body) -> Result<Vec<Result<Vec<u8>>>> {
        let Some(cluster) = self.cluster() else {
            return Ok(Vec::new());
        };
        Ok(cluster.gather(body).await?.iter().map(from_reply).collect())
    }

    /// Runs a mutation where it must run.
    pub(crate) async fn mutate(&self, op: Operation) -> Result<()> {
        let Some(cluster) = self.cluster() else {
            return self.apply_local(op);
        };
        if let Some((hub, id)) = connection_of(&op) {
            let as_body = || {
                Body::Op(pb::BatchOperation {
                    operation: Some(op.clone()),
                })
            };
            return match self.place(hub, id, as_body).await? {
                Place::Here => self.apply_local(op),
                Place::Owner(reply) => from_reply(&reply).map(drop),
                Place::Everywhere => {
                    // Here first: it checks the request as every node would, so a bad one
                    // goes no further.
                    match self.apply_local(op.clone()) {
                        Err(e) if e.code() != ErrorCode::NotFound => return Err(e),
                        here => {
                            let there = self.ask_everyone(as_body()).await?;
                            first_found(std::iter::once(here.map(|()| Vec::new())).chain(there))
                                .map(drop)
                        }
                    }
                }
            };
        }
        cluster.check_available()?;
        self.apply_local(op.clone())?;
        // Every live node applies it and answers before the call returns, so what the caller
        // asks next (on any node) sees it. Their answers say nothing more: a node without the
        // user or group has nothing to do, which is not an error.
        cluster
            .gather(Body::Op(pb::BatchOperation {
                operation: Some(op),
            }))
            .await
            .map(drop)
            .map_err(|e| {
                NodeError::Cluster(ClusterError::Unavailable(format!(
                    "{e}; applied on this node, perhaps not on every other"
                )))
            })
    }

    /// Answers a question about connection `id` of `hub` where the connection is: here, on
    /// the node its id names, or by merging every node's answer (this one's first) with
    /// `merge`.
    async fn ask_about_connection<R: prost::Message + Default>(
        &self,
        hub: &str,
        id: &str,
        question: Question,
        local: impl FnOnce() -> Result<R>,
        merge: impl FnOnce(Vec<Result<R>>) -> Result<R>,
    ) -> Result<R> {
        let as_body = || {
            Body::Query(Query {
                question: Some(question.clone()),
            })
        };
        match self.place(hub, id, as_body).await? {
            Place::Here => local(),
            Place::Owner(reply) => decode(&from_reply(&reply)?),
            Place::Everywhere => {
                let here = match local() {
                    Err(e) if e.code() != ErrorCode::NotFound => return Err(e),
                    here => here,
                };
                let mut answers = vec![here];
                for there in self.ask_everyone(as_body()).await? {
                    answers.push(there.and_then(|bytes| decode(&bytes)));
                }
                merge(answers)
            }
        }
    }

    /// Asks every other node; `None` on a single node.
    pub(super) async fn ask_others<R: prost::Message + Default>(
        &self,
        question: impl FnOnce() -> Question,
    ) -> Result<Option<Vec<R>>> {
        let Some(cluster) = self.cluster() else {
            return Ok(None);
        };
        let replies = cluster
            .gather(Body::Query(Query {
                question: Some(question()),
            }))
            .await?;
        replies
            .iter()
            .map(|r| decode(&from_reply(r)?))
            .collect::<Result<Vec<R>>>()
            .map(Some)
    }

    // === questions about one connection ===

    pub(crate) async fn connection_exists(
        &self,
        req: pb::ConnectionExistsRequest,
    ) -> Result<pb::ExistsResponse> {
        let (hub, id) = (req.hub.clone(), req.connection_id.clone());
        self.ask_about_connection(
            &hub,
            &id,
            Question::ConnectionExists(req.clone()),
            || self.local_connection_exists(req),
            |answers| {
                let mut exists = false;
                for answer in answers {
                    exists |= answer.map(|a: pb::ExistsResponse| a.exists)?;
                }
                Ok(pb::ExistsResponse { exists })
            },
        )
        .await
    }

    pub(crate) async fn get_connection(
        &self,
        req: pb::GetConnectionRequest,
    ) -> Result<pb::ConnectionInfo> {
        let (hub, id) = (req.hub.clone(), req.connection_id.clone());
        self.ask_about_connection(
            &hub,
            &id,
            Question::GetConnection(req.clone()),
            || self.local_get_connection(req),
            first_found,
        )
        .await
    }

    pub(crate) async fn check_permission(
        &self,
        req: pb::CheckPermissionRequest,
    ) -> Result<pb::CheckPermissionResponse> {
        let (hub, id) = (req.hub.clone(), req.connection_id.clone());
        self.ask_about_connection(
            &hub,
            &id,
            Question::CheckPermission(req.clone()),
            || self.local_check_permission(req),
            |answers| {
                let mut granted = false;
                for answer in answers {
                    granted |= answer.map(|a: pb::CheckPermissionResponse| a.granted)?;
                }
                Ok(pb::CheckPermissionResponse { granted })
            },
        )
        .await
    }

    // === questions about the whole hub ===

    pub(crate) async fn group_exists(
        &self,
        req: pb::GroupExistsRequest,
    ) -> Result<pb::ExistsResponse> {
        let here = self.local_group_exists(req.clone())?;
        if here.exists {
            return Ok(here);
        }
        let others: Option<Vec<pb::ExistsResponse>> =
            self.ask_others(|| Question::GroupExists(req)).await?;
        Ok(pb::ExistsResponse {
            exists: others.is_some_and(|o| o.iter().any(|r| r.exists)),
        })
    }

    pub(crate) async fn user_exists(
        &self,
        req: pb::UserExistsRequest,
    ) -> Result<pb::ExistsResponse> {
        let here = self.local_user_exists(req.clone())?;
        if here.exists {
            return Ok(here);
        }
        let others: Option<Vec<pb::ExistsResponse>> =
            self.ask_others(|| Question::UserExists(req)).await?;
        Ok(pb::ExistsResponse {
            exists: others.is_some_and(|o| o.iter().any(|r| r.exists)),
        })
    }

    pub(crate) async fn list_connections(
        &self,
        req: pb::ListConnectionsRequest,
    ) -> Result<pb::ListConnectionsResponse> {
        let limit = page_request(None, req.page_size)?.limit;
        let here = self.local_list_connections(req.clone())?;
        let Some(others) = self
            .ask_others::<pb::ListConnectionsResponse>(|| Question::ListConnections(req))
            .await?
        else {
            return Ok(here);
        };
        let (connections, next_page_token) = merge_pages(
            std::iter::once(here)
                .chain(others)
                .map(|p| (p.connections, p.next_page_token)),
            limit,
            |c: &pb::ConnectionInfo| c.connection_id.clone(),
            PageToken::CONNECTIONS,
        );
        Ok(pb::ListConnectionsResponse {
            connections,
            next_page_token,
        })
    }

    pub(crate) async fn list_group_connections(
        &self,
        req: pb::ListGroupConnectionsRequest,
    ) -> Result<pb::ListGroupConnectionsResponse> {
        let limit = page_request(None, req.page_size)?.limit;
        let here = self.local_list_group_connections(req.clone())?;
        let Some(others) = self
            .ask_others::<pb::ListGroupConnectionsResponse>(|| Question::ListGroupConnections(req))
            .await?
        else {
            return Ok(here);
        };
        let (connections, next_page_token) = merge_pages(
            std::iter::once(here)
                .chain(others)
                .map(|p| (p.connections, p.next_page_token)),
            limit,
            |c: &pb::GroupMember| c.connection_id.clone(),
            PageToken::CONNECTIONS,
        );
        Ok(pb::ListGroupConnectionsResponse {
            connections,
            next_page_token,
        })
    }

    pub(crate) async fn list_groups(
        &self,
        req: pb::ListGroupsRequest,
    ) -> Result<pb::ListGroupsResponse> {
        let limit = page_request(None, req.page_size)?.limit;
        let here = self.local_list_groups(req.clone())?;
        let Some(others) = self
            .ask_others::<pb::ListGroupsResponse>(|| Question::ListGroups(req))
            .await?
        else {
            return Ok(here);
        };
        // Each node's page holds its first `limit` groups after the token; the first `limit`
        // names of the union are complete, since a node whose page stopped early had
        // `limit` names before its last one.
        let mut more = false;
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for page in std::iter::once(here).chain(others) {
            more |= !page.next_page_token.is_empty();
            for group in page.groups {
                *counts.entry(group.name).or_default() += group.connection_count;
            }
        }
        more |= counts.len() > limit;
        let groups: Vec<pb::GroupInfo> = counts
            .into_iter()
            .take(limit)
            .map(|(name, connection_count)| pb::GroupInfo {
                name,
                connection_count,
            })
            .collect();
        let next_page_token = match groups.last() {
            Some(last) if more => PageToken::encode(PageToken::GROUPS, &last.name),
            _ => String::new(),
        };
        Ok(pb::ListGroupsResponse {
            groups,
            next_page_token,
        })
    }

    pub(crate) async fn get_hub_stats(&self, req: pb::GetHubStatsRequest) -> Result<pb::HubStats> {
        let here = self.local_get_hub_stats(req.clone())?;
        let Some(others) = self
            .ask_others::<HubDetail>(|| Question::HubDetail(req))
            .await?
        else {
            return Ok(here);
        };
        let mine = self.local_hub_detail(&HubKey::new(&here.hub)?);
        let mut users: HashSet<String> = HashSet::new();
        let mut groups: HashSet<String> = HashSet::new();
        let mut connections = 0;
        for detail in std::iter::once(mine).chain(others) {
            connections += detail.connections;
            users.extend(detail.users);
            groups.extend(detail.groups);
        }
        Ok(pb::HubStats {
            hub: here.hub,
            connections,
            users: users.len() as u64,
            groups: groups.len() as u64,
        })
    }

    fn local_hub_detail(&self, hub: &HubKey) -> HubDetail {
        let (connections, users, groups) = self.router().hub_detail(hub);
        HubDetail {
            connections,
            users,
            groups,
        }
    }

    /// Answers a question from this node's connections.
    fn answer_local(&self, question: Question) -> Result<Vec<u8>> {
        Ok(match question {
            Question::ConnectionExists(r) => self.local_connection_exists(r)?.encode_to_vec(),
            Question::GetConnection(r) => self.local_get_connection(r)?.encode_to_vec(),
            Question::CheckPermission(r) => self.local_check_permission(r)?.encode_to_vec(),
            Question::GroupExists(r) => self.local_group_exists(r)?.encode_to_vec(),
            Question::UserExists(r) => self.local_user_exists(r)?.encode_to_vec(),
            Question::ListGroupConnections(r) => {
                self.local_list_group_connections(r)?.encode_to_vec()
            }
            Question::ListConnections(r) => self.local_list_connections(r)?.encode_to_vec(),
            Question::ListGroups(r) => self.local_list_groups(r)?.encode_to_vec(),
            Question::GroupStates(q) => self.local_group_states(q).encode_to_vec(),
            Question::HubDetail(r) => {
                let hub = HubKey::new(&r.hub)?;
                self.local_hub_detail(&hub).encode_to_vec()
            }
        })
    }

    /// Delivers another node's client group send to this node's members.
    fn deliver_group_send(&self, send: GroupSend) {
        let text = || Utf8Bytes::try_from(send.payload.clone()).ok();
        let data = match send.data_type {
            0 => text().map(Data::Text),
            1 => text().map(Data::Json),
            2 => Some(Data::Binary(send.payload.clone())),
            3 => Some(Data::Protobuf(send.payload.clone())),
            _ => None,
        };
        let Some(data) = data else {
            tracing::warn!("ignoring a malformed group send from another node");
            return;
        };
        let stream = send.stream.map(|s| {
            Arc::new(StreamInfo {
                stream_id: s.stream_id.into(),
                sequence_id: s.sequence_id,
                end: s.end,
                error: s.error_name.map(|name| StreamError {
                    name: StreamError::known_name(&name),
                    message: s.error_message.unwrap_or_default(),
                    user_error_code: s.user_error_code,
                }),
            })
        });
        let message = Message::to_group(send.group.as_str(), send.from_user.map(Arc::from), data)
            .with_stream(stream)
            .with_mqtt(
                send.mqtt_qos.and_then(|q| u8::try_from(q.min(2)).ok()),
                send.mqtt_expiry,
            );
        let Ok(hub) = HubKey::new(&send.hub) else {
            tracing::warn!("ignoring a group send from another node for an invalid hub");
            return;
        };
        let excluded: Vec<&str> = send.excluded.as_deref().into_iter().collect();
        self.router()
            .send_to_group(&hub, &send.group, &message, &excluded);
    }
}

/// A client's group send (or presence change) on its way to the other nodes.
#[derive(Debug)]
pub(crate) struct Forwarded(Published);

impl From<Published> for Forwarded {
    fn from(published: Published) -> Self {
        Self(published)
    }
}

impl Forwarded {
    /// Waits until Redis has taken the message.
    ///
    /// # Errors
    /// [`NodeError::Cluster`]: Redis did not take it (timed out, failed, the node stopped).
    pub(crate) async fn outcome(self) -> Result<()> {
        Ok(self.0.outcome().await?)
    }
}

impl Node {
    /// Carries out what the other nodes ask of this one, in the order they asked, until the
    /// node leaves the cluster. The composition root runs it in a task of its own.
    pub(crate) async fn serve_cluster(self, cluster: Arc<Cluster>, mut requests: Requests) {
        while let Some(request) = requests.next().await {
            if let Body::SocketIoPoll(poll) = request.body {
                let _entered = request.span.enter();
                self.serve_relayed_poll(&cluster, poll, request.asker);
                continue;
            }
            let reply = request.span.in_scope(|| self.handle(request.body));
            if let Some(reply) = reply {
                cluster.answer(request.asker, reply);
            }
        }
    }

    /// A client's send to `group` of its hub, in one call: delivered to this node's members
    /// at once, then handed to the other nodes. On a single node it returns `None`; in a
    /// cluster, a [`Forwarded`] that resolves when Redis has taken the message, which is when
    /// the other nodes can have it (the WebSocket edge acks then).
    ///
    /// # Errors
    /// [`NodeError::Cluster`] when the other nodes cannot be reached now; the message was
    /// still delivered here.
    pub(crate) fn send_to_group_from_client(
        &self,
        conn: &Connection,
        group: &str,
        no_echo: bool,
        data: Data,
    ) -> Result<Option<Forwarded>> {
        self.send_stream_chunk_from_client(conn, group, no_echo, data, None)
    }

    /// [`Node::send_to_group_from_client`] for a chunk (or the end) of a group stream: the
    /// message carries its place in the stream, on this node and across the cluster.
    ///
    /// # Errors
    /// As [`Node::send_to_group_from_client`].
    pub(crate) fn send_stream_chunk_from_client(
        &self,
        conn: &Connection,
        group: &str,
        no_echo: bool,
        data: Data,
        stream: Option<Arc<StreamInfo>>,
    ) -> Result<Option<Forwarded>> {
        let message = Message::to_group(group, conn.user_id().cloned(), data).with_stream(stream);
        self.send_message_from_client(conn, group, no_echo, &message)
    }

    /// A PUBLISH of an MQTT client at `qos`: a group send whose MQTT subscribers get it at
    /// the lower of `qos` and their subscription's, and not after its MQTT 5 Message Expiry
    /// Interval `expiry` (seconds).
    ///
    /// # Errors
    /// As [`Node::send_to_group_from_client`].
    pub(crate) fn publish_from_mqtt_client(
        &self,
        conn: &Connection,
        group: &str,
        data: Data,
        (qos, expiry): (u8, Option<u32>),
    ) -> Result<Option<Forwarded>> {
        let message =
            Message::to_group(group, conn.user_id().cloned(), data).with_mqtt(Some(qos), expiry);
        self.send_message_from_client(conn, group, false, &message)
    }

    fn send_message_from_client(
        &self,
        conn: &Connection,
        group: &str,
        no_echo: bool,
        message: &Message,
    ) -> Result<Option<Forwarded>> {
        let me = [conn.id().as_str()];
        let excluded: &[&str] = if no_echo { &me } else { &[] };
        let recipients = self
            .router()
            .send_to_group(conn.hub(), group, message, excluded);
        trace::record("group", group);
        trace::record("recipients", recipients);
        self.trace_send(
            conn.hub(),
            Target::Group(group),
            &message.data,
            recipients,
            Some(conn),
        );
        let excluded = no_echo.then(|| conn.id().as_str());
        Ok(self
            .forward_group_send(conn.hub(), group, message, excluded)?
            .map(Forwarded))
    }

    /// Hands a group send delivered here to the other nodes; `None` on a single node.
    fn forward_group_send(
        &self,
        hub: &str,
        group: &str,
        message: &Message,
        excluded: Option<&str>,
    ) -> std::result::Result<Option<Published>, ClusterError> {
        let Some(cluster) = self.cluster() else {
            return Ok(None);
        };
        let from_user = match &message.source {
            Source::Group { from_user, .. } => from_user.as_deref().map(str::to_owned),
            Source::Server => None,
        };
        let (data_type, payload) = match &message.data {
            Data::Text(t) => (0, bytes::Bytes::from(t.clone())),
            Data::Json(t) => (1, bytes::Bytes::from(t.clone())),
            Data::Binary(b) => (2, b.clone()),
            Data::Protobuf(b) => (3, b.clone()),
        };
        let stream = message.stream.as_deref().map(|s| GroupSendStream {
            stream_id: s.stream_id.to_string(),
            sequence_id: s.sequence_id,
            end: s.end,
            error_name: s.error.as_ref().map(|e| e.name.to_owned()),
            error_message: s.error.as_ref().map(|e| e.message.clone()),
            user_error_code: s.error.as_ref().and_then(|e| e.user_error_code.clone()),
        });
        cluster
            .broadcast_confirmed(Body::GroupSend(GroupSend {
                hub: hub.to_owned(),
                group: group.to_owned(),
                from_user,
                excluded: excluded.map(str::to_owned),
                data_type,
                payload,
                stream,
                mqtt_qos: message.mqtt_qos.map(u32::from),
                mqtt_expiry: message.mqtt_expiry,
            }))
            .map(Some)
    }

    /// Carries out one request of another node; returns the reply when it expects one.
    fn handle(&self, body: Body) -> Option<Reply> {
        match body {
            Body::Op(op) => Some(to_reply(match op.operation {
                Some(op) => self.apply_local(op).map(|()| Vec::new()),
                None => Err(NodeError::invalid(Field::Hub, "empty operation")),
            })),
            Body::Query(query) => Some(to_reply(match query.question {
                Some(q) => self.answer_local(q),
                None => Err(NodeError::invalid(Field::Hub, "empty question")),
            })),
            Body::GroupSend(send) => {
                self.deliver_group_send(send);
                None
            }
            Body::GroupState(states) => {
                self.deliver_group_states(states);
                None
            }
            // The backplane handles these itself.
            Body::Reply(_)
            | Body::Listeners(_)
            | Body::Event(_)
            | Body::TunnelRequest(_)
            | Body::Invoke(_)
            | Body::InvokeAck(_) => None,
            // Served apart, by `serve_cluster`: it may be held for the poll duration.
            Body::SocketIoPoll(_) => None,
        }
    }
}

/// The first successful answer; else the first failure other than "not found", which says
/// more; else "not found".
fn first_found<T>(answers: impl IntoIterator<Item = Result<T>>) -> Result<T> {
    let mut failure: Option<NodeError> = None;
    for answer in answers {
        match answer {
            Ok(found) => return Ok(found),
            Err(e) => match &failure {
                Some(f) if f.code() != ErrorCode::NotFound => {}
                Some(_) if e.code() == ErrorCode::NotFound => {}
                _ => failure = Some(e),
            },
        }
    }
    Err(failure.unwrap_or_else(|| NodeError::Remote {
        code: ErrorCode::NotFound,
        message: "no node answered".to_owned(),
        field: Some(Field::ConnectionId),
    }))
}

/// Merges one page from each node: items in key order, the first `limit`, and a token when
/// any node had more.
fn merge_pages<T>(
    pages: impl Iterator<Item = (Vec<T>, String)>,
    limit: usize,
    key: impl Fn(&T) -> String,
    kind: &str,
) -> (Vec<T>, String) {
    let mut more = false;
    let mut items = Vec::new();
    for (page, token) in pages {
        more |= !token.is_empty();
        items.extend(page);
    }
    items.sort_by_key(|item| key(item));
    more |= items.len() > limit;
    items.truncate(limit);
    let token = match items.last() {
        Some(last) if more => PageToken::encode(kind, &key(last)),
        _ => String::new(),
    };
    (items, token)
}

fn decode<R: prost::Message + Default>(bytes: &[u8]) -> Result<R> {
    R::decode(bytes).map_err(|e| NodeError::Remote {
        code: ErrorCode::Internal,
        message: format!("undecodable answer from another node: {e}"),
        field: None,
    })
}

fn to_reply(result: Result<Vec<u8>>) -> Reply {
    match result {
        Ok(body) => Reply {
            body,
            ..Reply::default()
        },
        Err(e) => Reply {
            error_code: code_number(e.code()),
            message: e.to_string(),
            field: e.field().map_or(0, field_number),
            body: Vec::new(),
        },
    }
}

fn from_reply(reply: &Reply) -> Result<Vec<u8>> {
    if reply.error_code == 0 {
        return Ok(reply.body.clone());
    }
    Err(NodeError::Remote {
        code: code_of(reply.error_code),
        message: reply.message.clone(),
        field: field_of(reply.field),
    })
}

// The numbers below travel between nodes, which may run different versions during a rolling
// upgrade: each is pinned by an explicit match (never by a position in a list, which a
// reordering would silently change) and by `wire_numbers_are_stable` below. A new code or
// field takes a new number; a number is never reused.

/// An error code's number on the cluster wire (0 means success, so none is 0).
fn code_number(code: ErrorCode) -> u32 {
    match code {
        ErrorCode::BadRequest => 1,
        ErrorCode::Unauthenticated => 2,
        ErrorCode::PermissionDenied => 3,
        ErrorCode::NotFound => 4,
        ErrorCode::PayloadTooLarge => 5,
        ErrorCode::UnsupportedMediaType => 6,
        ErrorCode::Unavailable => 7,
        ErrorCode::Internal => 8,
        ErrorCode::Timeout => 9,
    }
}

/// The error code of a wire number; one this node does not know is an internal error.
fn code_of(n: u32) -> ErrorCode {
    match n {
        1 => ErrorCode::BadRequest,
        2 => ErrorCode::Unauthenticated,
        3 => ErrorCode::PermissionDenied,
        4 => ErrorCode::NotFound,
        5 => ErrorCode::PayloadTooLarge,
        6 => ErrorCode::UnsupportedMediaType,
        7 => ErrorCode::Unavailable,
        9 => ErrorCode::Timeout,
        _ => ErrorCode::Internal,
    }
}

/// A request field's number on the cluster wire (0 means no field).
fn field_number(field: Field) -> u32 {
    match field {
        Field::Hub => 1,
        Field::Group => 2,
        Field::Groups => 3,
        Field::UserId => 4,
        Field::ConnectionId => 5,
        Field::Payload => 6,
        Field::Ttl => 7,
        Field::Permission => 8,
        Field::TargetGroup => 9,
        Field::PageSize => 10,
        Field::PageToken => 11,
        Field::Filter => 12,
        Field::ClientType => 13,
    }
}

/// The field of a wire number; 0, or one this node does not know, names none.
fn field_of(n: u32) -> Option<Field> {
    Some(match n {
        1 => Field::Hub,
        2 => Field::Group,
        3 => Field::Groups,
        4 => Field::UserId,
        5 => Field::ConnectionId,
        6 => Field::Payload,
        7 => Field::Ttl,
        8 => Field::Permission,
        9 => Field::TargetGroup,
        10 => Field::PageSize,
        11 => Field::PageToken,
        12 => Field::Filter,
        13 => Field::ClientType,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The numbers nodes of different versions agree on: changing one is a wire break.
    const CODES: [(ErrorCode, u32); 9] = [
        (ErrorCode::BadRequest, 1),
        (ErrorCode::Unauthenticated, 2),
        (ErrorCode::PermissionDenied, 3),
        (ErrorCode::NotFound, 4),
        (ErrorCode::PayloadTooLarge, 5),
        (ErrorCode::UnsupportedMediaType, 6),
        (ErrorCode::Unavailable, 7),
        (ErrorCode::Internal, 8),
        (ErrorCode::Timeout, 9),
    ];
    const FIELDS: [(Field, u32); 13] = [
        (Field::Hub, 1),
        (Field::Group, 2),
        (Field::Groups, 3),
        (Field::UserId, 4),
        (Field::ConnectionId, 5),
        (Field::Payload, 6),
        (Field::Ttl, 7),
        (Field::Permission, 8),
        (Field::TargetGroup, 9),
        (Field::PageSize, 10),
        (Field::PageToken, 11),
        (Field::Filter, 12),
        (Field::ClientType, 13),
    ];

    #[test]
    fn wire_numbers_are_stable_and_survive_the_trip() {
        for (code, number) in CODES {
            assert_eq!(code_number(code), number, "{code:?}");
            assert_eq!(code_of(number), code);
        }
        for (field, number) in FIELDS {
            assert_eq!(field_number(field), number, "{field:?}");
            assert_eq!(field_of(number), Some(field));
        }
        assert_eq!(field_of(0), None);
        assert_eq!(field_of(99), None);
        assert_eq!(code_of(0), ErrorCode::Internal);
        assert_eq!(code_of(99), ErrorCode::Internal, "a newer node's code");
    }

    #[test]
    fn the_node_that_found_it_answers() {
        let not_found = || -> Result<u8> {
            Err(NodeError::Remote {
                code: ErrorCode::NotFound,
                message: "no such connection".to_owned(),
                field: Some(Field::ConnectionId),
            })
        };
        let unavailable = || -> Result<u8> {
            Err(NodeError::Remote {
                code: ErrorCode::Unavailable,
                message: "busy".to_owned(),
                field: None,
            })
        };
        assert_eq!(first_found([not_found(), Ok(7), not_found()]).ok(), Some(7));
        assert_eq!(
            first_found([not_found(), not_found()]).map_err(|e| e.code()),
            Err(ErrorCode::NotFound)
        );
        assert_eq!(
            first_found([not_found(), unavailable(), not_found()]).map_err(|e| e.code()),
            Err(ErrorCode::Unavailable)
        );
        assert_eq!(
            first_found(Vec::<Result<u8>>::new()).map_err(|e| e.code()),
            Err(ErrorCode::NotFound)
        );
    }

    #[test]
    fn pages_merge_in_key_order_and_keep_going() {
        let page = |ids: &[&str], more: bool| {
            (
                ids.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                if more { "t".to_owned() } else { String::new() },
            )
        };
        let (items, token) = merge_pages(
            [page(&["b", "d"], false), page(&["a", "c"], false)].into_iter(),
            3,
            Clone::clone,
            PageToken::CONNECTIONS,
        );
        assert_eq!(items, ["a", "b", "c"]);
        assert_eq!(
            PageToken::decode(&token, PageToken::CONNECTIONS).expect("valid"),
            Some("c".to_owned())
        );
        let (items, token) = merge_pages(
            [page(&["a"], false), page(&["b"], false)].into_iter(),
            3,
            Clone::clone,
            PageToken::CONNECTIONS,
        );
        assert_eq!((items.len(), token.as_str()), (2, ""));
    }
}
