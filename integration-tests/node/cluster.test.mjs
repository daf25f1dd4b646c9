// The official Azure SDKs against three `hubcast` processes that form one cluster over the
// test Redis: clients (`@azure/web-pubsub-client`) on node 1, a sending client on node 2,
// and the server SDK (`@azure/web-pubsub`) on node 3 — as behind a load balancer without
// sticky sessions, where every call may land on any node.
//
// Run through `scripts/test`, or by hand after `cargo build -p hubcast-server` with Redis on
// 127.0.0.1:6379:  cd integration-tests/node && node --test cluster.test.mjs

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { WebPubSubServiceClient } from "@azure/web-pubsub";

import { Cluster, SHUTDOWN_TIMEOUT_MS, STARTUP_TIMEOUT_MS, STEP_TIMEOUT_MS, sleep, withTimeout } from "./support/hubcast.mjs";
import { Observer } from "./support/observer.mjs";

const HUB = "chat";

describe("official SDKs against a three-node hubcast cluster", { timeout: 180_000 }, () => {
  const cluster = new Cluster(3);
  const observers = [];
  let tokens1; // mints client URLs for node 1
  let tokens2; // mints client URLs for node 2
  let service; // the server SDK on node 3

  async function connect(tokens, userId, options = {}) {
    const { url } = await tokens.getClientAccessToken({ userId, ...options });
    const o = new Observer(url);
    observers.push(o);
    return o.start();
  }

  /** Nothing else is queued for `o`: a marker to its connection (from node 3) comes next. */
  async function expectNothingBefore(o) {
    const marker = `marker-${Math.random()}`;
    await service.sendToConnection(o.connectionId, marker, { contentType: "text/plain" });
    const m = await o.nextData();
    assert.equal(m.data, marker, `expected nothing queued before the marker, got ${JSON.stringify(m)}`);
  }

  before(async () => {
    const [cs1, cs2, cs3] = await cluster.start();
    const options = { allowInsecureConnection: true };
    tokens1 = new WebPubSubServiceClient(cs1, HUB, options);
    tokens2 = new WebPubSubServiceClient(cs2, HUB, options);
    service = new WebPubSubServiceClient(cs3, HUB, options);
    // The nodes subscribe to Redis as they start: wait until node 3 sees members on 1 and 2.
    const probe1 = await connect(tokens1, "probe", { groups: ["ready-1"] });
    const probe2 = await connect(tokens2, "probe", { groups: ["ready-2"] });
    const deadline = Date.now() + STARTUP_TIMEOUT_MS;
    for (;;) {
      let ready = false;
      try {
        ready = (await service.groupExists("ready-1")) && (await service.groupExists("ready-2"));
      } catch {
        // A node still joining refuses cluster questions with 503: ask again.
      }
      if (ready) break;
      assert.ok(Date.now() < deadline, "node 3 never saw the members on nodes 1 and 2");
      await sleep(50);
    }
    probe1.stop();
    probe2.stop();
  }, { timeout: STARTUP_TIMEOUT_MS * 4 });

  after(async () => {
    for (const o of observers) o.stop();
    await cluster.stop();
  }, { timeout: SHUTDOWN_TIMEOUT_MS + 5_000 });

  test("a client on node 2 publishes to a group whose members are on node 1", async () => {
    const roles = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"];
    const alice = await connect(tokens1, "alice", { roles });
    const sam = await connect(tokens2, "sam", { roles });
    await withTimeout(alice.client.joinGroup("room"), STEP_TIMEOUT_MS, "joinGroup");
    await withTimeout(sam.client.sendToGroup("room", { hello: "from node 2" }, "json"), STEP_TIMEOUT_MS, "sendToGroup");
    const m = await alice.nextData();
    assert.equal(m.kind, "group");
    assert.equal(m.group, "room");
    assert.equal(m.fromUserId, "sam");
    assert.deepEqual(m.data, { hello: "from node 2" });
    for (let i = 0; i < 20; i++) sam.client.sendToGroup("room", `n${i}`, "text", { fireAndForget: true });
    for (let i = 0; i < 20; i++) assert.equal((await alice.nextData()).data, `n${i}`, "in order");
  });

  test("the server SDK on node 3 sends to all, groups, users and connections on node 1", async () => {
    const alice = await connect(tokens1, "alice2", { groups: ["lobby"] });
    const bob = await connect(tokens1, "bob2");
    await service.sendToAll({ n: 1 });
    assert.deepEqual((await alice.nextData()).data, { n: 1 });
    assert.deepEqual((await bob.nextData()).data, { n: 1 });
    await service.group("lobby").sendToAll("group", { contentType: "text/plain" });
    await service.sendToUser("bob2", "user", { contentType: "text/plain" });
    await service.sendToConnection(alice.connectionId, "direct", { contentType: "text/plain" });
    await service.sendToAll("not bob", { contentType: "text/plain", excludedConnections: [bob.connectionId] });
    assert.equal((await alice.nextData()).data, "group");
    assert.equal((await alice.nextData()).data, "direct");
    assert.equal((await alice.nextData()).data, "not bob");
    assert.equal((await bob.nextData()).data, "user");
    await expectNothingBefore(bob);
  });

  test("exists, membership, permissions and listings from node 3 for connections on nodes 1 and 2", async () => {
    const a = await connect(tokens1, "carol");
    const b = await connect(tokens2, "carol");
    assert.equal(await service.connectionExists(a.connectionId), true);
    assert.equal(await service.connectionExists(b.connectionId), true);
    assert.equal(await service.userExists("carol"), true);
    await service.group("team").addConnection(a.connectionId);
    await service.group("team").addUser("carol");
    assert.equal(await service.groupExists("team"), true);
    const listed = [];
    for await (const member of await service.group("team").listConnections({ maxPageSize: 1 })) listed.push(member.connectionId);
    assert.deepEqual(listed.sort(), [a.connectionId, b.connectionId].sort());
    await service.group("team").sendToAll("team", { contentType: "text/plain" });
    assert.equal((await a.nextData()).data, "team");
    assert.equal((await b.nextData()).data, "team");
    await service.group("team").removeUser("carol");
    assert.equal(await service.groupExists("team"), false);

    assert.equal(await service.hasPermission(a.connectionId, "sendToGroup", { targetName: "team" }), false);
    await service.grantPermission(a.connectionId, "sendToGroup", { targetName: "team" });
    assert.equal(await service.hasPermission(a.connectionId, "sendToGroup", { targetName: "team" }), true);
    await service.group("team").addConnection(b.connectionId);
    await withTimeout(a.client.sendToGroup("team", "granted", "text"), STEP_TIMEOUT_MS, "send after grant");
    assert.equal((await b.nextData()).data, "granted");
    await service.revokePermission(a.connectionId, "sendToGroup", { targetName: "team" });
    assert.equal(await service.hasPermission(a.connectionId, "sendToGroup", { targetName: "team" }), false);
  });

  test("closes from node 3 end connections on nodes 1 and 2", async () => {
    const one = await connect(tokens1, "closer");
    const two = await connect(tokens2, "closer");
    const gone = [one, two].map((o) => o.next((m) => m.kind === "disconnected", "disconnected"));
    await service.closeUserConnections("closer", { reason: "bye" });
    for (const d of await Promise.all(gone)) assert.equal(d.reason, "bye");
    assert.equal(await service.userExists("closer"), false);
    const three = await connect(tokens1, "closer-3");
    const closed = three.next((m) => m.kind === "disconnected", "disconnected");
    await service.closeConnection(three.connectionId, { reason: "just you" });
    assert.equal((await closed).reason, "just you");
    assert.equal(await service.connectionExists(three.connectionId), false);
  });
});
