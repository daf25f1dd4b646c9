//! Authentication of both control-plane edges: missing, expired, wrong-key and
//! wrong-audience tokens are refused; the secondary key and the spellings of `aud` the
//! Azure SDKs produce are accepted.

use hubcast_integration_tests::{
    PRIMARY_KEY, SECONDARY_KEY, TestServer, sign_token, unix_now, unsigned_token,
};
use hubcast_sdk::proto::v1 as pb;
use hubcast_sdk::proto::v1::control_client::ControlClient;
use hubcast_sdk::{SendOptions, ServiceClient, ServiceError as Error};
use serde_json::{Value, json};
use tonic::Code;

const OTHER_KEY: &str = "not-a-key-of-this-server-0123456789abcdef";
const SEND: &str = "/api/hubs/chat/:send?api-version=2024-12-01";

fn claims(aud: &str, exp_offset: i64) -> Value {
    let now = i64::try_from(unix_now()).expect("fits");
    json!({ "aud": aud, "iat": now, "exp": now + exp_offset })
}

#[tokio::test]
async fn rest_refuses_bad_tokens_with_401() {
    let server = TestServer::start().await;
    let rest = server.rest();
    let endpoint = server.endpoint().to_owned();
    let url = format!("{endpoint}{SEND}");
    let body = Some(("text/plain", &b"x"[..]));
    let mut client = server.json_client("chat", None, &[], &[]).await;

    let refused = [
        ("missing", None),
        (
            "expired",
            Some(sign_token(PRIMARY_KEY, &claims(&url, -3600))),
        ),
        (
            "wrong key",
            Some(sign_token(OTHER_KEY, &claims(&url, 3600))),
        ),
        (
            "wrong path",
            Some(sign_token(
                PRIMARY_KEY,
                &claims(&format!("{endpoint}/api/hubs/chat/groups/g/:send"), 3600),
            )),
        ),
        (
            "wrong hub",
            Some(sign_token(
                PRIMARY_KEY,
                &claims(&format!("{endpoint}/api/hubs/other/:send"), 3600),
            )),
        ),
        (
            "wrong host",
            Some(sign_token(
                PRIMARY_KEY,
                &claims("http://elsewhere.example/api/hubs/chat/:send", 3600),
            )),
        ),
        (
            "client token",
            Some(server.token("chat", Some("mallory"), &[], &[])),
        ),
        ("unsigned", Some(unsigned_token(&claims(&url, 3600)))),
        (
            "no exp",
            Some(sign_token(PRIMARY_KEY, &json!({ "aud": url }))),
        ),
    ];
    for (what, token) in refused {
        let r = rest
            .call_with("POST", SEND, body, token.as_deref(), &[])
            .await;
        r.expect_error(401, None);
        assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{what}");
        // HEAD answers 401 without a body.
        let r = rest
            .call_with(
                "HEAD",
                "/api/hubs/chat/groups/g?api-version=2024-12-01",
                None,
                token.as_deref(),
                &[],
            )
            .await;
        assert_eq!(r.status, 401, "{what}");
        assert!(r.body.is_empty(), "{what}");
    }
    client.expect_nothing_queued().await;

    // Accepted: the secondary key, clock skew, and the audience spellings of the SDKs
    // (query in any order or absent, trailing slash, upper-case scheme and hub).
    let accepted = [
        sign_token(SECONDARY_KEY, &claims(&url, 3600)),
        sign_token(PRIMARY_KEY, &claims(&url, -60)),
        sign_token(
            PRIMARY_KEY,
            &claims(
                &format!("{endpoint}/api/hubs/chat/:send?x=1&api-version=2024-12-01"),
                3600,
            ),
        ),
        sign_token(
            PRIMARY_KEY,
            &claims(&format!("{endpoint}/api/hubs/chat/:send/"), 3600),
        ),
        sign_token(
            PRIMARY_KEY,
            &claims(
                &format!(
                    "{}/api/hubs/CHAT/:send",
                    endpoint.replace("http://", "HTTP://")
                ),
                3600,
            ),
        ),
    ];
    for token in accepted {
        let r = rest.call_with("POST", SEND, body, Some(&token), &[]).await;
        assert_eq!(r.status, 202, "{r:?}");
        assert_eq!(client.recv_message().await["data"], "x");
    }
}

#[tokio::test]
async fn grpc_refuses_bad_tokens_with_unauthenticated() {
    let server = TestServer::start().await;
    let endpoint = server.endpoint().to_owned();
    let audience = format!("{endpoint}/hubcast.v1.Control");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc_addr()))
        .expect("valid URI")
        .connect()
        .await
        .expect("connect");
    let call = |token: Option<String>| {
        let channel = channel.clone();
        async move {
            let mut client = ControlClient::new(channel);
            let mut request = tonic::Request::new(pb::GroupExistsRequest {
                hub: "chat".into(),
                group: "g".into(),
            });
            if let Some(token) = token {
                request.metadata_mut().insert(
                    "authorization",
                    format!("Bearer {token}").parse().expect("ascii"),
                );
            }
            client.group_exists(request).await
        }
    };

    for (what, token) in [
        ("missing", None),
        (
            "expired",
            Some(sign_token(PRIMARY_KEY, &claims(&audience, -3600))),
        ),
        (
            "wrong key",
            Some(sign_token(OTHER_KEY, &claims(&audience, 3600))),
        ),
        (
            "REST audience",
            Some(sign_token(
                PRIMARY_KEY,
                &claims(&format!("{endpoint}{SEND}"), 3600),
            )),
        ),
        (
            "other endpoint",
            Some(sign_token(
                PRIMARY_KEY,
                &claims("http://elsewhere/hubcast.v1.Control", 3600),
            )),
        ),
        ("client token", Some(server.token("chat", None, &[], &[]))),
        ("not a JWT", Some("abc".to_owned())),
    ] {
        let status = call(token).await.expect_err(what);
        assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
        assert!(!status.message().is_empty(), "{what}");
    }
    let ok = call(Some(sign_token(SECONDARY_KEY, &claims(&audience, 3600)))).await;
    assert!(ok.is_ok(), "{ok:?}");

    // Through the SDK: a connection string with another key.
    let wrong = ServiceClient::connect(
        &format!("Endpoint={endpoint};AccessKey={OTHER_KEY};Version=1.0;"),
        &server.grpc_addr().to_string(),
    )
    .await
    .expect("connects");
    let refused = wrong.send_to_all("chat", "x", SendOptions::new()).await;
    assert!(
        matches!(refused, Err(Error::Unauthenticated(_))),
        "{refused:?}"
    );
    // ... or naming another endpoint (the audience would not match).
    let elsewhere = ServiceClient::connect(
        &format!("Endpoint=http://elsewhere.example;AccessKey={PRIMARY_KEY};Version=1.0;"),
        &server.grpc_addr().to_string(),
    )
    .await
    .expect("connects");
    let refused = elsewhere.group_exists("chat", "g").await;
    assert!(
        matches!(refused, Err(Error::Unauthenticated(_))),
        "{refused:?}"
    );
}
