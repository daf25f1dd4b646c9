// Socket.IO default mode: an unchanged `socket.io` 4.x server with Azure's
// `@azure/web-pubsub-socket.io` (`useAzureSocketIO(io, { hub, connectionString })`) reaches
// Hubcast over the tunnel (`/server/tunnel`), and stock `socket.io-client`s connect to
// Hubcast's `/clients/socketio/hubs/{hub}`. Hubcast needs no configuration beyond the access
// key: the hub has no event handler, so its Socket.IO clients' events go to the tunnel.
//
// With HUBCAST_TEST_TOPOLOGY=cluster Hubcast is three nodes behind a round-robin balancer: the
// package's tunnel ends on one node, the clients on every node (README, The tunnel), with
// socket.io-client's default transports: long-polling, whose requests land on different
// nodes, then the upgrade to WebSocket.
//
// Run through `scripts/test`, or by hand after `cargo build -p hubcast-server`:
//   cd integration-tests/node && npm ci && node --test socketio-default.test.mjs

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createServer } from "node:http";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { after, before, describe, test } from "node:test";

import { WebPubSubServiceClient } from "@azure/web-pubsub";
import { useAzureSocketIO } from "@azure/web-pubsub-socket.io";
import { Server as SocketIoServer } from "socket.io";
import { io } from "socket.io-client";

import { SHUTDOWN_TIMEOUT_MS, STARTUP_TIMEOUT_MS, STEP_TIMEOUT_MS, Server, sleep, topologyOptions, withTimeout } from "./support/hubcast.mjs";

const HUB = "eio_hub";
/** The hub of the backend that restarts: a process of its own (support/socketio-backend.mjs). */
const RESTART_HUB = "eio_restart";
const BACKEND = fileURLToPath(new URL("./support/socketio-backend.mjs", import.meta.url));

describe("socket.io default mode: useAzureSocketIO over the tunnel", { timeout: 120_000, ...topologyOptions("socket.io default mode: useAzureSocketIO over the tunnel") }, () => {
  let hubcast;
  let server;
  let httpServer;
  let service;
  let baseUrl;
  const sockets = [];
  const serverSockets = new Map();

  before(async () => {
    hubcast = new Server({ configToml: "[socketio]\nping_interval = 5\nping_timeout = 5\n" });
    const connectionString = await hubcast.start();
    baseUrl = `http://127.0.0.1:${hubcast.port}`;
    service = new WebPubSubServiceClient(connectionString, HUB, { allowInsecureConnection: true });
    // The Socket.IO server is attached to a local HTTP server, as in Azure's samples; its
    // clients never reach it (the package answers 403 there): they connect to Hubcast.
    httpServer = createServer();
    server = new SocketIoServer(httpServer);
    await new Promise((resolve) => httpServer.listen(0, "127.0.0.1", resolve));
    // Resolves once the tunnel is connected.
    await withTimeout(useAzureSocketIO(server, { hub: HUB, connectionString }), STEP_TIMEOUT_MS, "useAzureSocketIO");
    server.on("connection", (socket) => {
      serverSockets.set(socket.id, socket);
      socket.on("hello", (name, ack) => ack(`hello ${name} from ${socket.id}`));
      socket.on("join", (room, ack) => {
        socket.join(room);
        ack("joined");
      });
      socket.on("leave", (room, ack) => {
        socket.leave(room);
        ack("left");
      });
      socket.on("shout", (room, text) => (room ? server.to(room).emit("shouted", text) : server.emit("shouted", text)));
      socket.on("shout-except", (room, text) => server.except(room).emit("shouted", text));
      socket.on("bye", () => socket.disconnect());
    });
  }, { timeout: STARTUP_TIMEOUT_MS + STEP_TIMEOUT_MS });

  after(async () => {
    for (const s of sockets) s.disconnect();
    server?.close();
    await hubcast?.stop();
    httpServer?.close();
  }, { timeout: SHUTDOWN_TIMEOUT_MS + 5_000 });

  async function connect(userId) {
    const { token } = await service.getClientAccessToken({ clientProtocol: "socketio", userId });
    const socket = io(baseUrl, {
      path: `/clients/socketio/hubs/${HUB}`,
      query: { access_token: token },
      reconnection: false,
    });
    sockets.push(socket);
    await withTimeout(
      new Promise((resolve, reject) => {
        socket.once("connect", resolve);
        socket.once("connect_error", reject);
      }),
      STEP_TIMEOUT_MS,
      `${userId} connects`,
    );
    return socket;
  }

  function received(socket, event, what) {
    return withTimeout(new Promise((resolve) => socket.once(event, resolve)), STEP_TIMEOUT_MS, what);
  }

  async function nothing(socket, event, ms = 700) {
    let got = false;
    const mark = () => (got = true);
    socket.on(event, mark);
    await sleep(ms);
    socket.off(event, mark);
    return !got;
  }

  test("connect: the server's socket has the client's id; events with acks round-trip through the server", async () => {
    const alice = await connect("alice");
    assert.ok(alice.id, "the client got its socket id from the server");
    await withTimeout(
      (async () => {
        while (!serverSockets.has(alice.id)) await sleep(20);
      })(),
      STEP_TIMEOUT_MS,
      "the server sees the socket",
    );
    const answer = await withTimeout(alice.emitWithAck("hello", "alice"), STEP_TIMEOUT_MS, "emitWithAck to the server");
    assert.equal(answer, `hello alice from ${alice.id}`);
  });

  test("broadcast to everyone, to a room, and with except", async () => {
    const bob = await connect("bob");
    const carol = await connect("carol");
    assert.equal(await withTimeout(bob.emitWithAck("join", "room1"), STEP_TIMEOUT_MS, "bob joins room1"), "joined");

    const bobAll = received(bob, "shouted", "bob gets the broadcast");
    const carolAll = received(carol, "shouted", "carol gets the broadcast");
    carol.emit("shout", null, "to all");
    assert.equal(await bobAll, "to all");
    assert.equal(await carolAll, "to all");

    const bobRoom = received(bob, "shouted", "bob gets the room broadcast");
    const carolQuiet = nothing(carol, "shouted");
    carol.emit("shout", "room1", "to room1");
    assert.equal(await bobRoom, "to room1");
    assert.ok(await carolQuiet, "carol is not in room1");

    const carolExcept = received(carol, "shouted", "carol gets the broadcast except room1");
    const bobQuiet = nothing(bob, "shouted");
    carol.emit("shout-except", "room1", "not room1");
    assert.equal(await carolExcept, "not room1");
    assert.ok(await bobQuiet, "bob is in room1, excepted");

    assert.equal(await withTimeout(bob.emitWithAck("leave", "room1"), STEP_TIMEOUT_MS, "bob leaves room1"), "left");
    const bobQuiet2 = nothing(bob, "shouted");
    carol.emit("shout", "room1", "after leaving");
    assert.ok(await bobQuiet2, "bob left room1");
  });

  test("the server emits to one socket", async () => {
    const dave = await connect("dave");
    await withTimeout(
      (async () => {
        while (!serverSockets.has(dave.id)) await sleep(20);
      })(),
      STEP_TIMEOUT_MS,
      "the server sees dave",
    );
    // The socket's own room, as Azure names it: the package joins it over REST at connect.
    const room = `0~Lw~${Buffer.from(dave.id).toString("base64url")}`;
    await withTimeout(
      (async () => {
        while (!(await service.groupExists(room))) await sleep(50);
      })(),
      STEP_TIMEOUT_MS,
      "the package put dave in its own room",
    );
    const got = received(dave, "direct", "dave gets the direct emit");
    server.to(dave.id).emit("direct", 42);
    assert.equal(await got, 42);
  });

  async function seenByServer(socket) {
    await withTimeout(
      (async () => {
        while (!serverSockets.has(socket.id)) await sleep(20);
      })(),
      STEP_TIMEOUT_MS,
      "the server sees the socket",
    );
    return serverSockets.get(socket.id);
  }

  test("emitWithAck from the server: to one socket directly, and to rooms and everyone (:invoke)", async () => {
    const gina = await connect("gina");
    const hank = await connect("hank");
    for (const s of [gina, hank]) s.on("survey", (n, ack) => ack(`${s.id}:${n}`));
    const ginaOnServer = await seenByServer(gina);
    await seenByServer(hank);
    // One socket, through its own connection.
    assert.equal(await withTimeout(ginaOnServer.timeout(5_000).emitWithAck("survey", 1), STEP_TIMEOUT_MS, "socket.emitWithAck"), `${gina.id}:1`);
    // The socket's room: the package's broadcast with ack, Hubcast's streamed :invoke.
    for (const s of [gina, hank]) {
      const room = `0~Lw~${Buffer.from(s.id).toString("base64url")}`;
      await withTimeout(
        (async () => {
          while (!(await service.groupExists(room))) await sleep(50);
        })(),
        STEP_TIMEOUT_MS,
        "the package put the socket in its own room",
      );
    }
    const one = await withTimeout(server.to(gina.id).timeout(5_000).emitWithAck("survey", 2), STEP_TIMEOUT_MS, "to(id).emitWithAck");
    assert.deepEqual(one, [`${gina.id}:2`]);
    // Both: every answering client is one line of the stream.
    const both = await withTimeout(server.to([gina.id, hank.id]).timeout(5_000).emitWithAck("survey", 3), STEP_TIMEOUT_MS, "to([ids]).emitWithAck");
    assert.deepEqual([...both].sort(), [`${gina.id}:3`, `${hank.id}:3`].sort());
    // A room nobody is in: answered at once with no clients.
    const none = await withTimeout(server.to("empty-room").timeout(5_000).emitWithAck("survey", 4), STEP_TIMEOUT_MS, "empty room");
    assert.deepEqual(none, []);
    gina.disconnect();
    hank.disconnect();
  });

  test("disconnect from the server side and from the client side", async () => {
    const erin = await connect("erin");
    const gone = received(erin, "disconnect", "erin is disconnected by the server");
    erin.emit("bye");
    assert.equal(await gone, "io server disconnect");

    const frank = await connect("frank");
    const id = frank.id;
    await withTimeout(
      (async () => {
        while (!serverSockets.has(id)) await sleep(20);
      })(),
      STEP_TIMEOUT_MS,
      "the server sees frank",
    );
    const serverSide = withTimeout(new Promise((resolve) => serverSockets.get(id).once("disconnect", resolve)), STEP_TIMEOUT_MS, "the server sees frank leave");
    frank.disconnect();
    await serverSide;
  });

  /** Starts the backend process; resolves with it once its tunnel is connected. */
  async function startBackend(connectionString) {
    const child = spawn(process.execPath, [BACKEND, RESTART_HUB], {
      env: { ...process.env, HUBCAST_CONNECTION_STRING: connectionString },
      stdio: ["ignore", "pipe", "inherit"],
    });
    child.exited = new Promise((resolve) => child.once("exit", resolve));
    const lines = createInterface({ input: child.stdout });
    const ready = new Promise((resolve, reject) => {
      lines.on("line", (line) => line.startsWith("ready ") && resolve());
      child.once("exit", (code) => reject(new Error(`the backend exited (${code}) before its tunnel was connected`)));
    });
    try {
      await withTimeout(ready, STEP_TIMEOUT_MS, "the backend's tunnel is connected");
    } catch (err) {
      child.kill("SIGKILL");
      throw err;
    }
    return child;
  }

  async function connectTo(hub, userId) {
    const { token } = await new WebPubSubServiceClient(hubcast.connectionString, hub, { allowInsecureConnection: true }).getClientAccessToken({ clientProtocol: "socketio", userId });
    const socket = io(baseUrl, { path: `/clients/socketio/hubs/${hub}`, query: { access_token: token }, reconnection: false });
    sockets.push(socket);
    await withTimeout(new Promise((resolve, reject) => (socket.once("connect", resolve), socket.once("connect_error", reject))), STEP_TIMEOUT_MS, `${userId} connects`);
    return socket;
  }

  test("the Socket.IO backend restarts while Hubcast runs: its tunnel reconnects and events flow again", async () => {
    const first = await startBackend(hubcast.connectionString);
    let second;
    try {
      const jay = await connectTo(RESTART_HUB, "jay");
      assert.equal(await withTimeout(jay.emitWithAck("hello", "jay"), STEP_TIMEOUT_MS, "served by the first backend"), `hello jay from ${first.pid}`);

      // The backend dies (no goodbye): its tunnel drops, and Hubcast notices at once.
      first.kill("SIGKILL");
      await first.exited;
      // With no tunnel anywhere, jay's packets go nowhere (nothing waits for a backend):
      // its ack never comes.
      await assert.rejects(jay.timeout(1_000).emitWithAck("hello", "jay again"), "no backend answers while none is connected");

      second = await startBackend(hubcast.connectionString);
      // A new socket is the new backend's: it answers.
      const kay = await connectTo(RESTART_HUB, "kay");
      assert.equal(await withTimeout(kay.emitWithAck("hello", "kay"), STEP_TIMEOUT_MS, "served by the second backend"), `hello kay from ${second.pid}`);
      // jay was the first backend's socket: the second does not know it (the package answers
      // its packets 400), so it is served again only once it reconnects (README).
      await assert.rejects(jay.timeout(1_000).emitWithAck("hello", "jay, later"), "the new backend does not know jay");
      jay.disconnect();
      kay.disconnect();
    } finally {
      first.kill("SIGKILL");
      second?.kill("SIGKILL");
    }
  });

  // Last: it restarts Hubcast.
  test("Hubcast restarts: the tunnel closes with 1001, the package reconnects, and clients are served again", async () => {
    await hubcast.stop();
    await hubcast.start(); // the same port, so the package's endpoint still holds
    const served = async () => {
      const { token } = await service.getClientAccessToken({ clientProtocol: "socketio", userId: "ivy" });
      const socket = io(baseUrl, { path: `/clients/socketio/hubs/${HUB}`, query: { access_token: token }, reconnection: false });
      sockets.push(socket);
      try {
        await withTimeout(new Promise((resolve, reject) => (socket.once("connect", resolve), socket.once("connect_error", reject))), 2_000, "connect");
        return await withTimeout(socket.emitWithAck("hello", "ivy"), 2_000, "emitWithAck");
      } catch {
        socket.disconnect();
        return undefined;
      }
    };
    const deadline = Date.now() + 20_000;
    let answer;
    while (answer === undefined && Date.now() < deadline) {
      answer = await served();
      if (answer === undefined) await sleep(500);
    }
    assert.match(answer ?? "", /^hello ivy from /, "the reconnected backend serves a new client");
  });
});
