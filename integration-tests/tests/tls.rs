//! TLS on both listeners from certificate and key files: a WebSocket client and REST over
//! HTTPS, gRPC (health and the control plane) over TLS with ALPN h2, the Rust SDK's `wss://`
//! path (its `tls` feature) end to end, plain TCP refused, and unusable files refused at start
//! with a message naming the file.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use hubcast_integration_tests::certs::SelfSigned;
use hubcast_integration_tests::{JSON_SUBPROTOCOL, TIMEOUT, TestServer, request};
use hubcast_server::Config;
use hubcast_server::config::TlsConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_rest_and_grpc_are_served_over_tls() {
    let cert = SelfSigned::new("serve");
    let tls = cert.config();
    let server = TestServer::start_with(|c| c.tls = Some(tls)).await;
    assert!(
        server.endpoint().starts_with("https://"),
        "{}",
        server.endpoint()
    );

    // WebSocket over TLS (wss), with a token for the https endpoint.
    let url = server.url("secure", Some("alice"), &[], &[]);
    assert!(url.starts_with("wss://"), "{url}");
    let tcp = TcpStream::connect(server.addr()).await.expect("connect");
    let stream = cert
        .connector(b"http/1.1")
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS handshake");
    let (mut ws, response) = tokio::time::timeout(
        TIMEOUT,
        tokio_tungstenite::client_async(request(&url, &[JSON_SUBPROTOCOL], None), stream),
    )
    .await
    .expect("upgrade in time")
    .expect("upgrade");
    assert_eq!(response.status(), 101);
    let connected = tokio::time::timeout(TIMEOUT, ws.next())
        .await
        .expect("connected in time")
        .expect("a frame")
        .expect("a message");
    assert!(
        connected.to_text().expect("text").contains("\"connected\""),
        "{connected:?}"
    );
    ws.send(Message::text(r#"{"type":"ping"}"#))
        .await
        .expect("ping");

    // REST over HTTPS: the health endpoint.
    let tcp = TcpStream::connect(server.addr()).await.expect("connect");
    let mut https = cert
        .connector(b"http/1.1")
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS handshake");
    https
        .write_all(b"GET /api/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = String::new();
    tokio::time::timeout(TIMEOUT, https.read_to_string(&mut answer))
        .await
        .expect("answer in time")
        .ok();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // Plain HTTP on the TLS listener gets nothing useful.
    let mut plain = TcpStream::connect(server.addr()).await.expect("connect");
    plain
        .write_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(TIMEOUT, plain.read_to_end(&mut buf)).await;
    assert!(
        !String::from_utf8_lossy(&buf).contains("200 OK"),
        "plain HTTP must not be served on a TLS listener"
    );

    // gRPC over TLS: health says SERVING.
    let channel = Endpoint::from_shared(format!("https://localhost:{}", server.grpc_addr().port()))
        .expect("endpoint")
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&cert.cert_pem))
                .domain_name("localhost"),
        )
        .expect("client TLS")
        .connect()
        .await
        .expect("gRPC over TLS connects");
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health check")
        .into_inner()
        .status();
    assert_eq!(status, ServingStatus::Serving);
}

/// The Rust SDK with its `tls` feature: a `wss://` client URL, trusting the listener's
/// self-signed certificate through `with_tls_config`, joins a group, publishes to it and
/// receives its own message back over TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_sdk_round_trips_a_group_message_over_wss() {
    let cert = SelfSigned::new("sdk");
    let tls = cert.config();
    let server = TestServer::start_with(|c| c.tls = Some(tls)).await;
    let url = server.url(
        "secure",
        Some("alice"),
        &["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"],
        &[],
    );
    assert!(url.starts_with("wss://"), "{url}");

    let mut roots = hubcast_sdk::rustls::RootCertStore::empty();
    roots.add(cert.cert_der.clone()).expect("add root");
    let provider = Arc::new(hubcast_sdk::rustls::crypto::ring::default_provider());
    let config = hubcast_sdk::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let (client, mut events) = tokio::time::timeout(
        TIMEOUT,
        hubcast_sdk::Client::builder(url.clone())
            .with_tls_config(Arc::new(config))
            .connect(),
    )
    .await
    .expect("connect in time")
    .expect("the SDK connects over wss");
    tokio::time::timeout(TIMEOUT, client.join_group("tls"))
        .await
        .expect("join in time")
        .expect("joined");
    tokio::time::timeout(TIMEOUT, client.send_to_group("tls", "over TLS"))
        .await
        .expect("ack in time")
        .expect("sent");
    let message = loop {
        match tokio::time::timeout(TIMEOUT, events.recv())
            .await
            .expect("an event in time")
            .expect("events go on")
        {
            hubcast_sdk::Event::GroupMessage(m) => break m,
            _ => continue,
        }
    };
    assert_eq!(message.group, "tls");
    assert_eq!(
        message.payload,
        hubcast_sdk::Payload::Text("over TLS".into())
    );
    client.stop().await;

    // Without the certificate the SDK refuses the listener (webpki roots only): the
    // configuration above is what made the difference.
    let refused = tokio::time::timeout(TIMEOUT, hubcast_sdk::Client::builder(url).connect())
        .await
        .expect("an answer in time");
    assert!(
        refused.as_ref().is_err_and(hubcast_sdk::Error::is_connect),
        "{refused:?}"
    );
}

#[tokio::test]
async fn unusable_certificate_files_are_refused_at_start_naming_the_file() {
    let cert = SelfSigned::new("bad");
    let base = Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        grpc_listen: "127.0.0.1:0".parse().expect("addr"),
        ..Config::default()
    };
    let missing = TlsConfig {
        cert_file: cert.dir.join("nope.pem"),
        key_file: cert.dir.join("key.pem"),
    };
    let swapped = TlsConfig {
        cert_file: cert.dir.join("key.pem"),
        key_file: cert.dir.join("cert.pem"),
    };
    let other = SelfSigned::new("other");
    let mismatched = TlsConfig {
        cert_file: cert.dir.join("cert.pem"),
        key_file: other.dir.join("key.pem"),
    };
    for (what, tls, expected) in [
        ("missing file", missing, "nope.pem"),
        ("key as certificate", swapped, "cert_file"),
        ("key of another certificate", mismatched, "key_file"),
    ] {
        let config = Config {
            tls: Some(tls),
            ..base.clone()
        };
        let err = hubcast_server::Server::bind(config).await.expect_err(what);
        assert!(err.to_string().contains(expected), "{what}: {err}");
    }
}
