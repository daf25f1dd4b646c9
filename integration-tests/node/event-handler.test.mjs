// The official Azure event handler middleware (`@azure/web-pubsub-express`'s
// `WebPubSubEventHandler`, in an express app) as Hubcast's webhook backend, with the official
// client SDK as the client: Hubcast's CloudEvents are accepted by the middleware, and the
// middleware's answers (userId, groups, roles, replies, connection state) are honoured.
//
// Run through `scripts/test`, or by hand after `cargo build -p hubcast-server`:
//   cd integration-tests/node && npm ci && node --test event-handler.test.mjs

import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { after, before, describe, test } from "node:test";

import { WebPubSubClient, WebPubSubJsonProtocol } from "@azure/web-pubsub-client";
import { WebPubSubEventHandler } from "@azure/web-pubsub-express";
import express from "express";

import { SHUTDOWN_TIMEOUT_MS, STARTUP_TIMEOUT_MS, STEP_TIMEOUT_MS, Server, nextEvent, withTimeout } from "./support/hubcast.mjs";

const HUB = "chat";

/** Records what the backend saw, and lets tests wait for it. */
class Seen {
  constructor() {
    this.items = [];
    this.waiters = [];
  }
  push(kind, value) {
    this.items.push({ kind, value });
    this.waiters = this.waiters.filter((w) => !(w.kind === kind && w.predicate(value) && (w.resolve(value), true)));
  }
  wait(kind, predicate, what) {
    const found = this.items.find((i) => i.kind === kind && predicate(i.value));
    if (found) return Promise.resolve(found.value);
    return withTimeout(new Promise((resolve) => this.waiters.push({ kind, predicate, resolve })), STEP_TIMEOUT_MS, what);
  }
  count(kind, predicate = () => true) {
    return this.items.filter((i) => i.kind === kind && predicate(i.value)).length;
  }
}

describe("@azure/web-pubsub-express as the event handler of hubcast", { timeout: 120_000 }, () => {
  const seen = new Seen();
  let app;
  let httpServer;
  let hubcast;
  const clients = [];

  const handler = new WebPubSubEventHandler(HUB, {
    path: `/api/webpubsub/hubs/${HUB}/`,
    handleConnect(req, res) {
      seen.push("connect", req);
      const user = req.context.userId;
      if (user === "mallory") {
        res.fail(401, "mallory may not connect");
        return;
      }
      res.setState("counter", 0);
      res.success({
        userId: `express-${user}`,
        groups: ["lobby"],
        roles: ["webpubsub.sendToGroup.lobby"],
      });
    },
    handleUserEvent(req, res) {
      seen.push("user", req);
      if (req.context.eventName === "count") {
        const counter = (req.context.states.counter ?? -100) + 1;
        res.setState("counter", counter);
        res.success(JSON.stringify({ counter }), "json");
        return;
      }
      // JSON arrives parsed; the middleware's `success` takes text or bytes.
      res.success(req.dataType === "json" ? JSON.stringify(req.data) : req.data, req.dataType);
    },
    onConnected(req) {
      seen.push("connected", req);
    },
    onDisconnected(req) {
      seen.push("disconnected", req);
    },
  });

  function newClient(url) {
    const client = new WebPubSubClient(url, {
      protocol: WebPubSubJsonProtocol(),
      autoReconnect: false,
      messageRetryOptions: { maxRetries: 1, retryDelayInMs: 200 },
      keepAliveIntervalInMs: 0,
      keepAliveTimeoutInMs: 0,
    });
    clients.push(client);
    return client;
  }

  before(async () => {
    app = express();
    app.use(handler.getMiddleware());
    httpServer = await new Promise((resolve) => {
      const s = app.listen(0, "127.0.0.1", () => resolve(s));
    });
    const { port } = httpServer.address();
    hubcast = new Server({
      configToml: [
        `[hubs.${HUB}]`,
        `[[hubs.${HUB}.event_handlers]]`,
        `url_template = "http://127.0.0.1:${port}/api/webpubsub/hubs/{hub}/"`,
        `user_event_pattern = "*"`,
        `system_events = ["connect", "connected", "disconnected"]`,
        "",
      ].join("\n"),
    });
    await hubcast.start();
  }, { timeout: STARTUP_TIMEOUT_MS + STEP_TIMEOUT_MS });

  after(async () => {
    for (const client of clients) {
      try {
        client.stop();
      } catch {
        // Already stopped.
      }
    }
    await hubcast?.stop();
    await new Promise((resolve) => httpServer?.close(resolve) ?? resolve());
  }, { timeout: SHUTDOWN_TIMEOUT_MS + 5_000 });

  test("handleConnect sets the user, groups and roles; events echo; state round-trips; onConnected/onDisconnected fire", async () => {
    const alice = newClient(await hubcast.clientUrl(HUB, "alice", []));
    const connected = nextEvent(alice, "connected", () => true, "alice connected");
    await withTimeout(alice.start(), STEP_TIMEOUT_MS, "alice start()");
    const { userId, connectionId } = await connected;
    assert.equal(userId, "express-alice", "the userId set by handleConnect");

    const connect = await seen.wait("connect", (r) => r.context.connectionId === connectionId, "handleConnect");
    assert.equal(connect.context.userId, "alice");
    assert.equal(connect.context.hub, HUB);
    assert.deepEqual(connect.claims.sub, ["alice"]);
    assert.deepEqual(connect.subprotocols, ["json.webpubsub.azure.v1"]);
    // The middleware does not check ce-signature; check it here against the access key.
    const expected = `sha256=${createHmac("sha256", hubcast.accessKey).update(connectionId).digest("hex")}`;
    assert.equal(connect.context.signature, expected);

    const onConnected = await seen.wait("connected", (r) => r.context.connectionId === connectionId, "onConnected");
    assert.equal(onConnected.context.userId, "express-alice");

    // Joined "lobby" by the connect answer, allowed to send there by its roles.
    const own = nextEvent(alice, "group-message", (e) => e.message.group === "lobby", "lobby message");
    await withTimeout(alice.sendToGroup("lobby", "hello lobby", "text"), STEP_TIMEOUT_MS, "sendToGroup lobby");
    assert.equal((await own).message.data, "hello lobby");

    // handleUserEvent echoes; the reply comes back as a server message.
    for (const [data, dataType] of [
      ["plain text", "text"],
      [{ nested: [1, 2] }, "json"],
    ]) {
      const reply = nextEvent(alice, "server-message", (e) => e.message.dataType === dataType, `${dataType} echo`);
      await withTimeout(alice.sendEvent("echo", data, dataType), STEP_TIMEOUT_MS, `sendEvent ${dataType}`);
      assert.deepEqual((await reply).message.data, data);
    }

    // The middleware's connection state (ce-connectionState) is carried across events.
    for (const expectedCounter of [1, 2, 3]) {
      const reply = nextEvent(alice, "server-message", (e) => e.message.data?.counter !== undefined, "counter");
      await withTimeout(alice.sendEvent("count", "", "text"), STEP_TIMEOUT_MS, "sendEvent count");
      assert.equal((await reply).message.data.counter, expectedCounter);
    }

    const stopped = nextEvent(alice, "stopped", () => true, "alice stopped");
    alice.stop();
    await stopped;
    const onDisconnected = await seen.wait(
      "disconnected",
      (r) => r.context.connectionId === connectionId,
      "onDisconnected",
    );
    assert.equal(onDisconnected.context.userId, "express-alice");
    assert.equal(seen.count("connected", (r) => r.context.connectionId === connectionId), 1);
    assert.equal(seen.count("disconnected", (r) => r.context.connectionId === connectionId), 1);
  });

  test("a connection refused by handleConnect fails to start", async () => {
    const mallory = newClient(await hubcast.clientUrl(HUB, "mallory", []));
    // The upgrade is answered with the handler's status instead of 101 (not a timeout).
    await assert.rejects(withTimeout(mallory.start(), STEP_TIMEOUT_MS, "mallory start()"), (e) => {
      assert.match(String(e?.message ?? e), /Unexpected server response: 401/);
      return true;
    });
    assert.equal(seen.count("connected", (r) => r.context.userId === "mallory"), 0);
  });
});
