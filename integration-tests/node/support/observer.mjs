// An official `@azure/web-pubsub-client` client plus everything it received, shared by the
// Node tests that drive the official SDKs (single node and cluster).

import { WebPubSubClient, WebPubSubJsonProtocol } from "@azure/web-pubsub-client";

import { STEP_TIMEOUT_MS, withTimeout } from "./hubcast.mjs";

/**
 * An official client plus everything it received, so tests can await the next message
 * matching a predicate (or assert which message comes next) without sleeping.
 */
export class Observer {
  constructor(url) {
    this.client = new WebPubSubClient(url, {
      protocol: WebPubSubJsonProtocol(),
      autoReconnect: false,
      autoRejoinGroups: false,
      messageRetryOptions: { maxRetries: 0 },
      // The SDK's keep-alive loops outlive `stop()`; nothing here idles long enough to need them.
      keepAliveIntervalInMs: 0,
      keepAliveTimeoutInMs: 0,
    });
    this.inbox = [];
    this.waiters = [];
    const push = (kind) => (e) => this.deliver({ ...e.message, kind });
    this.client.on("server-message", push("server"));
    this.client.on("group-message", push("group"));
    this.client.on("disconnected", (e) => this.deliver({ kind: "disconnected", reason: e.message?.message }));
  }

  deliver(message) {
    const i = this.waiters.findIndex((w) => w.predicate(message));
    if (i >= 0) {
      const [w] = this.waiters.splice(i, 1);
      w.resolve(message);
    } else {
      this.inbox.push(message);
    }
  }

  /** Starts the client; resolves with its connection id. */
  async start() {
    const connected = new Promise((resolve) => this.client.on("connected", (e) => resolve(e)));
    await withTimeout(this.client.start(), STEP_TIMEOUT_MS, "client start()");
    const e = await withTimeout(connected, STEP_TIMEOUT_MS, "connected event");
    this.connectionId = e.connectionId;
    this.userId = e.userId;
    return this;
  }

  /** The next received message matching `predicate` (earlier non-matching ones are kept). */
  next(predicate = () => true, what = "a message") {
    const i = this.inbox.findIndex(predicate);
    if (i >= 0) return Promise.resolve(this.inbox.splice(i, 1)[0]);
    const promise = new Promise((resolve) => this.waiters.push({ predicate, resolve }));
    return withTimeout(promise, STEP_TIMEOUT_MS, `${what} on ${this.connectionId}`);
  }

  /** The very next data message, whatever it is. */
  async nextData() {
    return this.next((m) => m.kind === "server" || m.kind === "group", "the next data message");
  }

  stop() {
    try {
      this.client.stop();
    } catch {
      // Already stopped.
    }
  }
}
