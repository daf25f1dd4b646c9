// HubcastClient: a WebSocket client of Hubcast (and of Azure Web PubSub) that speaks the
// PubSub subprotocols, written against the generated protocol types.
//
// Shaped like `@azure/web-pubsub-client` (same constructor forms, option names, events and
// methods), with these differences: payloads are typed by `dataType` (and JSON payloads by
// the client's type parameter), `disconnected` carries the WebSocket close code and reason,
// retries of an operation reuse its ack id (so a retry after a drop is answered `Duplicate`
// instead of publishing twice), operations issued while the client is reconnecting wait for
// the connection instead of failing, and the protobuf subprotocols are supported.

import {
  AckErrorName,
  CloseCode,
  DownstreamMessage,
  type DownstreamMessage_AckMessage,
  type DownstreamMessage_DataMessage,
  type DownstreamMessage_SystemMessage_ConnectedMessage,
  type MessageData,
  Subprotocol,
  UpstreamMessage,
  UpstreamMessage_EventMessage,
  UpstreamMessage_JoinGroupMessage,
  UpstreamMessage_LeaveGroupMessage,
  UpstreamMessage_SendToGroupMessage,
} from "./protocol.js";
import * as wire from "./wire.js";

/** The subprotocols a {@link HubcastClient} speaks. */
export type ProtocolName = "json" | "json.reliable" | "protobuf" | "protobuf.reliable";

interface ProtocolInfo {
  readonly subprotocol: string;
  readonly binary: boolean;
  readonly reliable: boolean;
}

const PROTOCOLS: { readonly [P in ProtocolName]: ProtocolInfo } = {
  json: { subprotocol: Subprotocol.Json, binary: false, reliable: false },
  "json.reliable": { subprotocol: Subprotocol.JsonReliable, binary: false, reliable: true },
  protobuf: { subprotocol: Subprotocol.Protobuf, binary: true, reliable: false },
  "protobuf.reliable": { subprotocol: Subprotocol.ProtobufReliable, binary: true, reliable: true },
};

/** The WebSocket subprotocol name of each {@link ProtocolName}. */
export function subprotocolOf(protocol: ProtocolName): string {
  return PROTOCOLS[protocol].subprotocol;
}

/**
 * A WebSocket class: the platform's `WebSocket` (browsers, Node.js 22 and later, Deno, Bun)
 * or a compatible one such as the `ws` package's (Node.js 20).
 */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => unknown;

/** The part of the WebSocket API the client uses. */
interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: { message?: unknown; error?: unknown }) => void) | null;
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
}

const WS_OPEN = 1;

/** How an operation or a reconnection is retried. */
export interface RetryOptions {
  /** Retries after the first attempt. */
  maxRetries?: number;
  /** Delay before the first retry, in milliseconds. */
  retryDelayInMs?: number;
  /** Upper bound of the delay (exponential mode), in milliseconds. */
  maxRetryDelayInMs?: number;
  /** `Fixed`: every delay is `retryDelayInMs`; `Exponential`: it doubles up to the maximum. */
  mode?: "Fixed" | "Exponential";
}

/** Options of a {@link HubcastClient}; every one has a default. */
export interface HubcastClientOptions {
  /** The subprotocol. Default `json.reliable` (as Azure's client). */
  protocol?: ProtocolName;
  /** Start a new connection after one is lost for good. Default true. */
  autoReconnect?: boolean;
  /** Join the groups this client had joined again on each new connection. Default true. */
  autoRejoinGroups?: boolean;
  /**
   * Retries of `joinGroup`, `leaveGroup`, `sendToGroup` and `sendEvent` when the connection
   * drops before the ack or the service answers `InternalServerError`. Default 3 retries,
   * 1 s apart. A retry reuses the ack id, so the service answers `Duplicate` (and the call
   * resolves with `isDuplicated`) if the first attempt had been processed.
   */
  messageRetryOptions?: RetryOptions;
  /** Attempts to start a new connection. Default: unlimited, 1 s apart. */
  reconnectRetryOptions?: RetryOptions;
  /** Reliable protocols: how long to try recovering a dropped connection. Default 30 000 ms. */
  recoveryWindowInMs?: number;
  /** Delay between recovery attempts. Default 1000 ms. */
  recoveryRetryDelayInMs?: number;
  /** Interval of `ping` messages while connected; 0 disables them. Default 20 000 ms. */
  keepAliveIntervalInMs?: number;
  /** Drop (and recover) a connection that received nothing for this long; 0 disables. Default 120 000 ms. */
  keepAliveTimeoutInMs?: number;
  /** Reliable protocols: interval of `sequenceAck` messages. Default 1000 ms. */
  sequenceAckIntervalInMs?: number;
  /** Give up on a connection that sent no `connected` message within this time. Default 30 000 ms. */
  connectTimeoutInMs?: number;
  /** The WebSocket class. Default `globalThis.WebSocket`. */
  WebSocket?: WebSocketConstructor;
}

/** Where the client gets its client access URL (`ws(s)://host/client/hubs/{hub}?access_token=...`). */
export type ClientAccessUrlProvider = string | ((options: { abortSignal?: AbortSignal }) => Promise<string>);

/** A client access URL, or something that provides one for every new connection. */
export type HubcastClientCredential =
  | string
  | (() => Promise<string>)
  | { getClientAccessUrl: ClientAccessUrlProvider };

/** The connection states. */
export type HubcastClientState = "Stopped" | "Connecting" | "Connected" | "Recovering" | "Disconnected";

/** The payload kinds, as JSON clients name them. */
export type DataType = "json" | "text" | "binary" | "protobuf";

/** A received payload, typed by its `dataType`. `TJson` is the type of JSON payloads. */
export type Payload<TJson = unknown> =
  | { dataType: "json"; data: TJson }
  | { dataType: "text"; data: string }
  | { dataType: "binary"; data: Uint8Array }
  | { dataType: "protobuf"; data: wire.Any };

/** What can be sent as each `dataType`. */
export type Content<D extends DataType, TJson = unknown> = D extends "json"
  ? TJson
  : D extends "text"
    ? string
    : D extends "binary"
      ? Uint8Array | ArrayBuffer
      : wire.Any;

/** The fields of a data message besides its source and payload (sequence id, metadata, ...). */
export type DataMessageFields = Omit<DownstreamMessage_DataMessage, "from" | "group" | "data">;

/** A message published to a group this client joined. */
export type GroupDataMessage<TJson = unknown> = DataMessageFields & {
  kind: "groupData";
  /** The group. */
  group: string;
} & Payload<TJson>;

/** A message the server sent to this connection, its user, or everyone. */
export type ServerDataMessage<TJson = unknown> = DataMessageFields & { kind: "serverData" } & Payload<TJson>;

/** `connected`: a new connection is established (not emitted after a recovery). */
export interface OnConnectedArgs {
  connectionId: string;
  /** The user id, if the connection has one. */
  userId?: string;
}

/** `disconnected`: a connection is lost for good (after recovery failed, for reliable protocols). */
export interface OnDisconnectedArgs {
  connectionId?: string;
  /** The `disconnected` message the service sent before closing, if any. */
  message?: { message: string };
  /** The WebSocket close code (1006: the connection dropped without a close frame). See {@link CloseCode}. */
  code?: CloseCode | number;
  /** The WebSocket close reason. */
  reason?: string;
}

/** `stopped`: the client stopped and will not reconnect. */
export interface OnStoppedArgs {}

/** `group-message`. */
export interface OnGroupDataMessageArgs<TJson = unknown> {
  message: GroupDataMessage<TJson>;
}

/** `server-message`. */
export interface OnServerDataMessageArgs<TJson = unknown> {
  message: ServerDataMessage<TJson>;
}

/** `rejoin-group-failed`: a group could not be joined again on a new connection. */
export interface OnRejoinGroupFailedArgs {
  group: string;
  error: Error;
}

/** The events of a {@link HubcastClient} and their arguments. */
export interface HubcastClientEvents<TJson = unknown> {
  connected: OnConnectedArgs;
  disconnected: OnDisconnectedArgs;
  stopped: OnStoppedArgs;
  "group-message": OnGroupDataMessageArgs<TJson>;
  "server-message": OnServerDataMessageArgs<TJson>;
  "rejoin-group-failed": OnRejoinGroupFailedArgs;
}

/** The result of an acknowledged operation. */
export interface AckResult {
  /** The ack id the operation used (undefined for fire-and-forget sends). */
  ackId?: number;
  /** The service had processed this ack id before (a retry): the operation took effect once. */
  isDuplicated: boolean;
}

/** Options common to acknowledged operations. */
export interface OperationOptions {
  /** The ack id; default: the next of the client's counter. */
  ackId?: number;
  /** Cancels waiting (the message may still have been sent). */
  abortSignal?: AbortSignal;
}

/** Options of {@link HubcastClient.sendToGroup}: every field of the protocol's message but the group, payload and ack id. */
export type SendToGroupOptions = OperationOptions &
  Partial<Omit<UpstreamMessage_SendToGroupMessage, "group" | "data" | "ackId">> & {
    /** Send without an ack id: resolves once written, failures are not reported. */
    fireAndForget?: boolean;
  };

/** Options of {@link HubcastClient.sendEvent}: every field of the protocol's message but the event, payload and ack id. */
export type SendEventOptions = OperationOptions &
  Partial<Omit<UpstreamMessage_EventMessage, "event" | "data" | "ackId">> & {
    /** Send without an ack id: resolves once written, failures are not reported. */
    fireAndForget?: boolean;
  };

/** An operation failed: the service refused it (`errorDetail`), or it could not be delivered. */
export class SendMessageError extends Error {
  /** The ack id of the operation, if it had one. */
  readonly ackId: number | undefined;
  /** The service's error, when it answered with one. */
  readonly errorDetail: { name: AckErrorName | (string & {}); message: string } | undefined;

  constructor(
    message: string,
    options: { ackId?: number; errorDetail?: { name: string; message: string }; cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "SendMessageError";
    this.ackId = options.ackId;
    this.errorDetail = options.errorDetail;
  }
}

/** A connection attempt failed: the handshake was refused or the socket closed before `connected`. */
export class ConnectionError extends Error {
  /** The WebSocket close code, if the socket closed. */
  readonly code: number | undefined;
  /** The close reason or the socket's error message. */
  readonly reason: string | undefined;

  constructor(message: string, code?: number, reason?: string) {
    super(message);
    this.name = "ConnectionError";
    this.code = code;
    this.reason = reason;
  }
}

/** The connection closed while an operation waited for its ack: retried per `messageRetryOptions`. */
class ConnectionLost extends Error {
  constructor(code: number, reason: string) {
    super(`the connection closed before the ack arrived (code ${code}${reason ? `: ${reason}` : ""})`);
    this.name = "ConnectionLost";
  }
}

type Listener<A> = (args: A) => void;

interface PendingAck {
  resolve: (result: AckResult) => void;
  reject: (error: Error) => void;
}

/** One WebSocket and what the client knows about it. */
interface Socket {
  readonly ws: WebSocketLike;
  /** Opened to recover a reliable connection (with `awps_connection_id`). */
  readonly recovery: boolean;
  /** Set until the connection is established: settles the attempt that opened the socket. */
  settle: ((error?: Error) => void) | undefined;
  /** The reason of the service's `disconnected` message, if one came. */
  disconnectedReason: string | undefined;
  /** The socket's last error message, for diagnostics. */
  error: string | undefined;
  closed: boolean;
}

const DEFAULT_MESSAGE_RETRY: Required<RetryOptions> = {
  maxRetries: 3,
  retryDelayInMs: 1000,
  maxRetryDelayInMs: 30_000,
  mode: "Fixed",
};

const DEFAULT_RECONNECT_RETRY: Required<RetryOptions> = {
  maxRetries: Number.POSITIVE_INFINITY,
  retryDelayInMs: 1000,
  maxRetryDelayInMs: 30_000,
  mode: "Fixed",
};

/** The close code the client sends when it stops. */
const CLOSE_STOPPED = CloseCode.Normal;
/** The close code the client sends when it abandons a socket it intends to recover. */
const CLOSE_ABANDONED = 4000;
/** Send a `sequenceAck` right away once this many data messages are unacknowledged. */
const SEQUENCE_ACK_BATCH = 300;

/**
 * A client of a Hubcast (or Azure Web PubSub) hub.
 *
 * ```ts
 * const client = new HubcastClient<{ text: string }>(url, { protocol: "json.reliable" });
 * client.on("group-message", (e) => {
 *   if (e.message.dataType === "json") console.log(e.message.data.text);
 * });
 * await client.start();
 * await client.joinGroup("room");
 * await client.sendToGroup("room", { text: "hello" }, "json");
 * ```
 *
 * `TJson` is the type of JSON payloads, sent and received (default `unknown`).
 */
export class HubcastClient<TJson = unknown> {
  private readonly getUrl: (options: { abortSignal?: AbortSignal }) => Promise<string>;
  private readonly protocolInfo: ProtocolInfo;
  private readonly WebSocketImpl: WebSocketConstructor;
  private readonly opts: {
    autoReconnect: boolean;
    autoRejoinGroups: boolean;
    messageRetry: Required<RetryOptions>;
    reconnectRetry: Required<RetryOptions>;
    recoveryWindowInMs: number;
    recoveryRetryDelayInMs: number;
    keepAliveIntervalInMs: number;
    keepAliveTimeoutInMs: number;
    sequenceAckIntervalInMs: number;
    connectTimeoutInMs: number;
  };

  private currentState: HubcastClientState = "Stopped";
  private socket: Socket | undefined;
  private stopping = false;
  /** Aborted by `stop()`: cancels sleeps and URL requests of the connection loop. */
  private stopController = new AbortController();

  private id: string | undefined;
  private user: string | undefined;
  private reconnectionToken: string | undefined;
  /** The URL of the current logical connection, to which recovery parameters are appended. */
  private baseUrl: string | undefined;

  /** Groups joined, to join again on a new connection. */
  private readonly groups = new Set<string>();
  private nextAckId = 1;
  private readonly pendingAcks = new Map<number, PendingAck>();
  /** Operations waiting for the client to be connected. */
  private readonly waiters = new Set<{ resolve: () => void; reject: (e: Error) => void }>();

  /** Highest data-message sequence id received, and the one last acknowledged. */
  private sequenceId = 0;
  private sequenceAcked = 0;

  private lastReceivedAt = 0;
  private timers: ReturnType<typeof setInterval>[] = [];

  /** Listeners by event name (each set holds listeners of that event's argument type). */
  private readonly listeners = new Map<string, Set<Listener<never>>>();

  /**
   * @param credential A client access URL, a function that returns a fresh one (called for
   *   every new connection, so tokens can be renewed), or `{ getClientAccessUrl }` as in
   *   Azure's client.
   * @param options See {@link HubcastClientOptions}.
   */
  constructor(credential: HubcastClientCredential, options: HubcastClientOptions = {}) {
    if (typeof credential === "string") {
      this.getUrl = () => Promise.resolve(credential);
    } else if (typeof credential === "function") {
      this.getUrl = () => credential();
    } else {
      const provider = credential.getClientAccessUrl;
      this.getUrl = typeof provider === "string" ? () => Promise.resolve(provider) : provider;
    }
    const protocol = options.protocol ?? "json.reliable";
    const info = PROTOCOLS[protocol];
    if (info === undefined) throw new TypeError(`unknown protocol ${JSON.stringify(protocol)}`);
    this.protocolInfo = info;
    const ctor = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (ctor === undefined) {
      throw new TypeError(
        "no WebSocket implementation: pass one as the `WebSocket` option (e.g. the `ws` package's on Node.js 20)",
      );
    }
    this.WebSocketImpl = ctor;
    this.opts = {
      autoReconnect: options.autoReconnect ?? true,
      autoRejoinGroups: options.autoRejoinGroups ?? true,
      messageRetry: { ...DEFAULT_MESSAGE_RETRY, ...options.messageRetryOptions },
      reconnectRetry: { ...DEFAULT_RECONNECT_RETRY, ...options.reconnectRetryOptions },
      recoveryWindowInMs: options.recoveryWindowInMs ?? 30_000,
      recoveryRetryDelayInMs: options.recoveryRetryDelayInMs ?? 1000,
      keepAliveIntervalInMs: options.keepAliveIntervalInMs ?? 20_000,
      keepAliveTimeoutInMs: options.keepAliveTimeoutInMs ?? 120_000,
      sequenceAckIntervalInMs: options.sequenceAckIntervalInMs ?? 1000,
      connectTimeoutInMs: options.connectTimeoutInMs ?? 30_000,
    };
  }

  /** The connection state. */
  get state(): HubcastClientState {
    return this.currentState;
  }

  /** The id of the current connection, once connected. */
  get connectionId(): string | undefined {
    return this.id;
  }

  /** The user id of the current connection, if it has one. */
  get userId(): string | undefined {
    return this.user;
  }

  /** The WebSocket subprotocol this client speaks. */
  get subprotocol(): string {
    return this.protocolInfo.subprotocol;
  }

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof HubcastClientEvents<TJson>>(event: K, listener: Listener<HubcastClientEvents<TJson>[K]>): () => void {
    let set = this.listeners.get(event);
    if (set === undefined) {
      set = new Set();
      this.listeners.set(event, set);
    }
    set.add(listener);
    return () => this.off(event, listener);
  }

  /** Removes a listener. */
  off<K extends keyof HubcastClientEvents<TJson>>(event: K, listener: Listener<HubcastClientEvents<TJson>[K]>): void {
    this.listeners.get(event)?.delete(listener);
  }

  /**
   * Connects. Resolves once the service's `connected` message arrived (so
   * {@link connectionId} is set); rejects with a {@link ConnectionError} if this first attempt
   * fails (later drops are handled by reconnection).
   */
  async start(options: { abortSignal?: AbortSignal } = {}): Promise<void> {
    if (this.currentState !== "Stopped") throw new Error(`cannot start a client that is ${this.currentState}`);
    this.stopping = false;
    this.stopController = new AbortController();
    try {
      await this.connect(options.abortSignal);
    } catch (error) {
      this.finishStop();
      throw error;
    }
  }

  /** Closes the connection and stops reconnecting; `stopped` follows. Pending operations reject. */
  stop(): void {
    if (this.currentState === "Stopped" || this.stopping) return;
    this.stopping = true;
    this.stopController.abort();
    const socket = this.socket;
    if (socket === undefined) {
      // Between connections: the loop notices `stopping` and finishes.
      return;
    }
    this.abandon(socket, CLOSE_STOPPED, "client stopped");
  }

  /** Joins a group; it is joined again on every new connection (`autoRejoinGroups`). */
  async joinGroup(group: string, options: OperationOptions = {}): Promise<AckResult> {
    const result = await this.invoke(
      (ackId) => ({
        message: { case: "joinGroupMessage", value: UpstreamMessage_JoinGroupMessage.create({ group, ackId }) },
      }),
      options,
    );
    this.groups.add(group);
    return result;
  }

  /** Leaves a group. */
  async leaveGroup(group: string, options: OperationOptions = {}): Promise<AckResult> {
    const result = await this.invoke(
      (ackId) => ({
        message: { case: "leaveGroupMessage", value: UpstreamMessage_LeaveGroupMessage.create({ group, ackId }) },
      }),
      options,
    );
    this.groups.delete(group);
    return result;
  }

  /** Publishes to a group. `content` is typed by `dataType`. */
  async sendToGroup<D extends DataType>(
    group: string,
    content: Content<D, TJson>,
    dataType: D,
    options: SendToGroupOptions = {},
  ): Promise<AckResult> {
    const { ackId: _ackId, abortSignal, fireAndForget, ...fields } = options;
    const data = toMessageData(content, dataType);
    return this.invoke(
      (ackId) => ({
        message: {
          case: "sendToGroupMessage",
          value: UpstreamMessage_SendToGroupMessage.create({ ...fields, group, data, ackId }),
        },
      }),
      { ackId: options.ackId, abortSignal, fireAndForget },
    );
  }

  /** Raises an event to the hub's upstream handler. `content` is typed by `dataType`. */
  async sendEvent<D extends DataType>(
    event: string,
    content: Content<D, TJson>,
    dataType: D,
    options: SendEventOptions = {},
  ): Promise<AckResult> {
    const { ackId: _ackId, abortSignal, fireAndForget, ...fields } = options;
    const data = toMessageData(content, dataType);
    return this.invoke(
      (ackId) => ({
        message: {
          case: "eventMessage",
          value: UpstreamMessage_EventMessage.create({ ...fields, event, data, ackId }),
        },
      }),
      { ackId: options.ackId, abortSignal, fireAndForget },
    );
  }

  // --- operations and acks ---

  private async invoke(
    build: (ackId: number | undefined) => UpstreamMessage,
    options: OperationOptions & { fireAndForget?: boolean | undefined },
  ): Promise<AckResult> {
    const { abortSignal } = options;
    if (options.fireAndForget) {
      await this.waitConnected(abortSignal);
      this.send(build(undefined));
      return { isDuplicated: false };
    }
    const ackId = options.ackId ?? this.nextAckId++;
    const retry = this.opts.messageRetry;
    for (let attempt = 0; ; attempt++) {
      try {
        await this.waitConnected(abortSignal);
        return await this.sendWithAck(build(ackId), ackId, abortSignal);
      } catch (error) {
        const retryable =
          error instanceof ConnectionLost ||
          (error instanceof SendMessageError && error.errorDetail?.name === AckErrorName.InternalServerError);
        if (!retryable || attempt >= retry.maxRetries || this.stopping || this.currentState === "Stopped") {
          if (error instanceof ConnectionLost) {
            throw new SendMessageError(error.message, { ackId, cause: error });
          }
          throw error;
        }
        await sleep(retryDelay(retry, attempt + 1), abortSignal);
      }
    }
  }

  private sendWithAck(message: UpstreamMessage, ackId: number, abortSignal?: AbortSignal): Promise<AckResult> {
    if (this.pendingAcks.has(ackId)) {
      return Promise.reject(new SendMessageError(`ack id ${ackId} is already waiting for an ack`, { ackId }));
    }
    return new Promise<AckResult>((resolve, reject) => {
      const onAbort = (): void => {
        this.pendingAcks.delete(ackId);
        reject(abortReason(abortSignal));
      };
      if (abortSignal?.aborted) return onAbort();
      abortSignal?.addEventListener("abort", onAbort, { once: true });
      const done = (): void => {
        this.pendingAcks.delete(ackId);
        abortSignal?.removeEventListener("abort", onAbort);
      };
      this.pendingAcks.set(ackId, {
        resolve: (r) => {
          done();
          resolve(r);
        },
        reject: (e) => {
          done();
          reject(e);
        },
      });
      try {
        this.send(message);
      } catch (error) {
        this.pendingAcks.get(ackId)?.reject(error as Error);
      }
    });
  }

  private onAck(ack: DownstreamMessage_AckMessage): void {
    const pending = this.pendingAcks.get(ack.ackId);
    if (pending === undefined) return;
    if (ack.success) {
      pending.resolve({ ackId: ack.ackId, isDuplicated: false });
    } else if (ack.error?.name === AckErrorName.Duplicate) {
      pending.resolve({ ackId: ack.ackId, isDuplicated: true });
    } else {
      const detail = { name: ack.error?.name ?? "", message: ack.error?.message ?? "" };
      pending.reject(
        new SendMessageError(`the service refused ack id ${ack.ackId}: ${detail.name}: ${detail.message}`, {
          ackId: ack.ackId,
          errorDetail: detail,
        }),
      );
    }
  }

  /** Resolves once connected; rejects if the client is stopped (or stops) first. */
  private waitConnected(abortSignal?: AbortSignal): Promise<void> {
    if (this.currentState === "Connected" && this.socket !== undefined) return Promise.resolve();
    if (this.currentState === "Stopped" || this.stopping) {
      return Promise.reject(new SendMessageError("the client is not started"));
    }
    return new Promise<void>((resolve, reject) => {
      const onAbort = (): void => {
        this.waiters.delete(waiter);
        reject(abortReason(abortSignal));
      };
      const waiter = {
        resolve: () => {
          abortSignal?.removeEventListener("abort", onAbort);
          resolve();
        },
        reject: (e: Error) => {
          abortSignal?.removeEventListener("abort", onAbort);
          reject(e);
        },
      };
      if (abortSignal?.aborted) return onAbort();
      abortSignal?.addEventListener("abort", onAbort, { once: true });
      this.waiters.add(waiter);
    });
  }

  private releaseWaiters(error?: Error): void {
    const waiters = [...this.waiters];
    this.waiters.clear();
    for (const w of waiters) {
      if (error === undefined) w.resolve();
      else w.reject(error);
    }
  }

  private send(message: UpstreamMessage): void {
    const socket = this.socket;
    if (socket === undefined || socket.closed || socket.ws.readyState !== WS_OPEN) {
      throw new ConnectionLost(1006, "not connected");
    }
    socket.ws.send(
      this.protocolInfo.binary
        ? UpstreamMessage.encode(message).finish()
        : JSON.stringify(UpstreamMessage.toJson(message)),
    );
  }

  // --- the connection loop ---

  /** Gets a fresh URL and opens a new connection (not a recovery). */
  private async connect(abortSignal?: AbortSignal): Promise<void> {
    this.setState("Connecting");
    const signal = anySignal(this.stopController.signal, abortSignal);
    const url = await this.getUrl({ abortSignal: signal });
    if (this.stopping) throw new ConnectionError("the client was stopped");
    this.baseUrl = url;
    await this.open(url, false, signal);
  }

  /** Opens a socket; resolves once it is established (new: `connected` handled; recovery: open). */
  private open(url: string, recovery: boolean, abortSignal?: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let ws: WebSocketLike;
      try {
        ws = new this.WebSocketImpl(url, this.protocolInfo.subprotocol) as WebSocketLike;
      } catch (error) {
        reject(new ConnectionError(`cannot open a WebSocket to ${redact(url)}: ${String(error)}`));
        return;
      }
      ws.binaryType = "arraybuffer";
      const socket: Socket = { ws, recovery, settle: undefined, disconnectedReason: undefined, error: undefined, closed: false };
      const timer = setTimeout(() => {
        this.abandon(socket, CLOSE_ABANDONED, "connect timeout");
      }, this.opts.connectTimeoutInMs);
      const onAbort = (): void => this.abandon(socket, CLOSE_STOPPED, "connect aborted");
      socket.settle = (error) => {
        socket.settle = undefined;
        clearTimeout(timer);
        abortSignal?.removeEventListener("abort", onAbort);
        if (error === undefined) resolve();
        else reject(error);
      };
      abortSignal?.addEventListener("abort", onAbort, { once: true });
      this.socket = socket;

      ws.onopen = () => {
        if (this.socket !== socket || socket.closed) return;
        this.lastReceivedAt = Date.now();
        if (recovery) {
          this.established();
          socket.settle?.();
        }
      };
      ws.onmessage = (event) => {
        if (this.socket !== socket || socket.closed) return;
        this.lastReceivedAt = Date.now();
        this.onFrame(socket, event.data);
      };
      ws.onerror = (event) => {
        const detail = event?.message ?? event?.error;
        if (detail !== undefined) socket.error = String(detail);
      };
      ws.onclose = (event) => {
        this.onSocketClosed(socket, event.code, event.reason || socket.error || "");
      };
      if (abortSignal?.aborted) onAbort();
    });
  }

  private onFrame(socket: Socket, data: unknown): void {
    let message: DownstreamMessage;
    try {
      if (this.protocolInfo.binary) {
        if (typeof data === "string") return;
        message = DownstreamMessage.decode(toBytes(data));
      } else {
        if (typeof data !== "string") return;
        message = DownstreamMessage.fromJson(wire.jsonObject(wire.parseJson(data), "message"));
      }
    } catch {
      // A malformed frame is ignored, as Azure's client ignores messages it cannot parse.
      return;
    }
    const m = message.message;
    switch (m?.case) {
      case "ackMessage":
        this.onAck(m.value);
        return;
      case "dataMessage":
        this.onData(m.value);
        return;
      case "systemMessage": {
        const system = m.value.message;
        if (system?.case === "connectedMessage") {
          void this.onConnected(socket, system.value);
        } else if (system?.case === "disconnectedMessage") {
          socket.disconnectedReason = system.value.reason;
        }
        return;
      }
      default:
        // pong, or a type this client does not know.
        return;
    }
  }

  private async onConnected(socket: Socket, connected: DownstreamMessage_SystemMessage_ConnectedMessage): Promise<void> {
    if (connected.reconnectionToken) this.reconnectionToken = connected.reconnectionToken;
    if (socket.recovery || socket.settle === undefined) {
      // After a recovery the service may send `connected` again, with a fresh token.
      return;
    }
    this.id = connected.connectionId;
    this.user = connected.userId || undefined;
    this.sequenceId = 0;
    this.sequenceAcked = 0;
    this.established();
    if (this.opts.autoRejoinGroups && this.groups.size > 0) {
      await Promise.all(
        [...this.groups].map(async (group) => {
          try {
            const ackId = this.nextAckId++;
            await this.sendWithAck(
              { message: { case: "joinGroupMessage", value: UpstreamMessage_JoinGroupMessage.create({ group, ackId }) } },
              ackId,
            );
          } catch (error) {
            if (this.socket === socket) {
              this.emit("rejoin-group-failed", { group, error: error instanceof Error ? error : new Error(String(error)) });
            }
          }
        }),
      );
    }
    if (this.socket !== socket || socket.closed) return;
    const args: OnConnectedArgs = { connectionId: connected.connectionId };
    if (this.user !== undefined) args.userId = this.user;
    this.emit("connected", args);
    socket.settle?.();
  }

  private onData(data: DownstreamMessage_DataMessage): void {
    if (this.protocolInfo.reliable && data.sequenceId !== undefined) {
      if (data.sequenceId <= this.sequenceId) return; // already received (replayed after a recovery)
      this.sequenceId = data.sequenceId;
      if (this.sequenceId - this.sequenceAcked > SEQUENCE_ACK_BATCH) this.sendSequenceAck();
    }
    let payload: Payload<TJson>;
    try {
      payload = fromMessageData<TJson>(data.data);
    } catch {
      return;
    }
    const { from, group, data: _data, ...fields } = data;
    if (from === "group") {
      this.emit("group-message", { message: { ...fields, kind: "groupData", group: group ?? "", ...payload } });
    } else {
      this.emit("server-message", { message: { ...fields, kind: "serverData", ...payload } });
    }
  }

  /** The socket is usable: start the timers and release waiting operations. */
  private established(): void {
    this.setState("Connected");
    this.startTimers();
    this.releaseWaiters();
  }

  private onSocketClosed(socket: Socket, code: number, reason: string): void {
    if (socket.closed) return;
    socket.closed = true;
    socket.ws.onopen = socket.ws.onmessage = socket.ws.onclose = socket.ws.onerror = null;
    if (this.socket === socket) this.socket = undefined;
    this.stopTimers();
    const lost = new ConnectionLost(code, reason);
    for (const pending of [...this.pendingAcks.values()]) pending.reject(lost);
    if (socket.settle !== undefined) {
      // The attempt that opened this socket fails; its caller decides what comes next.
      socket.settle(new ConnectionError(`connection failed (code ${code}${reason ? `: ${reason}` : ""})`, code, reason));
      return;
    }
    void this.afterDrop(socket, code, reason);
  }

  /** An established connection closed: recover it, reconnect, or stop. */
  private async afterDrop(socket: Socket, code: number, reason: string): Promise<void> {
    if (
      !this.stopping &&
      this.protocolInfo.reliable &&
      this.id !== undefined &&
      this.reconnectionToken !== undefined &&
      code !== CloseCode.PolicyViolation
    ) {
      const failure = await this.recover();
      if (failure === undefined) return;
      // Report how recovery ended when the service refused it (1008), else the drop itself.
      if (failure.code === CloseCode.PolicyViolation) ({ code, reason } = failure);
    }
    const args: OnDisconnectedArgs = { code, reason };
    if (this.id !== undefined) args.connectionId = this.id;
    if (socket.disconnectedReason !== undefined) args.message = { message: socket.disconnectedReason };
    this.id = undefined;
    this.user = undefined;
    this.reconnectionToken = undefined;
    this.emit("disconnected", args);
    if (this.stopping || !this.opts.autoReconnect) {
      this.finishStop();
      return;
    }
    await this.reconnect();
  }

  /**
   * Reliable protocols: reopens the logical connection (same connection id, the service
   * resends what was not acknowledged). Undefined if it worked, else how the last attempt
   * failed: recovery stops at a 1008 close, at the end of the recovery window, or at `stop()`.
   */
  private async recover(): Promise<{ code: number; reason: string } | undefined> {
    this.setState("Recovering");
    const deadline = Date.now() + this.opts.recoveryWindowInMs;
    let failure = { code: 1006, reason: "recovery window elapsed" };
    while (!this.stopping && Date.now() < deadline) {
      const url = new URL(this.baseUrl ?? "");
      url.searchParams.set("awps_connection_id", this.id ?? "");
      url.searchParams.set("awps_reconnection_token", this.reconnectionToken ?? "");
      try {
        await this.open(url.toString(), true, this.stopController.signal);
        return undefined;
      } catch (error) {
        if (error instanceof ConnectionError) {
          failure = { code: error.code ?? 1006, reason: error.reason ?? error.message };
          if (error.code === CloseCode.PolicyViolation) return failure;
        }
      }
      try {
        await sleep(Math.min(this.opts.recoveryRetryDelayInMs, Math.max(0, deadline - Date.now())), this.stopController.signal);
      } catch {
        break;
      }
    }
    return failure;
  }

  /** Starts new connections until one works, the retries run out, or the client stops. */
  private async reconnect(): Promise<void> {
    this.setState("Disconnected");
    const retry = this.opts.reconnectRetry;
    for (let attempt = 1; attempt <= retry.maxRetries && !this.stopping; attempt++) {
      try {
        await sleep(retryDelay(retry, attempt), this.stopController.signal);
        await this.connect();
        return;
      } catch {
        if (!this.stopping) this.setState("Disconnected");
      }
    }
    this.finishStop();
  }

  private finishStop(): void {
    if (this.currentState === "Stopped") return;
    this.stopTimers();
    this.socket = undefined;
    this.id = undefined;
    this.user = undefined;
    this.reconnectionToken = undefined;
    this.setState("Stopped");
    this.releaseWaiters(new SendMessageError("the client stopped"));
    this.stopping = false;
    this.emit("stopped", {});
  }

  /** Closes a socket on the client's initiative and handles it as closed right away. */
  private abandon(socket: Socket, code: number, reason: string): void {
    try {
      socket.ws.close(code, reason);
    } catch {
      // Already closing.
    }
    this.onSocketClosed(socket, code, reason);
  }

  // --- keep-alive and sequence acks ---

  private startTimers(): void {
    this.stopTimers();
    const { keepAliveIntervalInMs, keepAliveTimeoutInMs, sequenceAckIntervalInMs } = this.opts;
    if (keepAliveIntervalInMs > 0) {
      this.timers.push(
        setInterval(() => {
          try {
            this.send({ message: { case: "pingMessage", value: {} } });
          } catch {
            // The close event handles it.
          }
        }, keepAliveIntervalInMs),
      );
    }
    if (keepAliveTimeoutInMs > 0) {
      this.timers.push(
        setInterval(
          () => {
            const socket = this.socket;
            if (socket !== undefined && Date.now() - this.lastReceivedAt > keepAliveTimeoutInMs) {
              this.abandon(socket, CLOSE_ABANDONED, "keep-alive timeout: nothing received");
            }
          },
          Math.max(10, Math.floor(keepAliveTimeoutInMs / 3)),
        ),
      );
    }
    if (this.protocolInfo.reliable && sequenceAckIntervalInMs > 0) {
      this.timers.push(setInterval(() => this.sendSequenceAck(), sequenceAckIntervalInMs));
    }
  }

  private stopTimers(): void {
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
  }

  private sendSequenceAck(): void {
    if (this.sequenceId <= this.sequenceAcked) return;
    try {
      this.send({ message: { case: "sequenceAckMessage", value: { sequenceId: this.sequenceId } } });
      this.sequenceAcked = this.sequenceId;
    } catch {
      // Not connected: acknowledged after the recovery.
    }
  }

  // --- events ---

  private setState(state: HubcastClientState): void {
    this.currentState = state;
  }

  private emit<K extends keyof HubcastClientEvents<TJson>>(event: K, args: HubcastClientEvents<TJson>[K]): void {
    const set = this.listeners.get(event) as Set<Listener<HubcastClientEvents<TJson>[K]>> | undefined;
    if (set === undefined) return;
    for (const listener of [...set]) {
      try {
        listener(args);
      } catch (error) {
        // A listener's failure must not break the connection loop.
        console.error(`HubcastClient: a "${String(event)}" listener threw`, error);
      }
    }
  }
}

// --- payloads ---

function toMessageData(content: unknown, dataType: DataType): MessageData {
  switch (dataType) {
    case "json": {
      const text = JSON.stringify(content);
      if (text === undefined) throw new TypeError("json content must be serializable with JSON.stringify");
      return { data: { case: "jsonData", value: text } };
    }
    case "text":
      if (typeof content !== "string") throw new TypeError("text content must be a string");
      return { data: { case: "textData", value: content } };
    case "binary":
      return { data: { case: "binaryData", value: toBytes(content) } };
    case "protobuf": {
      const any = content as wire.Any;
      if (typeof any?.typeUrl !== "string" || !(any.value instanceof Uint8Array)) {
        throw new TypeError("protobuf content must be { typeUrl: string, value: Uint8Array }");
      }
      return { data: { case: "protobufData", value: any } };
    }
    default:
      throw new TypeError(`unknown dataType ${JSON.stringify(dataType)}`);
  }
}

function fromMessageData<TJson>(data: MessageData | undefined): Payload<TJson> {
  const d = data?.data;
  switch (d?.case) {
    case "textData":
      return { dataType: "text", data: d.value };
    case "binaryData":
      return { dataType: "binary", data: d.value };
    case "protobufData":
      return { dataType: "protobuf", data: d.value };
    case "jsonData":
      return { dataType: "json", data: JSON.parse(d.value) as TJson };
    default:
      return { dataType: "json", data: null as TJson };
  }
}

function toBytes(data: unknown): Uint8Array {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw new TypeError("binary content must be a Uint8Array or an ArrayBuffer");
}

// --- helpers ---

function retryDelay(retry: Required<RetryOptions>, attempt: number): number {
  if (retry.mode === "Exponential") {
    return Math.min(retry.maxRetryDelayInMs, retry.retryDelayInMs * 2 ** (attempt - 1));
  }
  return retry.retryDelayInMs;
}

function abortReason(signal: AbortSignal | undefined): Error {
  const reason: unknown = signal?.reason;
  return reason instanceof Error ? reason : new Error("aborted");
}

/** Resolves after `ms`; rejects early if `signal` aborts. */
function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (signal?.aborted) return reject(abortReason(signal));
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(abortReason(signal));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** A signal that aborts when either input does. */
function anySignal(a: AbortSignal, b: AbortSignal | undefined): AbortSignal {
  if (b === undefined) return a;
  const controller = new AbortController();
  const abort = (s: AbortSignal): void => controller.abort(s.reason);
  if (a.aborted) abort(a);
  else if (b.aborted) abort(b);
  else {
    a.addEventListener("abort", () => abort(a), { once: true });
    b.addEventListener("abort", () => abort(b), { once: true });
  }
  return controller.signal;
}

/** A URL without its access token, for error messages. */
function redact(url: string): string {
  return url.replace(/access_token=[^&]*/, "access_token=…");
}
