// Message metadata: `X-WebPubSub-Metadata-<key>` headers on REST sends (through the official
// `@azure/web-pubsub` service client) and `Payload.metadata` on gRPC sends arrive as
// `metadata` on the official client's messages; a client event's `metadata` reaches the
// express handler as `x-webpubsub-metadata-<key>` headers, and the handler's own metadata
// headers reach the client with its answer. Bounded, refused clearly above the bound.
//
// Run through `scripts/test`, or by hand after `cargo build -p hubcast-server`:
//   cd integration-tests/node && npm ci && node --test metadata.test.mjs

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { WebPubSubServiceClient } from "@azure/web-pubsub";
import { WebPubSubClient, WebPubSubJsonProtocol } from "@azure/web-pubsub-client";
import { WebPubSubEventHandler } from "@azure/web-pubsub-express";
import express from "express";
import WebSocket from "ws";

import { SHUTDOWN_TIMEOUT_MS, STARTUP_TIMEOUT_MS, STEP_TIMEOUT_MS, Server, nextEvent, withTimeout } from "./support/hubcast.mjs";
import { bearer, grpc, grpcAddress, loadHubcast } from "./support/grpc.mjs";

const HUB = "meta";

describe("message metadata", { timeout: 120_000 }, () => {
  let server;
  let service;
  let httpServer;
  let control;
  const clients = [];
  /** Upstream user events as the express app saw them: `{ event, headers }`. */
  const seen = [];

  const handler = new WebPubSubEventHandler(HUB, {
    path: "/api/events/",
    handleUserEvent(req, res) {
      res.success(req.data, req.dataType);
    },
  });

  async function start(user) {
    const client = new WebPubSubClient(await server.clientUrl(HUB, user), {
      protocol: WebPubSubJsonProtocol(),
      autoReconnect: false,
      messageRetryOptions: { maxRetries: 0 },
      keepAliveIntervalInMs: 0,
      keepAliveTimeoutInMs: 0,
    });
    clients.push(client);
    await withTimeout(client.start(), STEP_TIMEOUT_MS, `${user} start()`);
    return client;
  }

  before(async () => {
    const app = express();
    app.use((req, res, next) => {
      seen.push({ event: req.headers["ce-eventname"], headers: req.headers });
      // The handler's metadata for the answer to its sender.
      if (req.headers["ce-eventname"] === "tagged") {
        res.setHeader("X-WebPubSub-Metadata-Answered-By", "express");
        res.setHeader("X-WebPubSub-Metadata-Trace", "t-1");
      }
      next();
    });
    app.use(handler.getMiddleware());
    httpServer = await new Promise((resolve) => {
      const s = app.listen(0, "127.0.0.1", () => resolve(s));
    });
    server = new Server({
      configToml: [
        `[hubs.${HUB}]`,
        `[[hubs.${HUB}.event_handlers]]`,
        `url_template = "http://127.0.0.1:${httpServer.address().port}/api/events/"`,
        `user_event_pattern = "*"`,
        "",
      ].join("\n"),
    });
    const connectionString = await server.start();
    service = new WebPubSubServiceClient(connectionString, HUB, { allowInsecureConnection: true });
    const { Control } = loadHubcast("hubcast/v1/control.proto");
    control = new Control(await grpcAddress(server), grpc.credentials.createInsecure());
  }, { timeout: STARTUP_TIMEOUT_MS + STEP_TIMEOUT_MS });

  after(async () => {
    for (const c of clients) {
      try {
        c.stop();
      } catch {
        // Already stopped.
      }
    }
    control?.close();
    await server?.stop();
    await new Promise((resolve) => httpServer?.close(resolve) ?? resolve());
  }, { timeout: SHUTDOWN_TIMEOUT_MS + 5_000 });

  test("REST sends with X-WebPubSub-Metadata-* headers reach clients as `metadata`", async () => {
    // Across a cluster the three clients sit on three nodes and the REST call lands on any.
    const users = await Promise.all(["m1", "m2", "m3"].map(start));
    await service.group("tagged").addUser("m2");
    const headers = {
      "X-WebPubSub-Metadata-Priority": "high",
      "x-webpubsub-metadata-ORIGIN": "billing, ledger",
    };
    const toAll = users.map((c) => nextEvent(c, "server-message", (e) => e.message.data === "to all", "to all"));
    await service.sendToAll("to all", { contentType: "text/plain", requestOptions: { customHeaders: headers } });
    for (const got of await Promise.all(toAll)) {
      // Keys lower-cased; of a comma-separated value the last item wins.
      assert.deepEqual(got.message.metadata, { priority: "high", origin: "ledger" });
    }
    const inGroup = nextEvent(users[1], "group-message", (e) => e.message.group === "tagged", "group message");
    await service.group("tagged").sendToAll({ n: 1 }, { requestOptions: { customHeaders: { "X-WebPubSub-Metadata-Kind": "json" } } });
    const group = await inGroup;
    assert.deepEqual([group.message.data, group.message.metadata], [{ n: 1 }, { kind: "json" }]);
    // No headers, no `metadata`.
    const plain = nextEvent(users[0], "server-message", (e) => e.message.data === "plain", "plain");
    await service.sendToUser("m1", "plain", { contentType: "text/plain" });
    assert.equal((await plain).message.metadata, undefined);
  });

  test("gRPC sends carry Payload.metadata", async () => {
    const client = await start("g1");
    const got = nextEvent(client, "server-message", (e) => e.message.data === "over grpc", "grpc message");
    await new Promise((resolve, reject) =>
      control.SendToUser(
        { hub: HUB, user_id: "g1", payload: { text: "over grpc", metadata: { Source: "grpc" } } },
        bearer(server, "Control"),
        (err, res) => (err ? reject(err) : resolve(res)),
      ),
    );
    assert.deepEqual((await got).message.metadata, { source: "grpc" });
  });

  test("too much metadata is refused: REST 400, gRPC INVALID_ARGUMENT; nothing is sent", async () => {
    const client = await start("b1");
    let received = 0;
    client.on("server-message", () => received++);
    const many = Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`X-WebPubSub-Metadata-K${i}`, "v"]));
    await assert.rejects(
      service.sendToAll("too many", { contentType: "text/plain", requestOptions: { customHeaders: many } }),
      (e) => {
        assert.equal(e.statusCode, 400);
        assert.match(e.message, /17 metadata entries are more than the limit of 16/);
        return true;
      },
    );
    const big = { "X-WebPubSub-Metadata-Big": "x".repeat(5000) };
    await assert.rejects(service.sendToAll("too big", { contentType: "text/plain", requestOptions: { customHeaders: big } }), (e) => {
      assert.equal(e.statusCode, 400);
      assert.match(e.message, /bytes of metadata are more than the limit of 4096/);
      return true;
    });
    const grpcError = await new Promise((resolve) =>
      control.SendToAll(
        { hub: HUB, payload: { text: "bad key", metadata: { "no spaces": "v" } } },
        bearer(server, "Control"),
        (err) => resolve(err),
      ),
    );
    assert.equal(grpcError?.code, grpc.status.INVALID_ARGUMENT);
    assert.match(grpcError.details, /metadata key 'no spaces'/);
    // A valid send afterwards arrives, and none of the refused ones did.
    const ok = nextEvent(client, "server-message", (e) => e.message.data === "fine", "fine");
    await service.sendToAll("fine", { contentType: "text/plain" });
    await ok;
    assert.equal(received, 1);
  });

  test("a client event's metadata goes upstream as headers; the handler's metadata headers come back", async () => {
    const url = await server.clientUrl(HUB, "raw");
    const ws = new WebSocket(url, "json.webpubsub.azure.v1");
    const frames = [];
    let waiters = [];
    ws.on("message", (d) => {
      const f = JSON.parse(d.toString());
      frames.push(f);
      waiters = waiters.filter((w) => !(w.p(f) && (w.resolve(f), true)));
    });
    const next = (p, what) => {
      const found = frames.find(p);
      if (found) return Promise.resolve(found);
      return withTimeout(new Promise((resolve) => waiters.push({ p, resolve })), STEP_TIMEOUT_MS, what);
    };
    try {
      await next((f) => f.event === "connected", "connected");
      ws.send(JSON.stringify({ type: "event", event: "tagged", ackId: 1, dataType: "text", data: "hi", metadata: { Room: "blue", "trace-id": "abc" } }));
      const reply = await next((f) => f.type === "message" && f.from === "server", "the handler's answer");
      assert.deepEqual(reply, {
        type: "message",
        from: "server",
        dataType: "text",
        data: "hi",
        metadata: { "answered-by": "express", trace: "t-1" },
      });
      assert.deepEqual(await next((f) => f.type === "ack" && f.ackId === 1, "ack 1"), { type: "ack", ackId: 1, success: true });
      const upstream = seen.find((s) => s.event === "tagged");
      assert.equal(upstream.headers["x-webpubsub-metadata-room"], "blue");
      assert.equal(upstream.headers["x-webpubsub-metadata-trace-id"], "abc");

      // Too much metadata on an event: a BadRequest ack, nothing upstream, the connection stays.
      const before = seen.length;
      const many = Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, "v"]));
      ws.send(JSON.stringify({ type: "event", event: "tagged", ackId: 2, dataType: "text", data: "x", metadata: many }));
      const refused = await next((f) => f.type === "ack" && f.ackId === 2, "ack 2");
      assert.equal(refused.success, false);
      assert.equal(refused.error.name, "BadRequest");
      assert.match(refused.error.message, /more than the limit of 16/);
      ws.send(JSON.stringify({ type: "event", event: "other", ackId: 3, dataType: "text", data: "y" }));
      assert.equal((await next((f) => f.type === "ack" && f.ackId === 3, "ack 3")).success, true);
      assert.equal(seen.slice(before).filter((s) => s.event === "tagged").length, 0, "the refused event never went upstream");
    } finally {
      ws.close();
    }
  });
});
