// Azure's tunnel (`/server/tunnel?hub=…`): a backend dials in over WebSocket, takes its hub's
// CloudEvents as HttpRequest frames (event handlers `tunnel:///<path>`) and sends REST calls
// back as HttpRequest frames. The tunnel client here is written from the wire spec
// (../shared/spec part 2 §2.4a: uint32 LE length + msgpack [Type, json, Content]) with
// @msgpack/msgpack, the codec Azure's own tunnel package uses; behind it, as Azure's tunnel
// tool does, the official `@azure/web-pubsub-express` handler in an express app answers the
// events. Clients are the official `@azure/web-pubsub-client`.
//
// With HUBCAST_TEST_TOPOLOGY=cluster the server is three nodes behind a round-robin balancer:
// tunnels and clients land on different nodes, and a tunnel serves the events raised on every
// node (README, The tunnel).
//
// Run through `scripts/test`, or by hand after `cargo build -p hubcast-server`:
//   cd integration-tests/node && npm ci && node --test tunnel.test.mjs

import assert from "node:assert/strict";
import { createHmac, randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";

import { decode, encode } from "@msgpack/msgpack";
import { WebPubSubClient, WebPubSubJsonProtocol } from "@azure/web-pubsub-client";
import { WebPubSubEventHandler } from "@azure/web-pubsub-express";
import express from "express";
import WebSocket from "ws";

import { SHUTDOWN_TIMEOUT_MS, STARTUP_TIMEOUT_MS, STEP_TIMEOUT_MS, Server, TOPOLOGY, topologyOptions, nextEvent, withTimeout } from "./support/hubcast.mjs";

const HUB = "chat";
const OTHER = "other";
const LONELY = "lonely";
const Type = { HttpRequest: 1, HttpResponse: 2, ServiceStatus: 5, ConnectionClose: 7, ConnectionConnected: 10 };

const b64url = (value) => Buffer.from(value).toString("base64url");

/** An HS256 service token for `aud`, signed with `key`, as Azure's package mints it. */
function serviceToken(key, aud) {
  const now = Math.floor(Date.now() / 1000);
  const head = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const body = b64url(JSON.stringify({ iat: now, exp: now + 3600, aud, sub: randomUUID() }));
  const signature = createHmac("sha256", key).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${signature}`;
}

/** One tunnel frame: uint32 LE length + msgpack [Type, json (with Type), Content]. */
function frame(type, fields, content) {
  const packed = encode([type, JSON.stringify({ ...fields, Type: type }), content ?? null]);
  const out = Buffer.alloc(4 + packed.length);
  out.writeUInt32LE(packed.length, 0);
  Buffer.from(packed).copy(out, 4);
  return out;
}

function parseFrame(data) {
  const length = data.readUInt32LE(0);
  const [type, json, content] = decode(data.subarray(4, 4 + length));
  return { type, fields: JSON.parse(json), content: content ? Buffer.from(content) : Buffer.alloc(0) };
}

/** A backend's tunnel, written from the spec. */
class TunnelClient {
  constructor(hubcast, hub, { onRequest, token, wsOptions } = {}) {
    this.wsOptions = wsOptions;
    this.url = `ws://127.0.0.1:${hubcast.port}/server/tunnel?hub=${hub}`;
    this.token = token ?? serviceToken(hubcast.accessKey, this.url);
    this.onRequest = onRequest;
    this.frames = [];
    this.requests = 0;
    this.nextAck = 1;
    this.pending = new Map();
    this.waiters = [];
  }

  /** Opens the tunnel; resolves with the ConnectionConnected fields. */
  open() {
    this.ws = new WebSocket(`${this.url}&access_token=${this.token}`, this.wsOptions);
    this.closed = new Promise((resolve) => this.ws.on("close", (code, reason) => resolve({ code, reason: reason.toString() })));
    this.ws.on("message", (data, isBinary) => {
      assert.ok(isBinary, "tunnel frames are binary");
      const f = parseFrame(data);
      this.frames.push(f);
      this.waiters = this.waiters.filter((w) => !(w.predicate(f) && (w.resolve(f), true)));
      if (f.type === Type.HttpResponse) this.onResponse(f);
      if (f.type === Type.HttpRequest) this.serve(f);
    });
    return withTimeout(
      new Promise((resolve, reject) => {
        this.ws.on("unexpected-response", (_req, res) => {
          let body = "";
          res.on("data", (c) => (body += c));
          res.on("end", () => reject(Object.assign(new Error(`HTTP ${res.statusCode}: ${body}`), { status: res.statusCode, body })));
        });
        this.ws.on("error", reject);
        this.next((f) => f.type === Type.ConnectionConnected, "ConnectionConnected").then((f) => resolve(f.fields), reject);
      }),
      STEP_TIMEOUT_MS,
      "tunnel open",
    );
  }

  next(predicate, what, ms = STEP_TIMEOUT_MS) {
    const found = this.frames.find(predicate);
    if (found) return Promise.resolve(found);
    return withTimeout(new Promise((resolve) => this.waiters.push({ predicate, resolve })), ms, what);
  }

  async serve(f) {
    this.requests += 1;
    const answer = await this.onRequest(f);
    if (answer === undefined) return;
    const { status, headers, body } = answer;
    this.ws.send(
      frame(
        Type.HttpResponse,
        { AckId: f.fields.AckId, LocalRouting: f.fields.LocalRouting, StatusCode: status, ChannelName: f.fields.ChannelName, NotCompleted: false, Headers: headers },
        body?.length ? body : null,
      ),
    );
  }

  /** A REST call over the tunnel, as the package makes them; resolves with the whole answer. */
  call(method, url, { contentType, body } = {}) {
    const AckId = this.nextAck++;
    const headers = contentType ? { "Content-Type": [contentType] } : {};
    const done = new Promise((resolve) => this.pending.set(AckId, { resolve, parts: [] }));
    this.ws.send(frame(Type.HttpRequest, { AckId, LocalRouting: true, ChannelName: "", HttpMethod: method, Url: url, Headers: headers }, body ? Buffer.from(body) : null));
    return withTimeout(done, STEP_TIMEOUT_MS, `${method} ${url}`);
  }

  onResponse(f) {
    const entry = this.pending.get(f.fields.AckId);
    if (!entry) return;
    entry.parts.push(f.content);
    if (!f.fields.NotCompleted) {
      this.pending.delete(f.fields.AckId);
      entry.resolve({ status: f.fields.StatusCode, headers: f.fields.Headers, body: Buffer.concat(entry.parts).toString() });
    }
  }

  sendRaw(data, options) {
    this.ws.send(data, options);
  }

  close() {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.close(1000);
  }
}

/** Forwards a tunnel request to a local HTTP server, as Azure's tunnel tool does. */
function forwardTo(port) {
  return async (f) => {
    const url = new URL(f.fields.Url);
    const headers = {};
    for (const [name, values] of Object.entries(f.fields.Headers ?? {})) {
      if (!["host", "content-length"].includes(name.toLowerCase())) headers[name] = values.join(", ");
    }
    const res = await fetch(`http://127.0.0.1:${port}${url.pathname}${url.search}`, {
      method: f.fields.HttpMethod,
      headers,
      body: f.content.length ? f.content : undefined,
    });
    const out = {};
    res.headers.forEach((value, name) => (out[name] = [value]));
    return { status: res.status, headers: out, body: Buffer.from(await res.arrayBuffer()) };
  };
}

describe("the tunnel: tunnel:/// event handlers and REST over /server/tunnel", { timeout: 120_000, ...topologyOptions("the tunnel: tunnel:/// event handlers and REST over /server/tunnel") }, () => {
  let hubcast;
  let httpServer;
  let port;
  const tunnels = [];
  const clients = [];
  const seen = [];

  const handler = new WebPubSubEventHandler(HUB, {
    path: "/eventhandler",
    handleConnect(req, res) {
      seen.push(["connect", req.context.connectionId]);
      if (req.context.userId === "mallory") {
        res.fail(401, "mallory may not connect");
        return;
      }
      res.success({ userId: `tunneled-${req.context.userId}`, groups: ["lobby"] });
    },
    handleUserEvent(req, res) {
      seen.push(["user", req.context.eventName]);
      res.success(JSON.stringify({ echo: req.data, event: req.context.eventName }), "json");
    },
    onConnected(req) {
      seen.push(["connected", req.context.connectionId]);
    },
  });

  // The other hub's backend: accepts everyone.
  const otherHandler = new WebPubSubEventHandler(OTHER, {
    path: "/eventhandler",
    handleConnect(_req, res) {
      res.success();
    },
  });

  function newClient(url) {
    const client = new WebPubSubClient(url, {
      protocol: WebPubSubJsonProtocol(),
      autoReconnect: false,
      messageRetryOptions: { maxRetries: 0 },
      keepAliveIntervalInMs: 0,
      keepAliveTimeoutInMs: 0,
    });
    clients.push(client);
    return client;
  }

  function newTunnel(hub, options = {}) {
    const tunnel = new TunnelClient(hubcast, hub, { onRequest: forwardTo(port), ...options });
    tunnels.push(tunnel);
    return tunnel;
  }

  const handlerToml = (hub) =>
    [`[hubs.${hub}]`, `[[hubs.${hub}.event_handlers]]`, `url_template = "tunnel:///eventhandler"`, `user_event_pattern = "*"`, `system_events = ["connect", "connected", "disconnected"]`, ""].join("\n");

  before(async () => {
    const app = express();
    app.use(handler.getMiddleware());
    app.use(otherHandler.getMiddleware());
    httpServer = await new Promise((resolve) => {
      const s = app.listen(0, "127.0.0.1", () => resolve(s));
    });
    port = httpServer.address().port;
    hubcast = new Server({
      configToml: ["[client]", "keepalive_interval = 1", "[limits]", "idle_timeout = 3", "[upstream]", "timeout = 2", handlerToml(HUB), handlerToml(OTHER), handlerToml(LONELY)].join("\n"),
    });
    await hubcast.start();
  }, { timeout: STARTUP_TIMEOUT_MS + STEP_TIMEOUT_MS });

  after(async () => {
    for (const client of clients) {
      try {
        client.stop();
      } catch {
        // Already stopped.
      }
    }
    for (const t of tunnels) t.close();
    await hubcast?.stop();
    await new Promise((resolve) => httpServer?.close(resolve) ?? resolve());
  }, { timeout: SHUTDOWN_TIMEOUT_MS + 5_000 });

  test("a tunnel is greeted with ConnectionConnected (Type in its JSON), then kept alive with ServiceStatus", async () => {
    const tunnel = newTunnel(HUB);
    const connected = await tunnel.open();
    assert.equal(tunnel.frames[0].type, Type.ConnectionConnected, "ConnectionConnected comes first");
    assert.equal(connected.Type, Type.ConnectionConnected, "the JSON repeats the Type");
    assert.ok(connected.ConnectionId, "it names the tunnel connection");
    const status = await tunnel.next((f) => f.type === Type.ServiceStatus, "a ServiceStatus keep-alive", 5_000);
    assert.equal(status.fields.Type, Type.ServiceStatus);
    tunnel.close();
  });

  test("a token with the wrong key or audience is refused with 401", async () => {
    const wrongKey = newTunnel(HUB, { token: serviceToken("x".repeat(44), `ws://127.0.0.1:${hubcast.port}/server/tunnel?hub=${HUB}`) });
    await assert.rejects(wrongKey.open(), (e) => e.status === 401);
    const wrongAud = newTunnel(HUB, { token: serviceToken(hubcast.accessKey, `ws://127.0.0.1:${hubcast.port}/api/hubs/${HUB}`) });
    await assert.rejects(wrongAud.open(), (e) => e.status === 401 && /audience/i.test(e.body));
    const noHub = new TunnelClient(hubcast, "");
    noHub.url = `ws://127.0.0.1:${hubcast.port}/server/tunnel?x=1`;
    await assert.rejects(noHub.open(), (e) => e.status === 400);
  });

  test("tunnel:/// handler: connect, connected and user events go through the tunnel to the express handler", async () => {
    const tunnel = newTunnel(HUB);
    await tunnel.open();
    const alice = newClient(await hubcast.clientUrl(HUB, "alice", []));
    const connected = nextEvent(alice, "connected", () => true, "alice connected");
    await withTimeout(alice.start(), STEP_TIMEOUT_MS, "alice start()");
    const { userId, connectionId } = await connected;
    assert.equal(userId, "tunneled-alice", "the userId set by handleConnect over the tunnel");
    // sendEvent with fireAndForget=false: the handler's reply comes back as a serverData message.
    const reply = nextEvent(alice, "server-message", (e) => e.message.data?.event === "ping", "the handler's reply");
    await withTimeout(alice.sendEvent("ping", { n: 1 }, "json"), STEP_TIMEOUT_MS, "sendEvent");
    const message = await reply;
    assert.deepEqual(message.message.data, { echo: { n: 1 }, event: "ping" });
    assert.ok(seen.some(([k, id]) => k === "connected" && id === connectionId), "onConnected ran");
    assert.ok(tunnel.requests >= 3, `connect, connected and the user event came over the tunnel (${tunnel.requests})`);
    alice.stop();
    tunnel.close();
    await tunnel.closed;
  });

  test("a refusal over the tunnel refuses the connection", async () => {
    const tunnel = newTunnel(HUB);
    await tunnel.open();
    const mallory = newClient(await hubcast.clientUrl(HUB, "mallory", []));
    await assert.rejects(withTimeout(mallory.start(), STEP_TIMEOUT_MS, "mallory start()"));
    tunnel.close();
    await tunnel.closed;
  });

  test("with no tunnel connected for the hub, connect fails as with an unreachable webhook", async () => {
    const bob = newClient(await hubcast.clientUrl(LONELY, "bob", []));
    await assert.rejects(withTimeout(bob.start(), STEP_TIMEOUT_MS, "bob start()"));
  });

  test("a tunnel that does not answer in time: the connect times out, the tunnel stays", async () => {
    const slow = newTunnel(LONELY, { onRequest: () => undefined });
    await slow.open();
    const started = Date.now();
    const carol = newClient(await hubcast.clientUrl(LONELY, "carol", []));
    await assert.rejects(withTimeout(carol.start(), STEP_TIMEOUT_MS, "carol start()"));
    assert.ok(Date.now() - started >= 1_500, "refused after the upstream timeout (2 s)");
    assert.ok(slow.requests >= 1, "the connect event reached the tunnel");
    assert.equal(slow.ws.readyState, WebSocket.OPEN, "the slow tunnel stays open");
    slow.close();
  });

  test("a tunnel that drops with a request pending fails it at once, before the upstream timeout", async () => {
    const dying = newTunnel(LONELY, { onRequest: () => undefined });
    await dying.open();
    const started = Date.now();
    const nora = newClient(await hubcast.clientUrl(LONELY, "nora", []));
    const refused = assert.rejects(withTimeout(nora.start(), STEP_TIMEOUT_MS, "nora start()"));
    await dying.next((f) => f.type === Type.HttpRequest, "the connect event reaches the tunnel");
    dying.ws.terminate();
    await refused;
    assert.ok(Date.now() - started < 1_500, `refused when the tunnel dropped, not at the upstream timeout of 2 s (${Date.now() - started} ms)`);
  });

  test("a dead tunnel (no frame, no pong) is closed after limits.idle_timeout; a live one stays", async () => {
    const dead = newTunnel(OTHER, { wsOptions: { autoPong: false } });
    const live = newTunnel(OTHER);
    await dead.open();
    await live.open();
    const closed = await withTimeout(dead.closed, STEP_TIMEOUT_MS, "the dead tunnel is closed");
    assert.equal(closed.code, 1001, closed.reason);
    assert.match(closed.reason, /idle_timeout/);
    assert.equal(live.ws.readyState, WebSocket.OPEN, "the tunnel that answers pings stays");
    live.close();
    await live.closed;
  });

  test("several tunnels of a hub share its events", async () => {
    const a = newTunnel(HUB);
    const b = newTunnel(HUB);
    await a.open();
    await b.open();
    for (let i = 0; i < 6; i++) {
      const c = newClient(await hubcast.clientUrl(HUB, `user${i}`, []));
      await withTimeout(c.start(), STEP_TIMEOUT_MS, `user${i} start()`);
      c.stop();
    }
    assert.ok(a.requests > 0 && b.requests > 0, `both tunnels took events (${a.requests}, ${b.requests})`);
    a.close();
    b.close();
    await Promise.all([a.closed, b.closed]);
  });

  test("REST over the tunnel: sends, groups and existence checks, for the tunnel's own hub only", async () => {
    const tunnel = newTunnel(HUB);
    await tunnel.open();
    const dave = newClient(await hubcast.clientUrl(HUB, "dave", []));
    const connected = nextEvent(dave, "connected", () => true, "dave connected");
    await withTimeout(dave.start(), STEP_TIMEOUT_MS, "dave start()");
    const { connectionId } = await connected;
    const base = `https://example.invalid/api/hubs/${HUB}`;

    const received = nextEvent(dave, "server-message", (e) => e.message.data === "over the tunnel", "dave receives the REST send");
    const sent = await tunnel.call("POST", `${base}/connections/${connectionId}/:send?api-version=2023-07-01`, { contentType: "text/plain", body: "over the tunnel" });
    assert.equal(sent.status, 202, sent.body);
    await received;

    const added = await tunnel.call("POST", `${base}/:addToGroups?api-version=2023-07-01`, {
      contentType: "application/json",
      body: JSON.stringify({ groups: ["room1"], filter: `connectionId eq '${connectionId}'` }),
    });
    assert.equal(added.status, 200, added.body);
    const exists = await tunnel.call("HEAD", `${base}/groups/room1/connections/${connectionId}?api-version=2023-07-01`);
    assert.notEqual(exists.status, 401, "no Authorization is needed over the tunnel");
    const inGroup = nextEvent(dave, "group-message", (e) => e.message.group === "room1", "dave receives the group send");
    const toGroup = await tunnel.call("POST", `${base}/groups/room1/:send?api-version=2023-07-01`, { contentType: "text/plain", body: "to room1" });
    assert.equal(toGroup.status, 202, toGroup.body);
    await inGroup;
    const left = await tunnel.call("DELETE", `${base}/groups/room1/connections/${connectionId}?api-version=2023-07-01`);
    assert.ok([200, 204].includes(left.status), `leave: ${left.status} ${left.body}`);

    const notAnEvent = await tunnel.call("POST", `${base}/:invoke?api-version=2023-07-01`, { contentType: "text/plain", body: "41" });
    assert.equal(notAnEvent.status, 400, "an :invoke body must be a Socket.IO event packet");
    assert.match(notAnEvent.body, /one Socket.IO event packet/);
    const nobody = await tunnel.call("POST", `${base}/:invoke?api-version=2023-07-01&filter=${encodeURIComponent("'nobody' in groups")}`, { contentType: "text/plain", body: '42["survey"]' });
    assert.deepEqual([nobody.status, nobody.body], [200, ""], "an :invoke that reaches nobody ends at once, empty");
    const bad = await tunnel.call("POST", `${base}/:nope?api-version=2023-07-01`);
    assert.equal(bad.status, 404, "an unknown REST route answers 404 over the tunnel");
    const otherHub = await tunnel.call("POST", `https://example.invalid/api/hubs/${OTHER}/:send?api-version=2023-07-01`, { contentType: "text/plain", body: "x" });
    assert.equal(otherHub.status, 403, "a tunnel may only call its own hub");
    assert.match(otherHub.body, /only call/);
    dave.stop();
    tunnel.close();
  });

  for (const [name, send, code, reason] of [
    ["a frame that is not msgpack", (t) => t.sendRaw(Buffer.from([3, 0, 0, 0, 0xc1, 0xc1, 0xc1]), { binary: true }), 1007, /bad tunnel frame/],
    ["a frame whose length prefix lies", (t) => t.sendRaw(Buffer.from([9, 0, 0, 0, 0x90]), { binary: true }), 1007, /length prefix/],
    ["an unknown frame type", (t) => t.sendRaw(frame(3, {}, null), { binary: true }), 1007, /unknown frame type 3/],
    ["a frame type only the service sends", (t) => t.sendRaw(frame(Type.ConnectionClose, { Message: "bye" }, null), { binary: true }), 1008, /sent by the service/],
    ["a text message", (t) => t.sendRaw("hello", { binary: false }), 1003, /binary/],
    ["an oversized frame", (t) => t.sendRaw(Buffer.alloc(1024 * 1024 + 100), { binary: true }), 1009, /too large/],
  ]) {
    test(`bad input: ${name} closes that tunnel with ${code} and a reason; another hub's tunnel is unaffected`, async () => {
      const other = newTunnel(OTHER);
      await other.open();
      const tunnel = newTunnel(HUB);
      await tunnel.open();
      send(tunnel);
      const closed = await withTimeout(tunnel.closed, STEP_TIMEOUT_MS, "the bad tunnel closes");
      assert.equal(closed.code, code, closed.reason);
      assert.match(closed.reason, reason);
      // The other hub's tunnel still serves its hub.
      const erin = newClient(await hubcast.clientUrl(OTHER, "erin", []));
      await withTimeout(erin.start(), STEP_TIMEOUT_MS, "erin start() through the other tunnel");
      assert.equal(other.ws.readyState, WebSocket.OPEN);
      erin.stop();
      other.close();
      await other.closed;
    });
  }

  test("the backend restarts: while no tunnel is connected, events fail at once as with an unreachable webhook; then they flow again", async () => {
    const first = newTunnel(HUB);
    await first.open();
    const kim = newClient(await hubcast.clientUrl(HUB, "kim", []));
    await withTimeout(kim.start(), STEP_TIMEOUT_MS, "kim start()");
    const echo = (n) => nextEvent(kim, "server-message", (e) => e.message.data?.echo?.n === n, `the handler's reply ${n}`);
    let reply = echo(1);
    await withTimeout(kim.sendEvent("ping", { n: 1 }, "json"), STEP_TIMEOUT_MS, "sendEvent 1");
    await reply;

    // The backend dies (no close frame): Hubcast notices the dropped tunnel at once.
    first.ws.terminate();
    await first.closed;
    // No tunnel anywhere: a connect is refused and a user event fails, each at once, well
    // within upstream.timeout (2 s): nothing waits for a tunnel to come back.
    let started = Date.now();
    const lee = newClient(await hubcast.clientUrl(HUB, "lee", []));
    await assert.rejects(withTimeout(lee.start(), STEP_TIMEOUT_MS, "lee start()"));
    assert.ok(Date.now() - started < 1_500, `the connect was refused at once (${Date.now() - started} ms)`);
    started = Date.now();
    await assert.rejects(withTimeout(kim.sendEvent("ping", { n: 2 }, "json"), STEP_TIMEOUT_MS, "sendEvent 2"));
    assert.ok(Date.now() - started < 1_500, `the user event failed at once (${Date.now() - started} ms)`);

    // The backend is back: a new tunnel serves the connections made before and new ones.
    const second = newTunnel(HUB);
    await second.open();
    reply = echo(3);
    await withTimeout(kim.sendEvent("ping", { n: 3 }, "json"), STEP_TIMEOUT_MS, "sendEvent 3");
    await reply;
    const mia = newClient(await hubcast.clientUrl(HUB, "mia", []));
    await withTimeout(mia.start(), STEP_TIMEOUT_MS, "mia start() through the new tunnel");
    assert.ok(second.requests >= 2, `the new tunnel took the events (${second.requests})`);
    kim.stop();
    mia.stop();
    second.close();
    await second.closed;
  });

  // Last: it stops the server.
  test("at shutdown the service closes tunnels with 1001 (never ConnectionClose), so backends come back", async () => {
    const tunnel = newTunnel(HUB);
    await tunnel.open();
    await hubcast.stop();
    const closed = await withTimeout(tunnel.closed, SHUTDOWN_TIMEOUT_MS, "the tunnel closes at shutdown");
    assert.equal(closed.code, 1001, `close ${closed.code} ${closed.reason}`);
    assert.ok(!tunnel.frames.some((f) => f.type === Type.ConnectionClose), "no ConnectionClose frame");
  });
});
