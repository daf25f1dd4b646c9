// Soak run (not in CI; `scripts/soak` runs it): one `hubcast` process, a steady pool of
// receivers in a group, a publisher, and connection churn (connect, join, publish, close),
// for SOAK_MINUTES (default 30). Every SOAK_SAMPLE_SECONDS (default 30) it prints and records
// the server's RSS (from /proc), open connections and the publish→receive latency of the
// window (p50/p99/max), so that growth after warm-up shows. Loopback only; it stops by itself.
//
// Needs Node 20 with --experimental-websocket (scripts/soak passes it) or Node 22+.

import { execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { createInterface } from "node:readline";

const bin = process.env.HUBCAST_BIN;
const minutes = Number(process.env.SOAK_MINUTES ?? 30);
const sampleSeconds = Number(process.env.SOAK_SAMPLE_SECONDS ?? 30);
const receivers = Number(process.env.SOAK_RECEIVERS ?? 50);
const publishPerSecond = Number(process.env.SOAK_PUBLISH_RATE ?? 20);
const churnPerSecond = Number(process.env.SOAK_CHURN_RATE ?? 10);
const csvPath = process.env.SOAK_CSV ?? "soak.csv";
const SUBPROTOCOL = "json.webpubsub.azure.v1";

const key = randomBytes(33).toString("base64");
const child = spawn(bin, ["--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0", "--access-key", key], {
  stdio: ["ignore", "pipe", "inherit"],
  env: { ...process.env, RUST_LOG: process.env.RUST_LOG || "warn" },
});
const connectionString = await new Promise((resolve, reject) => {
  const timer = setTimeout(() => reject(new Error("hubcast did not print its connection string")), 30_000);
  createInterface({ input: child.stdout }).on("line", (line) => {
    // The server names a key given with --access-key by fingerprint only: `Endpoint=…;AccessKeyFingerprint=…;`.
    if (line.startsWith("Endpoint=")) {
      clearTimeout(timer);
      resolve(`${line.trim().split(";")[0]};AccessKey=${key};Version=1.0;`);
    }
  });
});

function clientUrl(user) {
  const out = execFileSync(bin, [
    "token", "--connection-string", connectionString, "--hub", "soak", "--user", user,
    "--role", "webpubsub.joinLeaveGroup", "--role", "webpubsub.sendToGroup", "--ttl", "1d",
  ]);
  return out.toString().trim().split("\n").at(-1);
}
const urls = Array.from({ length: 10 }, (_, i) => clientUrl(`user${i}`));

function rssKiB() {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, "utf8"));
  return m ? Number(m[1]) : NaN;
}

/** Opens a connection and resolves once `connected` arrives. */
function open(url, onMessage = () => {}) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, SUBPROTOCOL);
    const timer = setTimeout(() => reject(new Error("connect timed out")), 10_000);
    ws.onerror = () => reject(new Error("connect failed"));
    ws.onmessage = (e) => {
      const msg = JSON.parse(e.data);
      if (msg.type === "system" && msg.event === "connected") {
        clearTimeout(timer);
        ws.onmessage = (ev) => onMessage(JSON.parse(ev.data));
        resolve(ws);
      }
    };
  });
}

let latencies = [];
let received = 0;
let churned = 0;
let churnErrors = 0;
let ackId = 1;
const pool = [];
for (let i = 0; i < receivers; i++) {
  const measure = i === 0;
  const ws = await open(urls[i % urls.length], (msg) => {
    if (msg.type === "message" && msg.group === "g") {
      received++;
      if (measure) latencies.push(Date.now() - msg.data.sentAt);
    }
  });
  ws.send(JSON.stringify({ type: "joinGroup", group: "g", ackId: ackId++ }));
  pool.push(ws);
}
const publisher = await open(urls[0]);

const started = Date.now();
const endAt = started + minutes * 60_000;
const rows = ["elapsed_s,rss_kib,churned,churn_errors,received,latency_p50_ms,latency_p99_ms,latency_max_ms"];
const pct = (sorted, p) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] : NaN);

const publishTimer = setInterval(() => {
  publisher.send(JSON.stringify({ type: "sendToGroup", group: "g", noEcho: true, dataType: "json", data: { sentAt: Date.now() } }));
}, 1000 / publishPerSecond);

const churnTimer = setInterval(async () => {
  try {
    const ws = await open(urls[churned % urls.length]);
    ws.send(JSON.stringify({ type: "joinGroup", group: `churn${churned % 100}`, ackId: 1 }));
    ws.send(JSON.stringify({ type: "sendToGroup", group: `churn${churned % 100}`, dataType: "text", data: "x".repeat(256) }));
    churned++;
    setTimeout(() => ws.close(1000), 200);
  } catch {
    churnErrors++;
  }
}, 1000 / churnPerSecond);

function sample() {
  const sorted = latencies.sort((a, b) => a - b);
  latencies = [];
  const row = [Math.round((Date.now() - started) / 1000), rssKiB(), churned, churnErrors, received,
    pct(sorted, 0.5), pct(sorted, 0.99), sorted.at(-1) ?? NaN];
  rows.push(row.join(","));
  console.log(rows[0].split(",").map((h, i) => `${h}=${row[i]}`).join(" "));
  writeFileSync(csvPath, rows.join("\n") + "\n");
}
sample();
await new Promise((resolve) => {
  const t = setInterval(() => {
    sample();
    if (Date.now() >= endAt) {
      clearInterval(t);
      resolve();
    }
  }, sampleSeconds * 1000);
});
clearInterval(publishTimer);
clearInterval(churnTimer);
for (const ws of pool) ws.close(1000);
publisher.close(1000);
child.kill("SIGTERM");
const code = await new Promise((resolve) => child.once("exit", (c) => resolve(c)));
console.log(`hubcast exited with ${code}; samples in ${csvPath}`);
process.exit(0);
