// Helpers for Node tests that drive the real `hubcast` binary: spawn it (optionally with a
// TOML config file), wait for its connection string, mint client URLs, stop it.
//
// The binary is `$HUBCAST_BIN`, by default `<repo>/target/debug/hubcast`.

import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
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

/** A running `hubcast` process, its connection string and the output it printed. */
export class HubcastProcess {
  /** `configToml`: the text of a config file to pass with `--config`, if any. */
  constructor({ configToml } = {}) {
    this.accessKey = randomBytes(33).toString("base64"); // 44 characters, no padding
    this.configToml = configToml;
    this.stdout = "";
    this.stderr = "";
    this.exited = null;
  }

  /** Spawns the binary and resolves with its connection string once printed. */
  async start() {
    assert.ok(
      existsSync(hubcastBin),
      `hubcast binary not found at ${hubcastBin} (build it with \`cargo build -p hubcast-server\` or set HUBCAST_BIN)`,
    );
    const args = ["--listen", "127.0.0.1:0", "--access-key", this.accessKey, "--grpc-listen", "127.0.0.1:0"];
    if (this.configToml !== undefined) {
      this.configDir = mkdtempSync(join(tmpdir(), "hubcast-test-"));
      const path = join(this.configDir, "hubcast.toml");
      writeFileSync(path, this.configToml);
      args.push("--config", path);
    }
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
      await withTimeout(Promise.race([connectionString, exitedEarly]), STARTUP_TIMEOUT_MS, "hubcast connection string");
    } catch (err) {
      err.message += `\n--- hubcast stdout ---\n${this.stdout}\n--- hubcast stderr ---\n${this.stderr}`;
      this.kill();
      throw err;
    }
    return this.connectionString;
  }

  /** Mints a client access URL for `hub` with `hubcast token`. */
  clientUrl(hub, user, roles = []) {
    const args = ["token", "--connection-string", this.connectionString, "--hub", hub, "--user", user];
    for (const role of roles) args.push("--role", role);
    return new Promise((resolve, reject) => {
      execFile(hubcastBin, args, { timeout: STEP_TIMEOUT_MS }, (err, stdout, stderr) => {
        if (err) {
          reject(new Error(`hubcast ${args.join(" ")} failed: ${err.message}\n${stderr}`));
          return;
        }
        const url = stdout.split("\n").map((l) => l.trim()).filter(Boolean).at(-1) ?? "";
        if (!/^ws:\/\/127\.0\.0\.1:\d+\/client\/hubs\/.*access_token=/.test(url)) {
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
    this.cleanUp();
  }

  /** Kills the process outright. */
  kill() {
    if (this.child && !this.exited) this.child.kill("SIGKILL");
    this.cleanUp();
  }

  cleanUp() {
    this.child?.stdout.destroy();
    this.child?.stderr.destroy();
    if (this.configDir) rmSync(this.configDir, { recursive: true, force: true });
  }
}
