// Runs the real `hubcast` binary for a Node test: spawns it on ephemeral ports, reads the
// connection string it prints, and stops it with SIGTERM. Every wait is bounded.
//
// The binary is `$HUBCAST_BIN`, by default `<repo>/target/debug/hubcast`.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

const repoRoot = fileURLToPath(new URL("../..", import.meta.url));
export const hubcastBin = process.env.HUBCAST_BIN || `${repoRoot}target/debug/hubcast`;

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

/** A running `hubcast` process and its connection string. */
export class HubcastProcess {
  constructor() {
    this.accessKey = randomBytes(33).toString("base64"); // 44 characters, no padding
    this.stdout = "";
    this.stderr = "";
    this.exited = null;
  }

  /** Spawns the binary and resolves with the connection string it printed. */
  async start() {
    assert.ok(
      existsSync(hubcastBin),
      `hubcast binary not found at ${hubcastBin} (build it with \`cargo build -p hubcast-server\` or set HUBCAST_BIN)`,
    );
    this.child = spawn(
      hubcastBin,
      ["--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0", "--access-key", this.accessKey],
      { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, RUST_LOG: process.env.RUST_LOG || "info" } },
    );
    this.exitPromise = new Promise((resolve) => {
      this.child.once("exit", (code, signal) => {
        this.exited = { code, signal };
        resolve(this.exited);
      });
    });
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
      await withTimeout(Promise.race([connectionString, exitedEarly]), STARTUP_TIMEOUT_MS, "hubcast printing its connection string");
    } catch (err) {
      err.message += `\n--- hubcast stdout ---\n${this.stdout}\n--- hubcast stderr ---\n${this.stderr}`;
      this.kill();
      throw err;
    }
    return this.connectionString;
  }

  /** Sends SIGTERM and waits for the process to exit. */
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

  /** Kills the process outright. */
  kill() {
    if (this.child && !this.exited) this.child.kill("SIGKILL");
    this.closePipes();
  }

  closePipes() {
    this.child.stdout.destroy();
    this.child.stderr.destroy();
  }
}
