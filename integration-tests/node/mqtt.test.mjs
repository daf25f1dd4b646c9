// MQTT clients against the real `hubcast` binary: the npm `mqtt` client (MQTT.js 5.x) over
// WebSocket, as MQTT 3.1.1 and as 5.0, with tokens minted by the official server SDK
// (`@azure/web-pubsub` 1.2.0, `clientProtocol: "mqtt"`), next to the official
// `@azure/web-pubsub-client` for cross-protocol delivery and the SDK's REST sends.
//
// Run through `scripts/test`, or by hand after `cargo build -p hubcast-server`:
//   cd integration-tests/node && npm ci && node --test mqtt.test.mjs

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import mqtt from "mqtt";
import { WebPubSubServiceClient } from "@azure/web-pubsub";
import { WebPubSubClient, WebPubSubJsonProtocol } from "@azure/web-pubsub-client";

import {
  DEFAULT_ROLES,
  SHUTDOWN_TIMEOUT_MS,
  STARTUP_TIMEOUT_MS,
  STEP_TIMEOUT_MS,
  Server,
  nextEvent,
  topologyOptions,
  withTimeout,
} from "./support/hubcast.mjs";

const HUB = "mqtthub";
const VERSIONS = [
  { name: "MQTT 3.1.1", protocolVersion: 4 },
  { name: "MQTT 5.0", protocolVersion: 5 },
];

let seq = 0;
/** A fresh client id: `[0-9a-zA-Z]`, as Azure requires. */
const clientId = (prefix) => `${prefix}${Date.now().toString(36)}${seq++}`;

describe("MQTT clients (npm mqtt 5.x) against hubcast", { timeout: 180_000 }, () => {
  const server = new Server();
  const clients = [];
  let service;

  /** A client URL minted by the official SDK for MQTT clients. */
  async function mqttUrl(userId, roles = DEFAULT_ROLES, groups = undefined) {
    const { url } = await service.getClientAccessToken({ userId, roles, groups, clientProtocol: "mqtt" });
    assert.match(url, /\/clients\/mqtt\/hubs\/mqtthub\?access_token=/);
    return url;
  }

  /** Connects with `options`; resolves with the client and its CONNACK. */
  async function connect(url, options) {
    const client = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: STEP_TIMEOUT_MS, ...options });
    clients.push(client);
    const connack = await withTimeout(
      new Promise((resolve, reject) => {
        client.once("connect", resolve);
        client.once("error", reject);
      }),
      STEP_TIMEOUT_MS,
      `MQTT connect of ${options.clientId}`,
    );
    return { client, connack };
  }

  /** Resolves with the CONNACK refusal `error` of a connect that must fail. */
  async function refused(url, options) {
    const client = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: STEP_TIMEOUT_MS, ...options });
    clients.push(client);
    return withTimeout(
      new Promise((resolve, reject) => {
        client.once("connect", () => reject(new Error("connected, but a refusal was expected")));
        client.once("error", resolve);
      }),
      STEP_TIMEOUT_MS,
      `refusal of ${options.clientId}`,
    );
  }

  /** Subscribes and resolves with the granted QoS or reason code of each filter (MQTT.js
   * rejects `subscribeAsync` when any is a failure; the SUBACK still has them all). */
  function subscribeCodes(client, topics, options) {
    return withTimeout(
      new Promise((resolve, reject) => {
        client.subscribe(topics, options, (err, _requested, packet) => {
          const suback = packet ?? err?.packet;
          if (suback?.granted) resolve(suback.granted);
          else reject(err ?? new Error("no SUBACK"));
        });
      }),
      STEP_TIMEOUT_MS,
      `SUBACK for ${topics}`,
    );
  }

  /** The next message on `topic`. */
  function nextMessage(client, topic, what = `a message on ${topic}`) {
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
      what,
    );
  }

  before(async () => {
    const connectionString = await server.start();
    service = new WebPubSubServiceClient(connectionString, HUB, { allowInsecureConnection: true });
  }, { timeout: STARTUP_TIMEOUT_MS });

  after(async () => {
    for (const client of clients) client.end(true);
    await server.stop();
  }, { timeout: SHUTDOWN_TIMEOUT_MS + 5_000 });

  for (const { name, protocolVersion } of VERSIONS) {
    test(`${name}: a client with roles subscribes and receives its publishes at each QoS`, async () => {
      const url = await mqttUrl(`user${protocolVersion}`);
      const { client, connack } = await connect(url, { clientId: clientId("pub"), protocolVersion });
      assert.equal(connack.sessionPresent, false);
      const topic = `room${protocolVersion}`;
      const granted = await client.subscribeAsync(topic, { qos: 2 });
      assert.equal(granted[0].qos, 2);
      for (const qos of [0, 1, 2]) {
        const received = nextMessage(client, topic, `own QoS ${qos} publish`);
        const properties = protocolVersion === 5 ? { contentType: "text/plain" } : undefined;
        await withTimeout(client.publishAsync(topic, `hello ${qos}`, { qos, properties }), STEP_TIMEOUT_MS, `publish QoS ${qos}`);
        const { payload, packet } = await received;
        assert.equal(payload.toString(), `hello ${qos}`);
        // From an MQTT client to an MQTT client: the lower of the publish's and the
        // subscription's QoS (Azure's cross-protocol document), so QoS 2 goes out as QoS 2.
        assert.equal(packet.qos, qos);
        if (protocolVersion === 5) assert.equal(packet.properties?.contentType, "text/plain");
      }
      await client.endAsync();
    });

    const restSends = `${name}: REST sends to all, a user and a connection arrive on $webpubsub/server/messages`;
    test(restSends, topologyOptions(restSends), async () => {
      const userId = `restuser${protocolVersion}`;
      const id = clientId("rest");
      const { client } = await connect(await mqttUrl(userId), { clientId: id, protocolVersion });
      const topic = "$webpubsub/server/messages";
      let received = nextMessage(client, topic, "sendToAll");
      await service.sendToAll({ kind: "all" });
      let { payload, packet } = await received;
      assert.deepEqual(JSON.parse(payload.toString()), { kind: "all" });
      assert.equal(packet.qos, 1);
      if (protocolVersion === 5) assert.equal(packet.properties?.contentType, "application/json");
      received = nextMessage(client, topic, "sendToUser");
      await service.sendToUser(userId, "to the user", { contentType: "text/plain" });
      ({ payload } = await received);
      assert.equal(payload.toString(), "to the user");
      // The client id is the connection id.
      assert.equal(await service.connectionExists(id), true);
      received = nextMessage(client, topic, "sendToConnection");
      await service.sendToConnection(id, "to the connection", { contentType: "text/plain" });
      ({ payload } = await received);
      assert.equal(payload.toString(), "to the connection");
      await client.endAsync();
    });

    test(`${name}: a client without roles can neither subscribe nor publish`, async () => {
      const { client } = await connect(await mqttUrl("noroles", []), { clientId: clientId("none"), protocolVersion });
      const granted = await subscribeCodes(client, "room", { qos: 1 });
      assert.deepEqual(granted, [protocolVersion === 5 ? 135 : 128], "5.0: Not authorized (0x87); 3.1.1: Failure (0x80)");
      if (protocolVersion === 5) {
        // QoS 1: refused in the PUBACK, the session stays.
        await assert.rejects(client.publishAsync("room", "x", { qos: 1 }), (e) => e.code === 135 || /135|authori/i.test(`${e}`));
        assert.equal(client.connected, true);
      }
      // QoS 0: nothing to refuse in, so the session ends.
      const closed = new Promise((resolve) => client.once("close", resolve));
      client.publish("room", "x", { qos: 0 });
      await withTimeout(closed, STEP_TIMEOUT_MS, "close after an unauthorized QoS 0 publish");
    });

    test(`${name}: refusals come with their CONNACK codes`, async () => {
      const bad = await refused(await mqttUrl("u"), { clientId: "not-alnum", protocolVersion });
      assert.equal(bad.code, protocolVersion === 5 ? 133 : 2, `${bad}`);
      const url = new URL(await mqttUrl("u"));
      url.searchParams.set("access_token", "not.a.token");
      const unauthorized = await refused(url.toString(), { clientId: clientId("tok"), protocolVersion });
      assert.equal(unauthorized.code, protocolVersion === 5 ? 135 : 5, `${unauthorized}`);
      // A default-protocol token does not open the MQTT endpoint.
      const { token } = await service.getClientAccessToken({ userId: "u" });
      url.searchParams.set("access_token", token);
      const wrongAudience = await refused(url.toString(), { clientId: clientId("aud"), protocolVersion });
      assert.equal(wrongAudience.code, protocolVersion === 5 ? 135 : 5, `${wrongAudience}`);
    });
  }

  test("MQTT 5.0: wildcard and shared subscriptions are refused with their reason codes", async () => {
    const { client } = await connect(await mqttUrl("wild"), { clientId: clientId("wild"), protocolVersion: 5 });
    const granted = await subscribeCodes(client, ["a/+", "a/#", "$share/g/a", "plain"], { qos: 1 });
    assert.deepEqual(granted, [162, 162, 158, 1]);
    await client.endAsync();
  });

  test("MQTT 5.0 publishes reach @azure/web-pubsub-client with their dataType, and back", async () => {
    const wps = new WebPubSubClient(
      (await service.getClientAccessToken({ userId: "wps", roles: DEFAULT_ROLES })).url,
      { protocol: WebPubSubJsonProtocol(), autoReconnect: false, keepAliveIntervalInMs: 0, keepAliveTimeoutInMs: 0 },
    );
    try {
      await withTimeout(wps.start(), STEP_TIMEOUT_MS, "web pubsub client start");
      await withTimeout(wps.joinGroup("cross"), STEP_TIMEOUT_MS, "joinGroup");
      const { client } = await connect(await mqttUrl("mq"), { clientId: clientId("cross"), protocolVersion: 5 });
      await client.subscribeAsync("cross", { qos: 1 });

      for (const [contentType, payload, dataType, expected] of [
        ["application/json", '{"n":1}', "json", { n: 1 }],
        ["text/plain", "plain text", "text", "plain text"],
        [undefined, "raw", "binary", "raw"],
      ]) {
        const got = nextEvent(wps, "group-message", (e) => e.message.group === "cross", `${dataType} at the web pubsub client`);
        await client.publishAsync("cross", payload, { qos: 1, properties: contentType ? { contentType } : {} });
        const { message } = await got;
        assert.equal(message.dataType, dataType);
        assert.equal(message.fromUserId, "mq");
        if (dataType === "binary") assert.equal(Buffer.from(message.data).toString(), expected);
        else assert.deepEqual(message.data, expected);
      }

      const back = nextMessage(client, "cross", "the web pubsub client's json message");
      await withTimeout(wps.sendToGroup("cross", { from: "wps" }, "json", { noEcho: true }), STEP_TIMEOUT_MS, "sendToGroup");
      const { payload, packet } = await back;
      assert.deepEqual(JSON.parse(payload.toString()), { from: "wps" });
      assert.equal(packet.properties?.contentType, "application/json");
      await client.endAsync();
    } finally {
      wps.stop();
    }
  });

  const restClose = "MQTT 5.0: a REST close ends the session with DISCONNECT 0x98 (administrative action)";
  test(restClose, topologyOptions(restClose), async () => {
    const id = clientId("closed");
    const { client } = await connect(await mqttUrl("c"), { clientId: id, protocolVersion: 5 });
    const disconnect = withTimeout(
      new Promise((resolve) => client.once("disconnect", resolve)),
      STEP_TIMEOUT_MS,
      "server DISCONNECT",
    );
    await service.closeConnection(id, { reason: "bye" });
    const packet = await disconnect;
    assert.equal(packet.reasonCode, 152);
    assert.equal(packet.properties?.reasonString, "bye");
  });

  test("MQTT 5.0: the will of a dropped socket reaches the will topic's subscribers", async () => {
    const { client: watcher } = await connect(await mqttUrl("watcher"), { clientId: clientId("watch"), protocolVersion: 5 });
    await watcher.subscribeAsync("wills", { qos: 1 });
    const { client: dying } = await connect(await mqttUrl("dying"), {
      clientId: clientId("dying"),
      protocolVersion: 5,
      will: { topic: "wills", payload: Buffer.from("gone"), qos: 1, properties: { contentType: "text/plain" } },
    });
    const will = nextMessage(watcher, "wills", "the will");
    dying.stream.destroy();
    const { payload } = await will;
    assert.equal(payload.toString(), "gone");
    // A normal DISCONNECT discards the will.
    const { client: polite } = await connect(await mqttUrl("polite"), {
      clientId: clientId("polite"),
      protocolVersion: 5,
      will: { topic: "wills", payload: Buffer.from("not sent"), qos: 1 },
    });
    await polite.endAsync();
    const marker = nextMessage(watcher, "wills", "the marker");
    await service.group("wills").sendToAll("marker", { contentType: "text/plain" });
    assert.equal((await marker).payload.toString(), "marker", "no will before the marker");
    await watcher.endAsync();
  });
});
