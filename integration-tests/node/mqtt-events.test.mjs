// MQTT clients' CloudEvents as Azure sends them, read by the official event handler middleware
// (`@azure/web-pubsub-express` 1.0.6, its MQTT request and response types) in an express app:
// `ce-physicalConnectionId` and `ce-sessionId` (the middleware's `context.mqtt`), the `mqtt`
// members of the connect and disconnected bodies, and the middleware's MQTT refusals
// (`failWith({ mqtt: { code } })`, `fail(status)`) read into the CONNACK code. The clients are
// the npm `mqtt` client (MQTT.js 5.x) over WebSocket, as 3.1.1 and 5.0.
// Request/response over `$webpubsub/server/events/{event}`: the user event reaches
// `handleUserEvent`, its answer comes back on `…/succeeded` or `…/failed`.
//
// Run through `scripts/test`, or by hand after `cargo build -p hubcast-server`:
//   cd integration-tests/node && npm ci && node --test mqtt-events.test.mjs

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import mqtt from "mqtt";
import { WebPubSubServiceClient } from "@azure/web-pubsub";
import { WebPubSubEventHandler } from "@azure/web-pubsub-express";
import express from "express";

import {
  DEFAULT_ROLES,
  SHUTDOWN_TIMEOUT_MS,
  STARTUP_TIMEOUT_MS,
  STEP_TIMEOUT_MS,
  Server,
  withTimeout,
} from "./support/hubcast.mjs";

const HUB = "mqttevents";

let seq = 0;
/** A fresh client id: `[0-9a-zA-Z]`, as Azure requires. */
const clientId = (prefix) => `${prefix}${Date.now().toString(36)}${seq++}`;

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
}

describe("MQTT CloudEvents through @azure/web-pubsub-express", { timeout: 120_000 }, () => {
  const seen = new Seen();
  const clients = [];
  let httpServer;
  let hubcast;
  let service;

  const handler = new WebPubSubEventHandler(HUB, {
    path: `/api/webpubsub/hubs/${HUB}/`,
    handleConnect(req, res) {
      seen.push("connect", req);
      const id = req.context.connectionId;
      if (id.startsWith("banned")) {
        res.failWith({ mqtt: { code: req.mqtt.protocolVersion === 5 ? 0x8a : 2, reason: "banned here" } });
      } else if (id.startsWith("denied")) {
        res.fail(401, "no");
      } else if (id.startsWith("props")) {
        res.success({ userId: `mqtt-${id}`, mqtt: { userProperties: [{ name: "region", value: "eu" }] } });
      } else {
        res.success({ userId: `mqtt-${id}` });
      }
    },
    handleUserEvent(req, res) {
      seen.push("user", req);
      if (req.context.eventName === "echo") {
        res.success(JSON.stringify({ echo: req.data }), "json");
      } else {
        res.fail(400, "not this one");
      }
    },
    onConnected(req) {
      seen.push("connected", req);
    },
    onDisconnected(req) {
      seen.push("disconnected", req);
    },
  });

  /** A client URL; on a cluster, `node` picks one node itself (a session lives on one). */
  async function mqttUrl(node) {
    const { url } = await service.getClientAccessToken({ userId: "u", roles: DEFAULT_ROLES, clientProtocol: "mqtt" });
    if (node === undefined || !hubcast.nodes) return url;
    const direct = new URL(url);
    direct.port = String(hubcast.nodes[node].port);
    return direct.toString();
  }

  async function connect(id, protocolVersion, options = {}, node = undefined) {
    const client = mqtt.connect(await mqttUrl(node), {
      clientId: id,
      protocolVersion,
      reconnectPeriod: 0,
      connectTimeout: STEP_TIMEOUT_MS,
      ...options,
    });
    clients.push(client);
    await withTimeout(
      new Promise((resolve, reject) => {
        client.once("connect", resolve);
        client.once("error", reject);
      }),
      STEP_TIMEOUT_MS,
      `MQTT connect of ${id}`,
    );
    return client;
  }

  async function refused(id, protocolVersion) {
    const client = mqtt.connect(await mqttUrl(), { clientId: id, protocolVersion, reconnectPeriod: 0, connectTimeout: STEP_TIMEOUT_MS });
    clients.push(client);
    return withTimeout(
      new Promise((resolve, reject) => {
        client.once("connect", () => reject(new Error("connected, but a refusal was expected")));
        client.once("error", resolve);
      }),
      STEP_TIMEOUT_MS,
      `refusal of ${id}`,
    );
  }

  const forId = (id) => (r) => r.context.connectionId === id;

  before(async () => {
    const app = express();
    // What the middleware does not show a handler: the raw headers of a user event, and
    // `mqtt-*` headers on its answer (the MQTT reply's user properties).
    app.use((req, res, next) => {
      if (`${req.headers["ce-type"]}`.startsWith("azure.webpubsub.user.")) {
        seen.push("user-headers", req.headers);
        res.setHeader("mqtt-answered-by", "express");
      }
      next();
    });
    app.use(handler.getMiddleware());
    httpServer = await new Promise((resolve) => {
      const s = app.listen(0, "127.0.0.1", () => resolve(s));
    });
    const { port } = httpServer.address();
    hubcast = new Server({
      configToml: [
        // Persistent sessions wait this long for their client.
        "[client]",
        "recovery_window = 3",
        `[hubs.${HUB}]`,
        `[[hubs.${HUB}.event_handlers]]`,
        `url_template = "http://127.0.0.1:${port}/api/webpubsub/hubs/{hub}/"`,
        `user_event_pattern = "*"`,
        `system_events = ["connect", "connected", "disconnected"]`,
        "",
      ].join("\n"),
    });
    const connectionString = await hubcast.start();
    service = new WebPubSubServiceClient(connectionString, HUB, { allowInsecureConnection: true });
  }, { timeout: STARTUP_TIMEOUT_MS + STEP_TIMEOUT_MS });

  after(async () => {
    for (const client of clients) client.end(true);
    await hubcast?.stop();
    await new Promise((resolve) => httpServer?.close(resolve) ?? resolve());
  }, { timeout: SHUTDOWN_TIMEOUT_MS + 5_000 });

  test("MQTT 5.0: connect, connected and a client DISCONNECT carry the session and physical connection", async () => {
    const id = clientId("five");
    const client = await connect(id, 5, {
      username: "device",
      password: Buffer.from("secret"),
      properties: { userProperties: { model: "x1" } },
    });
    const connectReq = await seen.wait("connect", forId(id), "handleConnect");
    assert.equal(connectReq.context.clientProtocol, "mqtt", "the middleware takes it for an MQTT request");
    const physical = connectReq.context.mqtt.physicalConnectionId;
    assert.ok(physical, "ce-physicalConnectionId");
    assert.equal(connectReq.context.mqtt.sessionId, undefined, "no ce-sessionId on connect");
    assert.equal(connectReq.mqtt.protocolVersion, 5);
    assert.equal(connectReq.mqtt.username, "device");
    assert.equal(Buffer.from(connectReq.mqtt.password, "base64").toString(), "secret");
    assert.deepEqual(connectReq.mqtt.userProperties, [{ name: "model", value: "x1" }]);

    const connected = await seen.wait("connected", forId(id), "onConnected");
    assert.equal(connected.context.userId, `mqtt-${id}`);
    assert.equal(connected.context.mqtt.physicalConnectionId, physical);
    const session = connected.context.mqtt.sessionId;
    assert.ok(session, "ce-sessionId after connect");

    await withTimeout(
      client.endAsync(false, { reasonCode: 0x04, properties: { userProperties: { why: "done" } } }),
      STEP_TIMEOUT_MS,
      "DISCONNECT 0x04",
    );
    const disconnected = await seen.wait("disconnected", forId(id), "onDisconnected");
    assert.equal(disconnected.context.mqtt.sessionId, session);
    assert.equal(disconnected.context.mqtt.physicalConnectionId, physical);
    assert.equal(disconnected.mqtt.initiatedByClient, true);
    assert.equal(disconnected.mqtt.disconnectPacket.code, 0x04);
    assert.deepEqual(disconnected.mqtt.disconnectPacket.userProperties, [{ name: "why", value: "done" }]);
  });

  test("MQTT 5.0: the user properties of the handler's connect answer are the CONNACK's", async () => {
    const id = clientId("props");
    const client = mqtt.connect(await mqttUrl(), { clientId: id, protocolVersion: 5, reconnectPeriod: 0, connectTimeout: STEP_TIMEOUT_MS });
    clients.push(client);
    const connack = await withTimeout(new Promise((resolve) => client.once("connect", resolve)), STEP_TIMEOUT_MS, "CONNACK");
    // MQTT.js gives the user properties as an object without a prototype.
    assert.deepEqual({ ...connack.properties?.userProperties }, { region: "eu" });
    await client.endAsync();
  });

  test("MQTT 5.0: a REST close is a server DISCONNECT 0x98 in the disconnected event", async () => {
    const id = clientId("closed");
    await connect(id, 5);
    await seen.wait("connected", forId(id), "onConnected");
    await service.closeConnection(id, { reason: "maintenance" });
    const disconnected = await seen.wait("disconnected", forId(id), "onDisconnected");
    assert.equal(disconnected.mqtt.initiatedByClient, false);
    assert.equal(disconnected.mqtt.disconnectPacket.code, 0x98);
  });

  for (const protocolVersion of [4, 5]) {
    test(`MQTT ${protocolVersion === 5 ? "5.0" : "3.1.1"}: connected and disconnected are raised per session, not per socket`, async () => {
      const id = clientId("session");
      const options = protocolVersion === 5
        ? { clean: false, properties: { sessionExpiryInterval: 30 } }
        : { clean: false };
      const first = await connect(id, protocolVersion, options, 0);
      const connected = await seen.wait("connected", forId(id), "onConnected");
      const session = connected.context.mqtt.sessionId;
      first.stream.destroy();
      await new Promise((resolve) => setTimeout(resolve, 300));

      const second = await connect(id, protocolVersion, options, 0);
      const connects = seen.items.filter((i) => i.kind === "connect" && forId(id)(i.value));
      assert.equal(connects.length, 2, "a connect event per CONNECT");
      assert.equal(connects[1].value.mqtt.cleanStart, false);
      const secondPhysical = connects[1].value.context.mqtt.physicalConnectionId;
      assert.notEqual(secondPhysical, connects[0].value.context.mqtt.physicalConnectionId);
      const events = () => seen.items.filter((i) => (i.kind === "connected" || i.kind === "disconnected") && forId(id)(i.value));
      assert.deepEqual(events().map((i) => i.kind), ["connected"], "no event for the resumed socket");

      // The client goes away for good: the session ends when the window passes.
      second.stream.destroy();
      const disconnected = await withTimeout(
        seen.wait("disconnected", forId(id), "onDisconnected"),
        STEP_TIMEOUT_MS,
        "disconnected after the window",
      );
      assert.equal(disconnected.context.mqtt.sessionId, session, "the same session");
      assert.equal(disconnected.context.mqtt.physicalConnectionId, secondPhysical, "its last socket");
      assert.equal(disconnected.mqtt.disconnectPacket, null);
      assert.deepEqual(events().map((i) => i.kind), ["connected", "disconnected"]);
    });
  }

  test("MQTT 3.1.1: a DISCONNECT has code 0; a dropped socket has no DISCONNECT packet", async () => {
    const id = clientId("three");
    const client = await connect(id, 4);
    const connectReq = await seen.wait("connect", forId(id), "handleConnect");
    assert.equal(connectReq.mqtt.protocolVersion, 4);
    await withTimeout(client.endAsync(), STEP_TIMEOUT_MS, "DISCONNECT");
    let disconnected = await seen.wait("disconnected", forId(id), "onDisconnected");
    assert.deepEqual(disconnected.mqtt.disconnectPacket?.code, 0);
    assert.equal(disconnected.mqtt.initiatedByClient, true);

    const dropped = clientId("drop");
    const other = await connect(dropped, 4);
    await seen.wait("connected", forId(dropped), "onConnected");
    other.stream.destroy();
    disconnected = await seen.wait("disconnected", forId(dropped), "onDisconnected of a dropped socket");
    assert.equal(disconnected.mqtt.initiatedByClient, true);
    assert.equal(disconnected.mqtt.disconnectPacket, null);
  });

  /** The next message on `topic`. */
  function nextMessage(client, topic) {
    return withTimeout(
      new Promise((resolve) => {
        const handler = (t, payload, packet) => {
          if (t === topic) {
            client.off("message", handler);
            resolve({ payload, packet });
          }
        };
        client.on("message", handler);
      }),
      STEP_TIMEOUT_MS,
      `a message on ${topic}`,
    );
  }

  test("MQTT 5.0: a request on $webpubsub/server/events/{event} is answered on …/succeeded or …/failed", async () => {
    const id = clientId("req");
    const client = await connect(id, 5);
    const base = "$webpubsub/server/events";
    let answer = nextMessage(client, `${base}/echo/succeeded`);
    await withTimeout(
      client.publishAsync(`${base}/echo`, JSON.stringify({ n: 1 }), {
        qos: 1,
        properties: {
          contentType: "application/json",
          correlationData: Buffer.from("c-1"),
          userProperties: { device: "d1" },
        },
      }),
      STEP_TIMEOUT_MS,
      "request published",
    );
    let { payload, packet } = await answer;
    assert.deepEqual(JSON.parse(payload.toString()), { echo: { n: 1 } });
    assert.equal(packet.properties.contentType, "application/json");
    assert.equal(packet.properties.userProperties["azure-status-code"], "200");
    assert.equal(packet.properties.correlationData.toString(), "c-1");
    assert.equal(packet.properties.userProperties["answered-by"], "express", "mqtt-* answer headers");
    const headers = await seen.wait("user-headers", (h) => h["ce-connectionid"] === id, "the request's headers");
    assert.equal(headers["mqtt-device"], "d1", "a request's user property is an mqtt-{name} header");
    const request = await seen.wait("user", forId(id), "handleUserEvent");
    assert.equal(request.context.eventName, "echo");
    assert.equal(request.context.mqtt.physicalConnectionId !== undefined, true);

    answer = nextMessage(client, `${base}/other/failed`);
    client.publish(`${base}/other`, "x", { qos: 0, properties: { contentType: "text/plain" } });
    ({ packet } = await answer);
    assert.equal(packet.properties.userProperties["azure-status-code"], "400");
    assert.equal(client.connected, true);

    // Not an event name: refused in the PUBACK with 0x90 (Topic Name invalid).
    await assert.rejects(
      client.publishAsync(`${base}/a/b`, "x", { qos: 1 }),
      (e) => e.code === 0x90 || /144/.test(`${e}`),
    );
    await client.endAsync();
  });

  for (const [name, protocolVersion, banned, denied] of [
    ["MQTT 5.0", 5, 0x8a, 0x87],
    ["MQTT 3.1.1", 4, 2, 5],
  ]) {
    test(`${name}: the handler's MQTT refusal code is the CONNACK code`, async () => {
      const byCode = await refused(clientId("banned"), protocolVersion);
      assert.equal(byCode.code, banned, `failWith({ mqtt: { code } }): ${byCode}`);
      if (protocolVersion === 5) assert.match(`${byCode}`, /banned here|Banned/i);
      const byStatus = await refused(clientId("denied"), protocolVersion);
      assert.equal(byStatus.code, denied, `fail(401): ${byStatus}`);
    });
  }
});
