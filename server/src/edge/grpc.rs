//! The gRPC edge of the control plane: `hubcast.v1.Control` (tonic), `grpc.health.v1` and
//! server reflection, on the `grpc_listen` listener.
//!
//! Every `Control` call must carry `authorization: Bearer <service token>` (see
//! [`verify_service_token`](hubcast_auth::verify_service_token) with audience
//! `{endpoint}/hubcast.v1.Control`); health and reflection are open, as load balancers and
//! tools expect. Errors leave through one function, [`status`].

use crate::upstream::stream::{EventsService, Listeners};
use hubcast_proto::v1::events_server::EventsServer;

use std::sync::Arc;
use std::time::Duration;

use hubcast_proto::v1 as pb;
use pb::control_server::ControlServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::Interceptor;
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::error::{Classify, ErrorCode};
use crate::node::{Node, NodeError};
use crate::sockets::{GrpcAccept, grpc_incoming};
use crate::telemetry::{ControlCall, trace};
use hubcast_auth::{
    self as auth, ADMIN_AUDIENCE_PATH, EVENTS_AUDIENCE_PATH, GRPC_AUDIENCE_PATH, KeyRing,
};
use pb::admin_server::AdminServer;

use super::admin::AdminService;
use tracing::Instrument as _;

/// Most operations one `Batch` call may carry.
pub(crate) const MAX_BATCH_OPERATIONS: usize = 1000;

/// How long in-flight RPCs may take to finish once the listener stops.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Maps a control-plane error to its gRPC status: the one place this happens.
pub(crate) fn status(error: &NodeError) -> Status {
    let message = error.to_string();
    match error.code() {
        ErrorCode::BadRequest => Status::invalid_argument(message),
        ErrorCode::NotFound => Status::not_found(message),
        ErrorCode::Unauthenticated => Status::unauthenticated(message),
        ErrorCode::PermissionDenied => Status::permission_denied(message),
        ErrorCode::PayloadTooLarge => Status::resource_exhausted(message),
        ErrorCode::UnsupportedMediaType => Status::invalid_argument(message),
        ErrorCode::Unavailable => Status::unavailable(message),
        ErrorCode::Timeout => Status::deadline_exceeded(message),
        ErrorCode::Internal => {
            tracing::error!(error = %error, "control-plane call failed");
            Status::internal("internal error")
        }
    }
}

/// The gRPC status code of a call's result, as the `status` label (`Ok`, `NotFound`, ...).
fn code_name<T>(result: &Result<T, Status>) -> String {
    match result {
        Ok(_) => "Ok".to_owned(),
        Err(status) => format!("{:?}", status.code()),
    }
}

fn respond<T>(result: Result<T, NodeError>) -> Result<Response<T>, Status> {
    result.map(Response::new).map_err(|e| status(&e))
}

/// The tonic service: each RPC hands its request message to [`Node`].
#[derive(Debug, Clone)]
struct ControlService {
    node: Node,
}

/// Implements the unary RPCs that map one-to-one onto [`Node`] methods of the same name,
/// plus `Batch`. (A macro around the whole impl, because `async_trait` must see the
/// expanded methods.)
macro_rules! control_service {
    ($($method:ident($request:ident) -> $response:ident;)*) => {
        #[tonic::async_trait]
        impl pb::control_server::Control for ControlService {
            $(
                async fn $method(
                    &self,
                    request: Request<pb::$request>,
                ) -> Result<Response<pb::$response>, Status> {
                    let call = ControlCall::start("grpc", trace::extract_grpc(request.metadata()));
                    let result = respond(
                        self.node
                            .$method(request.into_inner())
                            .instrument(call.span.clone())
                            .await,
                    );
                    call.finish(self.node.metrics(), stringify!($method), &code_name(&result));
                    result
                }
            )*

            async fn generate_client_token(
                &self,
                request: Request<pb::GenerateClientTokenRequest>,
            ) -> Result<Response<pb::GenerateClientTokenResponse>, Status> {
                let call = ControlCall::start("grpc", trace::extract_grpc(request.metadata()));
                let result = call
                    .span
                    .in_scope(|| respond(self.node.generate_client_token(request.into_inner())));
                call.finish(self.node.metrics(), "generate_client_token", &code_name(&result));
                result
            }

            async fn batch(
                &self,
                request: Request<pb::BatchRequest>,
            ) -> Result<Response<pb::BatchResponse>, Status> {
                let call = ControlCall::start("grpc", trace::extract_grpc(request.metadata()));
                let result = self
                    .run_batch(request.into_inner())
                    .instrument(call.span.clone())
                    .await
                    .map(Response::new);
                call.finish(self.node.metrics(), "batch", &code_name(&result));
                result
            }
        }
    };
}

control_service! {
    send_to_all(SendToAllRequest) -> SendToAllResponse;
    send_to_group(SendToGroupRequest) -> SendToGroupResponse;
    send_to_user(SendToUserRequest) -> SendToUserResponse;
    send_to_connection(SendToConnectionRequest) -> SendToConnectionResponse;
    add_connection_to_group(AddConnectionToGroupRequest) -> AddConnectionToGroupResponse;
    remove_connection_from_group(RemoveConnectionFromGroupRequest) -> RemoveConnectionFromGroupResponse;
    remove_connection_from_all_groups(RemoveConnectionFromAllGroupsRequest) -> RemoveConnectionFromAllGroupsResponse;
    add_user_to_group(AddUserToGroupRequest) -> AddUserToGroupResponse;
    remove_user_from_group(RemoveUserFromGroupRequest) -> RemoveUserFromGroupResponse;
    remove_user_from_all_groups(RemoveUserFromAllGroupsRequest) -> RemoveUserFromAllGroupsResponse;
    add_connections_to_groups(AddConnectionsToGroupsRequest) -> AddConnectionsToGroupsResponse;
    remove_connections_from_groups(RemoveConnectionsFromGroupsRequest) -> RemoveConnectionsFromGroupsResponse;
    close_connection(CloseConnectionRequest) -> CloseConnectionResponse;
    close_all_connections(CloseAllConnectionsRequest) -> CloseAllConnectionsResponse;
    close_group_connections(CloseGroupConnectionsRequest) -> CloseGroupConnectionsResponse;
    close_user_connections(CloseUserConnectionsRequest) -> CloseUserConnectionsResponse;
    connection_exists(ConnectionExistsRequest) -> ExistsResponse;
    group_exists(GroupExistsRequest) -> ExistsResponse;
    user_exists(UserExistsRequest) -> ExistsResponse;
    grant_permission(GrantPermissionRequest) -> GrantPermissionResponse;
    revoke_permission(RevokePermissionRequest) -> RevokePermissionResponse;
    check_permission(CheckPermissionRequest) -> CheckPermissionResponse;
    list_group_connections(ListGroupConnectionsRequest) -> ListGroupConnectionsResponse;
    list_connections(ListConnectionsRequest) -> ListConnectionsResponse;
    get_connection(GetConnectionRequest) -> ConnectionInfo;
    list_groups(ListGroupsRequest) -> ListGroupsResponse;
    get_hub_stats(GetHubStatsRequest) -> HubStats;
}

impl ControlService {
    /// Applies a batch in order; see `Control.Batch` in `control.proto`.
    async fn run_batch(&self, request: pb::BatchRequest) -> Result<pb::BatchResponse, Status> {
        if request.operations.len() > MAX_BATCH_OPERATIONS {
            return Err(Status::invalid_argument(format!(
                "a batch holds at most {MAX_BATCH_OPERATIONS} operations, not {}",
                request.operations.len()
            )));
        }
        if let Some(index) = request
            .operations
            .iter()
            .position(|op| op.operation.is_none())
        {
            return Err(Status::invalid_argument(format!(
                "operation {index} of the batch has no request set"
            )));
        }
        let mut results = Vec::with_capacity(request.operations.len());
        for op in request.operations {
            let outcome = self.node.mutate(op.operation.expect("checked above")).await;
            match outcome {
                Ok(()) => results.push(pb::BatchResult {
                    code: tonic::Code::Ok as i32,
                    message: String::new(),
                }),
                Err(error) => {
                    let status = status(&error);
                    results.push(pb::BatchResult {
                        code: status.code() as i32,
                        message: status.message().to_owned(),
                    });
                    if !request.continue_on_error {
                        break;
                    }
                }
            }
        }
        Ok(pb::BatchResponse { results })
    }
}

/// Checks the bearer token of every `Control` call.
#[derive(Clone)]
struct Authenticate {
    keys: KeyRing,
    endpoint: String,
    /// What the token's audience names after the endpoint: the service's full name.
    path: &'static str,
}

impl std::fmt::Debug for Authenticate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticate")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl Interceptor for Authenticate {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                Status::unauthenticated(
                    "missing `authorization: Bearer <token>` metadata: sign a service token with \
                     an access key (audience `<endpoint>/<service>`, e.g. \
                     `<endpoint>/hubcast.v1.Control`)",
                )
            })?;
        let token = super::bearer_token(header).ok_or_else(|| {
            Status::unauthenticated("the `authorization` metadata must be `Bearer <token>`")
        })?;
        auth::verify_service_token(token, &self.keys, &self.endpoint, self.path)
            .map_err(|e| Status::unauthenticated(e.to_string()))?;
        Ok(request)
    }
}

/// The running gRPC listener: health reporting and shutdown.
#[derive(Debug)]
pub(crate) struct GrpcEdge {
    health: HealthReporter,
    stop: CancellationToken,
    /// Stops following the cluster's health once the server drains.
    draining: CancellationToken,
    task: JoinHandle<()>,
    /// Follows the cluster's health (cluster only); ends when the server drains.
    follower: Option<JoinHandle<()>>,
}

impl GrpcEdge {
    /// Serves `Control`, the upstream event stream (`hubcast.v1.Events`, for backends that
    /// dial in), health and reflection on `listener` until [`GrpcEdge::stop`].
    ///
    /// Sockets are accepted as `accept` says (TLS, the deadline for the HTTP/2 preface, the
    /// cap on pending sockets); once connected, a peer is sent an HTTP/2 PING after
    /// `keepalive.0` without traffic and closed if it does not answer within `keepalive.1`.
    pub(crate) async fn start(
        listener: TcpListener,
        node: Node,
        listeners: Arc<Listeners>,
        accept: GrpcAccept,
        keepalive: (Duration, Duration),
        cluster_serving: Option<watch::Receiver<bool>>,
    ) -> Self {
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<ControlServer<ControlService>>().await;
        let draining = CancellationToken::new();
        // Ends when the edge starts draining, at the start of shutdown; `stop` joins it.
        let follower = cluster_serving
            .map(|serving| tokio::spawn(follow_cluster(health.clone(), serving, draining.clone())));
        // v1 for current tools, v1alpha for older grpcurl and friends.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(hubcast_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection()
            .build_v1()
            .expect("the embedded descriptor sets decode");
        let reflection_v1alpha = reflection()
            .build_v1alpha()
            .expect("the embedded descriptor sets decode");
        let authenticate = Authenticate {
            keys: node.keys().clone(),
            endpoint: node.endpoint().to_owned(),
            path: GRPC_AUDIENCE_PATH,
        };
        // The event stream takes service tokens of its own audience: a token for the control
        // plane, or a client's access token, cannot open it.
        let events = EventsServer::with_interceptor(
            EventsService::new(listeners),
            Authenticate {
                keys: node.keys().clone(),
                endpoint: node.endpoint().to_owned(),
                path: EVENTS_AUDIENCE_PATH,
            },
        );
        // The live trace takes tokens of the admin audience: a backend's control-plane token
        // does not open it.
        let admin = AdminServer::with_interceptor(
            AdminService::new(node.clone(), draining.clone()),
            Authenticate {
                keys: node.keys().clone(),
                endpoint: node.endpoint().to_owned(),
                path: ADMIN_AUDIENCE_PATH,
            },
        );
        let control = ControlServer::with_interceptor(ControlService { node }, authenticate);
        let stop = CancellationToken::new();
        let incoming = grpc_incoming(listener, accept, stop.clone());
        let signal = stop.clone().cancelled_owned();
        // Joined (or aborted after STOP_GRACE) by `GrpcEdge::stop`.
        let task = tokio::spawn(async move {
            let (interval, timeout) = keepalive;
            let served = tonic::transport::Server::builder()
                .http2_keepalive_interval(Some(interval))
                .http2_keepalive_timeout(Some(timeout))
                .add_service(health_service)
                .add_service(reflection_v1)
                .add_service(reflection_v1alpha)
                .add_service(control)
                .add_service(events)
                .add_service(admin)
                .serve_with_incoming_shutdown(incoming, signal)
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "gRPC listener failed");
            }
        });
        Self {
            health,
            stop,
            draining,
            task,
            follower,
        }
    }

    /// Reports `NOT_SERVING` (overall and for `hubcast.v1.Control`) while the server drains;
    /// calls are still answered.
    pub(crate) async fn draining(&self) {
        self.draining.cancel();
        self.health
            .set_not_serving::<ControlServer<ControlService>>()
            .await;
        self.health
            .set_service_status("", ServingStatus::NotServing)
            .await;
    }

    /// Stops accepting, lets in-flight calls finish for a moment, then drops the rest.
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        self.draining.cancel();
        if let Some(follower) = self.follower
            && let Err(e) = follower.await
        {
            tracing::warn!(error = %e, "cluster health follower failed");
        }
        let mut task = self.task;
        if tokio::time::timeout(STOP_GRACE, &mut task).await.is_err() {
            tracing::debug!("gRPC calls still in flight at shutdown; dropping them");
            task.abort();
        }
    }
}

/// Reports `NOT_SERVING` (overall and for `hubcast.v1.Control`) while the node has lost Redis,
/// and `SERVING` again once it is back, until the server drains. Local clients are still
/// served meanwhile; the status tells load balancers and operators that cluster operations
/// fail.
async fn follow_cluster(
    health: HealthReporter,
    mut serving: watch::Receiver<bool>,
    draining: CancellationToken,
) {
    loop {
        let status = if *serving.borrow_and_update() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        health
            .set_service_status("hubcast.v1.Control", status)
            .await;
        health.set_service_status("", status).await;
        tokio::select! {
            changed = serving.changed() => if changed.is_err() { return },
            () = draining.cancelled() => return,
        }
    }
}
