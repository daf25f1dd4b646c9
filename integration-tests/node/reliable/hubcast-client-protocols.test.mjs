// Hubcast's generated TypeScript client over the reliable and protobuf subprotocols
// (`json.reliable.webpubsub.azure.v1`, `protobuf.webpubsub.azure.v1`,
// `protobuf.reliable.webpubsub.azure.v1`) against the real `hubcast` binary: chat, acks,
// Duplicate, cross-format delivery, recovery of dropped reliable connections with no loss,
// a refused recovery (1008) followed by a new connection, and protobuf in Chromium.
//
// These need the server's reliable and protobuf support; `scripts/test` runs this file once
// that is merged (see its step 6).
//
// Run by hand after `cargo build -p hubcast-server`:
//   cd integration-tests/node && npm ci && node --test reliable/hubcast-client-protocols.test.mjs

import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { after, before, describe, test } from "node:test";

import { chromium } from "playwright-core";
import WebSocket from "ws";

import { AckErrorName, HubcastClient, SendMessageError } from "../../../sdk-ts/dist/index.js";
import {
  Proxy,
  SHUTDOWN_TIMEOUT_MS,
  STARTUP_TIMEOUT_MS,
  STEP_TIMEOUT_MS,
  Server,
  eventually,
  nextEvent,
  topologyOptions,
  withTimeout,
} from "../support/hubcast.mjs";

const HUB = "protocols";
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

describe("generated HubcastClient over the reliable and protobuf subprotocols", { timeout: 300_000 }, () => {
  const server = new Server({ args: ["--dev"] });
  const clients = [];
  const proxies = [];

  function newClient(url, protocol, options = {}) {
    const client = new HubcastClient(url, {
      protocol,
      WebSocket,
      keepAliveIntervalInMs: 0,
      keepAliveTimeoutInMs: 0,
      reconnectRetryOptions: { retryDelayInMs: 200 },
      messageRetryOptions: { retryDelayInMs: 200, maxRetries: 5 },
      recoveryRetryDelayInMs: 200,
      sequenceAckIntervalInMs: 200,
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

  before(() => server.start(), { timeout: STARTUP_TIMEOUT_MS });

  after(async () => {
    for (const client of clients) client.stop();
    for (const p of proxies) await p.close();
    await server.stop();
  }, { timeout: SHUTDOWN_TIMEOUT_MS + 5_000 });

  for (const protocol of ["json.reliable", "protobuf", "protobuf.reliable"]) {
    const group = `chat-${protocol}`;

    test(`${protocol}: two clients chat with every payload type`, async () => {
      const a = newClient(await server.clientUrl(HUB, "ann"), protocol);
      const b = newClient(await server.clientUrl(HUB, "ben"), protocol);
      await withTimeout(Promise.all([a.start(), b.start()]), STEP_TIMEOUT_MS, `${protocol} start()`);
      assert.equal(a.userId, "ann");
      await Promise.all([a.joinGroup(group), b.joinGroup(group)]);
      const received = [];
      b.on("group-message", (e) => received.push(e.message));
      const any = { typeUrl: "type.googleapis.com/test.Thing", value: new Uint8Array([8, 150, 1]) };
      await a.sendToGroup(group, { n: 1, s: "json" }, "json");
      await a.sendToGroup(group, "text ✓", "text");
      await a.sendToGroup(group, new Uint8Array([0, 255]), "binary");
      await a.sendToGroup(group, any, "protobuf");
      await eventually(() => received.length === 4, `${protocol}: four messages at ben`);
      assert.deepEqual(
        received.map((m) => [m.dataType, m.data, m.fromUserId ?? null, m.group]),
        [
          ["json", { n: 1, s: "json" }, protocol.startsWith("json") ? "ann" : null, group],
          ["text", "text ✓", protocol.startsWith("json") ? "ann" : null, group],
          ["binary", new Uint8Array([0, 255]), protocol.startsWith("json") ? "ann" : null, group],
          ["protobuf", any, protocol.startsWith("json") ? "ann" : null, group],
        ],
      );
      if (protocol.endsWith("reliable")) {
        const ids = received.map((m) => m.sequenceId);
        assert.ok(ids.every((id, i) => i === 0 || id === ids[i - 1] + 1), `consecutive sequence ids: ${ids}`);
      }
      a.stop();
      b.stop();
    });

    test(`${protocol}: acks, a Forbidden error, and Duplicate for a reused ack id`, async () => {
      const a = newClient(await server.clientUrl(HUB, "cat"), protocol);
      const joinOnly = newClient(await server.clientUrl(HUB, "dan", ["webpubsub.joinLeaveGroup"]), protocol);
      await Promise.all([a.start(), joinOnly.start()]);
      assert.deepEqual(await a.joinGroup(group, { ackId: 7 }), { ackId: 7, isDuplicated: false });
      assert.deepEqual(await a.joinGroup(group, { ackId: 7 }), { ackId: 7, isDuplicated: true });
      const error = await joinOnly.sendToGroup(group, "no", "text").then(() => assert.fail("must be refused"), (e) => e);
      assert.ok(error instanceof SendMessageError);
      assert.equal(error.errorDetail?.name, AckErrorName.Forbidden);
      assert.equal((await a.sendEvent("evt", "payload", "text")).isDuplicated, false);
      a.stop();
      joinOnly.stop();
    });
  }

  test("protobuf and JSON clients share a group", async () => {
    const pb = newClient(await server.clientUrl(HUB, "pb"), "protobuf.reliable");
    const js = newClient(await server.clientUrl(HUB, "js"), "json");
    await Promise.all([pb.start(), js.start()]);
    await Promise.all([pb.joinGroup("mixed"), js.joinGroup("mixed")]);
    const atJs = nextEvent(js, "group-message", (e) => e.message.dataType === "json", "json client: from protobuf");
    const atPb = nextEvent(pb, "group-message", (e) => e.message.dataType === "binary", "protobuf client: from json");
    await pb.sendToGroup("mixed", { from: "protobuf" }, "json");
    await js.sendToGroup("mixed", new Uint8Array([1, 2, 3]), "binary");
    assert.deepEqual((await atJs).message.data, { from: "protobuf" });
    assert.equal((await atJs).message.fromUserId, "pb");
    assert.deepEqual((await atPb).message.data, new Uint8Array([1, 2, 3]));
    pb.stop();
    js.stop();
  });

  for (const protocol of ["json.reliable", "protobuf.reliable"]) {
    const name = `${protocol}: dropped connections are recovered with no loss, no duplicate, same connection`;
    test(name, topologyOptions(name), async () => {
      const group = `recovery-${protocol}`;
      const p = await proxy();
      const receiver = newClient(p.route(await server.clientUrl(HUB, "receiver")), protocol);
      const sender = newClient(await server.clientUrl(HUB, "sender"), protocol);
      const events = [];
      receiver.on("disconnected", (e) => events.push(["disconnected", e.code]));
      receiver.on("connected", (e) => events.push(["connected", e.connectionId]));
      await Promise.all([receiver.start(), sender.start()]);
      await Promise.all([receiver.joinGroup(group), sender.joinGroup(group)]);
      const id = receiver.connectionId;
      const received = [];
      receiver.on("group-message", (e) => received.push(e.message.data));

      const total = 60;
      let sentDuringDrop;
      for (let n = 1; n <= total; n++) {
        await sender.sendToGroup(group, n, "json");
        if (n === 20 || n === 40) {
          p.drop();
          // Sent by the receiver while its connection is down: delivered once it recovers.
          if (n === 20) sentDuringDrop = receiver.sendToGroup(group, "from the receiver", "text");
        }
      }
      const fromReceiver = nextEvent(sender, "group-message", (e) => e.message.data === "from the receiver", "sender: receiver's message");
      await withTimeout(sentDuringDrop, 3 * STEP_TIMEOUT_MS, "the receiver's send during the drop");
      await fromReceiver;
      await eventually(() => received.filter((d) => typeof d === "number").length >= total, `${total} messages at the receiver`, 3 * STEP_TIMEOUT_MS);
      const numbers = received.filter((d) => typeof d === "number");
      assert.deepEqual(numbers, Array.from({ length: total }, (_, i) => i + 1), "every message once, in order");
      assert.equal(receiver.connectionId, id, "the same logical connection");
      assert.deepEqual(events.filter(([e]) => e === "disconnected"), [], "recovery is silent");
      assert.ok(p.connections >= 3, `the receiver reconnected through the proxy (${p.connections} connections)`);
      receiver.stop();
      sender.stop();
    });
  }

  test("protobuf.reliable: a refused recovery (1008, server restarted) ends in a new connection with groups rejoined", async () => {
    const restarted = new Server({ accessKey: server.accessKey });
    await restarted.start();
    try {
      const client = newClient(() => restarted.clientUrl(HUB, "phoenix"), "protobuf.reliable");
      await client.start();
      await client.joinGroup("phoenix-room");
      const firstId = client.connectionId;
      const disconnected = nextEvent(client, "disconnected", () => true, "disconnected after the refused recovery", 3 * STEP_TIMEOUT_MS);
      const connected = nextEvent(client, "connected", () => true, "a new connection", 3 * STEP_TIMEOUT_MS);
      await restarted.killNow();
      await restarted.start(); // same port and key, but it knows nothing of the old connection
      const d = await disconnected;
      assert.equal(d.connectionId, firstId);
      assert.equal(d.code, 1008, `close code ${d.code} (${d.reason})`);
      const c = await connected;
      assert.notEqual(c.connectionId, firstId);
      const other = newClient(await restarted.clientUrl(HUB, "witness"), "json");
      await other.start();
      const atClient = nextEvent(client, "group-message", (e) => e.message.data === "rejoined?", "message in the rejoined group");
      await other.sendToGroup("phoenix-room", "rejoined?", "text");
      await atClient;
      client.stop();
      other.stop();
    } finally {
      await restarted.stop();
    }
  });

  test("protobuf.reliable in Chromium: two pages exchange group messages", async () => {
    assert.ok(existsSync(CHROMIUM), `Chromium not found at ${CHROMIUM}`);
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
      timeout: STARTUP_TIMEOUT_MS,
    });
    try {
      const pages = [];
      for (const user of ["pa", "pb"]) {
        const page = await (await browser.newContext()).newPage();
        page.setDefaultTimeout(STEP_TIMEOUT_MS);
        await page.goto(`${server.baseUrl}/`);
        const subprotocol = await page.evaluate(async (user) => {
          const { HubcastClient } = await import("/sdk/index.js");
          const url = async () => (await (await fetch(`/dev/token?hub=browser&user=${user}`)).json()).url;
          const client = new HubcastClient(url, { protocol: "protobuf.reliable" });
          window.received = [];
          client.on("group-message", (e) => window.received.push(e.message.data));
          window.client = client;
          await client.start();
          await client.joinGroup("pb-room");
          return client.subprotocol;
        }, user);
        assert.equal(subprotocol, "protobuf.reliable.webpubsub.azure.v1");
        pages.push(page);
      }
      await pages[0].evaluate(() => window.client.sendToGroup("pb-room", { hello: "protobuf" }, "json"));
      await pages[1].waitForFunction(() => window.received.some((d) => d?.hello === "protobuf"));
      for (const page of pages) await page.evaluate(() => window.client.stop());
    } finally {
      await browser.close();
    }
  });
});
