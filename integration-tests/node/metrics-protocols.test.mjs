// The `protocol` label of `/metrics`: one client of each protocol — the official
// `@azure/web-pubsub-client` (default), npm `mqtt` and `socket.io-client` — connects to the
// real `hubcast` binary, sends, and the `hubcast_protocol_*` series count each under its own
// label, and forget it again when it leaves. Across three nodes, the series of every node are
// summed (a metric is per node; the balancer spreads the clients).
//
// Run through `scripts/test`, or by hand after `cargo build -p hubcast-server`:
//   cd integration-tests/node && npm ci && node --test metrics-protocols.test.mjs

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import mqtt from "mqtt";
import { io } from "socket.io-client";
import { WebPubSubServiceClient } from "@azure/web-pubsub";
import { WebPubSubClient, WebPubSubJsonProtocol } from "@azure/web-pubsub-client";

import { STEP_TIMEOUT_MS, Server, sleep, withTimeout } from "./support/hubcast.mjs";

const HUB = "protocols";
const server = new Server();
let service;

before(async () => {
  service = new WebPubSubServiceClient(await server.start(), HUB, { allowInsecureConnection: true });
});

after(async () => {
  await server.stop();
});

/** Polls the async `condition` until it holds, or fails after STEP_TIMEOUT_MS. */
async function until(condition, what) {
  const deadline = Date.now() + STEP_TIMEOUT_MS;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}: ${JSON.stringify(await scrape())}`);
    await sleep(50);
  }
}

/** The `hubcast_protocol_*` series of every node, summed: `{ name: { protocol: value } }`. */
async function scrape() {
  const nodes = server.nodes ?? [server];
  const totals = {};
  for (const node of nodes) {
    const text = await (await fetch(`${node.baseUrl}/metrics`)).text();
    for (const line of text.split("\n")) {
      const m = /^(hubcast_protocol_\w+)\{protocol="(\w+)"\} (\S+)$/.exec(line);
      if (m) {
        totals[m[1]] ??= {};
        totals[m[1]][m[2]] = (totals[m[1]][m[2]] ?? 0) + Number(m[3]);
      }
    }
  }
  return totals;
}

test("each client protocol is counted under its own label", { timeout: 60_000 }, async () => {
  const before = await scrape();
  for (const name of ["hubcast_protocol_connections", "hubcast_protocol_connects_total"]) {
    assert.deepEqual(Object.keys(before[name]).sort(), ["default", "mqtt", "socketio"], name);
  }
  const base = (name, p) => before[name]?.[p] ?? 0;

  // Default protocol: the official client joins a group and sends to it once.
  const { url } = await service.getClientAccessToken({
    userId: "web",
    roles: ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"],
  });
  // Plain JSON: a reliable client's connection outlives its socket for the recovery window.
  const web = new WebPubSubClient(url, { protocol: WebPubSubJsonProtocol() });
  await web.start();
  await web.sendToGroup("g", "hello", "text", { fireAndForget: true });

  // MQTT 5.0: two PUBLISHes.
  const { url: mqttUrl } = await service.getClientAccessToken({
    userId: "device",
    roles: ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"],
    clientProtocol: "mqtt",
  });
  const device = mqtt.connect(mqttUrl, { protocolVersion: 5, clientId: `m${Date.now()}`, reconnectPeriod: 0 });
  await withTimeout(
    new Promise((resolve, reject) => {
      device.once("connect", resolve);
      device.once("error", reject);
    }),
    STEP_TIMEOUT_MS,
    "MQTT connect",
  );
  await device.publishAsync("g", "one", { qos: 1 });
  await device.publishAsync("g", "two", { qos: 1 });

  // Socket.IO: a WebSocket session whose namespace connect is its first packet.
  const { token } = await service.getClientAccessToken({ clientProtocol: "socketio", userId: "sio" });
  const socket = io(server.baseUrl, {
    path: `/clients/socketio/hubs/${HUB}`,
    query: { access_token: token },
    transports: ["websocket"],
    reconnection: false,
  });
  await withTimeout(
    new Promise((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("connect_error", reject);
    }),
    STEP_TIMEOUT_MS,
    "socket.io connect",
  );

  let now;
  await until(async () => {
    now = await scrape();
    return ["default", "mqtt", "socketio"].every(
      (p) => now.hubcast_protocol_connections[p] === base("hubcast_protocol_connections", p) + 1,
    );
  }, "one open connection per protocol");
  for (const p of ["default", "mqtt", "socketio"]) {
    assert.equal(now.hubcast_protocol_connects_total[p], base("hubcast_protocol_connects_total", p) + 1, p);
  }
  // MQTT counts PUBLISH packets: exactly two, of three bytes each.
  const received = (p) => now.hubcast_protocol_messages_received_total[p] - base("hubcast_protocol_messages_received_total", p);
  const bytes = (p) => now.hubcast_protocol_received_bytes_total[p] - base("hubcast_protocol_received_bytes_total", p);
  assert.equal(received("mqtt"), 2);
  assert.equal(bytes("mqtt"), 6);
  // The default protocol counts frames (the send, and any ping), Socket.IO its Engine.IO
  // packets (the namespace connect at least).
  assert.ok(received("default") >= 1, `default: ${received("default")}`);
  assert.ok(bytes("default") > "hello".length, `default bytes: ${bytes("default")}`);
  assert.ok(received("socketio") >= 1, `socketio: ${received("socketio")}`);

  web.stop();
  await device.endAsync();
  socket.disconnect();
  await until(async () => {
    const gone = await scrape();
    return ["default", "mqtt", "socketio"].every(
      (p) => gone.hubcast_protocol_connections[p] === base("hubcast_protocol_connections", p),
    );
  }, "the connections leave their protocol's gauge");
});
