// Group streams (spec part 2 §4.2) with the official `@azure/web-pubsub-client` 1.1.0
// (`openGroupStream` / `onGroupStream`; its engines field says Node ≥ 22, npm only warns, and
// it runs on Node 20) and with frames written by hand: chunks in order, a lost `streamData`
// answered with `streamNack`, retries acked and dropped, the idle timeout, keep-alives, the
// per-connection limit, a publisher that drops, and bad input. Across a cluster, publisher and
// subscribers sit on different nodes.
//
// Run through `scripts/test`, or by hand after `cargo build -p hubcast-server`:
//   cd integration-tests/node && npm ci && node --test streams.test.mjs

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { WebPubSubClient, WebPubSubJsonReliableProtocol } from "@azure/web-pubsub-client";

import { SHUTDOWN_TIMEOUT_MS, STARTUP_TIMEOUT_MS, STEP_TIMEOUT_MS, Server, sleep, withTimeout } from "./support/hubcast.mjs";
import { RawClient } from "./support/raw.mjs";

const HUB = "streams";

describe("group streams", { timeout: 120_000 }, () => {
  let server;
  const clients = [];
  const raws = [];

  async function official(user) {
    const client = new WebPubSubClient(await server.clientUrl(HUB, user), {
      protocol: WebPubSubJsonReliableProtocol(),
      autoReconnect: false,
      messageRetryOptions: { maxRetries: 0 },
      keepAliveIntervalInMs: 0,
      keepAliveTimeoutInMs: 0,
    });
    clients.push(client);
    await withTimeout(client.start(), STEP_TIMEOUT_MS, `${user} start()`);
    return client;
  }

  async function raw(user, roles) {
    const client = new RawClient(await server.clientUrl(HUB, user, roles));
    raws.push(client);
    await client.open();
    return client;
  }

  /**
   * Subscribes `client` to the streams of `group`; resolves with the first stream's chunks and
   * how it ended, or with those of each of `ids` (by id) once they have all ended.
   */
  function collect(client, group, ids) {
    return new Promise((resolve) => {
      const done = {};
      const subscription = client.onGroupStream(
        async (stream) => {
          const chunks = [];
          let error;
          try {
            for await (const chunk of stream) chunks.push(chunk);
          } catch (e) {
            error = e;
          }
          const got = { streamId: stream.streamId, chunks, error };
          if (ids === undefined) {
            subscription.close();
            return resolve(got);
          }
          done[stream.streamId] = got;
          if (ids.every((id) => id in done)) {
            subscription.close();
            resolve(done);
          }
        },
        { groupNames: [group], handleFromStart: true },
      );
    });
  }

  const frameOf = (client, type, streamId, extra = () => true) =>
    client.next((f) => f.type === type && f.streamId === streamId && extra(f), `${type} of ${streamId}`);

  before(async () => {
    server = new Server({ configToml: ["[limits]", "max_streams_per_connection = 2", ""].join("\n") });
    await server.start();
  }, { timeout: STARTUP_TIMEOUT_MS });

  after(async () => {
    for (const c of clients) {
      try {
        c.stop();
      } catch {
        // Already stopped.
      }
    }
    for (const r of raws) r.close();
    await server?.stop();
  }, { timeout: SHUTDOWN_TIMEOUT_MS });

  test("official 1.1.0 client: openGroupStream chunks arrive in order at onGroupStream subscribers, then the end", async () => {
    // Across a cluster the three land on three nodes.
    const publisher = await official("pub");
    const subscribers = [await official("sub1"), await official("sub2")];
    for (const c of [publisher, ...subscribers]) await withTimeout(c.joinGroup("live"), STEP_TIMEOUT_MS, "join live");
    const received = subscribers.map((s) => collect(s, "live"));
    const stream = await withTimeout(publisher.openGroupStream("live", { noEcho: true }), STEP_TIMEOUT_MS, "openGroupStream");
    for (let i = 1; i <= 20; i++) {
      await withTimeout(stream.write(i % 2 ? `chunk ${i}` : { i }, i % 2 ? "text" : "json"), STEP_TIMEOUT_MS, `write ${i}`);
    }
    await withTimeout(stream.end(), STEP_TIMEOUT_MS, "end");
    for (const got of await Promise.all(received.map((r) => withTimeout(r, STEP_TIMEOUT_MS, "the stream at a subscriber")))) {
      assert.equal(got.streamId, stream.streamId);
      assert.equal(got.error, undefined);
      assert.deepEqual(
        got.chunks.map((c) => [c.stream.streamSequenceId, c.data]),
        Array.from({ length: 20 }, (_, k) => [k + 1, (k + 1) % 2 ? `chunk ${k + 1}` : { i: k + 1 }]),
      );
      assert.equal(got.chunks[0].fromUserId, "pub");
    }
  });

  test("a lost streamData gets a streamNack; retries are acked and dropped; the group sees each chunk once, in order", async () => {
    const subscriber = await official("watcher");
    await withTimeout(subscriber.joinGroup("gaps"), STEP_TIMEOUT_MS, "join gaps");
    const received = collect(subscriber, "gaps");
    const pub = await raw("rawpub");
    pub.send({ type: "sendToGroup", group: "gaps", stream: { streamId: "s1" } });
    assert.equal((await frameOf(pub, "streamAck", "s1")).expectedSequenceId, 1);
    const chunk = (n) => ({ type: "streamData", streamId: "s1", streamSequenceId: n, dataType: "text", data: `c${n}` });
    pub.send(chunk(1));
    await frameOf(pub, "streamAck", "s1", (f) => f.expectedSequenceId === 2);
    // Chunk 2 is "lost": 3 comes first.
    pub.send(chunk(3));
    const nack = await frameOf(pub, "streamNack", "s1");
    assert.deepEqual(nack, {
      type: "streamNack",
      streamId: "s1",
      name: "InvalidSequenceId",
      message: "Chunk 3 of stream 's1' arrived before chunk 2.",
      expectedSequenceId: 2,
    });
    pub.send(chunk(2));
    pub.send(chunk(3));
    pub.send(chunk(2)); // a retry of a chunk already taken
    await frameOf(pub, "streamAck", "s1", (f) => f.expectedSequenceId === 4);
    // A streamData that cannot be read: a BadRequest nack, and the stream goes on.
    pub.send({ type: "streamData", streamId: "s1", streamSequenceId: 4 });
    assert.equal((await frameOf(pub, "streamNack", "s1", (f) => f.name === "BadRequest")).expectedSequenceId, 4);
    pub.send({ type: "streamEnd", streamId: "s1" });
    assert.deepEqual(await frameOf(pub, "streamClosed", "s1"), { type: "streamClosed", streamId: "s1" });
    const got = await withTimeout(received, STEP_TIMEOUT_MS, "the stream at the subscriber");
    assert.equal(got.error, undefined);
    assert.deepEqual(got.chunks.map((c) => c.data), ["c1", "c2", "c3"]);
  });

  test("a stream without streamData for its idle timeout ends with IdleTimeout; keep-alives hold it open", async () => {
    const subscriber = await official("idle-watcher");
    await withTimeout(subscriber.joinGroup("idle"), STEP_TIMEOUT_MS, "join idle");
    const received = collect(subscriber, "idle");
    const pub = await raw("idlepub");
    pub.send({ type: "sendToGroup", group: "idle", stream: { streamId: "quiet", idleTimeoutMs: 400 } });
    await frameOf(pub, "streamAck", "quiet");
    pub.send({ type: "streamData", streamId: "quiet", streamSequenceId: 1, dataType: "text", data: "only" });
    // Keep-alives every 150 ms for a second: longer than the timeout, and still open.
    for (let i = 0; i < 7; i++) {
      await sleep(150);
      pub.send({ type: "streamData", streamId: "quiet" });
    }
    assert.equal(pub.frames.filter((f) => f.type === "streamClosed").length, 0, "kept open by keep-alives");
    const started = Date.now();
    const closed = await frameOf(pub, "streamClosed", "quiet");
    assert.equal(closed.error.name, "IdleTimeout");
    assert.ok(Date.now() - started < 2_000, "closed about 400 ms after the last keep-alive");
    const got = await withTimeout(received, STEP_TIMEOUT_MS, "the stream at the subscriber");
    assert.deepEqual(got.chunks.map((c) => c.data), ["only"]);
    assert.equal(got.error?.name, "IdleTimeout");
  });

  test("streams over the per-connection limit are refused; ending one makes room; a dropped publisher cancels its streams", async () => {
    const subscriber = await official("limit-watcher");
    await withTimeout(subscriber.joinGroup("many"), STEP_TIMEOUT_MS, "join many");
    const received = collect(subscriber, "many", ["a", "b"]);
    const pub = await raw("limitpub");
    for (const id of ["a", "b"]) {
      pub.send({ type: "sendToGroup", group: "many", stream: { streamId: id } });
      await frameOf(pub, "streamAck", id);
    }
    pub.send({ type: "sendToGroup", group: "many", stream: { streamId: "c" } });
    const refused = await frameOf(pub, "streamClosed", "c");
    assert.equal(refused.error.name, "Forbidden");
    assert.match(refused.error.message, /max_streams_per_connection/);
    pub.send({ type: "streamEnd", streamId: "b", error: { message: "gave up", userErrorCode: "E42" } });
    await frameOf(pub, "streamClosed", "b");
    pub.send({ type: "sendToGroup", group: "many", stream: { streamId: "c" } });
    await frameOf(pub, "streamAck", "c");
    pub.send({ type: "streamData", streamId: "a", streamSequenceId: 1, dataType: "text", data: "from a" });
    await frameOf(pub, "streamAck", "a", (f) => f.expectedSequenceId === 2);
    // The publisher drops: its open streams end for the group with Cancelled.
    pub.close();
    const got = await withTimeout(received, STEP_TIMEOUT_MS, "streams a and b at the subscriber");
    // b: ended by its publisher with an error, before any chunk.
    assert.deepEqual(got.b.chunks, []);
    assert.deepEqual(got.b.error, { name: "UserError", message: "gave up", userErrorCode: "E42" });
    assert.deepEqual(got.a.chunks.map((c) => c.data), ["from a"]);
    assert.equal(got.a.error?.name, "Cancelled");
  });

  test("bad input: unknown stream, no permission, data on the start, no streamId", async () => {
    const pub = await raw("badpub", []);
    pub.send({ type: "streamData", streamId: "nope", streamSequenceId: 1, dataType: "text", data: "x" });
    assert.equal((await frameOf(pub, "streamClosed", "nope")).error.name, "StreamNotFound");
    pub.send({ type: "streamEnd", streamId: "nope2" });
    assert.equal((await frameOf(pub, "streamClosed", "nope2")).error.name, "StreamNotFound");
    pub.send({ type: "sendToGroup", group: "locked", stream: { streamId: "f" } });
    const forbidden = await frameOf(pub, "streamClosed", "f");
    assert.deepEqual(forbidden.error, { name: "Forbidden", message: "The connection has no permission to send to group 'locked'." });
    pub.send({ type: "sendToGroup", group: "locked", dataType: "text", data: "x", stream: { streamId: "d" } });
    assert.equal((await frameOf(pub, "streamClosed", "d")).error.name, "BadRequest");
    pub.send({ type: "ping" });
    await pub.next((f) => f.type === "pong", "pong: the connection stays");
    pub.send({ type: "streamData", streamSequenceId: 1, dataType: "text", data: "x" });
    const closed = await withTimeout(pub.closed, STEP_TIMEOUT_MS, "close after streamData without streamId");
    assert.equal(closed.code, 1007);
  });
});
