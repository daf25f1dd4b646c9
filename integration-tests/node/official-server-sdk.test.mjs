// The official Azure Web PubSub server SDK (`@azure/web-pubsub`'s WebPubSubServiceClient),
// built from the connection string the real `hubcast` binary prints, calls every method it
// offers; each effect is checked on clients connected with the official
// `@azure/web-pubsub-client` (JSON protocol).
//
// Run through `scripts/test`, or by hand after `cargo build -p hubcast-server`:
//   cd integration-tests/node && npm ci && node --test official-server-sdk.test.mjs

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { WebPubSubServiceClient } from "@azure/web-pubsub";

import { SHUTDOWN_TIMEOUT_MS, STARTUP_TIMEOUT_MS, STEP_TIMEOUT_MS, Server, withTimeout } from "./support/hubcast.mjs";
import { Observer } from "./support/observer.mjs";

const HUB = "chat";

/** The official client's refusal of a request the connection has no permission for (not a
 * timeout, nor any other failure). */
function forbidden(e) {
  assert.equal(e.name, "SendMessageError", `${e}`);
  assert.equal(e.errorDetail?.name, "Forbidden", `${JSON.stringify(e.errorDetail)}`);
  return true;
}

describe("official @azure/web-pubsub WebPubSubServiceClient against hubcast", { timeout: 180_000 }, () => {
  const server = new Server();
  const observers = [];
  let service;

  /** Connects an observer with a token from the service client's getClientAccessToken. */
  async function connect(userId, options = {}) {
    const { url } = await service.getClientAccessToken({ userId, ...options });
    const observer = new Observer(url);
    observers.push(observer);
    return observer.start();
  }

  /**
   * Proves nothing else is queued for `observer`: a marker sent to its connection only must
   * be the next data message it receives (messages to one connection keep their order).
   */
  async function expectNothingBefore(observer) {
    const marker = `marker-${Math.random()}`;
    await service.sendToConnection(observer.connectionId, marker, { contentType: "text/plain" });
    const m = await observer.nextData();
    assert.equal(m.data, marker, `expected nothing queued before the marker, got ${JSON.stringify(m)}`);
  }

  before(async () => {
    const connectionString = await server.start();
    service = new WebPubSubServiceClient(connectionString, HUB, { allowInsecureConnection: true });
  }, { timeout: STARTUP_TIMEOUT_MS });

  after(async () => {
    for (const o of observers) o.stop();
    await server.stop();
  }, { timeout: SHUTDOWN_TIMEOUT_MS + 5_000 });

  test("getClientAccessToken signs locally; clients connect with the URL", async () => {
    const token = await service.getClientAccessToken({ userId: "tok", roles: ["webpubsub.joinLeaveGroup"], groups: ["g0"] });
    assert.match(token.url, /^ws:\/\/127\.0\.0\.1:\d+\/client\/hubs\/chat\?access_token=/);
    assert.equal(token.baseUrl, token.url.split("?")[0]);
    const o = await connect("tok", { groups: ["g0"] });
    assert.equal(o.userId, "tok");
    assert.equal(await service.groupExists("g0"), true);
    o.stop();
  });

  test("sendToAll, sendToUser, sendToConnection and group sendToAll deliver, with data types", async () => {
    const alice = await connect("alice", { groups: ["room"] });
    const bob = await connect("bob");

    await service.sendToAll({ hello: "world" });
    for (const o of [alice, bob]) {
      const m = await o.nextData();
      assert.deepEqual([m.kind, m.dataType, m.data], ["server", "json", { hello: "world" }]);
    }
    await service.sendToAll("plain", { contentType: "text/plain", excludedConnections: [bob.connectionId] });
    assert.deepEqual(await alice.nextData().then((m) => [m.dataType, m.data]), ["text", "plain"]);
    await expectNothingBefore(bob);

    await service.sendToAll("filtered", { contentType: "text/plain", filter: "userId eq 'bob'", messageTtlSeconds: 30 });
    assert.equal((await bob.nextData()).data, "filtered");
    await expectNothingBefore(alice);

    await service.sendToUser("bob", new Uint8Array([1, 2, 3]).buffer);
    const binary = await bob.nextData();
    assert.equal(binary.dataType, "binary");
    assert.deepEqual([...new Uint8Array(binary.data)], [1, 2, 3]);

    await service.sendToConnection(alice.connectionId, "direct", { contentType: "text/plain" });
    assert.equal((await alice.nextData()).data, "direct");

    await service.group("room").sendToAll({ n: 1 }, { filter: "userId ne 'nobody'" });
    const group = await alice.nextData();
    assert.deepEqual([group.kind, group.group, group.data], ["group", "room", { n: 1 }]);
    await expectNothingBefore(bob);

    // Send operations are 202 even when nobody receives them.
    await service.sendToUser("nobody", "x", { contentType: "text/plain" });
    await service.sendToConnection("nobody", "x", { contentType: "text/plain" });

    // An invalid filter is a 400 the SDK surfaces.
    await assert.rejects(service.sendToAll("x", { contentType: "text/plain", filter: "userId eq" }), (e) => {
      assert.equal(e.statusCode, 400);
      assert.match(e.message, /position 9/);
      return true;
    });
    alice.stop();
    bob.stop();
  });

  test("connectionExists, groupExists and userExists answer true and false", async () => {
    const o = await connect("exists-user", { groups: ["exists-group"] });
    assert.equal(await service.connectionExists(o.connectionId), true);
    assert.equal(await service.connectionExists("no-such-connection"), false);
    assert.equal(await service.groupExists("exists-group"), true);
    assert.equal(await service.groupExists("no-such-group"), false);
    assert.equal(await service.userExists("exists-user"), true);
    assert.equal(await service.userExists("no-such-user"), false);
    o.stop();
  });

  test("group addConnection, removeConnection and removeConnectionFromAllGroups", async () => {
    const o = await connect("member");
    const g = service.group("a b/c");
    await g.addConnection(o.connectionId);
    assert.equal(await service.groupExists("a b/c"), true);
    await g.sendToAll("hi group", { contentType: "text/plain" });
    assert.deepEqual(await o.nextData().then((m) => [m.group, m.data]), ["a b/c", "hi group"]);

    await assert.rejects(g.addConnection("no-such-connection"), (e) => e.statusCode === 404);

    await g.removeConnection(o.connectionId);
    assert.equal(await service.groupExists("a b/c"), false);
    await g.sendToAll("not for you", { contentType: "text/plain" });
    await expectNothingBefore(o);

    await service.group("x1").addConnection(o.connectionId);
    await service.group("x2").addConnection(o.connectionId);
    await service.removeConnectionFromAllGroups(o.connectionId);
    assert.equal(await service.groupExists("x1"), false);
    assert.equal(await service.groupExists("x2"), false);
    o.stop();
  });

  test("group addUser, removeUser and removeUserFromAllGroups apply to every connection of the user", async () => {
    const u1 = await connect("multi");
    const u2 = await connect("multi");
    const other = await connect("someone-else");
    const g = service.group("users-group");
    await g.addUser("multi");
    await g.sendToAll("to users", { contentType: "text/plain" });
    for (const o of [u1, u2]) assert.equal((await o.nextData()).data, "to users");
    await expectNothingBefore(other);

    await g.removeUser("multi");
    assert.equal(await service.groupExists("users-group"), false);

    await service.group("u-a").addUser("multi");
    await service.group("u-b").addUser("multi");
    await service.removeUserFromAllGroups("multi");
    assert.equal(await service.groupExists("u-a"), false);
    assert.equal(await service.groupExists("u-b"), false);
    for (const o of [u1, u2, other]) o.stop();
  });

  test("addConnectionsToGroups and removeConnectionsFromGroups with OData filters", async () => {
    const vip = await connect("vip");
    const pleb = await connect("pleb");
    await service.addConnectionsToGroups(["lounge", "bar"], "userId eq 'vip'");
    await service.group("lounge").sendToAll("lounge", { contentType: "text/plain" });
    assert.equal((await vip.nextData()).data, "lounge");
    await expectNothingBefore(pleb);

    await service.removeConnectionsFromGroups(["lounge"], `connectionId eq '${vip.connectionId}'`);
    assert.equal(await service.groupExists("lounge"), false);
    assert.equal(await service.groupExists("bar"), true);
    vip.stop();
    pleb.stop();
  });

  test("grantPermission, hasPermission and revokePermission take effect on the client", async () => {
    const o = await connect("perm");
    await assert.rejects(withTimeout(o.client.joinGroup("locked"), STEP_TIMEOUT_MS, "joinGroup"), forbidden);
    assert.equal(await service.hasPermission(o.connectionId, "joinLeaveGroup", { targetName: "locked" }), false);

    await service.grantPermission(o.connectionId, "joinLeaveGroup", { targetName: "locked" });
    assert.equal(await service.hasPermission(o.connectionId, "joinLeaveGroup", { targetName: "locked" }), true);
    await withTimeout(o.client.joinGroup("locked"), STEP_TIMEOUT_MS, "joinGroup after grant");
    assert.equal(await service.groupExists("locked"), true);

    await service.revokePermission(o.connectionId, "joinLeaveGroup", { targetName: "locked" });
    assert.equal(await service.hasPermission(o.connectionId, "joinLeaveGroup", { targetName: "locked" }), false);
    await assert.rejects(withTimeout(o.client.leaveGroup("locked"), STEP_TIMEOUT_MS, "leaveGroup"), forbidden);

    await service.grantPermission(o.connectionId, "sendToGroup");
    assert.equal(await service.hasPermission(o.connectionId, "sendToGroup"), true);
    await withTimeout(o.client.sendToGroup("locked", "allowed now", "text"), STEP_TIMEOUT_MS, "sendToGroup after grant");
    assert.equal((await o.nextData()).data, "allowed now");
    o.stop();
  });

  test("group listConnections pages through every member, following nextLink", async () => {
    const members = [];
    for (let i = 0; i < 5; i++) members.push(await connect(`lister-${i}`, { groups: ["listed"] }));
    const expected = members.map((m) => [m.connectionId, m.userId]).sort();
    // Two per page: the SDK follows two absolute nextLinks, signing each one.
    const listed = [];
    for await (const member of await service.group("listed").listConnections({ maxPageSize: 2 })) listed.push(member);
    assert.deepEqual(listed.map((m) => [m.connectionId, m.userId]).sort(), expected);
    // `top` caps the total across pages.
    const capped = [];
    for await (const member of await service.group("listed").listConnections({ maxPageSize: 2, top: 3 })) capped.push(member);
    assert.equal(capped.length, 3);
    for (const m of members) m.stop();
  });

  test("closeConnection, closeUserConnections, group closeAllConnections and closeAllConnections", async () => {
    const one = await connect("closer-1");
    let disconnected = one.next((m) => m.kind === "disconnected", "disconnected");
    await service.closeConnection(one.connectionId, { reason: "bye one" });
    assert.equal((await disconnected).reason, "bye one");
    assert.equal(await service.connectionExists(one.connectionId), false);

    const u = await connect("closer-user");
    disconnected = u.next((m) => m.kind === "disconnected", "disconnected");
    await service.closeUserConnections("closer-user", { reason: "bye user" });
    assert.equal((await disconnected).reason, "bye user");
    assert.equal(await service.userExists("closer-user"), false);

    const inGroup = await connect("closer-group", { groups: ["doomed"] });
    disconnected = inGroup.next((m) => m.kind === "disconnected", "disconnected");
    await service.group("doomed").closeAllConnections({ reason: "bye group" });
    assert.equal((await disconnected).reason, "bye group");
    assert.equal(await service.groupExists("doomed"), false);

    const a = await connect("closer-all-a");
    const b = await connect("closer-all-b");
    const gone = [a, b].map((o) => o.next((m) => m.kind === "disconnected", "disconnected"));
    await service.closeAllConnections({ reason: "bye all" });
    for (const d of await Promise.all(gone)) assert.equal(d.reason, "bye all");
    assert.equal(await service.connectionExists(a.connectionId), false);
    assert.equal(await service.connectionExists(b.connectionId), false);
  });
});
