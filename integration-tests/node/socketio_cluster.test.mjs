// Socket.IO long-polling across the nodes of a cluster, without session affinity: the polls of
// one Engine.IO session are sent on purpose to different nodes (each addressed directly), as a
// balancer without sticky sessions would, and each is served by relaying it to the node that
// holds the session; so is its upgrade to WebSocket, on whichever node it lands.
//
// Forms a cluster of its own, like cluster.test.mjs (scripts/test runs it once).
//   cd integration-tests/node && node --test socketio_cluster.test.mjs

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { WebPubSubServiceClient } from "@azure/web-pubsub";
import WebSocket from "ws";

import { Cluster, STEP_TIMEOUT_MS, withTimeout } from "./support/hubcast.mjs";

const HUB = "sio";

describe("Socket.IO long-polling across three nodes, one session's polls on different nodes", { timeout: 120_000 }, () => {
  const cluster = new Cluster(3);
  let service;
  /** A token per node: each node's endpoint is its own address, which the audience names. */
  const tokens = [];

  before(async () => {
    const connectionStrings = await cluster.start();
    for (const connectionString of connectionStrings) {
      const client = new WebPubSubServiceClient(connectionString, HUB, { allowInsecureConnection: true });
      service ??= client;
      tokens.push((await client.getClientAccessToken({ clientProtocol: "socketio", userId: "alice" })).token);
    }
  });

  after(async () => {
    await cluster.stop();
  });

  const base = (node) => `http://127.0.0.1:${cluster.nodes[node].port}/clients/socketio/hubs/${HUB}/`;
  const url = (node, sid, transport = "polling") =>
    `${base(node)}?EIO=4&transport=${transport}&sid=${encodeURIComponent(sid)}`;

  /** A new polling session on `node`: its sid. */
  async function handshake(node) {
    const res = await fetch(`${base(node)}?EIO=4&transport=polling&access_token=${tokens[node]}`);
    assert.equal(res.status, 200);
    const open = await res.text();
    assert.match(open, /^0\{/);
    return JSON.parse(open.slice(1)).sid;
  }

  async function get(node, sid) {
    const res = await withTimeout(fetch(url(node, sid)), 40_000, `a poll on node ${node}`);
    return { status: res.status, body: await res.text() };
  }

  async function post(node, sid, body) {
    const res = await fetch(url(node, sid), { method: "POST", body, headers: { "Content-Type": "text/plain" } });
    return { status: res.status, body: await res.text() };
  }

  /** The answer to a WebSocket opened on `node` for session `sid`: open, or the HTTP refusal. */
  function openWebSocket(node, sid) {
    const ws = new WebSocket(url(node, sid, "websocket").replace("http:", "ws:"));
    return withTimeout(
      new Promise((resolve, reject) => {
        ws.once("open", () => resolve({ ws }));
        ws.once("unexpected-response", (_req, res) => {
          const chunks = [];
          res.on("data", (c) => chunks.push(c));
          res.on("end", () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString() }));
        });
        ws.once("error", reject);
      }),
      STEP_TIMEOUT_MS,
      `a WebSocket on node ${node}`,
    );
  }

  function nextMessage(ws) {
    return withTimeout(new Promise((resolve) => ws.once("message", (data) => resolve(String(data)))), STEP_TIMEOUT_MS, "a WebSocket message");
  }

  test("polls and posts on every node serve one session, and so does its upgrade to WebSocket on another node", async () => {
    const sid = await handshake(0);
    // The namespace connect, posted to node 2; its answer, polled from node 1.
    assert.deepEqual(await post(2, sid, "40"), { status: 200, body: "ok" });
    const connected = await get(1, sid);
    assert.equal(connected.status, 200);
    assert.match(connected.body, /^40\{"sid":"[^"]+"\}$/);
    // A REST send, sent through node 1, polled from node 2 while it waits there.
    const poll = get(2, sid);
    await service.sendToConnection(sid, '42["news","across"]', { contentType: "text/plain" });
    assert.deepEqual(await poll, { status: 200, body: '42["news","across"]' });

    // The upgrade off the session's node, while a poll waits on a third node: the WebSocket
    // is served there by relaying to the session's node.
    const waiting = get(2, sid);
    const { ws } = await openWebSocket(1, sid);
    ws.send("2probe");
    assert.equal(await nextMessage(ws), "3probe");
    assert.deepEqual(await waiting, { status: 200, body: "6" }, "the waiting poll ends with a no-op");
    ws.send("5");
    const pushed = nextMessage(ws);
    await service.sendToConnection(sid, '42["news","over websocket"]', { contentType: "text/plain" });
    assert.equal(await pushed, '42["news","over websocket"]');
    // Binary attachments become binary frames.
    const frames = [];
    const two = withTimeout(
      new Promise((resolve) =>
        ws.on("message", (data, isBinary) => {
          frames.push(isBinary ? [...data] : String(data));
          if (frames.length === 2) resolve();
        }),
      ),
      STEP_TIMEOUT_MS,
      "an event and its attachment",
    );
    await service.sendToConnection(sid, '451-["bin",{"_placeholder":true,"num":0}]\x1ebAQID', { contentType: "text/plain" });
    await two;
    assert.deepEqual(frames, ['451-["bin",{"_placeholder":true,"num":0}]', [1, 2, 3]]);
    ws.removeAllListeners("message");
    // From the client: a namespace connect, handled on the session's node and answered.
    const answer = nextMessage(ws);
    ws.send("40/other,");
    assert.match(await answer, /^40\/other,\{"sid":"[^"]+"\}$/);
    // Closing the WebSocket ends the session on its node.
    ws.close();
    // (A poll sent while the relaying node's last poll is still held there may be refused as
    // overlapping, or answered with the close, before the session is gone.)
    let after;
    for (let i = 0; i < 10 && after?.body !== '{"code":1,"message":"Session ID unknown"}'; i++) after = await get(0, sid);
    assert.deepEqual(after, { status: 400, body: '{"code":1,"message":"Session ID unknown"}' }, "the session is over");
  });

  test("a session upgraded on its own node: the waiting poll elsewhere ends, later polls are refused", async () => {
    const sid = await handshake(0);
    assert.deepEqual(await post(1, sid, "40"), { status: 200, body: "ok" });
    assert.match((await get(2, sid)).body, /^40/);
    const waiting = get(1, sid);
    const { ws } = await openWebSocket(0, sid);
    ws.send("2probe");
    assert.equal(await nextMessage(ws), "3probe");
    assert.deepEqual(await waiting, { status: 200, body: "6" });
    ws.send("5");
    const pushed = nextMessage(ws);
    await service.sendToConnection(sid, '42["news","over websocket"]', { contentType: "text/plain" });
    assert.equal(await pushed, '42["news","over websocket"]');
    // Polls of an upgraded session, wherever they land, are refused.
    const late = await get(2, sid);
    assert.equal(late.status, 400);
    assert.match(late.body, /uses WebSocket now/);
    ws.close();
  });

  test("a session whose token comes in the auth payload is authenticated on its node, whichever node its connect lands on", async () => {
    const open = await fetch(`${base(0)}?EIO=4&transport=polling`);
    assert.equal(open.status, 200);
    const { sid } = JSON.parse((await open.text()).slice(1));
    // A poll waits on node 2 while the connect with the token goes through node 1.
    const waiting = get(2, sid);
    assert.deepEqual(await post(1, sid, `40{"token":"${tokens[0]}"}`), { status: 200, body: "ok" });
    const connected = await waiting;
    assert.equal(connected.status, 200);
    assert.match(connected.body, /^40\{"sid":"[^"]+"\}$/);
    const poll = get(1, sid);
    await service.sendToUser("alice", '42["news","for alice"]', { contentType: "text/plain" });
    assert.deepEqual(await poll, { status: 200, body: '42["news","for alice"]' }, "the token's user");
  });

  test("a poll storm across nodes ends only that session; an unknown sid and a gone node are Engine.IO's 'Session ID unknown'", async () => {
    const bystander = await handshake(1);
    assert.deepEqual(await post(0, bystander, "40"), { status: 200, body: "ok" });
    assert.match((await get(2, bystander)).body, /^40/);

    const stormed = await handshake(0);
    const answers = await Promise.all([1, 2, 1, 2, 1, 2].map((node) => get(node, stormed)));
    const overlapping = answers.filter((a) => a.status === 400 && /Overlapping poll/.test(a.body));
    assert.ok(overlapping.length >= 1, `overlapping polls are refused: ${JSON.stringify(answers)}`);
    for (const a of answers) {
      assert.ok(a.status === 400 || a.body === "1", `every other poll ends with the session's close: ${JSON.stringify(a)}`);
    }
    const after = await get(2, stormed);
    assert.equal(after.status, 400);
    assert.equal(JSON.parse(after.body).code, 1, "the stormed session is over");

    // The bystander, on another node, is unaffected.
    const poll = get(0, bystander);
    await service.sendToConnection(bystander, '42["news","fine"]', { contentType: "text/plain" });
    assert.deepEqual(await poll, { status: 200, body: '42["news","fine"]' });

    // A sid no node holds, and one of a node that is gone.
    const unknown = await get(1, `${bystander.slice(0, 6)}-no-such-session`);
    assert.equal(unknown.status, 400);
    assert.deepEqual(JSON.parse(unknown.body), { code: 1, message: "Session ID unknown" });
    const orphan = await handshake(2);
    await cluster.nodes[2].killNow();
    const gone = await get(0, orphan);
    assert.equal(gone.status, 400);
    assert.deepEqual(JSON.parse(gone.body), { code: 1, message: "Session ID unknown" });
  });
});

describe("Socket.IO relayed polls beyond socketio.max_relayed_polls", { timeout: 60_000 }, () => {
  const cluster = new Cluster(2, {
    configToml: "[socketio]\nmax_relayed_polls = 1\nmax_poll_duration = 3\n\n[hubs.sio]\nanonymous_connect = true\n",
  });

  before(async () => {
    await cluster.start();
  });

  after(async () => {
    await cluster.stop();
  });

  const base = (node) => `http://127.0.0.1:${cluster.nodes[node].port}/clients/socketio/hubs/${HUB}/`;

  async function session() {
    const open = await (await fetch(`${base(0)}?EIO=4&transport=polling`)).text();
    const sid = JSON.parse(open.slice(1)).sid;
    const url = (node) => `${base(node)}?EIO=4&transport=polling&sid=${sid}`;
    assert.equal(await (await fetch(url(0), { method: "POST", body: "40" })).text(), "ok");
    assert.match(await (await fetch(url(0))).text(), /^40/);
    return url;
  }

  test("the owner refuses relayed polls beyond its limit with 503; its local polls go on", async () => {
    const a = await session();
    const b = await session();
    // a's poll from node 2 is held on node 1 and takes the one relayed slot; b's, sent once
    // a's is there, is refused. (On a busy machine b's may get there first: then both end
    // after max_poll_duration and the test tries again.)
    let held;
    let refused;
    for (let attempt = 0; attempt < 5 && !refused; attempt++) {
      held = fetch(a(1));
      await new Promise((r) => setTimeout(r, 500));
      const answer = await fetch(b(1));
      if (answer.status === 503) refused = answer;
      else {
        await answer.text();
        await (await held).text();
      }
    }
    assert.ok(refused, "a relayed poll beyond the limit is refused");
    assert.match((await refused.json()).message, /max_relayed_polls/);
    // So is a relayed post while the held poll takes the slot.
    const post = await fetch(a(1), { method: "POST", body: '42["x"]' });
    assert.equal(post.status, 503);
    // b on its own node is served (a no-op after max_poll_duration), and so is a's held poll.
    const local = await fetch(b(0));
    assert.deepEqual([local.status, await local.text()], [200, "6"]);
    const answered = await held;
    assert.deepEqual([answered.status, await answered.text()], [200, "6"], "the held relayed poll is answered");
    for (const session of [a, b]) {
      assert.equal(await (await fetch(session(0), { method: "POST", body: "1" })).text(), "ok");
    }
  });
});
