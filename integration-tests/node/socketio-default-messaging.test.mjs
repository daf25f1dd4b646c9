// Socket.IO default mode, broadcasting: the scenarios of the package's own end-to-end tests
// ("messaging many", Azure/azure-webpubsub, sdk/webpubsub-socketio-extension/test/SIO/
// messaging-many.ts), adapted to Hubcast: one unchanged `socket.io` server with
// `@azure/web-pubsub-socket.io` over the tunnel, stock `socket.io-client`s against Hubcast, and
// a namespace of its own per test so the tests share the server without seeing each other.
// Left out: binary payloads (binary acks to an `:invoke` are not built, README) and what
// tests the `socket.io` server's own state rather than the service.
//
// With HUBCAST_TEST_TOPOLOGY=cluster Hubcast is three nodes behind a round-robin balancer: the
// tunnel ends on one node and the clients on all three, so every broadcast and every
// acknowledgement crosses nodes; the clients use their default transports (long-polling, whose
// requests land on different nodes, then the upgrade to WebSocket).
//
// Run through `scripts/test`, or by hand after `cargo build -p hubcast-server`:
//   cd integration-tests/node && npm ci && node --test socketio-default-messaging.test.mjs

import assert from "node:assert/strict";
import { createServer } from "node:http";
import { after, before, describe, test } from "node:test";

import { WebPubSubServiceClient } from "@azure/web-pubsub";
import { useAzureSocketIO } from "@azure/web-pubsub-socket.io";
import { Server as SocketIoServer } from "socket.io";
import { io as connectClient } from "socket.io-client";

import { SHUTDOWN_TIMEOUT_MS, STARTUP_TIMEOUT_MS, STEP_TIMEOUT_MS, Server, sleep, withTimeout } from "./support/hubcast.mjs";

const HUB = "eio_messaging";

describe("socket.io default mode: broadcasting, as the package's own tests do it", { timeout: 120_000 }, () => {
  let hubcast;
  let io;
  let httpServer;
  let service;
  let baseUrl;
  const sockets = [];

  before(async () => {
    hubcast = new Server({});
    const connectionString = await hubcast.start();
    baseUrl = `http://127.0.0.1:${hubcast.port}`;
    service = new WebPubSubServiceClient(connectionString, HUB, { allowInsecureConnection: true });
    httpServer = createServer();
    io = new SocketIoServer(httpServer);
    await new Promise((resolve) => httpServer.listen(0, "127.0.0.1", resolve));
    await withTimeout(useAzureSocketIO(io, { hub: HUB, connectionString }), STEP_TIMEOUT_MS, "useAzureSocketIO");
  }, { timeout: STARTUP_TIMEOUT_MS + STEP_TIMEOUT_MS });

  after(async () => {
    for (const s of sockets) s.disconnect();
    io?.close();
    await hubcast?.stop();
    httpServer?.close();
  }, { timeout: SHUTDOWN_TIMEOUT_MS + 5_000 });

  /** A client of namespace `ns` on a connection of its own; resolves once it is connected. */
  async function client(ns, userId) {
    const { token } = await service.getClientAccessToken({ clientProtocol: "socketio", userId });
    const socket = connectClient(`${baseUrl}${ns}`, {
      path: `/clients/socketio/hubs/${HUB}`,
      query: { access_token: token },
      forceNew: true,
      reconnection: false,
    });
    sockets.push(socket);
    await withTimeout(
      new Promise((resolve, reject) => {
        socket.once("connect", resolve);
        socket.once("connect_error", reject);
      }),
      STEP_TIMEOUT_MS,
      `${userId} connects to ${ns}`,
    );
    return socket;
  }

  /** Every `event` a socket receives, from now on. */
  function record(socket, event) {
    const got = [];
    socket.on(event, (...args) => got.push(args.length === 1 ? args[0] : args));
    return got;
  }

  /** Resolves once `check()` holds; fails the test with `what` if it does not in time. */
  async function until(check, what) {
    const deadline = Date.now() + STEP_TIMEOUT_MS;
    while (!check()) {
      if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
      await sleep(20);
    }
  }

  /** Lets what is in flight arrive, so that a test can tell nothing more came. */
  const settle = () => sleep(700);

  /** The server side: joins the asked rooms (acking once joined) and runs the asked broadcast. */
  function serve(ns, onBroadcast) {
    io.of(ns).on("connection", (socket) => {
      socket.on("join", async (rooms, ack) => {
        await socket.join(rooms);
        ack?.("joined");
      });
      socket.on("broadcast", (...args) => onBroadcast(socket, ...args));
    });
  }

  test("emits to a namespace: its sockets get it, another namespace's do not", async () => {
    const ns = "/many-ns";
    serve(ns, () => {});
    io.of("/many-ns-other");
    const [one, two, other] = [await client(ns, "n1"), await client(ns, "n2"), await client("/many-ns-other", "n3")];
    const [gotOne, gotTwo, gotOther] = [record(one, "a"), record(two, "a"), record(other, "a")];
    io.of(ns).emit("a", "b");
    await until(() => gotOne.length === 1 && gotTwo.length === 1, "both sockets of the namespace get it");
    await settle();
    assert.deepEqual([gotOne, gotTwo, gotOther], [["b"], ["b"], []]);
  });

  test("emits to the rest: socket.broadcast reaches every other socket of the namespace, not the sender", async () => {
    const ns = "/many-rest";
    serve(ns, (socket) => socket.broadcast.emit("a", "b"));
    io.of("/many-rest-other");
    const [one, sender, other] = [await client(ns, "r1"), await client(ns, "r2"), await client("/many-rest-other", "r3")];
    const [gotOne, gotSender, gotOther] = [record(one, "a"), record(sender, "a"), record(other, "a")];
    sender.emit("broadcast");
    await until(() => gotOne.length === 1, "the other socket gets it");
    await settle();
    assert.deepEqual([gotOne, gotSender, gotOther], [["b"], [], []]);
  });

  test("emits to rooms avoiding dupes: a socket in two of the rooms gets one copy", async () => {
    const ns = "/many-dupes";
    serve(ns, () => {
      io.of(ns).in("woot").in("test").emit("a");
      io.of(ns).in("third").emit("b");
    });
    const [both, third] = [await client(ns, "d1"), await client(ns, "d2")];
    assert.equal(await withTimeout(both.emitWithAck("join", ["woot", "test"]), STEP_TIMEOUT_MS, "join woot and test"), "joined");
    assert.equal(await withTimeout(third.emitWithAck("join", "third"), STEP_TIMEOUT_MS, "join third"), "joined");
    const [bothA, thirdA, thirdB] = [record(both, "a"), record(third, "a"), record(third, "b")];
    third.emit("broadcast");
    await until(() => bothA.length >= 1 && thirdB.length === 1, "both broadcasts arrive");
    await settle();
    assert.equal(bothA.length, 1, "one copy for a socket in both rooms");
    assert.equal(thirdA.length, 0, "not in woot or test");
  });

  test("broadcasts to a room from a socket: the room's other sockets get it, the sender gets its own emit", async () => {
    const ns = "/many-rooms";
    serve(ns, (socket) => {
      socket.broadcast.to("test").emit("a");
      socket.emit("b");
    });
    const [outside, member, sender] = [await client(ns, "m1"), await client(ns, "m2"), await client(ns, "m3")];
    await withTimeout(outside.emitWithAck("join", "woot"), STEP_TIMEOUT_MS, "join woot");
    await withTimeout(member.emitWithAck("join", "test"), STEP_TIMEOUT_MS, "join test");
    await withTimeout(sender.emitWithAck("join", "test"), STEP_TIMEOUT_MS, "join test");
    const [outsideA, memberA, senderA, senderB] = [record(outside, "a"), record(member, "a"), record(sender, "a"), record(sender, "b")];
    sender.emit("broadcast");
    await until(() => memberA.length === 1 && senderB.length === 1, "the room's member and the sender get theirs");
    await settle();
    assert.deepEqual([outsideA.length, memberA.length, senderA.length, senderB.length], [0, 1, 0, 1]);
  });

  test("excludes a specific socket, and a specific room, when broadcasting", async () => {
    const ns = "/many-except";
    serve(ns, (socket, except) => socket.broadcast.except(except).emit("a"));
    const [one, excluded, sender] = [await client(ns, "e1"), await client(ns, "e2"), await client(ns, "e3")];
    let got = [record(one, "a"), record(excluded, "a"), record(sender, "a")];
    sender.emit("broadcast", excluded.id);
    await until(() => got[0].length === 1, "the one socket not excluded gets it");
    await settle();
    assert.deepEqual(got.map((g) => g.length), [1, 0, 0], "a socket excluded by its id");

    await withTimeout(excluded.emitWithAck("join", "room1"), STEP_TIMEOUT_MS, "join room1");
    for (const s of [one, excluded, sender]) s.off("a");
    got = [record(one, "a"), record(excluded, "a"), record(sender, "a")];
    sender.emit("broadcast", "room1");
    await until(() => got[0].length === 1, "the socket outside room1 gets it");
    await settle();
    assert.deepEqual(got.map((g) => g.length), [1, 0, 0], "a room excluded");
  });

  test("broadcasts and expects multiple acknowledgements; a socket that does not ack fails the call with the answers so far", async () => {
    const ns = "/many-acks";
    io.of(ns);
    const socketsHere = [await client(ns, "k1"), await client(ns, "k2"), await client(ns, "k3")];
    socketsHere.forEach((s, i) => s.on("some event", (ack) => ack(i + 1)));
    const responses = await withTimeout(io.of(ns).timeout(5_000).emitWithAck("some event"), STEP_TIMEOUT_MS, "emitWithAck to the namespace");
    assert.deepEqual([...responses].sort(), [1, 2, 3]);

    socketsHere[2].off("some event");
    socketsHere[2].on("some event", () => {}); // never acks
    await assert.rejects(io.of(ns).timeout(1_000).emitWithAck("some event"), (err) => {
      assert.ok("responses" in err, `the timeout error carries the answers so far: ${err}`);
      assert.deepEqual([...err.responses].sort(), [1, 2]);
      return true;
    });
  });

  test("keeps the order of broadcasts to a namespace", async () => {
    const ns = "/many-order";
    io.of(ns);
    const socket = await client(ns, "o1");
    const got = record(socket, "bc");
    for (let i = 0; i < 100; i++) io.of(ns).emit("bc", i);
    await until(() => got.length === 100, "100 broadcasts");
    assert.deepEqual(got, Array.from({ length: 100 }, (_, i) => i));
  });
});
