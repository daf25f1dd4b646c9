// Group presence (spec part 2 §4.3): `setGroupState`, `subscribeGroupState` and
// `unsubscribeGroupState` from JSON clients (written by hand: the official 1.1.0 client
// parses the answers but has no public API for them), `groupStateSnapshot` then
// `groupStateUpdate` to subscribers, and the non-blocking upstream events
// `azure.webpubsub.gp.joined` / `gp.left` at `@azure/web-pubsub-express` 1.1.0's
// `onGroupJoined` / `onGroupLeft`. Across a cluster, the clients sit on different nodes.
//
// Run through `scripts/test`, or by hand after `cargo build -p hubcast-server`:
//   cd integration-tests/node && npm ci && node --test presence.test.mjs

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import express from "express";
import { WebPubSubEventHandler } from "web-pubsub-express-1.1.0";

import { SHUTDOWN_TIMEOUT_MS, STARTUP_TIMEOUT_MS, STEP_TIMEOUT_MS, Server, eventually, withTimeout } from "./support/hubcast.mjs";
import { RawClient } from "./support/raw.mjs";

const HUB = "presence";

describe("group presence", { timeout: 120_000 }, () => {
  let server;
  let httpServer;
  const clients = [];
  /** `[kind, connectionId, group]` of the presence events the handler got. */
  const presence = [];

  const handler = new WebPubSubEventHandler(HUB, {
    path: "/api/events/",
    onGroupJoined(req) {
      presence.push(["joined", req.context.connectionId, req.group]);
    },
    onGroupLeft(req) {
      presence.push(["left", req.context.connectionId, req.group]);
    },
  });

  async function open(user, roles) {
    const client = new RawClient(await server.clientUrl(HUB, user, roles));
    clients.push(client);
    await client.open();
    return client;
  }

  /** Sends `frame` with `ackId` and asserts the ack's outcome; resolves with the ack. */
  async function acked(client, frame, ackId, error) {
    client.send({ ...frame, ackId });
    const ack = await client.ack(ackId);
    if (error === undefined) assert.deepEqual(ack, { type: "ack", ackId, success: true }, JSON.stringify(frame));
    else assert.equal(ack.error?.name, error, JSON.stringify(ack));
    return ack;
  }

  const update = (client, predicate, what) =>
    client.next((f) => f.type === "groupStateUpdate" && f.items.some(predicate), what);

  before(async () => {
    const app = express();
    app.use(handler.getMiddleware());
    httpServer = await new Promise((resolve) => {
      const s = app.listen(0, "127.0.0.1", () => resolve(s));
    });
    server = new Server({
      configToml: [
        `[hubs.${HUB}]`,
        `[[hubs.${HUB}.event_handlers]]`,
        `url_template = "http://127.0.0.1:${httpServer.address().port}/api/events/"`,
        `system_events = ["joined", "left"]`,
        "",
      ].join("\n"),
    });
    await server.start();
  }, { timeout: STARTUP_TIMEOUT_MS + STEP_TIMEOUT_MS });

  after(async () => {
    for (const c of clients) c.close();
    await server?.stop();
    await new Promise((resolve) => httpServer?.close(resolve) ?? resolve());
  }, { timeout: SHUTDOWN_TIMEOUT_MS + 5_000 });

  test("two clients see each other's state: snapshot on subscribe, then updates; leave and end clear it", async () => {
    // Across a cluster the three land on three nodes (round robin).
    const alice = await open("alice");
    const bob = await open("bob");
    const carol = await open("carol");
    for (const [i, c] of [alice, bob, carol].entries()) await acked(c, { type: "joinGroup", group: "room" }, 1 + i);

    await acked(alice, { type: "subscribeGroupState", group: "room" }, 10);
    const first = alice.frames.findIndex((f) => f.type === "groupStateSnapshot");
    assert.deepEqual(alice.frames[first], { type: "groupStateSnapshot", group: "room", items: [] });
    assert.ok(first < alice.frames.findIndex((f) => f.type === "ack" && f.ackId === 10), "the snapshot comes before the ack");

    const before = Date.now();
    await acked(bob, { type: "setGroupState", group: "room", state: { status: "typing", mood: "ok" } }, 11);
    const fromBob = await update(alice, (i) => i.connectionId === bob.connectionId, "bob's state at alice");
    assert.deepEqual(fromBob.group, "room");
    const item = fromBob.items.find((i) => i.connectionId === bob.connectionId);
    assert.deepEqual({ ...item, updatedAt: 0 }, {
      connectionId: bob.connectionId,
      userId: "bob",
      state: { mood: "ok", status: "typing" },
      updatedAt: 0,
    });
    assert.ok(item.updatedAt >= before - 5_000 && item.updatedAt <= Date.now() + 5_000, `updatedAt ${item.updatedAt}`);

    // A later subscriber's snapshot holds every node's states.
    await acked(carol, { type: "setGroupState", group: "room", state: { status: "away" } }, 12);
    await acked(bob, { type: "subscribeGroupState", group: "room" }, 13);
    const snapshot = await bob.next((f) => f.type === "groupStateSnapshot", "bob's snapshot");
    assert.deepEqual(
      snapshot.items.map((i) => [i.connectionId, i.state]).sort(),
      [[bob.connectionId, { mood: "ok", status: "typing" }], [carol.connectionId, { status: "away" }]].sort(),
    );

    // Clearing sends an item without `state`.
    await acked(carol, { type: "setGroupState", group: "room" }, 14);
    const cleared = await update(bob, (i) => i.connectionId === carol.connectionId && i.state === undefined, "carol cleared");
    assert.equal(cleared.items[0].userId, "carol");

    // Leaving the group clears bob's state; so does alice's unsubscribing stop her updates.
    await acked(bob, { type: "leaveGroup", group: "room" }, 15);
    await update(alice, (i) => i.connectionId === bob.connectionId && i.state === undefined, "bob left: cleared at alice");
    await acked(alice, { type: "unsubscribeGroupState", group: "room" }, 16);
    const seenByAlice = alice.frames.length;
    await acked(carol, { type: "setGroupState", group: "room", state: { status: "back" } }, 17);
    await update(bob, (i) => i.connectionId === carol.connectionId && i.state?.status === "back", "carol back at bob");
    assert.equal(alice.frames.slice(seenByAlice).filter((f) => f.type === "groupStateUpdate").length, 0, "unsubscribed");

    // A client's end clears its state.
    carol.close();
    await update(bob, (i) => i.connectionId === carol.connectionId && i.state === undefined, "carol gone: cleared");
  });

  test("gp.joined and gp.left reach the handler for joins, leaves and the end of a connection", async () => {
    const dave = await open("dave");
    await acked(dave, { type: "joinGroup", group: "g1" }, 1);
    await acked(dave, { type: "joinGroup", group: "g2" }, 2);
    await acked(dave, { type: "leaveGroup", group: "g1" }, 3);
    const id = dave.connectionId;
    await eventually(() => presence.some((p) => p[0] === "left" && p[1] === id && p[2] === "g1"), "gp.left g1");
    dave.close();
    await eventually(() => presence.some((p) => p[0] === "left" && p[1] === id && p[2] === "g2"), "gp.left g2 at the end");
    const mine = presence.filter((p) => p[1] === id);
    assert.deepEqual(mine, [
      ["joined", id, "g1"],
      ["joined", id, "g2"],
      ["left", id, "g1"],
      ["left", id, "g2"],
    ]);
  });

  test("bad input: not a member, oversized state, no permission, no group; the connection stays", async () => {
    const erin = await open("erin", []);
    const notMember = await acked(erin, { type: "setGroupState", group: "room", state: { a: "b" } }, 1, "Forbidden");
    assert.match(notMember.error.message, /join it before setting a state/);
    const noRight = await acked(erin, { type: "subscribeGroupState", group: "room" }, 2, "Forbidden");
    assert.match(noRight.error.message, /may not see the state of group 'room'/);
    const big = Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, "v"]));
    const tooBig = await acked(erin, { type: "setGroupState", group: "room", state: big }, 3, "BadRequest");
    assert.match(tooBig.error.message, /more than the limit of 16/);
    const long = await acked(erin, { type: "setGroupState", group: "room", state: { k: "v".repeat(2000) } }, 4, "BadRequest");
    assert.match(long.error.message, /more than the limit of 1024/);
    await acked(erin, { type: "subscribeGroupState" }, 5, "BadRequest");
    // Still served.
    erin.send({ type: "ping" });
    await erin.next((f) => f.type === "pong", "pong");
  });
});
