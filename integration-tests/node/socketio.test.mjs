// The stock `socket.io-client` against Hubcast's Socket.IO edge in serverless mode, as against
// Azure's Web PubSub for Socket.IO: tokens from `@azure/web-pubsub` (`clientProtocol:
// "socketio"`), a plain HTTP event handler as the serverless backend (CloudEvents with
// `ce-namespace` / `ce-socketId`, acks by answering with an Engine.IO payload), and REST sends
// of `text/plain` Engine.IO payloads to the groups Azure names `0~b64(ns)~b64(room)`.
//
// Run through `scripts/test`, or by hand after `cargo build -p hubcast-server`:
//   cd integration-tests/node && npm ci && node --test socketio.test.mjs

import assert from "node:assert/strict";
import http from "node:http";
import { after, before, describe, test } from "node:test";

import { WebPubSubServiceClient } from "@azure/web-pubsub";
import { io } from "socket.io-client";

import { STEP_TIMEOUT_MS, Server, TOPOLOGY, eventually, topologyOptions, withTimeout } from "./support/hubcast.mjs";

/** Long-polling works through the test balancer too, which has no session affinity. */
const POLLING = ["polling"];

const HUB = "sio";

/** base64url without padding, as Azure names namespace and room groups. */
const b64 = (s) => Buffer.from(s).toString("base64url");
const roomGroup = (ns, room) => `0~${b64(ns)}~${b64(room)}`;

/** The serverless backend: records every CloudEvent and answers as Azure's docs show. */
class Backend {
  constructor() {
    this.events = [];
    this.waiters = [];
    this.refuseNamespaces = new Set();
    this.server = http.createServer((req, res) => this.handle(req, res));
  }
  async start() {
    await new Promise((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    return this.server.address().port;
  }
  stop() {
    this.server.closeAllConnections?.();
    return new Promise((resolve) => this.server.close(resolve));
  }
  wait(predicate, what) {
    const found = this.events.find(predicate);
    if (found) return Promise.resolve(found);
    return withTimeout(new Promise((resolve) => this.waiters.push({ predicate, resolve })), STEP_TIMEOUT_MS, what);
  }
  handle(req, res) {
    if (req.method === "OPTIONS") {
      res.writeHead(200, { "WebHook-Allowed-Origin": "*" });
      res.end();
      return;
    }
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const event = {
        type: req.headers["ce-type"],
        eventName: req.headers["ce-eventname"],
        namespace: req.headers["ce-namespace"],
        socketId: req.headers["ce-socketid"],
        connectionId: req.headers["ce-connectionid"],
        userId: req.headers["ce-userid"],
        contentType: req.headers["content-type"],
        body: Buffer.concat(chunks).toString("utf8"),
      };
      this.events.push(event);
      this.waiters = this.waiters.filter((w) => !(w.predicate(event) && (w.resolve(event), true)));
      if (event.type === "azure.webpubsub.sys.connect") {
        if (this.refuseNamespaces.has(event.namespace)) {
          res.writeHead(403);
          res.end("not this namespace");
          return;
        }
        res.writeHead(200);
        res.end();
        return;
      }
      if (event.type === "azure.webpubsub.user.message") {
        // `42/ns,13["echo",...]` → ack `43/ns,13[...]` with the arguments, as is.
        const match = /^4[25](\d+-)?(\/[^,]*,)?(\d+)?(\[.*)$/s.exec(event.body.split("\x1e")[0]);
        if (match && match[3] !== undefined) {
          const args = JSON.parse(match[4]).slice(1);
          const ack = `4${match[1] ? "6" + match[1] : "3"}${match[2] ?? ""}${match[3]}${JSON.stringify(args)}`;
          const attachments = event.body.split("\x1e").slice(1);
          res.writeHead(200, { "Content-Type": "text/plain" });
          res.end([ack, ...attachments].join("\x1e"));
          return;
        }
      }
      res.writeHead(204);
      res.end();
    });
  }
}

describe("socket.io-client against the Socket.IO edge (serverless)", { timeout: 120_000 }, () => {
  const backend = new Backend();
  let hubcast;
  let service;
  let baseUrl;
  const sockets = [];

  before(async () => {
    const port = await backend.start();
    hubcast = new Server({
      configToml: `
[socketio]
ping_interval = 1
ping_timeout = 1

[hubs.${HUB}]
event_handlers = [{ url_template = "http://127.0.0.1:${port}/eventhandler", user_event_pattern = "*", system_events = ["connect", "connected", "disconnected"] }]
`,
    });
    const connectionString = await hubcast.start();
    service = new WebPubSubServiceClient(connectionString, HUB, { allowInsecureConnection: true });
    baseUrl = `http://127.0.0.1:${hubcast.port}`;
  });

  after(async () => {
    for (const s of sockets) s.disconnect();
    await hubcast?.stop();
    await backend.stop();
  });

  /** A connected socket of namespace `ns` over `transports`, with a token for `userId`. */
  async function connect({ ns = "/", transports = ["websocket"], userId = "alice", upgrade = true } = {}) {
    const { token, baseUrl: tokenUrl } = await service.getClientAccessToken({ clientProtocol: "socketio", userId });
    assert.match(tokenUrl, new RegExp(`/clients/socketio/hubs/${HUB}$`));
    const socket = io(`${baseUrl}${ns}`, {
      path: `/clients/socketio/hubs/${HUB}`,
      query: { access_token: token },
      transports,
      upgrade,
      reconnection: false,
    });
    sockets.push(socket);
    // How the upgrade from long-polling ends: "websocket", or the refusal of the probe.
    socket.upgradeOutcome = new Promise((resolve) => {
      socket.io.engine.once("upgrade", () => resolve("websocket"));
      socket.io.engine.once("upgradeError", (e) => resolve(`refused: ${e.message}`));
    });
    await withTimeout(
      new Promise((resolve, reject) => {
        socket.once("connect", resolve);
        socket.once("connect_error", reject);
      }),
      STEP_TIMEOUT_MS,
      `socket.io connect over ${transports}`,
    );
    return socket;
  }

  for (const [name, options] of [
    ["socket.io WebSocket only", { transports: ["websocket"] }],
    ["socket.io long-polling only", { transports: ["polling"] }],
    ["socket.io long-polling upgraded to WebSocket", { transports: ["polling", "websocket"] }],
  ]) {
    const title = `${name}: emitWithAck reaches the handler and its answer is the ack`;
    test(title, topologyOptions(title), async () => {
      const socket = await connect(options);
      const connectEvent = await backend.wait(
        (e) => e.type === "azure.webpubsub.sys.connect" && e.socketId === socket.id,
        "the connect event of the socket",
      );
      assert.equal(connectEvent.namespace, "/");
      assert.equal(connectEvent.userId, "alice");
      assert.equal(connectEvent.connectionId, socket.io.engine.id, "the connection id is the Engine.IO sid");
      const reply = await withTimeout(socket.emitWithAck("echo", "hello", { n: 1 }), STEP_TIMEOUT_MS, "the ack");
      assert.deepEqual(reply, "hello");
      const event = await backend.wait(
        (e) => e.type === "azure.webpubsub.user.message" && e.socketId === socket.id,
        "the user event",
      );
      assert.equal(event.eventName, "echo");
      assert.match(event.contentType, /^text\/plain/);
      assert.match(event.body, /^42\d+\["echo","hello",\{"n":1\}\]$/);
      if (options.transports.length === 2) {
        // Across nodes the balancer may send the WebSocket to another node than the
        // session's: that node serves it by relaying (socketio_cluster.test.mjs shows it).
        const outcome = await withTimeout(socket.upgradeOutcome, STEP_TIMEOUT_MS, "the end of the upgrade");
        assert.equal(outcome, "websocket");
        assert.equal(socket.io.engine.transport.name, "websocket");
        // Still served after the upgrade.
        assert.equal(await socket.emitWithAck("echo", "again"), "again");
      }
      // Heartbeats (every second here) keep the connection open.
      await new Promise((r) => setTimeout(r, 2500));
      assert.ok(socket.connected, "pings are answered at the edge");
      const socketId = socket.id;
      socket.disconnect();
      const gone = await backend.wait(
        (e) => e.type === "azure.webpubsub.sys.disconnected" && e.socketId === socketId,
        "the disconnected event",
      );
      assert.deepEqual(JSON.parse(gone.body), { reason: "" }, "a normal close has an empty reason");
      assert.equal(backend.events.filter((e) => e.type === "azure.webpubsub.sys.connected" && e.socketId === socketId).length, 1);
    });
  }

  test("REST sends of Engine.IO payloads reach namespaces, rooms and sockets; filters exclude", async () => {
    const a = await connect({ ns: "/chat" });
    const b = await connect({ ns: "/chat", userId: "bob", transports: POLLING });
    const other = await connect({ ns: "/" });
    const received = { a: [], b: [], other: [] };
    a.on("news", (...args) => received.a.push(args));
    b.on("news", (...args) => received.b.push(args));
    other.on("news", (...args) => received.other.push(args));
    // The whole namespace.
    await service.group("0~L2NoYXQ~").sendToAll('42/chat,["news","all"]', { contentType: "text/plain" });
    await eventually(() => received.a.length === 1 && received.b.length === 1, "both /chat sockets get the namespace send");
    assert.deepEqual(received.a[0], ["all"]);
    // One socket: its own room.
    await service.group(roomGroup("/chat", a.id)).sendToAll('42/chat,["news","just a"]', { contentType: "text/plain" });
    await eventually(() => received.a.length === 2, "a gets the send to its room");
    assert.deepEqual(received.a[1], ["just a"]);
    // A room joined through REST, then a filtered broadcast that leaves b's socket out.
    await service.addConnectionsToGroups([roomGroup("/chat", "rm")], `connectionId eq '${a.io.engine.id}' or connectionId eq '${b.io.engine.id}'`);
    await service.sendToAll('42/chat,["news","room"]', {
      contentType: "text/plain",
      filter: `'${roomGroup("/chat", "rm")}' in groups and not ('${roomGroup("/chat", b.id)}' in groups)`,
    });
    await eventually(() => received.a.length === 3, "a gets the filtered room send");
    assert.deepEqual(received.a[2], ["room"]);
    // A payload that is not Engine.IO is not delivered (it would break the client).
    await service.group("0~L2NoYXQ~").sendToAll("not an engine.io payload", { contentType: "text/plain" });
    await service.group("0~L2NoYXQ~").sendToAll('42/chat,["news","after"]', { contentType: "text/plain" });
    await eventually(() => received.b.length === 2, "b gets the last send");
    assert.deepEqual(received.b, [["all"], ["after"]], "b: not a's room, not the filtered send, not the bad payload");
    assert.equal(received.other.length, 0, "the / namespace got nothing");
    assert.ok(a.connected && b.connected, "the connections survived");
  });

  test("a refused namespace gets connect_error; the connection's other namespaces go on", async () => {
    backend.refuseNamespaces.add("/private");
    const root = await connect({ ns: "/" });
    const manager = root.io;
    const priv = manager.socket("/private");
    const error = await withTimeout(new Promise((resolve) => priv.once("connect_error", resolve)), STEP_TIMEOUT_MS, "connect_error");
    priv.connect();
    assert.match(String(error.message), /rejected by the event handler \(HTTP 403\)/);
    assert.equal(await root.emitWithAck("echo", "still"), "still");
  });

  test("binary attachments reach the handler and come back in the ack", async () => {
    const socket = await connect({ transports: POLLING });
    const reply = await withTimeout(socket.emitWithAck("echo", Buffer.from([1, 2, 3])), STEP_TIMEOUT_MS, "the binary ack");
    assert.deepEqual([...reply], [1, 2, 3]);
    const ws = await connect({ transports: ["websocket"] });
    const back = await withTimeout(ws.emitWithAck("echo", Buffer.from([4, 5])), STEP_TIMEOUT_MS, "the binary ack");
    assert.deepEqual([...back], [4, 5]);
    const event = await backend.wait((e) => e.socketId === ws.id && e.type === "azure.webpubsub.user.message", "the binary event");
    assert.match(event.body, /^451-\d+\["echo",\{"_placeholder":true,"num":0\}\]\x1ebBAU=$/);
  });

  test("closeConnection ends the session and the client reconnects by itself", async () => {
    const { token } = await service.getClientAccessToken({ clientProtocol: "socketio", userId: "carol" });
    const socket = io(baseUrl, {
      path: `/clients/socketio/hubs/${HUB}`,
      query: { access_token: token },
      transports: ["websocket"],
      reconnectionDelay: 100,
    });
    sockets.push(socket);
    await withTimeout(new Promise((r) => socket.once("connect", r)), STEP_TIMEOUT_MS, "first connect");
    const first = socket.io.engine.id;
    await service.closeConnection(first, { reason: "bye" });
    await withTimeout(new Promise((r) => socket.io.once("reconnect", r)), STEP_TIMEOUT_MS, "the reconnect");
    await eventually(() => socket.connected, "connected again");
    assert.notEqual(socket.io.engine.id, first, "a new Engine.IO session");
    assert.equal(await socket.emitWithAck("echo", "back"), "back");
    socket.disconnect();
  });

  for (const transports of [["polling"], ["websocket"], ["polling", "websocket"]]) {
    test(`a token in the auth payload (auth: { token }) over ${transports} is accepted like one in the query`, async () => {
      const { token } = await service.getClientAccessToken({ clientProtocol: "socketio", userId: "dave" });
      const socket = io(`${baseUrl}/chat`, { path: `/clients/socketio/hubs/${HUB}`, auth: { token }, transports, reconnection: false });
      sockets.push(socket);
      await withTimeout(
        new Promise((resolve, reject) => {
          socket.once("connect", resolve);
          socket.once("connect_error", reject);
        }),
        STEP_TIMEOUT_MS,
        "connect with auth: { token }",
      );
      const connectEvent = await backend.wait(
        (e) => e.type === "azure.webpubsub.sys.connect" && e.socketId === socket.id,
        "the connect event of the socket",
      );
      assert.equal(connectEvent.userId, "dave", "the user of the token in the auth payload");
      assert.equal(connectEvent.namespace, "/chat");
      assert.equal(await withTimeout(socket.emitWithAck("echo", "authed"), STEP_TIMEOUT_MS, "the ack"), "authed");
      // The connection's next namespace needs no token again.
      const root = socket.io.socket("/");
      await withTimeout(new Promise((r) => root.once("connect", r)), STEP_TIMEOUT_MS, "a second namespace");
      socket.disconnect();
      root.disconnect();
    });
  }

  test("without a token, or with a token for /client (query or auth payload), the client is refused", async () => {
    // No token anywhere: the handshake waits for the auth payload, which has none.
    const open = await fetch(`${baseUrl}/clients/socketio/hubs/${HUB}/?EIO=4&transport=polling`);
    assert.equal(open.status, 200);
    const { sid } = JSON.parse((await open.text()).slice(1));
    const session = `${baseUrl}/clients/socketio/hubs/${HUB}/?EIO=4&transport=polling&sid=${sid}`;
    assert.equal(await (await fetch(session, { method: "POST", body: "40" })).text(), "ok");
    const refusal = await (await fetch(session)).text();
    const [connectError, close] = refusal.split("\x1e");
    assert.match(connectError, /^44\{"message":"missing access token/);
    assert.equal(close, "1", "then the session closes");
    const wrong = await service.getClientAccessToken({ userId: "x" });
    const res = await fetch(`${baseUrl}/clients/socketio/hubs/${HUB}/?EIO=4&transport=polling&access_token=${wrong.token}`);
    assert.equal(res.status, 401);
    assert.match(await res.text(), /audience/);
    // The stock client with the wrong token in its auth payload hears why in its connect_error.
    for (const transports of [["polling"], ["websocket"]]) {
      const socket = io(baseUrl, { path: `/clients/socketio/hubs/${HUB}`, auth: { token: wrong.token }, transports, reconnection: false });
      sockets.push(socket);
      const error = await withTimeout(new Promise((r) => socket.once("connect_error", r)), STEP_TIMEOUT_MS, "connect_error");
      assert.match(error.message, /audience/, `${transports}`);
      socket.disconnect();
    }
  });
});
