// The official `@azure/web-pubsub-client` with its DEFAULT protocol (reliable JSON) keeps
// one logical connection through repeated network cuts and loses nothing: a TCP proxy
// between it and `hubcast` cuts every connection at least ten times while a publisher sends
// a stream of group messages; every message arrives exactly once, in order, and the client
// never has to start a fresh connection.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { WebPubSubClient, WebPubSubJsonProtocol } from "@azure/web-pubsub-client";

import {
  Proxy,
  STARTUP_TIMEOUT_MS,
  STEP_TIMEOUT_MS,
  Server,
  eventually,
  nextEvent,
  sleep,
  topologyOptions,
  withTimeout,
} from "./support/hubcast.mjs";

const MESSAGES = 1_200;
const CUTS = 12;
const HUB = "chat";
const GROUP = "stream";
const ROLES = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"];

const SUITE = "reliable protocol through network cuts (official client)";

describe(SUITE, { timeout: 180_000, ...topologyOptions(SUITE) }, () => {
  const server = new Server();
  let proxy;
  let receiver;
  let publisher;

  before(async () => {
    await server.start();
    proxy = await new Proxy(server.port).start();
  }, { timeout: STARTUP_TIMEOUT_MS });

  after(async () => {
    receiver?.stop();
    publisher?.stop();
    await proxy?.close();
    await server.stop();
  });

  test("every message arrives once, in order, on one connection", async () => {
    // The default protocol is json.reliable.webpubsub.azure.v1; no `protocol` option given.
    // Keep-alive is off so the SDK's timers let this process exit at the end.
    receiver = new WebPubSubClient(proxy.route(await server.clientUrl(HUB, "receiver", ROLES)), {
      keepAliveIntervalInMs: 0,
      keepAliveTimeoutInMs: 0,
    });
    publisher = new WebPubSubClient(await server.clientUrl(HUB, "publisher", ROLES), {
      protocol: WebPubSubJsonProtocol(),
      autoReconnect: false,
      keepAliveIntervalInMs: 0,
      keepAliveTimeoutInMs: 0,
    });

    const connected = [];
    const disconnected = [];
    const received = [];
    receiver.on("connected", (e) => connected.push(e.connectionId));
    receiver.on("disconnected", (e) => disconnected.push(e));
    receiver.on("group-message", (e) => received.push(e.message.data));

    const first = nextEvent(receiver, "connected", () => true, "receiver connected");
    await withTimeout(Promise.all([receiver.start(), publisher.start()]), STEP_TIMEOUT_MS, "start()");
    const { connectionId } = await first;
    await withTimeout(receiver.joinGroup(GROUP), STEP_TIMEOUT_MS, "receiver joinGroup");

    const every = Math.floor(MESSAGES / (CUTS + 1));
    for (let i = 0; i < MESSAGES; i++) {
      await withTimeout(publisher.sendToGroup(GROUP, i, "json"), STEP_TIMEOUT_MS, `publish ${i}`);
      if (i > 0 && i % every === 0 && proxy.cuts < CUTS) {
        // Cut only while the receiver is attached, so every cut interrupts a live socket.
        await eventually(() => proxy.pairs.size > 0, "the receiver reconnecting through the proxy", 30_000);
        proxy.cut();
      }
    }
    await eventually(() => received.length >= MESSAGES, `all ${MESSAGES} messages (got ${received.length})`, 60_000);
    // Anything extra would be a duplicate: give stragglers a moment to show up.
    await sleep(300);

    assert.ok(proxy.cuts >= 10, `the proxy cut the connection ${proxy.cuts} times`);
    assert.equal(received.length, MESSAGES, "no message lost or duplicated");
    assert.deepEqual(received, Array.from({ length: MESSAGES }, (_, i) => i), "in order");
    assert.deepEqual(connected, [connectionId], "one logical connection: no fresh connect");
    assert.deepEqual(disconnected, [], "recovery never failed");
  });
});
