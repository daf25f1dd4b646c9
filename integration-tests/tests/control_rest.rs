//! Every operation of Azure's REST data plane (spec §5.1) against a real server, signed as
//! the official SDKs sign, with exact status codes and the effect observed on real
//! WebSocket clients.

use hubcast_integration_tests::{JsonClient, SimpleClient, TestServer, enc};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as WsMessage;

const HUB: &str = "chat";
const V: &str = "api-version=2024-12-01";

fn path(rest: &str) -> String {
    format!("/api/hubs/{HUB}{rest}?{V}")
}

fn path_q(rest: &str, query: &str) -> String {
    format!("/api/hubs/{HUB}{rest}?{V}&{query}")
}

#[tokio::test]
async fn health() {
    let server = TestServer::start().await;
    let response = server
        .rest()
        .call_with("HEAD", "/api/health", None, None, &[])
        .await;
    assert_eq!(response.status, 200);
}

#[tokio::test]
async fn sends_are_202_and_reach_clients_with_the_content_type_as_data_type() {
    let server = TestServer::start().await;
    let rest = server.rest();
    let mut alice = server
        .json_client(HUB, Some("alice"), &[], &["a b/c"])
        .await;
    let mut bob = server.json_client(HUB, Some("bob"), &[], &[]).await;
    let mut simple = SimpleClient::connect(&server.url(HUB, None, &[], &[])).await;
    // A simple client gets no `connected` message: wait until the server has registered it.
    hubcast_integration_tests::assert_eventually!(server.router().stats().connections == 3);

    // Send to all: JSON, with bob excluded.
    let r = rest
        .call(
            "POST",
            &path_q("/:send", &format!("excluded={}", bob.connection_id())),
            Some(("application/json", br#"{"hello":"world"}"#)),
        )
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    assert!(r.body.is_empty());
    assert_eq!(
        alice.recv_message().await,
        json!({"type":"message","from":"server","dataType":"json","data":{"hello":"world"}})
    );
    assert_eq!(simple.recv().await, WsMessage::text(r#"{"hello":"world"}"#));
    bob.expect_nothing_queued().await;

    // A JSON string reaches simple clients with its quotes (spec §2.4).
    let r = rest
        .call(
            "POST",
            &path("/:send"),
            Some(("application/json", br#""hi""#)),
        )
        .await;
    assert_eq!(r.status, 202);
    assert_eq!(simple.recv().await, WsMessage::text(r#""hi""#));
    assert_eq!(alice.recv_message().await["data"], "hi");
    assert_eq!(bob.recv_message().await["dataType"], "json");

    // Send to a group whose name needs encoding: text/plain with a charset.
    let r = rest
        .call(
            "POST",
            &path(&format!("/groups/{}/:send", enc("a b/c"))),
            Some(("text/plain; charset=utf-8", "héllo".as_bytes())),
        )
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(
        alice.recv_message().await,
        json!({"type":"message","from":"group","fromUserId":null,"group":"a b/c","dataType":"text","data":"héllo"})
    );
    bob.expect_nothing_queued().await;

    // Send to a user: binary, and with no Content-Type at all (binary too).
    let r = rest
        .call(
            "POST",
            &path("/users/bob/:send"),
            Some(("application/octet-stream", &[1, 2, 3])),
        )
        .await;
    assert_eq!(r.status, 202);
    assert_eq!(bob.recv_message().await["data"], "AQID");
    let r = rest
        .call_with(
            "POST",
            &path("/users/bob/:send"),
            None,
            Some(&rest.token_for(&path("/users/bob/:send"))),
            &[("content-length", "0")],
        )
        .await;
    assert_eq!(r.status, 202);
    assert_eq!(bob.recv_message().await["dataType"], "binary");

    // Send to a connection, with a TTL.
    let r = rest
        .call(
            "POST",
            &path_q(
                &format!("/connections/{}/:send", alice.connection_id()),
                "messageTtlSeconds=60",
            ),
            Some(("text/plain", b"just you")),
        )
        .await;
    assert_eq!(r.status, 202);
    assert_eq!(alice.recv_message().await["data"], "just you");
    bob.expect_nothing_queued().await;

    // Fire-and-forget: nobody to receive is still 202.
    for target in [
        "/users/nobody/:send",
        "/connections/nobody/:send",
        "/groups/empty/:send",
    ] {
        let r = rest
            .call("POST", &path(target), Some(("text/plain", b"x")))
            .await;
        assert_eq!(r.status, 202, "{target}");
    }
}

#[tokio::test]
async fn send_validation_errors() {
    let server = TestServer::start().await;
    let rest = server.rest();
    let mut a = server.json_client(HUB, Some("a"), &[], &[]).await;

    let r = rest
        .call(
            "POST",
            &path_q("/:send", "messageTtlSeconds=301"),
            Some(("text/plain", b"x")),
        )
        .await;
    r.expect_error(400, Some("messageTtlSeconds"));
    let r = rest
        .call(
            "POST",
            &path_q("/:send", "messageTtlSeconds=soon"),
            Some(("text/plain", b"x")),
        )
        .await;
    r.expect_error(400, Some("messageTtlSeconds"));
    let r = rest
        .call(
            "POST",
            &path("/:send"),
            Some(("application/json", b"{not json")),
        )
        .await;
    r.expect_error(400, Some("message"));
    let r = rest
        .call("POST", &path("/:send"), Some(("application/xml", b"<a/>")))
        .await;
    r.expect_error(415, Some("Content-Type"));
    let r = rest
        .call(
            "POST",
            &path("/:send"),
            Some(("text/plain; charset=latin1", b"x")),
        )
        .await;
    r.expect_error(415, Some("Content-Type"));
    let r = rest
        .call("POST", &path("/:send"), Some(("text/plain", &[0xff, 0xfe])))
        .await;
    r.expect_error(400, Some("message"));
    let big = vec![b'x'; 1024 * 1024 + 1];
    let r = rest
        .call("POST", &path("/:send"), Some(("text/plain", &big)))
        .await;
    r.expect_error(400, None);
    let exactly = vec![b'y'; 1024 * 1024];
    let r = rest
        .call("POST", &path("/:send"), Some(("text/plain", &exactly)))
        .await;
    assert_eq!(r.status, 202, "a 1 MiB body is within the limit");
    assert_eq!(
        a.recv_message().await["data"].as_str().map(str::len),
        Some(1024 * 1024)
    );

    // Bad names.
    let r = rest
        .call("POST", "/api/hubs/1bad/:send", Some(("text/plain", b"x")))
        .await;
    r.expect_error(400, Some("hub"));
    let r = rest
        .call(
            "POST",
            &path("/groups/%20%20/:send"),
            Some(("text/plain", b"x")),
        )
        .await;
    r.expect_error(400, Some("group"));
    a.expect_nothing_queued().await;
}

#[tokio::test]
async fn api_versions_paths_and_methods() {
    let server = TestServer::start().await;
    let rest = server.rest();

    // No api-version means the latest; every known version works.
    for p in [
        "/api/hubs/chat/:send".to_owned(),
        "/api/hubs/chat/:send?api-version=2021-10-01".to_owned(),
        "/api/hubs/chat/:send?api-version=2024-01-01".to_owned(),
    ] {
        let r = rest.call("POST", &p, Some(("text/plain", b"x"))).await;
        assert_eq!(r.status, 202, "{p}");
        assert!(r.header("api-supported-versions").is_some());
    }
    let r = rest
        .call(
            "POST",
            "/api/hubs/chat/:send?api-version=1999-01-01",
            Some(("text/plain", b"x")),
        )
        .await;
    r.expect_error(400, Some("api-version"));

    let r = rest.call("POST", &path("/:frobnicate"), None).await;
    r.expect_error(404, None);
    let r = rest.call("GET", &path("/:send"), None).await;
    r.expect_error(404, None);
    // HEAD errors have no body.
    let r = rest
        .call(
            "HEAD",
            "/api/hubs/chat/groups/x?api-version=1999-01-01",
            None,
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.body.is_empty());
    assert!(r.header("x-ms-error-code").is_some());
}

#[tokio::test]
async fn existence_checks_are_head_200_or_404_with_empty_bodies() {
    let server = TestServer::start().await;
    let rest = server.rest();
    let a = server.json_client(HUB, Some("a/b"), &[], &["g/1"]).await;
    for (p, expected) in [
        (path(&format!("/connections/{}", a.connection_id())), 200),
        (path("/connections/nope"), 404),
        (path(&format!("/groups/{}", enc("g/1"))), 200),
        (path("/groups/g"), 404),
        (path(&format!("/users/{}", enc("a/b"))), 200),
        (path("/users/a"), 404),
    ] {
        let r = rest.call("HEAD", &p, None).await;
        assert_eq!(r.status, expected, "{p}");
        assert!(r.body.is_empty(), "{p}");
    }
}

#[tokio::test]
async fn closes_are_204_and_send_disconnected_with_the_reason() {
    let server = TestServer::start().await;
    let rest = server.rest();

    let one = server.json_client(HUB, None, &[], &[]).await;
    let r = rest
        .call(
            "DELETE",
            &path_q(
                &format!("/connections/{}", one.connection_id()),
                "reason=go%20away",
            ),
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{r:?}");
    let closed = one.expect_close().await;
    assert_eq!(closed.expect_disconnected(), "go away");
    assert_eq!(closed.code, 1000);
    let r = rest.call("DELETE", &path("/connections/gone"), None).await;
    assert_eq!(r.status, 204);

    let g1 = server.json_client(HUB, None, &[], &["g"]).await;
    let mut g2 = server.json_client(HUB, None, &[], &["g"]).await;
    let r = rest
        .call(
            "POST",
            &path_q(
                "/groups/g/:closeConnections",
                &format!("excluded={}&reason=grp", g2.connection_id()),
            ),
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(g1.expect_close().await.expect_disconnected(), "grp");
    g2.ping().await;

    let u = server.json_client(HUB, Some("u"), &[], &[]).await;
    let r = rest
        .call(
            "POST",
            &path_q("/users/u/:closeConnections", "reason=usr"),
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(u.expect_close().await.expect_disconnected(), "usr");

    let mut keep = server.json_client(HUB, None, &[], &[]).await;
    let other = server.json_client(HUB, None, &[], &[]).await;
    let r = rest
        .call(
            "POST",
            &path_q(
                "/:closeConnections",
                &format!(
                    "excluded={}&excluded={}&reason=all",
                    keep.connection_id(),
                    g2.connection_id()
                ),
            ),
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(other.expect_close().await.expect_disconnected(), "all");
    keep.ping().await;
    g2.ping().await;
}

#[tokio::test]
async fn group_membership_operations() {
    let server = TestServer::start().await;
    let rest = server.rest();
    let mut a = server.json_client(HUB, Some("u"), &[], &["x"]).await;
    let mut a2 = server.json_client(HUB, Some("u"), &[], &[]).await;
    let id = a.connection_id().to_owned();
    let send_g = || async {
        let r = rest
            .call(
                "POST",
                &path("/groups/g/:send"),
                Some(("text/plain", b"to g")),
            )
            .await;
        assert_eq!(r.status, 202);
    };

    // Connection to group: PUT 200 (404 when unknown), DELETE 204.
    let r = rest
        .call("PUT", &path(&format!("/groups/g/connections/{id}")), None)
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    send_g().await;
    assert_eq!(a.recv_message().await["data"], "to g");
    a2.expect_nothing_queued().await;
    let r = rest
        .call("PUT", &path("/groups/g/connections/unknown"), None)
        .await;
    r.expect_error(404, Some("connectionId"));
    let r = rest
        .call(
            "DELETE",
            &path(&format!("/groups/g/connections/{id}")),
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    send_g().await;
    a.expect_nothing_queued().await;

    // Connection from all groups.
    let r = rest
        .call("DELETE", &path(&format!("/connections/{id}/groups")), None)
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        rest.call("HEAD", &path("/groups/x"), None).await.status,
        404
    );

    // User to group: both of the user's connections.
    let r = rest.call("PUT", &path("/users/u/groups/g"), None).await;
    assert_eq!(r.status, 200);
    send_g().await;
    assert_eq!(a.recv_message().await["data"], "to g");
    assert_eq!(a2.recv_message().await["data"], "to g");
    let r = rest
        .call("PUT", &path("/users/nobody/groups/g"), None)
        .await;
    assert_eq!(r.status, 200, "no connections is not an error");
    let r = rest.call("DELETE", &path("/users/u/groups/g"), None).await;
    assert_eq!(r.status, 204);
    send_g().await;
    a.expect_nothing_queued().await;
    a2.expect_nothing_queued().await;

    // User from all groups.
    rest.call("PUT", &path("/users/u/groups/h1"), None).await;
    rest.call("PUT", &path("/users/u/groups/h2"), None).await;
    let r = rest.call("DELETE", &path("/users/u/groups"), None).await;
    assert_eq!(r.status, 204);
    for g in ["h1", "h2"] {
        assert_eq!(
            rest.call("HEAD", &path(&format!("/groups/{g}")), None)
                .await
                .status,
            404
        );
    }

    // Filtered add/remove: 200.
    let body = json!({"groups": ["f1", "f2"], "filter": "userId eq 'u'"}).to_string();
    let r = rest
        .call(
            "POST",
            &path("/:addToGroups"),
            Some(("application/json", body.as_bytes())),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        rest.call("HEAD", &path("/groups/f2"), None).await.status,
        200
    );
    let body =
        json!({"groups": ["f2"], "filter": "connectionId eq '".to_owned() + &id + "'"}).to_string();
    let r = rest
        .call(
            "POST",
            &path("/:removeFromGroups"),
            Some(("application/json", body.as_bytes())),
        )
        .await;
    assert_eq!(r.status, 200);
    rest.call(
        "POST",
        &path("/groups/f2/:send"),
        Some(("text/plain", b"f2")),
    )
    .await;
    assert_eq!(a2.recv_message().await["data"], "f2");
    a.expect_nothing_queued().await;
    let r = rest
        .call(
            "POST",
            &path("/:addToGroups"),
            Some(("application/json", b"[1]")),
        )
        .await;
    r.expect_error(400, None);
}

#[tokio::test]
async fn permissions_put_delete_head() {
    let server = TestServer::start().await;
    let rest = server.rest();
    let mut c = server.json_client(HUB, None, &[], &[]).await;
    let id = c.connection_id().to_owned();
    let p =
        |perm: &str, query: &str| path_q(&format!("/permissions/{perm}/connections/{id}"), query);
    let check_g = p("joinLeaveGroup", "targetName=g");
    assert_eq!(rest.call("HEAD", &check_g, None).await.status, 404);
    let r = rest.call("PUT", &check_g, None).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(rest.call("HEAD", &check_g, None).await.status, 200);
    c.join("g").await;
    let r = rest.call("DELETE", &check_g, None).await;
    assert_eq!(r.status, 204);
    assert_eq!(rest.call("HEAD", &check_g, None).await.status, 404);
    c.send(json!({"type":"leaveGroup","group":"g","ackId":1}))
        .await;
    c.expect_ack_error(1, "Forbidden").await;

    // Without targetName: every group.
    let all = p("sendToGroup", "");
    assert_eq!(rest.call("PUT", &all, None).await.status, 200);
    assert_eq!(rest.call("HEAD", &all, None).await.status, 200);
    c.publish_text("g", "allowed").await;
    assert_eq!(c.recv_message().await["data"], "allowed");

    let r = rest.call("PUT", &p("admin", ""), None).await;
    r.expect_error(400, Some("permission"));
    let r = rest
        .call(
            "PUT",
            &path("/permissions/sendToGroup/connections/missing"),
            None,
        )
        .await;
    r.expect_error(404, Some("connectionId"));
    let r = rest
        .call(
            "DELETE",
            &path("/permissions/sendToGroup/connections/missing"),
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    let r = rest
        .call(
            "HEAD",
            &path("/permissions/sendToGroup/connections/missing"),
            None,
        )
        .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn generate_token_returns_a_token_clients_connect_with() {
    let server = TestServer::start().await;
    let rest = server.rest();
    let r = rest
        .call(
            "POST",
            &path_q(
                "/:generateToken",
                "userId=gen&role=webpubsub.joinLeaveGroup&role=webpubsub.sendToGroup&group=g1&group=g2&minutesToExpire=5&clientType=Default",
            ),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let token = r.json()["token"].as_str().expect("token").to_owned();
    let mut c =
        JsonClient::connect(&server.ws_url(&format!("/client/hubs/{HUB}?access_token={token}")))
            .await;
    assert_eq!(c.user_id(), Some("gen"));
    c.publish_text("g2", "joined at connect").await;
    assert_eq!(c.recv_message().await["group"], "g2");
    c.join("g3").await;

    let r = rest
        .call(
            "POST",
            &path_q("/:generateToken", "minutesToExpire=0"),
            None,
        )
        .await;
    r.expect_error(400, Some("minutesToExpire"));
    let r = rest
        .call(
            "POST",
            &path_q("/:generateToken", "clientType=Telnet"),
            None,
        )
        .await;
    r.expect_error(400, Some("clientType"));
    // MQTT tokens name the MQTT endpoint (the MQTT suites connect with them).
    let r = rest
        .call("POST", &path_q("/:generateToken", "clientType=MQTT"), None)
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let token = r.json()["token"].as_str().expect("token").to_owned();
    let claims: Value = {
        use base64::Engine as _;
        let payload = token.split('.').nth(1).expect("a JWT");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("base64url");
        serde_json::from_slice(&bytes).expect("JSON claims")
    };
    assert!(
        claims["aud"]
            .as_str()
            .expect("aud")
            .ends_with(&format!("/clients/mqtt/hubs/{HUB}")),
        "{claims}"
    );
}

#[tokio::test]
async fn list_group_connections_pages_with_absolute_next_links() {
    let server = TestServer::start().await;
    let rest = server.rest();
    let mut clients = Vec::new();
    for i in 0..5 {
        let user = (i % 2 == 0).then_some("even");
        clients.push(server.json_client(HUB, user, &[], &["g"]).await);
    }
    let mut expected: Vec<Value> = clients
        .iter()
        .map(|c| json!({"connectionId": c.connection_id(), "userId": c.user_id()}))
        .collect();
    expected.sort_by_key(|v| v["connectionId"].as_str().map(str::to_owned));

    let mut seen: Vec<Value> = Vec::new();
    let mut next = Some(path_q("/groups/g/connections", "maxpagesize=2"));
    let mut pages = 0;
    while let Some(p) = next.take() {
        let r = rest.call("GET", &p, None).await;
        assert_eq!(r.status, 200, "{r:?}");
        let body = r.json();
        let value = body["value"].as_array().expect("value");
        assert!(value.len() <= 2);
        seen.extend(value.iter().cloned());
        pages += 1;
        if let Some(link) = body["nextLink"].as_str() {
            let relative = link
                .strip_prefix(server.endpoint())
                .unwrap_or_else(|| panic!("nextLink is absolute on the endpoint: {link}"));
            assert!(relative.contains("api-version=2024-12-01"), "{link}");
            next = Some(relative.to_owned());
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, expected);

    // `top` caps the total across pages.
    let mut total = 0;
    let mut next = Some(path_q("/groups/g/connections", "maxpagesize=2&top=3"));
    while let Some(p) = next.take() {
        let body = rest.call("GET", &p, None).await.json();
        total += body["value"].as_array().expect("value").len();
        next = body["nextLink"].as_str().map(|l| {
            l.strip_prefix(server.endpoint())
                .expect("absolute")
                .to_owned()
        });
    }
    assert_eq!(total, 3);

    let r = rest
        .call(
            "GET",
            &path_q("/groups/g/connections", "maxpagesize=201"),
            None,
        )
        .await;
    r.expect_error(400, Some("maxpagesize"));
    let r = rest
        .call(
            "GET",
            &path_q("/groups/g/connections", "continuationToken=garbage"),
            None,
        )
        .await;
    r.expect_error(400, Some("continuationToken"));
    let body = rest
        .call("GET", &path("/groups/empty/connections"), None)
        .await
        .json();
    assert_eq!(body, json!({"value": []}));
}
