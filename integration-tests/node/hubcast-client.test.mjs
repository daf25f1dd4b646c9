// Hubcast's generated TypeScript client (sdk-ts, the compiled checked-in package) against the
// real `hubcast` binary over `json.webpubsub.azure.v1`: chat through a group, acks and their
// errors, Duplicate, reconnection with rejoin after a dropped connection, keep-alive, close
// codes, stop. (The reliable and protobuf subprotocols are covered by
// reliable/hubcast-client-protocols.test.mjs.)
//
// Node 20 has no global WebSocket, so the clients get the `ws` package's.
//
// Run through `scripts/test`, or by hand after `cargo build -p hubcast-server`:
//   cd integration-tests/node && npm ci && node --test hubcast-client.test.mjs

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import WebSocket from "ws";

import { AckErrorName, CloseCode, ConnectionError, HubcastClient, SendMessageError } from "../../sdk-ts/dist/index.js";
import {
  Proxy,
  SHUTDOWN_TIMEOUT_MS,
  STARTUP_TIMEOUT_MS,
  STEP_TIMEOUT_MS,
  Server,
  eventually,
  nextEvent,
  sleep,
  withTimeout,
} from "./support/hubcast.mjs";

const HUB = "chat";
const GROUP = "room";
const JOIN_ONLY = ["webpubsub.joinLeaveGroup"];

describe("generated HubcastClient (json) against hubcast", { timeout: 180_000 }, () => {
  const server = new Server();
  const clients = [];
  const proxies = [];
  let alice;
  let bob;

  /** A client on the JSON protocol; keep-alive off unless asked (it would keep this process busy). */
  function newClient(url, options = {}) {
    const client = new HubcastClient(url, {
      protocol: "json",
      WebSocket,
      keepAliveIntervalInMs: 0,
      keepAliveTimeoutInMs: 0,
      reconnectRetryOptions: { retryDelayInMs: 200 },
      messageRetryOptions: { retryDelayInMs: 200 },
      ...options,
    });
    clients.push(client);
    return client;
  }

  async function proxy() {
    const p = await new Proxy(server.port).start();
    proxies.push(p);
    return p;
  }

  /** Collects the group messages a client receives. */
  function inbox(client) {
    const messages = [];
    client.on("group-message", (e) => messages.push(e.message));
    return messages;
  }

  before(async () => {
    await server.start();
    alice = newClient(await server.clientUrl(HUB, "alice"));
    bob = newClient(await server.clientUrl(HUB, "bob"));
  }, { timeout: STARTUP_TIMEOUT_MS + 2 * STEP_TIMEOUT_MS });

  after(async () => {
    for (const client of clients) client.stop();
    for (const p of proxies) await p.close();
    await server.stop();
  }, { timeout: SHUTDOWN_TIMEOUT_MS + 5_000 });

  test("two clients connect, join a group and chat (json, text, binary)", async () => {
    const connected = [alice, bob].map((c) => nextEvent(c, "connected"));
    await withTimeout(Promise.all([alice.start(), bob.start()]), STEP_TIMEOUT_MS, "start()");
    const [a, b] = await Promise.all(connected);
    assert.equal(a.userId, "alice");
    assert.equal(b.userId, "bob");
    assert.equal(alice.connectionId, a.connectionId);
    assert.notEqual(a.connectionId, b.connectionId);
    assert.equal(alice.state, "Connected");
    assert.equal(alice.subprotocol, "json.webpubsub.azure.v1");

    const joins = await Promise.all([alice.joinGroup(GROUP), bob.joinGroup(GROUP)]);
    for (const r of joins) {
      assert.equal(r.isDuplicated, false);
      assert.equal(typeof r.ackId, "number");
    }

    const atBob = nextEvent(bob, "group-message", (e) => e.message.dataType === "json", "bob: json message");
    await alice.sendToGroup(GROUP, { text: "hi bob", n: [1, 2] }, "json");
    const { message } = await atBob;
    assert.deepEqual(
      { kind: message.kind, group: message.group, fromUserId: message.fromUserId, data: message.data },
      { kind: "groupData", group: GROUP, fromUserId: "alice", data: { text: "hi bob", n: [1, 2] } },
    );

    const atAlice = nextEvent(alice, "group-message", (e) => e.message.dataType === "text", "alice: text message");
    await bob.sendToGroup(GROUP, "hi alice", "text");
    const text = (await atAlice).message;
    assert.equal(text.data, "hi alice");
    assert.equal(text.fromUserId, "bob");

    const bytes = new Uint8Array([0, 1, 2, 253, 254, 255]);
    const atBobBinary = nextEvent(bob, "group-message", (e) => e.message.dataType === "binary", "bob: binary message");
    await alice.sendToGroup(GROUP, bytes.buffer, "binary");
    assert.deepEqual((await atBobBinary).message.data, bytes);
  });

  test("noEcho keeps a message from its sender", async () => {
    const aliceInbox = inbox(alice);
    const atBob = nextEvent(bob, "group-message", (e) => e.message.data === "quiet", "bob: noEcho message");
    await alice.sendToGroup(GROUP, "quiet", "text", { noEcho: true });
    await atBob;
    // A message sent after it, with echo, arrives at alice; the noEcho one must not have.
    const echo = nextEvent(alice, "group-message", (e) => e.message.data === "loud", "alice: echo");
    await alice.sendToGroup(GROUP, "loud", "text");
    await echo;
    assert.deepEqual(aliceInbox.map((m) => m.data), ["loud"]);
  });

  test("an ack error rejects with the service's error name; no retry for Forbidden", async () => {
    const carol = newClient(await server.clientUrl(HUB, "carol", JOIN_ONLY));
    await carol.start();
    await carol.joinGroup(GROUP);
    const error = await carol.sendToGroup(GROUP, "not allowed", "text").then(
      () => assert.fail("sendToGroup without the sendToGroup role must fail"),
      (e) => e,
    );
    assert.ok(error instanceof SendMessageError, String(error));
    assert.equal(error.errorDetail?.name, AckErrorName.Forbidden);
    assert.equal(typeof error.ackId, "number");
    carol.stop();
  });

  test("reusing an ack id is answered Duplicate: resolved as duplicated, published once", async () => {
    const received = inbox(bob);
    const first = await alice.sendToGroup(GROUP, "exactly once", "text", { ackId: 1_000_000 });
    assert.deepEqual(first, { ackId: 1_000_000, isDuplicated: false });
    const second = await alice.sendToGroup(GROUP, "exactly once", "text", { ackId: 1_000_000 });
    assert.deepEqual(second, { ackId: 1_000_000, isDuplicated: true });
    const join = await alice.joinGroup(GROUP, { ackId: 1_000_001 });
    const joinAgain = await alice.joinGroup(GROUP, { ackId: 1_000_001 });
    assert.equal(join.isDuplicated, false);
    assert.equal(joinAgain.isDuplicated, true);
    // A marker sent afterwards arrives after any second copy would have.
    const marker = nextEvent(bob, "group-message", (e) => e.message.data === "marker", "bob: marker");
    await alice.sendToGroup(GROUP, "marker", "text");
    await marker;
    assert.equal(received.filter((m) => m.data === "exactly once").length, 1);
  });

  test("sendEvent and fire-and-forget sends resolve", async () => {
    const result = await alice.sendEvent("chat", { hello: "upstream" }, "json");
    assert.equal(result.isDuplicated, false);
    const atBob = nextEvent(bob, "group-message", (e) => e.message.data === "fire", "bob: fire-and-forget");
    const ff = await alice.sendToGroup(GROUP, "fire", "text", { fireAndForget: true });
    assert.equal(ff.ackId, undefined);
    await atBob;
  });

  test("a dropped connection: disconnected (1006), a new connection from a fresh URL, groups rejoined", async () => {
    const p = await proxy();
    let urls = 0;
    const base = await server.clientUrl(HUB, "dave");
    const dave = newClient(() => {
      urls++;
      return Promise.resolve(p.route(base));
    });
    await dave.start();
    await dave.joinGroup(GROUP);
    const firstId = dave.connectionId;
    const disconnected = nextEvent(dave, "disconnected", () => true, "dave: disconnected");
    const reconnected = nextEvent(dave, "connected", () => true, "dave: connected again");
    p.drop();
    const d = await disconnected;
    assert.equal(d.connectionId, firstId);
    assert.equal(d.code, 1006, `close code ${d.code}`);
    // An operation issued while reconnecting waits for the new connection.
    const pending = dave.sendToGroup(GROUP, "sent while reconnecting", "text");
    const c = await reconnected;
    assert.notEqual(c.connectionId, firstId);
    assert.equal(urls, 2, "the URL provider is asked again for the new connection");
    await withTimeout(pending, STEP_TIMEOUT_MS, "the send issued while reconnecting");
    // Rejoined: dave receives the group's messages on the new connection.
    const atDave = nextEvent(dave, "group-message", (e) => e.message.data === "welcome back", "dave: after rejoin");
    await alice.sendToGroup(GROUP, "welcome back", "text");
    assert.equal((await atDave).message.fromUserId, "alice");
    dave.stop();
  });

  test("keep-alive: pings keep an idle connection; a frozen one is dropped and replaced", async () => {
    const p = await proxy();
    const erin = newClient(p.route(await server.clientUrl(HUB, "erin")), {
      keepAliveIntervalInMs: 200,
      keepAliveTimeoutInMs: 1500,
    });
    const events = [];
    erin.on("disconnected", (e) => events.push(e));
    await erin.start();
    await sleep(2500);
    assert.deepEqual(events, [], "pongs must keep the connection alive");
    const firstId = erin.connectionId;
    const reconnected = nextEvent(erin, "connected", () => true, "erin: reconnected after keep-alive timeout");
    p.freeze();
    await reconnected;
    assert.equal(events.length, 1);
    assert.match(events[0].reason, /keep-alive/);
    assert.notEqual(erin.connectionId, firstId);
    erin.stop();
  });

  test("a server close shows its close code and disconnected message", async () => {
    const frank = newClient(await server.clientUrl(HUB, "frank"), { autoReconnect: false });
    await frank.start();
    const disconnected = nextEvent(frank, "disconnected", () => true, "frank: disconnected");
    const stopped = nextEvent(frank, "stopped", () => true, "frank: stopped");
    // Larger than the server's 1 MiB limit: closed with 1009 after a `disconnected` message.
    frank.sendToGroup(GROUP, "x".repeat(1024 * 1024 + 10), "text").catch(() => {});
    const d = await disconnected;
    assert.equal(d.code, CloseCode.MessageTooBig);
    assert.match(d.message?.message ?? "", /exceeds/);
    await stopped;
    assert.equal(frank.state, "Stopped");
  });

  test("start() rejects with a ConnectionError when the token is refused", async () => {
    const url = (await server.clientUrl(HUB, "mallory")).replace(/access_token=[^&]+/, "access_token=not-a-jwt");
    const mallory = newClient(url);
    const stopped = nextEvent(mallory, "stopped", () => true, "mallory: stopped");
    const error = await mallory.start().then(
      () => assert.fail("start() must fail"),
      (e) => e,
    );
    assert.ok(error instanceof ConnectionError, String(error));
    assert.match(error.reason ?? "", /401/);
    await stopped;
    assert.equal(mallory.state, "Stopped");
  });

  test("stop(): disconnected with code 1000, then stopped; later operations reject", async () => {
    const events = [];
    alice.on("disconnected", (e) => events.push(["disconnected", e.code]));
    alice.on("stopped", () => events.push(["stopped"]));
    const stopped = nextEvent(alice, "stopped", () => true, "alice: stopped");
    alice.stop();
    await stopped;
    assert.deepEqual(events, [["disconnected", 1000], ["stopped"]]);
    await assert.rejects(alice.joinGroup(GROUP), SendMessageError);
    await eventually(() => bob.state === "Connected", "bob unaffected");
  });
});
