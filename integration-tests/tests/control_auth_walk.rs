//! Auth is required on every control operation: each REST route and each gRPC method (of
//! every service in `hubcast.v1`, enumerated from the descriptor set so a new method cannot
//! be forgotten) refuses a missing and a wrongly signed token, and lets a valid one through
//! (so the refusal comes from authentication, not from routing).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hubcast_integration_tests::{PRIMARY_KEY, TestServer, sign_token, unix_now};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message as _;
use serde_json::json;
use tokio::net::TcpStream;

const OTHER_KEY: &str = "not-a-key-of-this-server-0123456789abcdef";

/// Every REST operation: method and path after `/api/hubs/chat/`.
const REST_ROUTES: [(&str, &str); 24] = [
    ("POST", ":send"),
    ("POST", ":closeConnections"),
    ("POST", ":addToGroups"),
    ("POST", ":removeFromGroups"),
    ("POST", ":generateToken"),
    ("HEAD", "connections/c1"),
    ("DELETE", "connections/c1"),
    ("POST", "connections/c1/:send"),
    ("DELETE", "connections/c1/groups"),
    ("HEAD", "groups/g1"),
    ("POST", "groups/g1/:send"),
    ("POST", "groups/g1/:closeConnections"),
    ("GET", "groups/g1/connections"),
    ("PUT", "groups/g1/connections/c1"),
    ("DELETE", "groups/g1/connections/c1"),
    ("HEAD", "users/u1"),
    ("POST", "users/u1/:send"),
    ("POST", "users/u1/:closeConnections"),
    ("DELETE", "users/u1/groups"),
    ("PUT", "users/u1/groups/g1"),
    ("DELETE", "users/u1/groups/g1"),
    ("PUT", "permissions/sendToGroup/connections/c1"),
    ("DELETE", "permissions/sendToGroup/connections/c1"),
    ("HEAD", "permissions/sendToGroup/connections/c1"),
];

fn token(key: &str, aud: &str) -> String {
    let now = i64::try_from(unix_now()).expect("fits");
    sign_token(key, &json!({ "aud": aud, "iat": now, "exp": now + 600 }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rest_route_requires_a_valid_service_token() {
    let server = TestServer::start().await;
    let rest = server.rest();
    for (method, route) in REST_ROUTES {
        let path = format!("/api/hubs/chat/{route}?api-version=2024-12-01");
        let url = format!("{}{path}", server.endpoint());
        let body = (method == "POST").then_some(("application/json", &b"{}"[..]));
        for (what, token) in [("no", None), ("wrong-key", Some(token(OTHER_KEY, &url)))] {
            let r = rest
                .call_with(method, &path, body, token.as_deref(), &[])
                .await;
            assert_eq!(r.status, 401, "{method} {route} with {what} token: {r:?}");
        }
        let ok = rest
            .call_with(method, &path, body, Some(&token(PRIMARY_KEY, &url)), &[])
            .await;
        assert_ne!(
            ok.status, 401,
            "{method} {route}: a valid token gets past authentication: {ok:?}"
        );
        // A 404 past authentication must be about the resource (c1 does not exist), not
        // about the route: HEAD has no body, the others say what does not exist.
        if method != "HEAD" && ok.status == 404 {
            let body = String::from_utf8_lossy(&ok.body);
            assert!(
                body.contains("does not exist"),
                "{method} {route} is a real route: {ok:?}"
            );
        }
    }
}

/// Every `service/method` path of `hubcast.v1`, from the checked-in descriptor set.
fn grpc_methods() -> Vec<(String, String)> {
    let fds = prost_types::FileDescriptorSet::decode(hubcast_proto::FILE_DESCRIPTOR_SET)
        .expect("valid descriptor set");
    let mut methods = Vec::new();
    for file in fds.file {
        if file.package() != "hubcast.v1" {
            continue;
        }
        for service in &file.service {
            for method in &service.method {
                methods.push((
                    format!("hubcast.v1.{}", service.name()),
                    method.name().to_owned(),
                ));
            }
        }
    }
    methods
}

/// Calls `path` over h2c with an empty request message and returns its `grpc-status`.
async fn grpc_status(addr: std::net::SocketAddr, path: &str, token: Option<&str>) -> String {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let mut request = hyper::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(t) = token {
        request = request.header("authorization", format!("Bearer {t}"));
    }
    // One empty, uncompressed message.
    let request = request
        .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
        .expect("request");
    let work = async {
        let response = sender.send_request(request).await.expect("response");
        if let Some(status) = response.headers().get("grpc-status") {
            return status.to_str().expect("ascii").to_owned();
        }
        // Streaming answers carry the status in the trailers; read at most a little of the
        // body (a stream a valid token opens stays open).
        let mut body = response.into_body();
        while let Some(frame) = body.frame().await {
            let frame = frame.expect("frame");
            if let Some(status) = frame.trailers_ref().and_then(|t| t.get("grpc-status")) {
                return status.to_str().expect("ascii").to_owned();
            }
        }
        "no status".to_owned()
    };
    match tokio::time::timeout(std::time::Duration::from_secs(2), work).await {
        Ok(status) => status,
        // Only an accepted stream stays open without a status.
        Err(_) => "open stream".to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_grpc_method_requires_a_valid_service_token() {
    const UNAUTHENTICATED: &str = "16";
    let server = TestServer::start().await;
    let methods = grpc_methods();
    assert!(
        methods.len() >= 30,
        "every Control method and Events.Listen: {methods:?}"
    );
    for (service, method) in &methods {
        let path = format!("/{service}/{method}");
        let aud = format!("{}/{service}", server.endpoint());
        for (what, token) in [("no", None), ("wrong-key", Some(token(OTHER_KEY, &aud)))] {
            let status = grpc_status(server.grpc_addr(), &path, token.as_deref()).await;
            assert_eq!(status, UNAUTHENTICATED, "{path} with {what} token");
        }
        // A valid token for the other service is refused too: audiences are per service.
        let other = if service.ends_with("Control") {
            "hubcast.v1.Events"
        } else {
            "hubcast.v1.Control"
        };
        let wrong_aud = token(PRIMARY_KEY, &format!("{}/{other}", server.endpoint()));
        let status = grpc_status(server.grpc_addr(), &path, Some(&wrong_aud)).await;
        assert_eq!(status, UNAUTHENTICATED, "{path} with a token for {other}");
        let status = grpc_status(server.grpc_addr(), &path, Some(&token(PRIMARY_KEY, &aud))).await;
        assert_ne!(
            status, UNAUTHENTICATED,
            "{path}: a valid token gets past authentication"
        );
        assert_ne!(status, "12", "{path} is implemented (not UNIMPLEMENTED)");
    }
}
