//! A REST service token names path segments, not a decoded string: a `%2F` inside a group
//! name stays inside its segment, so a token for one route never opens the route its
//! decoded slashes would spell.

use hubcast_integration_tests::TestServer;

const VERSION: &str = "api-version=2024-12-01";

#[tokio::test]
async fn a_token_for_a_group_named_with_slashes_does_not_open_the_path_those_slashes_spell() {
    let server = TestServer::start().await;
    let rest = server.rest();
    let client = server.json_client("chat", Some("victim"), &[], &[]).await;
    let id = client.connection_id().to_owned();

    // The group `a/connections/{id}`, encoded as the Azure SDKs encode it, and the route
    // its slashes spell once decoded: add connection `{id}` to group `a`.
    let group = format!("/api/hubs/chat/groups/a%2Fconnections%2F{id}?{VERSION}");
    let add_to_a = format!("/api/hubs/chat/groups/a/connections/{id}?{VERSION}");
    let a_exists = format!("/api/hubs/chat/groups/a?{VERSION}");
    let group_token = rest.token_for(&group);

    let r = rest
        .call_with("PUT", &add_to_a, None, Some(&group_token), &[])
        .await;
    r.expect_error(401, None);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert_eq!(
        rest.call("HEAD", &a_exists, None).await.status,
        404,
        "the refused request added nobody to group `a`"
    );

    // The token still opens its own URL: the group has no member, so 404, not 401.
    let r = rest
        .call_with("HEAD", &group, None, Some(&group_token), &[])
        .await;
    assert_eq!(r.status, 404, "{r:?}");

    // Nor the other way round: a token for the member route does not name the group.
    let member_token = rest.token_for(&add_to_a);
    let r = rest
        .call_with("HEAD", &group, None, Some(&member_token), &[])
        .await;
    assert_eq!(r.status, 401, "{r:?}");

    // With its own token the route works, so the 401 above was the audience check.
    let r = rest
        .call_with("PUT", &add_to_a, None, Some(&member_token), &[])
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(rest.call("HEAD", &a_exists, None).await.status, 200);
}
