//! Boolean environment variables of the `hubcast` binary take `1`/`0`, `true`/`false`,
//! `yes`/`no` and `on`/`off` in any case (the README and the `/dev/token` 404 body say
//! `HUBCAST_DEV=1`); anything else stops the server at start with the accepted values named.

use std::process::Stdio;

use hubcast_integration_tests::cluster::hubcast_bin;
use hubcast_integration_tests::{PRIMARY_KEY, TIMEOUT};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// Starts `hubcast` with the environment `env` on ephemeral loopback ports; returns the
/// process and its HTTP address once it printed its start line.
async fn start(env: &[(&str, &str)]) -> (Child, String) {
    let mut command = Command::new(hubcast_bin());
    command
        .args(["--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0"])
        .args(["--access-key", PRIMARY_KEY])
        .env("RUST_LOG", "warn")
        .env_remove("HUBCAST_DEV")
        .env_remove("HUBCAST_NO_METRICS")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("start hubcast");
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let addr = tokio::time::timeout(TIMEOUT * 4, async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            if let Some(rest) = line.strip_prefix("Endpoint=http://") {
                return rest.split(';').next().map(str::to_owned);
            }
        }
        None
    })
    .await
    .expect("hubcast did not start in time")
    .expect("hubcast exited during start");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}

/// The HTTP status of `GET path` on `addr`.
async fn get_status(addr: &str, path: &str) -> u16 {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("write request");
    let mut response = String::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_string(&mut response))
        .await
        .expect("response in time")
        .expect("read response");
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response}"))
}

#[tokio::test]
async fn hubcast_dev_1_serves_dev_tokens_and_0_does_not() {
    for (value, status) in [("1", 200), ("ON", 200), ("0", 404), ("false", 404)] {
        let (mut child, addr) = start(&[("HUBCAST_DEV", value)]).await;
        assert_eq!(
            get_status(&addr, "/dev/token?hub=chat&user=u").await,
            status,
            "HUBCAST_DEV={value}"
        );
        child.kill().await.expect("stop hubcast");
    }
}

#[tokio::test]
async fn hubcast_no_metrics_yes_turns_the_endpoint_off() {
    for (value, status) in [("yes", 404), ("no", 200)] {
        let (mut child, addr) = start(&[("HUBCAST_NO_METRICS", value)]).await;
        assert_eq!(
            get_status(&addr, "/metrics").await,
            status,
            "HUBCAST_NO_METRICS={value}"
        );
        child.kill().await.expect("stop hubcast");
    }
}

#[tokio::test]
async fn a_value_that_is_no_boolean_is_refused_with_the_accepted_ones_named() {
    for name in ["HUBCAST_DEV", "HUBCAST_NO_METRICS"] {
        let output = tokio::time::timeout(
            TIMEOUT * 4,
            Command::new(hubcast_bin())
                .args(["--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0"])
                .env(name, "maybe")
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("hubcast exits at once")
        .expect("run hubcast");
        assert!(!output.status.success(), "{name}=maybe must be refused");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&format!("{name}='maybe'"))
                && stderr.contains("1, 0, true, false, yes, no, on, off"),
            "{name}: {stderr}"
        );
        assert!(output.stdout.is_empty(), "nothing served: {output:?}");
    }
}
