// THE shared helper module of every Node test that drives the real `hubcast` binary (the only
// one: there is no other harness file; add new helpers here).
//
//   Server     spawn the binary (optional extra args, fixed port, access key, TOML config),
//              wait for its connection string, `clientUrl(hub, user, roles)` via
//              `hubcast token`, `baseUrl`, `stop()` (SIGTERM, must exit within
//              SHUTDOWN_TIMEOUT_MS), `kill()`, `killNow()`; `start()` again restarts it.
//   Proxy      a TCP proxy in front of a server port: `drop()` / `cut()` every connection
//              abruptly, `freeze()` the current ones, `route(url)`, `close()`.
//   Cluster    N `hubcast` processes sharing one access key and one Redis under a key prefix of
//              their own (`nodes`, `start()`, `stop()`); `REDIS_URL` is the test Redis.
//   withTimeout, nextEvent, sleep, eventually, and the STARTUP/SHUTDOWN/STEP timeouts.
//
// The binary is `$HUBCAST_BIN`, by default `<repo>/target/debug/hubcast`.

import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

export const repoRoot = fileURLToPath(new URL("../../..", import.meta.url));
export const hubcastBin = process.env.HUBCAST_BIN || `${repoRoot}target/debug/hubcast`;

export const STARTUP_TIMEOUT_MS = 20_000;
export const SHUTDOWN_TIMEOUT_MS = 15_000;
export const STEP_TIMEOUT_MS = 10_000;

/** The roles `Server.clientUrl` grants when none are given. */
export const DEFAULT_ROLES = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"];

/** Rejects with a message naming `what` if `promise` does not settle within `ms`. */
export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Resolves with the first `event` of `client` that satisfies `predicate`. Works with clients
 * whose `on` returns an unsubscribe function (HubcastClient) and with those that have `off`
 * (the official WebPubSubClient).
 */
export function nextEvent(client, event, predicate = () => true, what = event, ms = STEP_TIMEOUT_MS) {
  return new Promise((resolve, reject) => {
    let off = () => {};
    const handler = (e) => {
      if (predicate(e)) {
        clearTimeout(timer);
        off();
        resolve(e);
      }
    };
    const timer = setTimeout(() => {
      off();
      reject(new Error(`timed out after ${ms} ms waiting for ${what}`));
    }, ms);
    const unsubscribe = client.on(event, handler);
    off = typeof unsubscribe === "function" ? unsubscribe : () => client.off(event, handler);
  });
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `condition` every 20 ms until it returns true, or fails after `ms`. */
export async function eventually(condition, what, ms = STEP_TIMEOUT_MS) {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting until ${what}`);
    await sleep(20);
  }
}

const escapeRegExp = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/** A running `hubcast` process, its connection string and the output it printed. */
export class Server {
  /**
   * `args`: extra command-line arguments (e.g. `["--dev"]`); `port`: 0 for any;
   * `accessKey`: the key for `--access-key` (random by default); `configToml`: the text of a
   * config file to pass with `--config`, if any.
   */
  constructor({ args = [], port = 0, accessKey = randomBytes(33).toString("base64"), configToml } = {}) {
    this.args = args;
    this.port = port;
    this.accessKey = accessKey; // random: 44 characters, no padding
    this.configToml = configToml;
    this.stdout = "";
    this.stderr = "";
    this.exited = null; // { code, signal } once the process has exited
  }

  /** Spawns the binary and resolves with its connection string once printed. */
  async start() {
    assert.ok(
      existsSync(hubcastBin),
      `hubcast binary not found at ${hubcastBin} (build it with \`cargo build -p hubcast-server\` or set HUBCAST_BIN)`,
    );
    this.stdout = "";
    this.stderr = "";
    this.exited = null;
    this.connectionString = undefined;
    const args = ["--listen", `127.0.0.1:${this.port}`, "--access-key", this.accessKey, "--grpc-listen", "127.0.0.1:0"];
    if (this.configToml !== undefined) {
      this.configDir = mkdtempSync(join(tmpdir(), "hubcast-test-"));
      const path = join(this.configDir, "hubcast.toml");
      writeFileSync(path, this.configToml);
      args.push("--config", path);
    }
    args.push(...this.args);
    this.child = spawn(hubcastBin, args, {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG || "info" },
    });
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
        const match = /Endpoint=http:\/\/127\.0\.0\.1:(\d+);AccessKey=[^;\s]+;Version=1\.0;/.exec(line);
        if (match && this.connectionString === undefined) {
          this.connectionString = match[0];
          this.port = Number(match[1]);
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

  /** `http://127.0.0.1:PORT`. */
  get baseUrl() {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Mints a client access URL for `hub` with `hubcast token`. */
  clientUrl(hub, user, roles = DEFAULT_ROLES) {
    const args = ["token", "--connection-string", this.connectionString, "--hub", hub, "--user", user];
    for (const role of roles) args.push("--role", role);
    const expected = new RegExp(`^ws://127\\.0\\.0\\.1:\\d+/client/hubs/${escapeRegExp(hub)}\\?.*access_token=`);
    return new Promise((resolve, reject) => {
      execFile(hubcastBin, args, { timeout: STEP_TIMEOUT_MS }, (err, stdout, stderr) => {
        if (err) {
          reject(new Error(`hubcast ${args.join(" ")} failed: ${err.message}\n${stderr}`));
          return;
        }
        const url = stdout.split("\n").map((l) => l.trim()).filter(Boolean).at(-1) ?? "";
        if (!expected.test(url)) {
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

  /** Kills the process outright (SIGKILL) and waits for it to exit. */
  async killNow() {
    if (this.child && !this.exited) {
      this.child.kill("SIGKILL");
      await withTimeout(this.exitPromise, SHUTDOWN_TIMEOUT_MS, "hubcast exiting after SIGKILL");
    }
    this.closePipes();
  }

  /** Kills the process outright (SIGKILL) without waiting, and stops reading its output. */
  kill() {
    if (this.child && !this.exited) this.child.kill("SIGKILL");
    this.closePipes();
  }

  /**
   * Stops reading the pipes, which a surviving grandchild could otherwise hold open, and
   * removes the config file, if any.
   */
  closePipes() {
    this.child?.stdout.destroy();
    this.child?.stderr.destroy();
    if (this.configDir) {
      rmSync(this.configDir, { recursive: true, force: true });
      this.configDir = undefined;
    }
  }
}

/**
 * A TCP proxy on 127.0.0.1 in front of a server port, so a test can break connections the way
 * a network does: `drop()` destroys every proxied connection and `cut()` resets it (TCP RST);
 * either way no WebSocket close frame is sent and the peers see an abnormal closure (1006).
 * `freeze()` stops forwarding on the current connections without closing them (a half-open
 * connection). New connections are forwarded normally. `connections` counts the accepted
 * ones, `cuts` the `cut()` calls that cut at least one, `pairs` holds the open ones.
 */
export class Proxy {
  constructor(targetPort) {
    this.targetPort = targetPort;
    this.pairs = new Set();
    this.connections = 0;
    this.cuts = 0;
  }

  /** Starts listening on an ephemeral port (`this.port`); resolves with the proxy. */
  async start() {
    this.server = net.createServer((client) => {
      this.connections++;
      const upstream = net.connect(this.targetPort, "127.0.0.1");
      const pair = { client, upstream, frozen: false };
      this.pairs.add(pair);
      const forward = (from, to) => {
        from.on("data", (chunk) => {
          if (!pair.frozen) to.write(chunk);
        });
      };
      forward(client, upstream);
      forward(upstream, client);
      const close = () => {
        this.pairs.delete(pair);
        client.destroy();
        upstream.destroy();
      };
      for (const s of [client, upstream]) {
        s.on("error", close);
        s.on("close", () => {
          if (!pair.frozen) close();
        });
      }
    });
    await new Promise((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    this.port = this.server.address().port;
    return this;
  }

  /** `url` (a ws:// client URL of the server) redirected through the proxy. */
  route(url) {
    const u = new URL(url);
    u.port = String(this.port);
    return u.toString();
  }

  /** Destroys every proxied connection. */
  drop() {
    for (const { client, upstream } of this.pairs) {
      client.destroy();
      upstream.destroy();
    }
    this.pairs.clear();
  }

  /** Resets (TCP RST) every proxied connection; returns how many were cut. */
  cut() {
    const open = [...this.pairs];
    for (const { client, upstream } of open) {
      client.resetAndDestroy();
      upstream.resetAndDestroy();
    }
    this.pairs.clear();
    if (open.length > 0) this.cuts += 1;
    return open.length;
  }

  /** Stops forwarding on the current connections, keeping them open. */
  freeze() {
    for (const pair of this.pairs) pair.frozen = true;
  }

  /** Destroys every proxied connection and stops listening. */
  async close() {
    this.drop();
    await new Promise((resolve) => (this.server ? this.server.close(resolve) : resolve()));
  }
}

/** The Redis every test cluster shares (`scripts/test` makes sure it runs). */
export const REDIS_URL = process.env.HUBCAST_TEST_REDIS_URL || "redis://127.0.0.1:6379";

/**
 * `count` hubcast processes forming one cluster: same access key, same Redis, a key prefix
 * no other test uses, and a short lease (`lease`, e.g. "2s").
 */
export class Cluster {
  constructor(count, { lease = "2s" } = {}) {
    const accessKey = randomBytes(33).toString("base64");
    this.prefix = `hubcast-node-test:${process.pid}:${randomBytes(6).toString("hex")}`;
    const args = ["--redis", REDIS_URL, "--redis-prefix", this.prefix, "--cluster-lease", lease];
    this.nodes = Array.from({ length: count }, () => new Server({ args, accessKey }));
  }

  /** Starts every node; resolves with their connection strings. */
  async start() {
    const strings = [];
    for (const node of this.nodes) strings.push(await node.start());
    return strings;
  }

  /** Stops every node (SIGTERM). */
  async stop() {
    await Promise.all(this.nodes.map((n) => n.stop()));
  }
}
