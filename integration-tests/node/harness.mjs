// Shared by the Node tests: running the real `hubcast` binary, minting client URLs with
// `hubcast token`, timeouts, and a TCP proxy that can cut every connection on command.
//
// The binary is `$HUBCAST_BIN`, by default `<repo>/target/debug/hubcast`.

import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import net from "node:net";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

const repoRoot = fileURLToPath(new URL("../..", import.meta.url));
const hubcastBin = process.env.HUBCAST_BIN || `${repoRoot}target/debug/hubcast`;

export const STARTUP_TIMEOUT_MS = 20_000;
export const SHUTDOWN_TIMEOUT_MS = 15_000;
export const STEP_TIMEOUT_MS = 10_000;

/** Rejects with a message naming `what` if `promise` does not settle within `ms`. */
export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Resolves with the first `event` of `client` that satisfies `predicate`. */
export function nextEvent(client, event, predicate, what, ms = STEP_TIMEOUT_MS) {
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
export class Server {
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
  clientUrl(user, roles, hub = "chat") {
    const args = ["token", "--connection-string", this.connectionString, "--hub", hub, "--user", user];
    for (const role of roles) args.push("--role", role);
    return new Promise((resolve, reject) => {
      execFile(hubcastBin, args, { timeout: STEP_TIMEOUT_MS }, (err, stdout, stderr) => {
        if (err) {
          reject(new Error(`hubcast ${args.join(" ")} failed: ${err.message}\n${stderr}`));
          return;
        }
        const url = stdout.split("\n").map((l) => l.trim()).filter(Boolean).at(-1) ?? "";
        if (!/^ws:\/\/127\.0\.0\.1:\d+\/client\/hubs\/[^?]+\?.*access_token=/.test(url)) {
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


/**
 * A TCP proxy on 127.0.0.1 that forwards to `target` and can cut every open connection at
 * once, abruptly (both sockets destroyed, no WebSocket close frame), as a network failure
 * would.
 */
export class CutProxy {
  constructor(targetPort) {
    this.targetPort = targetPort;
    this.pairs = new Set();
    this.cuts = 0;
  }

  /** Starts listening on an ephemeral port; resolves with it. */
  async start() {
    this.server = net.createServer((client) => {
      const upstream = net.connect(this.targetPort, "127.0.0.1");
      const pair = { client, upstream };
      this.pairs.add(pair);
      const drop = () => {
        client.destroy();
        upstream.destroy();
        this.pairs.delete(pair);
      };
      client.on("error", drop).on("close", drop);
      upstream.on("error", drop).on("close", drop);
      client.pipe(upstream);
      upstream.pipe(client);
    });
    await new Promise((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    this.port = this.server.address().port;
    return this.port;
  }

  /** Cuts every open connection; returns how many were cut. */
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

  /** Rewrites a client URL of the server to go through this proxy. */
  route(url) {
    const u = new URL(url);
    u.port = String(this.port);
    return u.toString();
  }

  async stop() {
    this.cut();
    await new Promise((resolve) => this.server.close(resolve));
  }
}
