// The generated HubcastClient (sdk-ts) with Azure's newer client features, on the JSON and the
// protobuf subprotocols: `invokeEvent` answered by an `@azure/web-pubsub-express` handler
// (answers, refusals, the client's timeout and abort cancelling the call upstream), group
// streams (`openGroupStream` / `onGroupStream`, refused chunks), and the gaps a receiver
// reports when chunks are missing (from a WebSocket server written here, since Hubcast never
// leaves gaps).
//
// Run through `scripts/test`, or by hand after `cargo build -p hubcast-server` and
// `npm run build` in sdk-ts:
//   cd integration-tests/node && npm ci && node --test hubcast-client-features.test.mjs

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { WebPubSubEventHandler } from "@azure/web-pubsub-express";
import express from "express";
import WebSocket, { WebSocketServer } from "ws";

import { GroupStreamError, HubcastClient, InvocationError } from "../../sdk-ts/dist/index.js";
import { SHUTDOWN_TIMEOUT_MS, STARTUP_TIMEOUT_MS, STEP_TIMEOUT_MS, Server, eventually, withTimeout } from "./support/hubcast.mjs";

const HUB = "features";

for (const protocol of ["json", "protobuf"]) {
  describe(`generated HubcastClient (${protocol}): invokeEvent and group streams`, { timeout: 120_000 }, () => {
    let server;
    let httpServer;
    const clients = [];
    const held = new Map();
    const aborted = [];

    const handler = new WebPubSubEventHandler(HUB, {
      path: "/api/events/",
      handleUserEvent(req, res) {
        if (req.context.eventName === "echo") return res.success(JSON.stringify(req.data), "json");
        if (req.context.eventName === "refuse") return res.fail(400, "not like that");
        held.set(String(req.data), res);
      },
    });

    async function newClient(user) {
      const client = new HubcastClient(await server.clientUrl(HUB, user), {
        protocol,
        WebSocket,
        autoReconnect: false,
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
        res.on("close", () => {
          if (!res.writableFinished) aborted.push(req.headers["ce-eventname"]);
        });
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
      await server.start();
    }, { timeout: STARTUP_TIMEOUT_MS + STEP_TIMEOUT_MS });

    after(async () => {
      for (const c of clients) c.stop();
      for (const res of held.values()) res.fail(410);
      await server?.stop();
      await new Promise((resolve) => httpServer?.close(resolve) ?? resolve());
    }, { timeout: SHUTDOWN_TIMEOUT_MS + 5_000 });

    test("invokeEvent: an answer, a refusal, the client's timeout and abort cancel the call upstream", async () => {
      const client = await newClient("inv");
      const answer = await withTimeout(client.invokeEvent("echo", { n: [1, 2] }, "json"), STEP_TIMEOUT_MS, "invoke");
      assert.deepEqual(answer, { invocationId: "1", dataType: "json", data: { n: [1, 2] } });
      const refused = await client.invokeEvent("refuse", "x", "text").catch((e) => e);
      assert.ok(refused instanceof InvocationError);
      assert.deepEqual(refused.errorDetail, { name: "BadRequest", message: "not like that" });

      const before = aborted.length;
      const timedOut = await client.invokeEvent("hold", `t-${protocol}`, "text", { timeoutInMs: 300 }).catch((e) => e);
      assert.ok(timedOut instanceof InvocationError);
      assert.match(timedOut.message, /timed out after 300 ms/);
      await eventually(() => aborted.length > before, "the timed-out call's webhook request closed");

      const controller = new AbortController();
      const call = client.invokeEvent("hold", `a-${protocol}`, "text", { abortSignal: controller.signal });
      await eventually(() => held.has(`a-${protocol}`), "the handler got the call");
      controller.abort();
      const cancelled = await call.catch((e) => e);
      assert.match(cancelled.message, /cancelled/);
      await eventually(() => aborted.length > before + 1, "the aborted call's webhook request closed");
      const again = await withTimeout(client.invokeEvent("echo", "still", "text"), STEP_TIMEOUT_MS, "invoke after");
      assert.equal(again.data, "still");
    });

    test("group streams: chunks reach onGroupStream in order; after the service closes a stream its writes are refused with the reason", async () => {
      const publisher = await newClient("pub");
      const reader = await newClient("reader");
      await publisher.joinGroup("feed");
      await reader.joinGroup("feed");
      const ends = [];
      const got = new Promise((resolve) => {
        reader.onGroupStream(async (stream) => {
          const chunks = [];
          try {
            for await (const chunk of stream) chunks.push(chunk);
            ends.push([stream.streamId, "ok"]);
          } catch (e) {
            ends.push([stream.streamId, e.name]);
          }
          resolve({ stream, chunks });
        }, { groupNames: ["feed"] });
      });
      const writer = await withTimeout(publisher.openGroupStream("feed", { noEcho: true }), STEP_TIMEOUT_MS, "open");
      for (let i = 1; i <= 10; i++) await withTimeout(writer.write(`part ${i}`, "text"), STEP_TIMEOUT_MS, `write ${i}`);
      await withTimeout(writer.end(), STEP_TIMEOUT_MS, "end");
      const { stream, chunks } = await withTimeout(got, STEP_TIMEOUT_MS, "the stream at the reader");
      assert.equal(stream.streamId, writer.streamId);
      assert.equal(stream.missedChunks, 0);
      assert.deepEqual(chunks.map((c) => [c.streamSequenceId, c.data, c.missed]), Array.from({ length: 10 }, (_, k) => [k + 1, `part ${k + 1}`, 0]));
      await assert.rejects(writer.write("late", "text"), /closed/);

      // A stream the service ends: writes after it are refused with its reason.
      const idle = await publisher.openGroupStream("feed", { idleTimeoutInMs: 200 });
      await new Promise((resolve) => setTimeout(resolve, 600));
      const error = await idle.write("too late", "text").catch((e) => e);
      assert.ok(error instanceof GroupStreamError);
      assert.equal(error.name, "IdleTimeout");
      // The reader saw that stream end with the same reason.
      await eventually(() => ends.some(([id, how]) => id === idle.streamId && how === "IdleTimeout"), "the idle stream's end at the reader");
    });
  });
}

test("a received group stream reports the chunks it is missing", async () => {
  // A stand-in service that sends chunks 1, 2, 5 and the end at 7: chunks 3, 4 and 6 are missing.
  const wss = new WebSocketServer({ port: 0, host: "127.0.0.1", handleProtocols: () => "json.webpubsub.azure.v1" });
  await new Promise((resolve) => wss.on("listening", resolve));
  wss.on("connection", (ws) => {
    ws.send(JSON.stringify({ type: "system", event: "connected", connectionId: "c", userId: null }));
    const chunk = (n, extra = {}) =>
      JSON.stringify({ type: "message", from: "group", fromUserId: "u", group: "g", dataType: "text", data: `c${n}`, stream: { streamId: "s", streamSequenceId: n, ...extra } });
    for (const n of [1, 2, 5]) ws.send(chunk(n));
    ws.send(JSON.stringify({ type: "message", from: "group", group: "g", dataType: "text", data: "", stream: { streamId: "s", streamSequenceId: 7, endOfStream: true } }));
  });
  const client = new HubcastClient(`ws://127.0.0.1:${wss.address().port}/client/hubs/h`, {
    protocol: "json",
    WebSocket,
    autoReconnect: false,
    keepAliveIntervalInMs: 0,
    keepAliveTimeoutInMs: 0,
  });
  try {
    const got = new Promise((resolve) => {
      client.onGroupStream(async (stream) => {
        const chunks = [];
        for await (const chunk of stream) chunks.push(chunk);
        resolve({ stream, chunks });
      });
    });
    await withTimeout(client.start(), STEP_TIMEOUT_MS, "start");
    const { stream, chunks } = await withTimeout(got, STEP_TIMEOUT_MS, "the stream");
    assert.deepEqual(chunks.map((c) => [c.streamSequenceId, c.missed, c.fromUserId]), [[1, 0, "u"], [2, 0, "u"], [5, 2, "u"]]);
    assert.equal(stream.missedChunks, 3);
  } finally {
    client.stop();
    await new Promise((resolve) => wss.close(resolve));
  }
});
