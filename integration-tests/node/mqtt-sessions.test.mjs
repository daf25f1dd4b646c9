// MQTT sessions that outlive their socket, as Azure keeps them (spec part 2 §1.2): a client
// that connects with Clean Session 0 (3.1.1) or Clean Start 0 and a Session Expiry Interval
// (5.0) finds its subscriptions and the QoS 1 messages it has not acknowledged when it comes
// back within the recovery window (here 3 s), CONNACK Session Present 1; QoS 1 messages
// written and not acknowledged come again with DUP and their packet id; a second CONNECT of
// the client id takes the session over; the session ends when the window passes.
//
// The npm `mqtt` client (MQTT.js 5.x) as 3.1.1 and 5.0, and, where a client must withhold its
// PUBACK, a raw client built from `mqtt-packet` (MQTT.js's own codec) over `ws`.
//
// A session lives on the node its client connected to: on a cluster the clients here connect
// to one node directly, and the last test shows what a reconnect to another node gets
// (docs/DEPLOYMENT.md, MQTT sessions across nodes).
//
//   cd integration-tests/node && node --test mqtt-sessions.test.mjs
//   HUBCAST_TEST_TOPOLOGY=cluster node --test mqtt-sessions.test.mjs

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import mqtt from "mqtt";
import mqttPacket from "mqtt-packet";
import WebSocket from "ws";
import { WebPubSubServiceClient } from "@azure/web-pubsub";

import {
  DEFAULT_ROLES,
  SHUTDOWN_TIMEOUT_MS,
  STARTUP_TIMEOUT_MS,
  STEP_TIMEOUT_MS,
  Server,
  TOPOLOGY,
  eventually,
  sleep,
  withTimeout,
} from "./support/hubcast.mjs";

const HUB = "mqttsessions";
const WINDOW_S = 3;
const VERSIONS = [
  { name: "MQTT 3.1.1", protocolVersion: 4 },
  { name: "MQTT 5.0", protocolVersion: 5 },
];

let seq = 0;
/** A fresh client id: `[0-9a-zA-Z]`, as Azure requires. */
const clientId = (prefix) => `${prefix}${Date.now().toString(36)}${seq++}`;

/** The options of a persistent session: Clean Session 0, or Clean Start 0 with an expiry. */
const persistent = (protocolVersion) =>
  protocolVersion === 5
    ? { protocolVersion, clean: false, properties: { sessionExpiryInterval: 60 } }
    : { protocolVersion, clean: false };

/** An MQTT client that speaks packet by packet (it never acknowledges on its own). */
class RawClient {
  constructor(url, protocolVersion) {
    this.protocolVersion = protocolVersion;
    this.packets = [];
    this.waiters = [];
    this.ws = new WebSocket(url, "mqtt");
    this.parser = mqttPacket.parser({ protocolVersion });
    this.parser.on("packet", (packet) => {
      this.packets.push(packet);
      this.waiters = this.waiters.filter((w) => !(w.predicate(packet) && (w.resolve(packet), true)));
    });
    this.ws.on("message", (data) => this.parser.parse(data));
    this.closed = new Promise((resolve) => this.ws.on("close", resolve));
  }

  async open() {
    await withTimeout(
      new Promise((resolve, reject) => {
        this.ws.once("open", resolve);
        this.ws.once("error", reject);
      }),
      STEP_TIMEOUT_MS,
      "WebSocket open",
    );
  }

  send(packet) {
    this.ws.send(mqttPacket.generate(packet, { protocolVersion: this.protocolVersion }));
  }

  /** The first packet (already received or to come) that satisfies `predicate`. */
  next(predicate, what) {
    const index = this.packets.findIndex(predicate);
    if (index >= 0) return Promise.resolve(this.packets.splice(index, 1)[0]);
    return withTimeout(
      new Promise((resolve) => this.waiters.push({ predicate, resolve })),
      STEP_TIMEOUT_MS,
      what,
    ).then((packet) => {
      this.packets.splice(this.packets.indexOf(packet), 1);
      return packet;
    });
  }

  /** Sends CONNECT with Clean Session / Clean Start 0 and resolves with the CONNACK. */
  async connect(clientId) {
    await this.open();
    this.send({
      cmd: "connect",
      protocolId: "MQTT",
      protocolVersion: this.protocolVersion,
      clean: false,
      clientId,
      keepalive: 60,
      ...(this.protocolVersion === 5 ? { properties: { sessionExpiryInterval: 60 } } : {}),
    });
    const connack = await this.next((p) => p.cmd === "connack", "CONNACK");
    assert.equal(connack.returnCode ?? connack.reasonCode, 0, "accepted");
    return connack;
  }

  /** Drops the socket without a DISCONNECT. */
  drop() {
    this.ws.terminate();
    return this.closed;
  }
}

describe("MQTT sessions that outlive their socket", { timeout: 180_000 }, () => {
  const server = new Server({ configToml: `[client]\nrecovery_window = ${WINDOW_S}\n` });
  const clients = [];
  let service;

  /** A client URL minted by the official SDK; on a cluster, it names node `node` itself. */
  async function mqttUrl(node = 0) {
    const { url } = await service.getClientAccessToken({ userId: "device", roles: DEFAULT_ROLES, clientProtocol: "mqtt" });
    if (!server.nodes) return url;
    const direct = new URL(url);
    direct.port = String(server.nodes[node].port);
    return direct.toString();
  }

  /** Connects with `options`; resolves with the client and its CONNACK. */
  async function connect(options, node = 0) {
    const client = mqtt.connect(await mqttUrl(node), { reconnectPeriod: 0, connectTimeout: STEP_TIMEOUT_MS, ...options });
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

  /** Collects the payloads `client` receives on `topic`, as text. */
  function collect(client, topic) {
    const got = [];
    client.on("message", (t, payload) => {
      if (t === topic) got.push(payload.toString());
    });
    return got;
  }

  /** Whether the service knows the session `id` (Azure: connectionExists checks sessions). */
  const exists = (id) => service.connectionExists(id);

  before(async () => {
    const connectionString = await server.start();
    service = new WebPubSubServiceClient(connectionString, HUB, { allowInsecureConnection: true });
  }, { timeout: STARTUP_TIMEOUT_MS });

  after(async () => {
    for (const client of clients) client.end(true);
    await server.stop();
  }, { timeout: SHUTDOWN_TIMEOUT_MS + 5_000 });

  for (const { name, protocolVersion } of VERSIONS) {
    test(`${name}: a session resumed within the window keeps its subscriptions and the messages sent meanwhile`, async () => {
      const id = clientId("resume");
      const topic = `t${id}`;
      const first = await connect({ clientId: id, ...persistent(protocolVersion) });
      assert.equal(first.connack.sessionPresent, false, "a new session");
      if (protocolVersion === 5) {
        assert.equal(first.connack.properties?.sessionExpiryInterval, WINDOW_S, "the expiry kept is the window");
      }
      await first.client.subscribeAsync(topic, { qos: 1 });
      first.client.stream.destroy();
      await sleep(200);
      assert.equal(await exists(id), true, "the session waits for its client");
      for (const m of ["m1", "m2", "m3"]) {
        await service.group(topic).sendToAll(m, { contentType: "text/plain" });
      }

      const client = mqtt.connect(await mqttUrl(), {
        reconnectPeriod: 0,
        connectTimeout: STEP_TIMEOUT_MS,
        clientId: id,
        ...persistent(protocolVersion),
      });
      clients.push(client);
      const got = collect(client, topic);
      const connack = await withTimeout(new Promise((resolve) => client.once("connect", resolve)), STEP_TIMEOUT_MS, "resume");
      assert.equal(connack.sessionPresent, true, "CONNACK Session Present 1");
      await eventually(() => got.length >= 3, "the messages sent while the client was away");
      assert.deepEqual(got, ["m1", "m2", "m3"]);
      // The subscription is still there: no SUBSCRIBE on this socket.
      await service.group(topic).sendToAll("m4", { contentType: "text/plain" });
      await eventually(() => got.length === 4, "a message after the resume");
      assert.equal(got[3], "m4");
      await client.endAsync();
    });

    test(`${name}: QoS 1 messages written and not acknowledged come again with DUP and their packet id`, async () => {
      const id = clientId("dup");
      const topic = `t${id}`;
      const raw = new RawClient(await mqttUrl(), protocolVersion);
      const connack = await raw.connect(id);
      assert.equal(connack.sessionPresent, false);
      raw.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic, qos: 1 }] });
      await raw.next((p) => p.cmd === "suback", "SUBACK");
      await service.group(topic).sendToAll("owed", { contentType: "text/plain" });
      const firstCopy = await raw.next((p) => p.cmd === "publish", "the first copy");
      assert.equal(firstCopy.qos, 1);
      assert.equal(firstCopy.dup, false);
      await raw.drop(); // without its PUBACK

      const again = new RawClient(await mqttUrl(), protocolVersion);
      assert.equal((await again.connect(id)).sessionPresent, true);
      const secondCopy = await again.next((p) => p.cmd === "publish", "the copy sent again");
      assert.equal(secondCopy.payload.toString(), "owed");
      assert.equal(secondCopy.dup, true, "DUP on a redelivery");
      assert.equal(secondCopy.messageId, firstCopy.messageId, "the same packet id");
      again.send({ cmd: "puback", messageId: secondCopy.messageId });
      await sleep(200);
      await again.drop();

      // Acknowledged: it is not sent a third time.
      const third = new RawClient(await mqttUrl(), protocolVersion);
      assert.equal((await third.connect(id)).sessionPresent, true);
      await service.group(topic).sendToAll("marker", { contentType: "text/plain" });
      const next = await third.next((p) => p.cmd === "publish", "the marker");
      assert.equal(next.payload.toString(), "marker", "nothing before the marker");
      assert.equal(next.dup, false);
      third.send({ cmd: "puback", messageId: next.messageId });
      third.send({ cmd: "disconnect" });
      await third.closed;
    });

    test(`${name}: a second CONNECT of the client id takes the session over and closes the first socket`, async () => {
      const id = clientId("takeover");
      const topic = `t${id}`;
      const old = await connect({ clientId: id, ...persistent(protocolVersion) });
      await old.client.subscribeAsync(topic, { qos: 1 });
      const oldGot = collect(old.client, topic);
      const oldClosed = new Promise((resolve) => old.client.stream.once("close", resolve));
      const oldDisconnect = new Promise((resolve) => old.client.once("disconnect", resolve));

      const { client, connack } = await connect({ clientId: id, ...persistent(protocolVersion) });
      assert.equal(connack.sessionPresent, true, "the session goes on");
      await withTimeout(oldClosed, STEP_TIMEOUT_MS, "the old socket closed");
      if (protocolVersion === 5) {
        const packet = await withTimeout(oldDisconnect, STEP_TIMEOUT_MS, "DISCONNECT to the old socket");
        assert.equal(packet.reasonCode, 0x8e, "Session taken over");
      }
      const got = collect(client, topic);
      await service.group(topic).sendToAll("after", { contentType: "text/plain" });
      await eventually(() => got.length === 1, "the message on the new socket");
      assert.deepEqual(oldGot, []);
      await client.endAsync();
    });

    test(`${name}: the session ends when the window passes, and Clean Start discards it`, async () => {
      const id = clientId("expire");
      const topic = `t${id}`;
      const first = await connect({ clientId: id, ...persistent(protocolVersion) });
      await first.client.subscribeAsync(topic, { qos: 1 });
      first.client.stream.destroy();
      const deadline = Date.now() + (WINDOW_S + 5) * 1000;
      while (await exists(id)) {
        assert.ok(Date.now() < deadline, "the session ended after the window");
        await sleep(250);
      }
      const later = await connect({ clientId: id, ...persistent(protocolVersion) });
      assert.equal(later.connack.sessionPresent, false, "a new session after the window");
      const got = collect(later.client, topic);
      // A new session has no subscription: a group message is not delivered, a message
      // to the connection (on $webpubsub/server/messages) is.
      const marker = new Promise((resolve) =>
        later.client.on("message", (t, payload) => t === "$webpubsub/server/messages" && resolve(payload.toString())),
      );
      await service.group(topic).sendToAll("not subscribed", { contentType: "text/plain" });
      await service.sendToConnection(id, "marker", { contentType: "text/plain" });
      assert.equal(await withTimeout(marker, STEP_TIMEOUT_MS, "the marker"), "marker");
      assert.deepEqual(got, []);
      await later.client.subscribeAsync(topic, { qos: 1 });
      later.client.stream.destroy();
      await sleep(200);

      const clean = await connect({ clientId: id, protocolVersion, clean: true });
      assert.equal(clean.connack.sessionPresent, false, "Clean Start discards the session");
      await clean.client.endAsync();
    });
  }

  for (const { name, protocolVersion } of VERSIONS) {
    test(`${name}: QoS 2 reaches MQTT subscribers with PUBREC/PUBREL/PUBCOMP, and a resumed session completes it`, async () => {
      const id = clientId("qostwo");
      const topic = `t${id}`;
      const { client: publisher } = await connect({ clientId: clientId("pub"), protocolVersion });
      const raw = new RawClient(await mqttUrl(), protocolVersion);
      await raw.connect(id);
      raw.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic, qos: 2 }] });
      assert.deepEqual((await raw.next((p) => p.cmd === "suback", "SUBACK")).granted, [2]);

      // Published at QoS 2: delivered at QoS 2, exactly once through its exchange.
      await publisher.publishAsync(topic, "exactly once", { qos: 2 });
      const first = await raw.next((p) => p.cmd === "publish", "the QoS 2 delivery");
      assert.equal(first.qos, 2);
      assert.equal(first.payload.toString(), "exactly once");
      raw.send({ cmd: "pubrec", messageId: first.messageId });
      const pubrel = await raw.next((p) => p.cmd === "pubrel", "PUBREL");
      assert.equal(pubrel.messageId, first.messageId);
      raw.send({ cmd: "pubcomp", messageId: first.messageId });

      // A REST send stays at QoS 1 (Azure: min(1, granted)); a QoS 1 publish at QoS 1.
      await service.group(topic).sendToAll("from rest", { contentType: "text/plain" });
      const rest = await raw.next((p) => p.cmd === "publish", "the REST message");
      assert.equal(rest.qos, 1);
      raw.send({ cmd: "puback", messageId: rest.messageId });

      // Interrupted after PUBREC: the resumed session sends PUBREL again, not the message.
      await publisher.publishAsync(topic, "received once", { qos: 2 });
      const second = await raw.next((p) => p.cmd === "publish", "the second QoS 2 delivery");
      raw.send({ cmd: "pubrec", messageId: second.messageId });
      await raw.next((p) => p.cmd === "pubrel", "PUBREL");
      // Interrupted before PUBREC: sent again with DUP.
      await publisher.publishAsync(topic, "not received", { qos: 2 });
      const third = await raw.next((p) => p.cmd === "publish", "the third QoS 2 delivery");
      await raw.drop();

      const again = new RawClient(await mqttUrl(), protocolVersion);
      assert.equal((await again.connect(id)).sessionPresent, true);
      const rel = await again.next((p) => p.cmd === "pubrel", "PUBREL sent again");
      assert.equal(rel.messageId, second.messageId);
      const dup = await again.next((p) => p.cmd === "publish", "the unreceived one again");
      assert.equal(dup.payload.toString(), "not received");
      assert.equal(dup.dup, true);
      assert.equal(dup.qos, 2);
      assert.equal(dup.messageId, third.messageId);
      again.send({ cmd: "pubcomp", messageId: rel.messageId });
      again.send({ cmd: "pubrec", messageId: dup.messageId });
      await again.next((p) => p.cmd === "pubrel", "PUBREL of the resent one");
      again.send({ cmd: "pubcomp", messageId: dup.messageId });
      await sleep(200);
      assert.deepEqual(
        again.packets.filter((p) => p.cmd === "publish").map((p) => p.payload.toString()),
        [],
        "nothing else was sent again",
      );
      again.send({ cmd: "disconnect" });
      await again.closed;
      await publisher.endAsync();
    });
  }

  test("MQTT 5.0: messages past their Message Expiry Interval are dropped for a session, the others carry what remains of it", async () => {
    const id = clientId("expiry");
    const topic = `t${id}`;
    const { client: publisher } = await connect({ clientId: clientId("pub"), protocolVersion: 5 });
    const raw = new RawClient(await mqttUrl(), 5);
    await raw.connect(id);
    raw.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic, qos: 1 }] });
    await raw.next((p) => p.cmd === "suback", "SUBACK");

    // In flight (written, not acknowledged) when it expires: not sent again.
    await publisher.publishAsync(topic, "short in flight", { qos: 1, properties: { messageExpiryInterval: 1 } });
    const inflight = await raw.next((p) => p.cmd === "publish", "the first message");
    assert.equal(inflight.properties?.messageExpiryInterval, 1, "the interval goes out with it");
    await raw.drop();
    // Held for the session while its client is away.
    await publisher.publishAsync(topic, "short held", { qos: 1, properties: { messageExpiryInterval: 1 } });
    await publisher.publishAsync(topic, "long held", { qos: 1, properties: { messageExpiryInterval: 60 } });
    await sleep(1_600);

    const again = new RawClient(await mqttUrl(), 5);
    assert.equal((await again.connect(id)).sessionPresent, true);
    const kept = await again.next((p) => p.cmd === "publish", "the message still valid");
    assert.equal(kept.payload.toString(), "long held", "the expired ones are dropped");
    const left = kept.properties?.messageExpiryInterval;
    assert.ok(left >= 57 && left <= 59, `what remains of the interval, not all of it: ${left}`);
    again.send({ cmd: "puback", messageId: kept.messageId });
    await publisher.publishAsync(topic, "marker", { qos: 1 });
    const marker = await again.next((p) => p.cmd === "publish", "the marker");
    assert.equal(marker.payload.toString(), "marker");
    assert.equal(marker.properties?.messageExpiryInterval, undefined, "no interval when none was set");
    again.send({ cmd: "puback", messageId: marker.messageId });
    again.send({ cmd: "disconnect" });
    await again.closed;
    await publisher.endAsync();
  });

  const acrossNodes = "MQTT 5.0: a CONNECT on another node starts a new session and ends the one the first node kept";
  test(acrossNodes, { skip: TOPOLOGY !== "cluster" && "needs several nodes: HUBCAST_TEST_TOPOLOGY=cluster" }, async () => {
    const id = clientId("nodes");
    const topic = `t${id}`;
    const old = await connect({ clientId: id, ...persistent(5) }, 0);
    await old.client.subscribeAsync(topic, { qos: 1 });
    const oldDisconnect = new Promise((resolve) => old.client.once("disconnect", resolve));

    const moved = await connect({ clientId: id, ...persistent(5) }, 1);
    assert.equal(moved.connack.sessionPresent, false, "the session does not move between nodes");
    const packet = await withTimeout(oldDisconnect, STEP_TIMEOUT_MS, "DISCONNECT to the first node's socket");
    assert.equal(packet.reasonCode, 0x8e, "Session taken over");
    const got = collect(moved.client, topic);
    const marker = new Promise((resolve) =>
      moved.client.on("message", (t, payload) => t === "$webpubsub/server/messages" && resolve(payload.toString())),
    );
    await service.sendToConnection(id, "one copy", { contentType: "text/plain" });
    assert.equal(await withTimeout(marker, STEP_TIMEOUT_MS, "a send to the client id"), "one copy");
    assert.deepEqual(got, [], "no subscription came along");

    // A session waiting for its client on node 1 ends as well when the client comes back
    // on node 2.
    moved.client.stream.destroy();
    await sleep(200);
    const third = await connect({ clientId: id, ...persistent(5) }, 2);
    assert.equal(third.connack.sessionPresent, false);
    await sleep(500);
    const back = await connect({ clientId: id, ...persistent(5) }, 1);
    assert.equal(back.connack.sessionPresent, false, "node 1 ended the session it kept");
    await back.client.endAsync();
  });
});
