//! `hubcast health`, the container image's health check (Dockerfile `HEALTHCHECK`): exit 0
//! when the server answers `GET /api/health` with a 2xx, 1 with the reason on stderr when it
//! answers otherwise or not at all, so an orchestrator restarts what does not serve.

use std::process::Output;

use hubcast_integration_tests::TestServer;
use hubcast_integration_tests::cluster::hubcast_bin;
use tokio::process::Command;

async fn health(args: &[&str]) -> Output {
    Command::new(hubcast_bin())
        .arg("health")
        .args(args)
        .env_remove("HUBCAST_LISTEN")
        .output()
        .await
        .expect("run hubcast health")
}

#[tokio::test]
async fn health_passes_on_a_serving_server_and_fails_otherwise() {
    let server = TestServer::start_single_with(|_| {}).await;
    let addr = server.addr();

    // The default URL follows --listen.
    let ok = health(&["--listen", &addr.to_string()]).await;
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{ok:?}");
    assert!(
        stdout.contains(&format!("http://{addr}/api/health: 200 OK")),
        "{stdout}"
    );

    // An answer that is not 2xx fails, naming the status.
    let url = format!("http://{addr}/api/nothing-here");
    let missing = health(&["--url", &url]).await;
    assert_eq!(missing.status.code(), Some(1), "{missing:?}");
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("404"),
        "{missing:?}"
    );

    // No server: fails within its timeout, naming the URL.
    server.shutdown().await;
    let url = format!("http://{addr}/api/health");
    let gone = health(&["--url", &url, "--timeout", "2s"]).await;
    assert_eq!(gone.status.code(), Some(1), "{gone:?}");
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains(&url),
        "{gone:?}"
    );

    // A URL that does not parse is a usage error.
    let bad = health(&["--url", "not a url"]).await;
    assert_eq!(bad.status.code(), Some(64), "{bad:?}");
}
