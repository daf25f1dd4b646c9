//! The standard gRPC services on the control-plane listener, asked with the standard
//! clients: `grpc.health.v1` (SERVING, then NOT_SERVING while the server drains) and server
//! reflection (lists `hubcast.v1.Control` and returns its descriptor with every RPC).

use hubcast_integration_tests::{TIMEOUT, TestServer};
use prost::Message as _;
use request_stream::once_request;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

async fn channel(server: &TestServer) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc_addr()))
        .expect("valid URI")
        .connect()
        .await
        .expect("connect")
}

async fn status(health: &mut HealthClient<Channel>, service: &str) -> ServingStatus {
    let response = tokio::time::timeout(
        TIMEOUT,
        health.check(HealthCheckRequest {
            service: service.to_owned(),
        }),
    )
    .await
    .expect("health check timed out")
    .expect("health check");
    response.into_inner().status()
}

#[tokio::test]
async fn health_is_serving_then_not_serving_while_draining() {
    let server = TestServer::start().await;
    let mut health = HealthClient::new(channel(&server).await);
    assert_eq!(status(&mut health, "").await, ServingStatus::Serving);
    assert_eq!(
        status(&mut health, "hubcast.v1.Control").await,
        ServingStatus::Serving
    );
    let unknown = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .expect_err("unknown service");
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    // A client that never answers the close handshake keeps the server draining for a
    // while (up to the close timeout), long enough to see the health change.
    let _stubborn = server.json_client("chat", None, &[], &[]).await;
    let shutdown = tokio::spawn(server.shutdown());
    hubcast_integration_tests::assert_eventually!(
        status(&mut health, "hubcast.v1.Control").await == ServingStatus::NotServing,
        "health never reported NOT_SERVING while draining"
    );
    assert_eq!(status(&mut health, "").await, ServingStatus::NotServing);
    shutdown.await.expect("shutdown finished");
}

#[tokio::test]
async fn reflection_lists_and_describes_the_control_service() {
    let server = TestServer::start().await;
    let mut reflection = ServerReflectionClient::new(channel(&server).await);

    let ask = |request: MessageRequest| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut responses = reflection
        .server_reflection_info(once_request(ask(MessageRequest::ListServices(
            String::new(),
        ))))
        .await
        .expect("reflection call")
        .into_inner();
    let response = tokio::time::timeout(TIMEOUT, responses.message())
        .await
        .expect("reflection answer timed out")
        .expect("reflection answer")
        .expect("one response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("not a service list: {response:?}");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    for expected in ["hubcast.v1.Control", "grpc.health.v1.Health"] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }

    let mut responses = reflection
        .server_reflection_info(once_request(ask(MessageRequest::FileContainingSymbol(
            "hubcast.v1.Control".into(),
        ))))
        .await
        .expect("reflection call")
        .into_inner();
    let response = tokio::time::timeout(TIMEOUT, responses.message())
        .await
        .expect("reflection answer timed out")
        .expect("reflection answer")
        .expect("one response");
    let Some(MessageResponse::FileDescriptorResponse(files)) = response.message_response else {
        panic!("not a file descriptor: {response:?}");
    };
    let control = files
        .file_descriptor_proto
        .iter()
        .map(|bytes| prost_types::FileDescriptorProto::decode(bytes.as_slice()).expect("decodes"))
        .find(|f| f.name() == "hubcast/v1/control.proto")
        .expect("control.proto is returned");
    let service = control
        .service
        .iter()
        .find(|s| s.name() == "Control")
        .expect("Control service");
    let methods: Vec<&str> = service.method.iter().map(|m| m.name()).collect();
    for expected in [
        "SendToAll",
        "SendToGroup",
        "SendToUser",
        "SendToConnection",
        "AddConnectionToGroup",
        "RemoveConnectionFromGroup",
        "RemoveConnectionFromAllGroups",
        "AddUserToGroup",
        "RemoveUserFromGroup",
        "RemoveUserFromAllGroups",
        "AddConnectionsToGroups",
        "RemoveConnectionsFromGroups",
        "CloseConnection",
        "CloseAllConnections",
        "CloseGroupConnections",
        "CloseUserConnections",
        "ConnectionExists",
        "GroupExists",
        "UserExists",
        "GrantPermission",
        "RevokePermission",
        "CheckPermission",
        "GenerateClientToken",
        "ListGroupConnections",
        "ListConnections",
        "GetConnection",
        "ListGroups",
        "GetHubStats",
        "Batch",
    ] {
        assert!(
            methods.contains(&expected),
            "{expected} missing from {methods:?}"
        );
    }
}

/// A one-message request stream (tonic takes any stream of requests).
mod request_stream {
    use futures_util::stream::{self, Stream};

    pub(crate) fn once_request<T: Send + 'static>(item: T) -> impl Stream<Item = T> + Send {
        stream::iter(std::iter::once(item))
    }
}
