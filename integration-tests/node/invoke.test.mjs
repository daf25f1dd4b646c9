// Client invocation (`invokeEvent` of the official `@azure/web-pubsub-client`, 1.0.4 and
// 1.1.0): an `invoke` becomes a blocking user event upstream, answered by an
// `@azure/web-pubsub-express` handler or by a listener on the gRPC event stream
// (`hubcast.v1.Events/Listen`), and its answer comes back as `invokeResponse`. Refusals,
// handler errors, timeouts, cancellation (abortSignal), a dropped connection with calls in
// flight, and bad input written by hand.
//
// Run through `scripts/test`, or by hand after `cargo build -p hubcast-server`:
//   cd integration-tests/node && npm ci && node --test invoke.test.mjs

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { WebPubSubClient as Client110, WebPubSubJsonProtocol as Json110 } from "@azure/web-pubsub-client";
import { WebPubSubEventHandler } from "@azure/web-pubsub-express";
import express from "express";
import { WebPubSubClient, WebPubSubJsonProtocol } from "web-pubsub-client-1.0.4";

import {
  SHUTDOWN_TIMEOUT_MS,
  STARTUP_TIMEOUT_MS,
  STEP_TIMEOUT_MS,
  Server,
  eventually,
  withTimeout,
} from "./support/hubcast.mjs";
import { bearer, grpc, grpcAddress, loadHubcast } from "./support/grpc.mjs";
import { RawClient } from "./support/raw.mjs";

const HUB = "invoke";
const NO_HANDLER_HUB = "bare";
const STREAM_HUB = "streamed";
/** `[upstream] invoke_timeout` of the server under test, in seconds. */
const INVOKE_TIMEOUT_S = 2;

/** A client that fails fast instead of reconnecting (keep-alive off: see official-client.test.mjs). */
function newClient(url, Ctor = WebPubSubClient, protocol = WebPubSubJsonProtocol) {
  return new Ctor(url, {
    protocol: protocol(),
    autoReconnect: false,
    messageRetryOptions: { maxRetries: 0, retryDelayInMs: 200 },
    keepAliveIntervalInMs: 0,
    keepAliveTimeoutInMs: 0,
  });
}

/** Resolves with what `promise` rejected with; fails if it resolves. */
async function rejection(promise, what) {
  try {
    const value = await withTimeout(promise, STEP_TIMEOUT_MS, what);
    assert.fail(`${what} resolved with ${JSON.stringify(value)}`);
  } catch (e) {
    if (e instanceof assert.AssertionError) throw e;
    return e;
  }
}

/** A backend on the gRPC event stream answering user events with `answer(event) -> EventReply fields`. */
async function listen(server, hubs, answer) {
  const { Events } = loadHubcast("hubcast/v1/events.proto");
  const client = new Events(await grpcAddress(server), grpc.credentials.createInsecure());
  const call = client.Listen(bearer(server, "Events"));
  const seen = [];
  call.on("data", async (event) => {
    seen.push(event);
    if (!event.reply_expected) return;
    const reply = await answer(event);
    if (reply !== undefined) call.write({ reply: { event_id: event.event_id, ...reply } });
  });
  call.on("error", () => {});
  call.write({ subscription: { hubs, user_event_pattern: "*", system_events: [] } });
  // The response headers arrive once every node knows of the listener.
  await withTimeout(new Promise((resolve) => call.on("metadata", resolve)), STEP_TIMEOUT_MS, "Listen response headers");
  return {
    seen,
    close() {
      call.cancel();
      client.close();
    },
  };
}

describe("invoke: @azure/web-pubsub-client invokeEvent answered upstream", { timeout: 180_000 }, () => {
  /** What the express backend saw: `[eventName, data]`, and webhook requests that ended unanswered. */
  const calls = [];
  const aborted = [];
  /** Held answers, by event data `key`. */
  const held = new Map();
  let httpServer;
  let server;
  let listener;
  const clients = [];

  const handler = new WebPubSubEventHandler(HUB, {
    path: "/api/events/",
    handleUserEvent(req, res) {
      calls.push([req.context.eventName, req.data]);
      switch (req.context.eventName) {
        case "echo":
          res.success(req.dataType === "json" ? JSON.stringify(req.data) : req.data, req.dataType);
          return;
        case "empty":
          res.success();
          return;
        case "refuse":
          res.fail(400, "the refusal's own words");
          return;
        case "crash":
          res.fail(500, "the handler broke");
          return;
        case "forbid":
          res.fail(403);
          return;
        default:
          // "hold": answered never (the call times out, is cancelled, or its connection ends).
          held.set(String(req.data), res);
      }
    },
  });

  async function start(ctor = WebPubSubClient, protocol = WebPubSubJsonProtocol, hub = HUB, user = "ivy") {
    const client = newClient(await server.clientUrl(hub, user), ctor, protocol);
    clients.push(client);
    await withTimeout(client.start(), STEP_TIMEOUT_MS, "client start()");
    return client;
  }

  before(async () => {
    const app = express();
    // Notes the webhook requests whose socket closed before the backend answered: the
    // service gave up on them (cancellation, or the invoking connection ended).
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
    const { port } = httpServer.address();
    server = new Server({
      configToml: [
        "[upstream]",
        `invoke_timeout = ${INVOKE_TIMEOUT_S}`,
        "[limits]",
        "max_invocations_per_connection = 3",
        `[hubs.${HUB}]`,
        `[[hubs.${HUB}.event_handlers]]`,
        `url_template = "http://127.0.0.1:${port}/api/events/"`,
        `user_event_pattern = "*"`,
        `[hubs.${NO_HANDLER_HUB}]`,
        `[hubs.${STREAM_HUB}]`,
        `event_stream = "required"`,
        "",
      ].join("\n"),
    });
    await server.start();
    listener = await listen(server, [STREAM_HUB], (event) => {
      const user = event.user_event;
      if (user.name === "refuse") return { error: { code: "EVENT_ERROR_CODE_BAD_REQUEST", message: "the listener says no" } };
      if (user.name === "hold") return undefined;
      return { user_event: { data: user.data } };
    });
  }, { timeout: STARTUP_TIMEOUT_MS + 2 * STEP_TIMEOUT_MS });

  after(async () => {
    for (const c of clients) {
      try {
        c.stop();
      } catch {
        // Already stopped.
      }
    }
    listener?.close();
    for (const res of held.values()) res.fail(410);
    await server?.stop();
    await new Promise((resolve) => httpServer?.close(resolve) ?? resolve());
  }, { timeout: SHUTDOWN_TIMEOUT_MS + 5_000 });

  test("invokeEvent gets the express handler's answer (json, text, binary, empty), with 1.0.4 and 1.1.0", async () => {
    const client = await start();
    const json = await withTimeout(client.invokeEvent("echo", { a: [1, 2] }, "json"), STEP_TIMEOUT_MS, "invoke json");
    assert.equal(json.dataType, "json");
    assert.deepEqual(json.data, { a: [1, 2] });
    assert.equal(json.invocationId, "1", "the client's own numbering");
    const text = await withTimeout(client.invokeEvent("echo", "hello", "text"), STEP_TIMEOUT_MS, "invoke text");
    assert.deepEqual([text.dataType, text.data], ["text", "hello"]);
    const bytes = new Uint8Array([0, 1, 2, 255]).buffer;
    const binary = await withTimeout(client.invokeEvent("echo", bytes, "binary"), STEP_TIMEOUT_MS, "invoke binary");
    assert.equal(binary.dataType, "binary");
    assert.deepEqual([...new Uint8Array(binary.data)], [0, 1, 2, 255]);
    const empty = await withTimeout(client.invokeEvent("empty", "x", "text"), STEP_TIMEOUT_MS, "invoke empty");
    assert.equal(empty.data, undefined, "a 204 answers with no data");
    const named = await withTimeout(
      client.invokeEvent("echo", "mine", "text", { invocationId: "my-id" }),
      STEP_TIMEOUT_MS,
      "invoke with an id",
    );
    assert.equal(named.invocationId, "my-id");

    const newer = await start(Client110, Json110);
    const fromNewer = await withTimeout(newer.invokeEvent("echo", { v: "1.1.0" }, "json"), STEP_TIMEOUT_MS, "1.1.0 invoke");
    assert.deepEqual(fromNewer.data, { v: "1.1.0" });
  });

  test("a refusal, a 403 and a 500 come back as invocation errors with the handler's words", async () => {
    const client = await start();
    const refused = await rejection(client.invokeEvent("refuse", "x", "text"), "refused invoke");
    assert.equal(refused.name, "InvocationError");
    assert.deepEqual(refused.errorDetail, { name: "BadRequest", message: "the refusal's own words" });
    const forbidden = await rejection(client.invokeEvent("forbid", "x", "text"), "forbidden invoke");
    assert.deepEqual(forbidden.errorDetail, { name: "Forbidden", message: "The event handler answered HTTP 403." });
    const crashed = await rejection(client.invokeEvent("crash", "x", "text"), "crashed invoke");
    assert.deepEqual(crashed.errorDetail, { name: "InternalServerError", message: "the handler broke" });
    // The connection is unaffected.
    const ok = await withTimeout(client.invokeEvent("echo", "still here", "text"), STEP_TIMEOUT_MS, "invoke after errors");
    assert.equal(ok.data, "still here");
  });

  test("a handler that does not answer in time gives a Timeout error", async () => {
    const client = await start();
    const started = Date.now();
    const late = await rejection(client.invokeEvent("hold", "late", "text"), "held invoke");
    const took = Date.now() - started;
    assert.equal(late.errorDetail?.name, "Timeout");
    assert.match(late.errorDetail.message, new RegExp(`within ${INVOKE_TIMEOUT_S} s`));
    assert.ok(took >= INVOKE_TIMEOUT_S * 1000 - 100 && took < INVOKE_TIMEOUT_S * 1000 + 3000, `took ${took} ms`);
    // The service dropped the request it gave up on.
    await eventually(() => aborted.includes("hold"), "the timed-out webhook request closed");
  });

  test("an aborted invocation is cancelled upstream (cancelInvocation)", async () => {
    const client = await start();
    const before = aborted.length;
    const controller = new AbortController();
    const call = client.invokeEvent("hold", "abort-me", "text", { abortSignal: controller.signal });
    await eventually(() => held.has("abort-me"), "the handler got the call");
    controller.abort();
    const error = await rejection(call, "aborted invoke");
    assert.match(error.message, /cancelled by abortSignal/);
    // The service closes the webhook request long before the invoke timeout would.
    await withTimeout(
      (async () => eventually(() => aborted.length > before, "the cancelled webhook request closed"))(),
      (INVOKE_TIMEOUT_S * 1000) / 2,
      "cancellation before the timeout",
    );
    const ok = await withTimeout(client.invokeEvent("echo", "after abort", "text"), STEP_TIMEOUT_MS, "invoke after abort");
    assert.equal(ok.data, "after abort");
  });

  test("invocations pending when the connection drops fail at the client and are abandoned upstream", async () => {
    const client = await start();
    const before = aborted.length;
    const calls = ["drop-1", "drop-2"].map((key) => client.invokeEvent("hold", key, "text"));
    await eventually(() => held.has("drop-1") && held.has("drop-2"), "the handler got both calls");
    client.stop();
    for (const call of calls) {
      const error = await rejection(call, "invoke on a dropped connection");
      assert.match(error.message, /disconnected before receiving invoke response/);
    }
    await withTimeout(
      (async () => eventually(() => aborted.length >= before + 2, "both webhook requests closed"))(),
      (INVOKE_TIMEOUT_S * 1000) / 2,
      "abandoned before the timeout",
    );
  });

  test("an event no handler takes gives NotFound", async () => {
    const client = await start(WebPubSubClient, WebPubSubJsonProtocol, NO_HANDLER_HUB);
    const error = await rejection(client.invokeEvent("anything", "x", "text"), "invoke without a handler");
    assert.deepEqual(error.errorDetail, { name: "NotFound", message: "No event handler takes the event 'anything'." });
  });

  test("a gRPC event-stream listener answers invocations, refuses them, and lets them time out", async () => {
    // Across a cluster the clients land on every node; the listener dialled the first.
    for (const user of ["g1", "g2", "g3"]) {
      const client = await start(WebPubSubClient, WebPubSubJsonProtocol, STREAM_HUB, user);
      const reply = await withTimeout(client.invokeEvent("echo", { from: user }, "json"), STEP_TIMEOUT_MS, `${user} invoke`);
      assert.deepEqual(reply.data, { from: user });
      const refused = await rejection(client.invokeEvent("refuse", "x", "text"), `${user} refused`);
      assert.deepEqual(refused.errorDetail, { name: "BadRequest", message: "the listener says no" });
    }
    const client = await start(WebPubSubClient, WebPubSubJsonProtocol, STREAM_HUB, "g4");
    const late = await rejection(client.invokeEvent("hold", "x", "text"), "listener timeout");
    assert.equal(late.errorDetail?.name, "Timeout");
    const names = listener.seen.filter((e) => e.user_event).map((e) => e.user_event.name);
    assert.ok(names.filter((n) => n === "echo").length >= 3, `the listener saw ${names}`);
  });

  test("bad input: unknown target, invalid invoke, duplicate id in flight, too many calls, no invocationId", async () => {
    const raw = new RawClient(await server.clientUrl(HUB, "raw"));
    await raw.open();
    raw.send({ type: "invoke", invocationId: "t1", target: "service", event: "echo" });
    assert.deepEqual((await raw.response("t1")).error, {
      name: "BadRequest",
      message: "Unsupported invoke target 'service': the only target is 'event'.",
    });
    raw.send({ type: "invoke", invocationId: "t2", target: "event" });
    assert.equal((await raw.response("t2")).error.name, "BadRequest");
    raw.send({ type: "invoke", invocationId: "t3", event: "echo", dataType: "binary", data: "%%%" });
    assert.match((await raw.response("t3")).error.message, /base64/);

    // A call in flight: its id cannot be used again until it is answered.
    raw.send({ type: "invoke", invocationId: "h1", event: "hold", dataType: "text", data: "raw-1" });
    await eventually(() => held.has("raw-1"), "the handler got h1");
    raw.send({ type: "invoke", invocationId: "h1", event: "echo", dataType: "text", data: "again" });
    const duplicate = await raw.next((f) => f.invocationId === "h1" && f.error?.name === "Duplicate", "Duplicate");
    assert.equal(duplicate.success, false);
    // Limit 3 per connection: h1 and two more, then a refusal.
    raw.send({ type: "invoke", invocationId: "h2", event: "hold", dataType: "text", data: "raw-2" });
    raw.send({ type: "invoke", invocationId: "h3", event: "hold", dataType: "text", data: "raw-3" });
    await eventually(() => held.has("raw-2") && held.has("raw-3"), "the handler got h2 and h3");
    raw.send({ type: "invoke", invocationId: "h4", event: "echo", dataType: "text", data: "four" });
    const limited = await raw.response("h4");
    assert.equal(limited.error.name, "Forbidden");
    assert.match(limited.error.message, /max_invocations_per_connection/);
    // Answered calls free their slot and their id.
    held.get("raw-1").success("one", "text");
    assert.deepEqual(await raw.next((f) => f.invocationId === "h1" && f.success, "h1 answered"), {
      type: "invokeResponse",
      invocationId: "h1",
      success: true,
      dataType: "text",
      data: "one",
    });
    raw.send({ type: "cancelInvocation", invocationId: "h2" });
    raw.send({ type: "invoke", invocationId: "h1", event: "echo", dataType: "json", data: { n: 5 } });
    assert.deepEqual((await raw.next((f) => f.invocationId === "h1" && f.dataType === "json", "h1 again")).data, { n: 5 });
    // A cancelled call is never answered, even when the handler answers late.
    held.get("raw-2").success("too late", "text");
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(raw.frames.filter((f) => f.invocationId === "h2").length, 0, "no answer to a cancelled call");

    // Without an invocationId no answer can be correlated: the frame is invalid (1007).
    raw.send({ type: "invoke", event: "echo" });
    const closed = await withTimeout(raw.closed, STEP_TIMEOUT_MS, "close after an invoke without id");
    assert.equal(closed.code, 1007);
    assert.match(closed.reason, /invocationId/);
  });
});
