// The official Azure Web PubSub JavaScript client (`@azure/web-pubsub-client`) against the
// real `hubcast` binary: start, join a group, group messages (json and text), events, stop.
//
// Run through `scripts/test`, or by hand after `cargo build -p hubcast-server`:
//   cd integration-tests/node && npm ci && node --test
// The binary is `$HUBCAST_BIN`, by default `<repo>/target/debug/hubcast`.

import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { createInterface } from "node:readline";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";

import { WebPubSubClient, WebPubSubJsonProtocol } from "@azure/web-pubsub-client";

const repoRoot = fileURLToPath(new URL("../..", import.meta.url));
const hubcastBin = process.env.HUBCAST_BIN || `${repoRoot}target/debug/hubcast`;

const STARTUP_TIMEOUT_MS = 20_000;
const SHUTDOWN_TIMEOUT_MS = 15_000;
const STEP_TIMEOUT_MS = 10_000;
const HUB = "chat";
const GROUP = "room";

/** Rejects with a message naming `what` if `promise` does not settle within `ms`. */
function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Resolves with the first `event` of `client` that satisfies `predicate`. */
function nextEvent(client, event, predicate, what, ms = STEP_TIMEOUT_MS) {
  return new Promise((resolve, reject) => {
    const handler = (e) => {
      if (predicate(e)) {
        clearTimeout(timer);
        client.off(event, handler);
        resolve(e);
      }
    };
    const timer = setTimeout(() => {
      client.off(event, handler);
      reject(new Error(`timed out after ${ms} ms waiting for ${what}`));
    }, ms);
    client.on(event, handler);
  });
}

/** A running `hubcast` process, its connection string and the output it printed. */
class Server {
  constructor() {
    this.accessKey = randomBytes(33).toString("base64"); // 44 characters, no padding
    this.stdout = "";
    this.stderr = "";
    this.exited = null; // { code, signal } once the process has exited
  }

  /** Spawns the binary and resolves once it printed its connection string. */
  async start() {
    assert.ok(
      existsSync(hubcastBin),
      `hubcast binary not found at ${hubcastBin} (build it with \`cargo build -p hubcast-server\` or set HUBCAST_BIN)`,
    );
    this.child = spawn(
      hubcastBin,
      [
        "--listen", "127.0.0.1:0",
        "--access-key", this.accessKey,
        "--grpc-listen", "127.0.0.1:0",
      ],
      { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, RUST_LOG: process.env.RUST_LOG || "info" } },
    );
    this.exitPromise = new Promise((resolve) => {
      this.child.once("exit", (code, signal) => {
        this.exited = { code, signal };
        resolve(this.exited);
      });
    });
    // Keep draining both pipes for the whole run so the server never blocks on a full pipe.
    this.child.stderr.setEncoding("utf8");
    this.child.stderr.on("data", (chunk) => {
      this.stderr = (this.stderr + chunk).slice(-64 * 1024);
    });
    const lines = createInterface({ input: this.child.stdout });
    const connectionString = new Promise((resolve) => {
      lines.on("line", (line) => {
        this.stdout = (this.stdout + line + "\n").slice(-64 * 1024);
        const match = /Endpoint=http:\/\/127\.0\.0\.1:\d+;AccessKey=[^;\s]+;Version=1\.0;/.exec(line);
        if (match && this.connectionString === undefined) {
          this.connectionString = match[0];
          resolve(match[0]);
        }
      });
    });
    const exitedEarly = this.exitPromise.then(({ code, signal }) => {
      throw new Error(`hubcast exited during start-up (code ${code}, signal ${signal})`);
    });
    try {
      await withTimeout(
        Promise.race([connectionString, exitedEarly]),
        STARTUP_TIMEOUT_MS,
        "hubcast printing `Endpoint=http://127.0.0.1:PORT;AccessKey=...;Version=1.0;` on stdout",
      );
    } catch (err) {
      err.message += `\n--- hubcast stdout ---\n${this.stdout}\n--- hubcast stderr ---\n${this.stderr}`;
      this.kill();
      throw err;
    }
    assert.ok(
      this.connectionString.includes(`;AccessKey=${this.accessKey};`),
      `the connection string carries the key given with --access-key: ${this.connectionString}`,
    );
    return this.connectionString;
  }

  /** Mints a client access URL with `hubcast token`. */
  clientUrl(user, roles) {
    const args = ["token", "--connection-string", this.connectionString, "--hub", HUB, "--user", user];
    for (const role of roles) args.push("--role", role);
    return new Promise((resolve, reject) => {
      execFile(hubcastBin, args, { timeout: STEP_TIMEOUT_MS }, (err, stdout, stderr) => {
        if (err) {
          reject(new Error(`hubcast ${args.join(" ")} failed: ${err.message}\n${stderr}`));
          return;
        }
        const url = stdout.split("\n").map((l) => l.trim()).filter(Boolean).at(-1) ?? "";
        if (!/^ws:\/\/127\.0\.0\.1:\d+\/client\/hubs\/chat\?.*access_token=/.test(url)) {
          reject(new Error(`hubcast token printed no client URL; stdout:\n${stdout}\nstderr:\n${stderr}`));
          return;
        }
        resolve(url);
      });
    });
  }

  /** Sends SIGTERM and asserts the process exits within the shutdown timeout. */
  async stop() {
    if (!this.child) return;
    if (!this.exited) {
      this.child.kill("SIGTERM");
      try {
        await withTimeout(this.exitPromise, SHUTDOWN_TIMEOUT_MS, "hubcast exiting after SIGTERM");
      } catch (err) {
        err.message += `\n--- hubcast stderr ---\n${this.stderr}`;
        this.kill();
        throw err;
      }
    }
    this.closePipes();
  }

  /** Kills the process outright and stops reading its output. */
  kill() {
    if (this.child && !this.exited) this.child.kill("SIGKILL");
    this.closePipes();
  }

  /** Stops reading the pipes, which a surviving grandchild could otherwise hold open. */
  closePipes() {
    this.child.stdout.destroy();
    this.child.stderr.destroy();
  }
}

describe("official @azure/web-pubsub-client against hubcast", { timeout: 120_000 }, () => {
  const server = new Server();
  const clients = [];
  let alice;
  let bob;

  /**
   * A JSON-protocol client that fails fast instead of reconnecting.
   *
   * Keep-alive is off unless asked for: the SDK's keep-alive loops sleep a full interval
   * (40 s for the default timeout monitor) without watching for `stop()`, which would keep
   * this process alive long after the tests end. The keep-alive test uses short intervals.
   */
  function newClient(url, keepAlive = { keepAliveIntervalInMs: 0, keepAliveTimeoutInMs: 0 }) {
    const client = new WebPubSubClient(url, {
      protocol: WebPubSubJsonProtocol(),
      autoReconnect: false,
      messageRetryOptions: { maxRetries: 1, retryDelayInMs: 200 },
      ...keepAlive,
    });
    clients.push(client);
    return client;
  }

  before(async () => {
    await server.start();
    const roles = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"];
    alice = newClient(await server.clientUrl("alice", roles));
    bob = newClient(await server.clientUrl("bob", roles));
  }, { timeout: STARTUP_TIMEOUT_MS + 2 * STEP_TIMEOUT_MS });

  after(async () => {
    for (const client of clients) {
      try {
        client.stop();
      } catch {
        // Already stopped.
      }
    }
    await server.stop();
  }, { timeout: SHUTDOWN_TIMEOUT_MS + 5_000 });

  test("both clients start and get a connection id", async () => {
    const connected = [alice, bob].map((c, i) =>
      nextEvent(c, "connected", () => true, `client ${i} connected event`),
    );
    await withTimeout(Promise.all([alice.start(), bob.start()]), STEP_TIMEOUT_MS, "clients start()");
    const [a, b] = await Promise.all(connected);
    assert.equal(a.userId, "alice");
    assert.equal(b.userId, "bob");
    assert.ok(a.connectionId && b.connectionId, "connection ids are set");
    assert.notEqual(a.connectionId, b.connectionId);
  });

  test("both clients join the group", async () => {
    await withTimeout(
      Promise.all([alice.joinGroup(GROUP), bob.joinGroup(GROUP)]),
      STEP_TIMEOUT_MS,
      `joinGroup("${GROUP}")`,
    );
  });

  test("a json group message reaches the other member", async () => {
    const received = nextEvent(
      bob,
      "group-message",
      (e) => e.message.dataType === "json",
      "bob receiving the json group message",
    );
    await withTimeout(
      alice.sendToGroup(GROUP, { hello: "world" }, "json"),
      STEP_TIMEOUT_MS,
      "alice sendToGroup json (ack)",
    );
    const { message } = await received;
    assert.equal(message.group, GROUP);
    assert.deepEqual(message.data, { hello: "world" });
    assert.equal(message.fromUserId, "alice");
  });

  test("a text group message round trips", async () => {
    const text = `hello from bob ${Date.now()}`;
    const received = nextEvent(
      alice,
      "group-message",
      (e) => e.message.dataType === "text" && e.message.data === text,
      "alice receiving bob's text group message",
    );
    await withTimeout(bob.sendToGroup(GROUP, text, "text"), STEP_TIMEOUT_MS, "bob sendToGroup text (ack)");
    const { message } = await received;
    assert.equal(message.group, GROUP);
    assert.equal(message.fromUserId, "bob");
  });

  test("sendEvent resolves", async () => {
    await withTimeout(alice.sendEvent("chat", "hi", "text"), STEP_TIMEOUT_MS, 'sendEvent("chat")');
  });

  test("pings are answered, so keep-alive does not drop an idle client", async () => {
    // Pings every 250 ms; the client closes the socket if nothing arrives for 3 s.
    const carol = newClient(await server.clientUrl("carol", []), {
      keepAliveIntervalInMs: 250,
      keepAliveTimeoutInMs: 3_000,
    });
    let disconnected = null;
    carol.on("disconnected", (e) => {
      disconnected = e;
    });
    await withTimeout(carol.start(), STEP_TIMEOUT_MS, "carol start()");
    await new Promise((resolve) => setTimeout(resolve, 4_000));
    assert.equal(disconnected, null, `carol was disconnected: ${JSON.stringify(disconnected)}`);
    await withTimeout(carol.sendEvent("chat", "still here", "text"), STEP_TIMEOUT_MS, "carol sendEvent");
    const stopped = nextEvent(carol, "stopped", () => true, "carol stopped event");
    carol.stop();
    await stopped;
  });

  test("both clients stop", async () => {
    const stopped = [alice, bob].map((c, i) => nextEvent(c, "stopped", () => true, `client ${i} stopped event`));
    alice.stop();
    bob.stop();
    await Promise.all(stopped);
  });
});
