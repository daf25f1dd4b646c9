//! What the `hubcast` binary prints at start: the connection string of a generated
//! development key, but never a key the operator supplied (that one is named by the first 8
//! hex digits of its SHA-256), since stdout and stderr end up in container and journald logs.

use std::process::Stdio;
use std::time::Duration;

use hubcast_auth::ConnectionString;
use hubcast_integration_tests::cluster::hubcast_bin;
use hubcast_integration_tests::{PRIMARY_KEY, SECONDARY_KEY, TIMEOUT};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};
use tokio::process::Command;

/// Everything the binary printed until the line it prints once it serves, and a little more.
struct Printed {
    stdout: String,
    stderr: String,
}

/// Starts `hubcast` with `args` on ephemeral loopback ports, waits for the `listening` log
/// line (printed after the start banner), stops it, and returns what it printed.
async fn start_and_stop(args: &[&str]) -> Printed {
    let mut child = Command::new(hubcast_bin())
        .args(["--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "info")
        .env_remove("HUBCAST_ACCESS_KEYS")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start hubcast");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
    let mut err_text = String::new();
    tokio::time::timeout(TIMEOUT * 4, async {
        while let Some(line) = stderr.next_line().await.expect("read stderr") {
            err_text.push_str(&line);
            err_text.push('\n');
            if line.contains("listening") && line.contains("grpc") {
                return;
            }
        }
        panic!("hubcast exited during start:\n{err_text}");
    })
    .await
    .unwrap_or_else(|_| panic!("hubcast did not start in time:\n{err_text}"));
    child.start_kill().expect("stop hubcast");
    let mut out_text = String::new();
    tokio::time::timeout(TIMEOUT, async {
        stdout
            .read_to_string(&mut out_text)
            .await
            .expect("read stdout");
        while let Ok(Some(line)) = stderr.next_line().await {
            err_text.push_str(&line);
            err_text.push('\n');
        }
    })
    .await
    .expect("output ends with the process");
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    Printed {
        stdout: out_text,
        stderr: err_text,
    }
}

fn fingerprint(key: &str) -> String {
    Sha256::digest(key.as_bytes())[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn a_supplied_access_key_is_named_by_its_fingerprint_and_never_printed() {
    let printed =
        start_and_stop(&["--access-key", PRIMARY_KEY, "--access-key", SECONDARY_KEY]).await;
    let everything = format!("{}{}", printed.stdout, printed.stderr);
    for key in [PRIMARY_KEY, SECONDARY_KEY] {
        assert!(
            !everything.contains(key),
            "a key was printed:\n{everything}"
        );
    }
    let line = printed.stdout.lines().next().unwrap_or_default();
    let (endpoint, rest) = line
        .strip_prefix("Endpoint=")
        .and_then(|l| l.split_once(';'))
        .unwrap_or_else(|| panic!("the first line names the endpoint: {line}"));
    assert!(endpoint.starts_with("http://127.0.0.1:"), "{line}");
    assert_eq!(
        rest,
        format!("AccessKeyFingerprint={};", fingerprint(PRIMARY_KEY))
    );
    assert!(
        printed.stderr.contains(&fingerprint(SECONDARY_KEY)),
        "every accepted key is named:\n{}",
        printed.stderr
    );
}

#[tokio::test]
async fn a_generated_development_key_is_printed_as_a_connection_string() {
    let printed = start_and_stop(&[]).await;
    let line = printed.stdout.lines().next().unwrap_or_default();
    let parsed = ConnectionString::parse(line)
        .unwrap_or_else(|e| panic!("the first line is a connection string ({e}): {line}"));
    assert!(parsed.endpoint.starts_with("http://127.0.0.1:"), "{line}");
    assert!(parsed.access_key.len() >= 32, "{line}");
    assert!(
        printed.stderr.contains("random development key"),
        "{}",
        printed.stderr
    );
}
