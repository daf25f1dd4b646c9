//! Shutdown owns the listeners' tasks: when `Server::run` returns, no connection, accept or
//! TLS handshake task of the server is still running, so nothing holds a socket of a
//! stopped server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use hubcast_integration_tests::PRIMARY_KEY;
use hubcast_server::config::TlsConfig;
use hubcast_server::{Config, Server};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

const GRACE: Duration = Duration::from_secs(5);

/// A self-signed certificate for `localhost`, written to a temporary directory.
fn self_signed() -> (PathBuf, TlsConfig) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()])
        .expect("self-signed certificate");
    let dir = std::env::temp_dir().join(format!("hubcast-shutdown-tasks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("cert.pem"), certified.cert.pem()).expect("write cert");
    std::fs::write(dir.join("key.pem"), certified.signing_key.serialize_pem()).expect("write key");
    let tls = TlsConfig {
        cert_file: dir.join("cert.pem"),
        key_file: dir.join("key.pem"),
    };
    (dir, tls)
}

/// Whether the server closed `socket` within a second (end of stream or reset).
async fn closed(socket: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_secs(1), socket.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_listener_task_outlives_shutdown() {
    let (dir, tls) = self_signed();
    let mut config = Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        grpc_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        access_keys: vec![PRIMARY_KEY.to_owned()],
        shutdown_grace: GRACE,
        tls: Some(tls),
        ..Config::default()
    };
    // Idle sockets would keep their tasks until long after the test, unless shutdown ends them.
    config.limits.handshake_timeout = Duration::from_secs(60);
    let server = Server::bind(config).await.expect("bind");
    let (http, grpc) = (server.local_addr(), server.grpc_addr());
    let tasks = server.tasks();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(server.run(async {
        let _ = rx.await;
    }));
    // Sockets that never start their TLS handshake: their tasks wait for the client.
    let mut idle_http = TcpStream::connect(http).await.expect("connect HTTP");
    let mut idle_grpc = TcpStream::connect(grpc).await.expect("connect gRPC");
    hubcast_integration_tests::assert_eventually!(
        tasks.len() >= 3,
        "the accept loop and both sockets have tasks"
    );

    let _ = tx.send(());
    tokio::time::timeout(GRACE + Duration::from_secs(5), run)
        .await
        .expect("run returns within the grace period")
        .expect("run did not panic")
        .expect("run succeeded");

    assert!(
        tasks.is_empty(),
        "{} listener tasks still running after run() returned",
        tasks.len()
    );
    assert!(
        closed(&mut idle_http).await,
        "the idle HTTP socket is closed"
    );
    assert!(
        closed(&mut idle_grpc).await,
        "the idle gRPC socket is closed"
    );
    let _ = std::fs::remove_dir_all(dir);
}
