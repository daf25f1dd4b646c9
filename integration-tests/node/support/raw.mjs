// A raw JSON-subprotocol WebSocket client for the Node tests: frames the official client
// never writes, and every frame the server sends, kept in order.

import WebSocket from "ws";

import { STEP_TIMEOUT_MS, withTimeout } from "./hubcast.mjs";

/** A raw JSON-subprotocol socket, for frames the official client never writes. */
export class RawClient {
  constructor(url) {
    this.frames = [];
    this.waiters = [];
    this.ws = new WebSocket(url, "json.webpubsub.azure.v1");
    this.ws.on("message", (data) => {
      const frame = JSON.parse(data.toString());
      this.frames.push(frame);
      this.waiters = this.waiters.filter((w) => !(w.predicate(frame) && (w.resolve(frame), true)));
    });
    this.closed = new Promise((resolve) => this.ws.on("close", (code, reason) => resolve({ code, reason: reason.toString() })));
  }
  /** Waits for `connected`; resolves with it (and keeps `connectionId`, `userId`). */
  async open() {
    const connected = await this.next((f) => f.type === "system" && f.event === "connected", "connected");
    this.connectionId = connected.connectionId;
    this.userId = connected.userId;
    return connected;
  }
  send(frame) {
    this.ws.send(typeof frame === "string" ? frame : JSON.stringify(frame));
  }
  next(predicate, what) {
    const found = this.frames.find(predicate);
    if (found) return Promise.resolve(found);
    return withTimeout(new Promise((resolve) => this.waiters.push({ predicate, resolve })), STEP_TIMEOUT_MS, what);
  }
  /** The `ack` of `ackId`. */
  ack(ackId) {
    return this.next((f) => f.type === "ack" && f.ackId === ackId, `ack ${ackId}`);
  }
  response(id) {
    return this.next((f) => f.type === "invokeResponse" && f.invocationId === id, `invokeResponse ${id}`);
  }
  close() {
    this.ws.close();
  }
}

