//! Client access tokens and anonymous connect (spec §2.2, §4.2): who may open a WebSocket.
//!
//! Refusals must happen before the upgrade, as HTTP 401; acceptances are proven by the
//! `connected` message and by the router knowing the connection.

use std::collections::BTreeMap;

use hubcast_integration_tests::{
    JSON_SUBPROTOCOL, JsonClient, PRIMARY_KEY, SECONDARY_KEY, TestServer, request, sign_token,
    unix_now, unsigned_token, upgrade_status,
};
use hubcast_server::config::HubConfig;
use serde_json::json;

const HUB: &str = "chat";

/// The URL of `HUB` carrying `token`.
fn url_with(server: &TestServer, token: &str) -> String {
    server.ws_url(&format!("/client/hubs/{HUB}?access_token={token}"))
}

async fn status_with_token(server: &TestServer, token: &str) -> u16 {
    upgrade_status(request(&url_with(server, token), &[JSON_SUBPROTOCOL], None)).await
}

async fn connects_with_token(server: &TestServer, token: &str) -> JsonClient {
    JsonClient::connect(&url_with(server, token)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minted_token_connects_with_its_user_id() {
    let server = TestServer::start().await;
    let client = server.json_client(HUB, Some("alice"), &[], &[]).await;
    assert_eq!(client.user_id(), Some("alice"), "{}", client.connected());
    assert!(
        server
            .router()
            .connection_exists(HUB, client.connection_id()),
        "the router must know the connection once `connected` was sent"
    );

    let other = server.json_client(HUB, Some("alice"), &[], &[]).await;
    assert_ne!(
        client.connection_id(),
        other.connection_id(),
        "two connections of one user get distinct ids"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_signed_token_with_hs256_connects() {
    let server = TestServer::start().await;
    let token = sign_token(PRIMARY_KEY, &server.claims(HUB, Some("bob")));
    let client = connects_with_token(&server, &token).await;
    assert_eq!(client.user_id(), Some("bob"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_without_sub_connects_with_null_user() {
    let server = TestServer::start().await;
    let client = server.json_client(HUB, None, &[], &[]).await;
    assert_eq!(
        client.connected()["userId"],
        serde_json::Value::Null,
        "{}",
        client.connected()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_is_refused_beyond_the_clock_skew() {
    let server = TestServer::start().await;
    let now = unix_now();
    let mut claims = server.claims(HUB, Some("alice"));
    claims["iat"] = json!(now - 4000);
    claims["exp"] = json!(now - 400);
    let token = sign_token(PRIMARY_KEY, &claims);
    assert_eq!(status_with_token(&server, &token).await, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recently_expired_token_is_accepted_within_the_clock_skew() {
    let server = TestServer::start().await;
    let now = unix_now();
    let mut claims = server.claims(HUB, Some("alice"));
    claims["iat"] = json!(now - 3600);
    claims["exp"] = json!(now - 60);
    let token = sign_token(PRIMARY_KEY, &claims);
    let client = connects_with_token(&server, &token).await;
    assert_eq!(client.user_id(), Some("alice"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_yet_valid_token_is_refused_beyond_the_clock_skew() {
    let server = TestServer::start().await;
    let mut claims = server.claims(HUB, Some("alice"));
    claims["nbf"] = json!(unix_now() + 400);
    let token = sign_token(PRIMARY_KEY, &claims);
    assert_eq!(status_with_token(&server, &token).await, 401);

    // Slightly in the future is within the skew.
    claims["nbf"] = json!(unix_now() + 60);
    let token = sign_token(PRIMARY_KEY, &claims);
    connects_with_token(&server, &token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_without_exp_is_refused() {
    let server = TestServer::start().await;
    let mut claims = server.claims(HUB, Some("alice"));
    claims.as_object_mut().expect("claims object").remove("exp");
    let token = sign_token(PRIMARY_KEY, &claims);
    assert_eq!(status_with_token(&server, &token).await, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_signed_with_an_unknown_key_is_refused() {
    let server = TestServer::start().await;
    let token = sign_token(
        "not-a-key-of-this-server-0123456789abcdef",
        &server.claims(HUB, Some("alice")),
    );
    assert_eq!(status_with_token(&server, &token).await, 401);

    // The same claims signed with the right key pass, so the key is what was refused.
    let token = sign_token(PRIMARY_KEY, &server.claims(HUB, Some("alice")));
    connects_with_token(&server, &token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_alg_none_token_is_refused() {
    let server = TestServer::start().await;
    let token = unsigned_token(&server.claims(HUB, Some("alice")));
    assert_eq!(status_with_token(&server, &token).await, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_token_is_refused() {
    let server = TestServer::start().await;
    let token = sign_token(PRIMARY_KEY, &server.claims(HUB, Some("alice")));
    // Swap the payload for one naming another user, keeping the original signature.
    let forged_claims = server.claims(HUB, Some("mallory"));
    let forged_payload = unsigned_token(&forged_claims)
        .split('.')
        .nth(1)
        .expect("payload part")
        .to_owned();
    let mut parts: Vec<&str> = token.split('.').collect();
    parts[1] = &forged_payload;
    let forged = parts.join(".");
    assert_eq!(status_with_token(&server, &forged).await, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_token_is_refused() {
    let server = TestServer::start().await;
    assert_eq!(status_with_token(&server, "not.a.jwt").await, 401);
    assert_eq!(status_with_token(&server, "").await, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_for_another_audience_is_refused() {
    let server = TestServer::start().await;

    // A token for another hub of this server.
    let token = server.token("otherhub", Some("alice"), &[], &[]);
    assert_eq!(status_with_token(&server, &token).await, 401);

    // A token for this hub on another endpoint.
    let mut claims = server.claims(HUB, Some("alice"));
    claims["aud"] = json!(format!("http://elsewhere.example:8080/client/hubs/{HUB}"));
    assert_eq!(
        status_with_token(&server, &sign_token(PRIMARY_KEY, &claims)).await,
        401
    );

    // A token without any audience.
    let mut claims = server.claims(HUB, Some("alice"));
    claims.as_object_mut().expect("claims object").remove("aud");
    assert_eq!(
        status_with_token(&server, &sign_token(PRIMARY_KEY, &claims)).await,
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_signed_with_the_secondary_key_is_accepted() {
    let server = TestServer::start().await;
    let token = server.token_with_key(SECONDARY_KEY, HUB, Some("carol"), &[], &[]);
    let client = connects_with_token(&server, &token).await;
    assert_eq!(client.user_id(), Some("carol"));

    let token = sign_token(SECONDARY_KEY, &server.claims(HUB, Some("dave")));
    let client = connects_with_token(&server, &token).await;
    assert_eq!(client.user_id(), Some("dave"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_in_authorization_bearer_header_is_accepted() {
    let server = TestServer::start().await;
    let token = server.token(HUB, Some("erin"), &[], &[]);
    let client = JsonClient::connect_request(request(
        &server.anonymous_url(HUB),
        &[JSON_SUBPROTOCOL],
        Some(&token),
    ))
    .await;
    assert_eq!(client.user_id(), Some("erin"));

    let bad = sign_token(
        "not-a-key-of-this-server-0123456789abcdef",
        &server.claims(HUB, Some("erin")),
    );
    let status = upgrade_status(request(
        &server.anonymous_url(HUB),
        &[JSON_SUBPROTOCOL],
        Some(&bad),
    ))
    .await;
    assert_eq!(
        status, 401,
        "a bad bearer token is refused like a bad query token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_token_is_refused_when_anonymous_connect_is_off() {
    let server = TestServer::start().await;
    let status = upgrade_status(request(
        &server.anonymous_url(HUB),
        &[JSON_SUBPROTOCOL],
        None,
    ))
    .await;
    assert_eq!(status, 401);
    // Simple clients are refused the same way.
    assert_eq!(
        upgrade_status(request(&server.anonymous_url(HUB), &[], None)).await,
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_connect_is_per_hub() {
    let server = TestServer::start_with(|config| {
        config.hubs = BTreeMap::from([
            (
                "open".to_owned(),
                HubConfig {
                    anonymous_connect: true,
                    ..HubConfig::default()
                },
            ),
            (
                "closed".to_owned(),
                HubConfig {
                    anonymous_connect: false,
                    ..HubConfig::default()
                },
            ),
        ]);
    })
    .await;

    let client = JsonClient::connect(&server.anonymous_url("open")).await;
    assert_eq!(client.connected()["userId"], serde_json::Value::Null);
    assert!(
        server
            .router()
            .connection_exists("open", client.connection_id())
    );

    for hub in ["closed", "unlisted"] {
        let status = upgrade_status(request(
            &server.anonymous_url(hub),
            &[JSON_SUBPROTOCOL],
            None,
        ))
        .await;
        assert_eq!(status, 401, "hub {hub} does not allow anonymous connect");
    }

    // A token still works (and names the user) on an anonymous hub.
    let client = server.json_client("open", Some("frank"), &[], &[]).await;
    assert_eq!(client.user_id(), Some("frank"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_connect_falls_back_to_the_star_entry() {
    let server = TestServer::start_with(|config| {
        config.hubs = BTreeMap::from([
            (
                "*".to_owned(),
                HubConfig {
                    anonymous_connect: true,
                    ..HubConfig::default()
                },
            ),
            (
                "private".to_owned(),
                HubConfig {
                    anonymous_connect: false,
                    ..HubConfig::default()
                },
            ),
        ]);
    })
    .await;

    JsonClient::connect(&server.anonymous_url("anyhub")).await;
    let status = upgrade_status(request(
        &server.anonymous_url("private"),
        &[JSON_SUBPROTOCOL],
        None,
    ))
    .await;
    assert_eq!(status, 401, "a hub's own entry overrides \"*\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_hub_form_of_the_client_path_connects() {
    let server = TestServer::start().await;
    let token = server.token(HUB, Some("gina"), &[], &[]);
    let url = server.ws_url(&format!("/client/?hub={HUB}&access_token={token}"));
    let client = JsonClient::connect(&url).await;
    assert_eq!(client.user_id(), Some("gina"));
    assert!(
        server
            .router()
            .connection_exists(HUB, client.connection_id()),
        "the connection belongs to the hub named in the query"
    );

    // The same form checks the token against the hub it names.
    let url = server.ws_url(&format!("/client/?hub=otherhub&access_token={token}"));
    assert_eq!(
        upgrade_status(request(&url, &[JSON_SUBPROTOCOL], None)).await,
        401
    );
}
