// The official Azure Web PubSub JavaScript client (`@azure/web-pubsub-client`) against the
// real `hubcast` binary: start, join a group, group messages (json and text), events, stop.
//
// Run through `scripts/test`, or by hand after `cargo build -p hubcast-server`:
//   cd integration-tests/node && npm ci && node --test
// The binary is `$HUBCAST_BIN`, by default `<repo>/target/debug/hubcast`.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { WebPubSubClient, WebPubSubJsonProtocol } from "@azure/web-pubsub-client";

import { SHUTDOWN_TIMEOUT_MS, STARTUP_TIMEOUT_MS, STEP_TIMEOUT_MS, Server, nextEvent, withTimeout } from "./support/hubcast.mjs";

const HUB = "chat";
const GROUP = "room";

describe("official @azure/web-pubsub-client against hubcast", { timeout: 120_000 }, () => {
  const server = new Server();
  const clients = [];
  let alice;
  let bob;

  /**
   * A JSON-protocol client that fails fast instead of reconnecting.
   *
   * Keep-alive is off unless asked for: the SDK's keep-alive loops sleep a full interval
   * (40 s for the default timeout monitor) without watching for `stop()`, which would keep
   * this process alive long after the tests end. The keep-alive test uses short intervals.
   */
  function newClient(url, keepAlive = { keepAliveIntervalInMs: 0, keepAliveTimeoutInMs: 0 }) {
    const client = new WebPubSubClient(url, {
      protocol: WebPubSubJsonProtocol(),
      autoReconnect: false,
      messageRetryOptions: { maxRetries: 1, retryDelayInMs: 200 },
      ...keepAlive,
    });
    clients.push(client);
    return client;
  }

  before(async () => {
    await server.start();
    const roles = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"];
    alice = newClient(await server.clientUrl(HUB, "alice", roles));
    bob = newClient(await server.clientUrl(HUB, "bob", roles));
  }, { timeout: STARTUP_TIMEOUT_MS + 2 * STEP_TIMEOUT_MS });

  after(async () => {
    for (const client of clients) {
      try {
        client.stop();
      } catch {
        // Already stopped.
      }
    }
    await server.stop();
  }, { timeout: SHUTDOWN_TIMEOUT_MS + 5_000 });

  test("both clients start and get a connection id", async () => {
    const connected = [alice, bob].map((c, i) =>
      nextEvent(c, "connected", () => true, `client ${i} connected event`),
    );
    await withTimeout(Promise.all([alice.start(), bob.start()]), STEP_TIMEOUT_MS, "clients start()");
    const [a, b] = await Promise.all(connected);
    assert.equal(a.userId, "alice");
    assert.equal(b.userId, "bob");
    assert.ok(a.connectionId && b.connectionId, "connection ids are set");
    assert.notEqual(a.connectionId, b.connectionId);
  });

  test("both clients join the group", async () => {
    await withTimeout(
      Promise.all([alice.joinGroup(GROUP), bob.joinGroup(GROUP)]),
      STEP_TIMEOUT_MS,
      `joinGroup("${GROUP}")`,
    );
  });

  test("a json group message reaches the other member", async () => {
    const received = nextEvent(
      bob,
      "group-message",
      (e) => e.message.dataType === "json",
      "bob receiving the json group message",
    );
    await withTimeout(
      alice.sendToGroup(GROUP, { hello: "world" }, "json"),
      STEP_TIMEOUT_MS,
      "alice sendToGroup json (ack)",
    );
    const { message } = await received;
    assert.equal(message.group, GROUP);
    assert.deepEqual(message.data, { hello: "world" });
    assert.equal(message.fromUserId, "alice");
  });

  test("a text group message round trips", async () => {
    const text = `hello from bob ${Date.now()}`;
    const received = nextEvent(
      alice,
      "group-message",
      (e) => e.message.dataType === "text" && e.message.data === text,
      "alice receiving bob's text group message",
    );
    await withTimeout(bob.sendToGroup(GROUP, text, "text"), STEP_TIMEOUT_MS, "bob sendToGroup text (ack)");
    const { message } = await received;
    assert.equal(message.group, GROUP);
    assert.equal(message.fromUserId, "bob");
  });

  test("sendEvent resolves", async () => {
    await withTimeout(alice.sendEvent("chat", "hi", "text"), STEP_TIMEOUT_MS, 'sendEvent("chat")');
  });

  test("pings are answered, so keep-alive does not drop an idle client", async () => {
    // Pings every 250 ms; the client closes the socket if nothing arrives for 3 s.
    const carol = newClient(await server.clientUrl(HUB, "carol", []), {
      keepAliveIntervalInMs: 250,
      keepAliveTimeoutInMs: 3_000,
    });
    let disconnected = null;
    carol.on("disconnected", (e) => {
      disconnected = e;
    });
    await withTimeout(carol.start(), STEP_TIMEOUT_MS, "carol start()");
    await new Promise((resolve) => setTimeout(resolve, 4_000));
    assert.equal(disconnected, null, `carol was disconnected: ${JSON.stringify(disconnected)}`);
    await withTimeout(carol.sendEvent("chat", "still here", "text"), STEP_TIMEOUT_MS, "carol sendEvent");
    const stopped = nextEvent(carol, "stopped", () => true, "carol stopped event");
    carol.stop();
    await stopped;
  });

  test("both clients stop", async () => {
    const stopped = [alice, bob].map((c, i) => nextEvent(c, "stopped", () => true, `client ${i} stopped event`));
    alice.stop();
    bob.stop();
    await Promise.all(stopped);
  });
});
