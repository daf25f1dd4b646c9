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
  type DownstreamMessage_InvokeResponseMessage,
  type DownstreamMessage_StreamInfo,
  type DownstreamMessage_SystemMessage_ConnectedMessage,
  type MessageData,
  Subprotocol,
  UpstreamMessage,
  UpstreamMessage_CancelInvocationMessage,
  UpstreamMessage_EventMessage,
  UpstreamMessage_InvokeMessage,
  UpstreamMessage_JoinGroupMessage,
  UpstreamMessage_LeaveGroupMessage,
  UpstreamMessage_SendToGroupMessage,
  UpstreamMessage_StreamDataMessage,
  UpstreamMessage_StreamEndMessage,
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

/** Options of {@link HubcastClient.invokeEvent}. */
export interface InvokeEventOptions {
  /** The invocation id; default: the next of the client's counter (`"1"`, `"2"`, …). */
  invocationId?: string;
  /** Cancels the invocation: the service is told (`cancelInvocation`) and answers nothing. */
  abortSignal?: AbortSignal;
  /** Gives up after this many milliseconds, cancelling the invocation as an abort does. */
  timeoutInMs?: number;
  /** Application metadata for the upstream (`x-webpubsub-metadata-<key>` headers). */
  metadata?: { [key: string]: string };
}

/** The upstream's answer to {@link HubcastClient.invokeEvent}: its payload, if it sent one. */
export type InvokeEventResult<TJson = unknown> = { invocationId: string } & (
  | Payload<TJson>
  | { dataType?: undefined; data?: undefined }
);

/**
 * An invocation failed: the upstream refused or failed it, or the service gave up on it
 * (`errorDetail`: `BadRequest`, `Forbidden`, `NotFound`, `InternalServerError`, `Timeout`, …),
 * or it was cancelled, timed out at the client, or lost with its connection.
 */
export class InvocationError extends Error {
  /** The invocation's id. */
  readonly invocationId: string;
  /** The service's error, when it answered with one. */
  readonly errorDetail: { name: string; message: string } | undefined;

  constructor(
    message: string,
    options: { invocationId: string; errorDetail?: { name: string; message: string }; cause?: unknown },
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "InvocationError";
    this.invocationId = options.invocationId;
    this.errorDetail = options.errorDetail;
  }
}

/** Options of {@link HubcastClient.openGroupStream}. */
export interface OpenGroupStreamOptions {
  /** The stream id; default: a random UUID. */
  streamId?: string;
  /** The publisher does not receive its own chunks. */
  noEcho?: boolean;
  /** The service ends the stream after this long without a chunk or keep-alive (at most 300 000 ms). */
  idleTimeoutInMs?: number;
}

/**
 * A group stream failed: `name` is the service's (`InvalidSequenceId`, `IdleTimeout`,
 * `StreamNotFound`, `Forbidden`, …) or, for a received stream, why it ended (`UserError` with
 * the publisher's `userErrorCode`, `IdleTimeout`, `Cancelled`).
 */
export class GroupStreamError extends Error {
  /** The stream's id. */
  readonly streamId: string;
  /** The publisher's own code, for a `UserError`. */
  readonly userErrorCode: string | undefined;

  constructor(streamId: string, name: string, message: string, userErrorCode?: string) {
    super(message);
    this.name = name;
    this.streamId = streamId;
    this.userErrorCode = userErrorCode;
  }
}

/** A chunk of a received group stream. */
export type GroupStreamChunk<TJson = unknown> = Payload<TJson> & {
  /** 1, 2, 3, … */
  streamSequenceId: number;
  /** Chunks missing right before this one (a gap; 0 normally). */
  missed: number;
  /** The publisher's user id, if it has one. */
  fromUserId?: string;
};

/**
 * A group stream published by another client ({@link HubcastClient.onGroupStream}): iterate
 * its chunks; the iteration ends with the stream, or throws a {@link GroupStreamError} when
 * it ended with an error.
 */
export interface InboundGroupStream<TJson = unknown> extends AsyncIterable<GroupStreamChunk<TJson>> {
  readonly groupName: string;
  readonly streamId: string;
  /** Chunks missed so far (gaps in `streamSequenceId`). */
  readonly missedChunks: number;
}

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

  private nextInvocationId = 1;
  /** Invocations waiting for their `invokeResponse`, by id. */
  private readonly pendingInvocations = new Map<string, PendingInvocation>();
  /** Group streams this client publishes, by stream id. */
  private readonly outboundStreams = new Map<string, GroupStreamWriter<TJson>>();
  /** `onGroupStream` callbacks. */
  private readonly streamSubscriptions = new Set<StreamSubscription<TJson>>();

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

  /**
   * Calls the hub's upstream (`invoke`: the user event `azure.webpubsub.user.<event>`) and
   * resolves with its answer. Rejects with an {@link InvocationError}: the upstream's refusal
   * or failure, the service's timeout, or this client's (`timeoutInMs`, `abortSignal`, which
   * also tell the service to give up the call), or a dropped connection.
   */
  async invokeEvent<D extends DataType>(
    event: string,
    content: Content<D, TJson>,
    dataType: D,
    options: InvokeEventOptions = {},
  ): Promise<InvokeEventResult<TJson>> {
    const invocationId = options.invocationId ?? String(this.nextInvocationId++);
    if (this.pendingInvocations.has(invocationId)) {
      throw new InvocationError(`invocation id ${invocationId} is already in flight`, { invocationId });
    }
    const { abortSignal, timeoutInMs } = options;
    try {
      await this.waitConnected(abortSignal);
    } catch (error) {
      throw new InvocationError(error instanceof Error ? error.message : String(error), { invocationId, cause: error });
    }
    const value = UpstreamMessage_InvokeMessage.create({
      invocationId,
      target: "event",
      event,
      data: toMessageData(content, dataType),
      metadata: options.metadata ?? {},
    });
    const response = await new Promise<DownstreamMessage_InvokeResponseMessage>((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const cleanup = (): void => {
        this.pendingInvocations.delete(invocationId);
        if (timer !== undefined) clearTimeout(timer);
        abortSignal?.removeEventListener("abort", onAbort);
      };
      const cancel = (why: string): void => {
        cleanup();
        try {
          const cancelMessage = UpstreamMessage_CancelInvocationMessage.create({ invocationId });
          this.send({ message: { case: "cancelInvocationMessage", value: cancelMessage } });
        } catch {
          // Not connected: the service abandons the call with the connection anyway.
        }
        reject(new InvocationError(why, { invocationId }));
      };
      const onAbort = (): void => cancel(`invocation ${invocationId} was cancelled`);
      this.pendingInvocations.set(invocationId, {
        resolve: (m) => {
          cleanup();
          resolve(m);
        },
        reject: (e) => {
          cleanup();
          reject(new InvocationError(e.message, { invocationId, cause: e }));
        },
      });
      if (abortSignal?.aborted) return onAbort();
      abortSignal?.addEventListener("abort", onAbort, { once: true });
      if (timeoutInMs !== undefined) {
        timer = setTimeout(() => cancel(`invocation ${invocationId} timed out after ${timeoutInMs} ms`), timeoutInMs);
      }
      try {
        this.send({ message: { case: "invokeMessage", value } });
      } catch (error) {
        this.pendingInvocations.get(invocationId)?.reject(error as Error);
      }
    });
    if (!response.success) {
      const errorDetail = { name: response.error?.name ?? "", message: response.error?.message ?? "" };
      throw new InvocationError(`invocation ${invocationId} failed: ${errorDetail.name}: ${errorDetail.message}`, {
        invocationId,
        errorDetail,
      });
    }
    if (response.data === undefined) return { invocationId };
    return { invocationId, ...fromMessageData<TJson>(response.data) };
  }

  /**
   * Opens a group stream (`sendToGroup` with `stream`): resolves once the service took it, with
   * a writer whose chunks reach the group's members in order, as one stream.
   */
  async openGroupStream(group: string, options: OpenGroupStreamOptions = {}): Promise<GroupStreamWriter<TJson>> {
    const streamId = options.streamId ?? globalThis.crypto.randomUUID();
    if (this.outboundStreams.has(streamId)) throw new GroupStreamError(streamId, "BadRequest", `stream ${streamId} is already open`);
    await this.waitConnected();
    const writer = new GroupStreamWriter<TJson>(streamId, (m) => this.send(m), () =>
      this.outboundStreams.delete(streamId),
    );
    this.outboundStreams.set(streamId, writer);
    const start = UpstreamMessage_SendToGroupMessage.create({
      group,
      noEcho: options.noEcho ?? false,
      stream: { streamId, idleTimeoutMs: options.idleTimeoutInMs },
    });
    await writer.started(() => this.send({ message: { case: "sendToGroupMessage", value: start } }));
    return writer;
  }

  /**
   * Calls `callback` with every group stream that starts arriving (of `groupNames`, or of
   * every group); returns a handle whose `close()` stops it.
   */
  onGroupStream(
    callback: (stream: InboundGroupStream<TJson>) => void,
    options: { groupNames?: string[] } = {},
  ): { close(): void } {
    const subscription = new StreamSubscription<TJson>(callback, options.groupNames);
    this.streamSubscriptions.add(subscription);
    return {
      close: () => {
        this.streamSubscriptions.delete(subscription);
        subscription.close();
      },
    };
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
      case "invokeResponseMessage":
        this.pendingInvocations.get(m.value.invocationId)?.resolve(m.value);
        return;
      case "streamAckMessage":
        this.outboundStreams.get(m.value.streamId)?.onAck(m.value.expectedSequenceId);
        return;
      case "streamNackMessage":
        this.outboundStreams.get(m.value.streamId)?.onNack(m.value.name, m.value.message, m.value.expectedSequenceId);
        return;
      case "streamClosedMessage":
        this.outboundStreams.get(m.value.streamId)?.onClosed(m.value.error);
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
    if (from === "group" && data.stream !== undefined) {
      for (const subscription of this.streamSubscriptions) {
        subscription.onMessage(group ?? "", data.stream, data.fromUserId, payload);
      }
    }
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
    for (const pending of [...this.pendingInvocations.values()]) pending.reject(lost);
    for (const writer of [...this.outboundStreams.values()]) writer.onClosed({ name: "ConnectionLost", message: lost.message });
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

interface PendingInvocation {
  resolve: (response: DownstreamMessage_InvokeResponseMessage) => void;
  reject: (error: Error) => void;
}

/**
 * A group stream this client publishes ({@link HubcastClient.openGroupStream}). `write`
 * resolves once the service took the chunk (`streamAck`) and rejects if it refused it
 * (`streamNack`) or the stream closed; `end` resolves once the service closed the stream.
 */
export class GroupStreamWriter<TJson = unknown> {
  /** The stream's id. */
  readonly streamId: string;
  private nextSequenceId = 1;
  private readonly writes = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();
  private opening: { resolve: () => void; reject: (e: Error) => void } | undefined;
  private ending: { resolve: () => void; reject: (e: Error) => void } | undefined;
  private closedWith: Error | null | undefined;

  /** @internal */
  constructor(
    streamId: string,
    private readonly sendMessage: (message: UpstreamMessage) => void,
    private readonly forget: () => void,
  ) {
    this.streamId = streamId;
  }

  /** @internal Sends the start and waits for the service to take it. */
  started(send: () => void): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.opening = { resolve, reject };
      try {
        send();
      } catch (error) {
        this.onClosed({ name: "ConnectionLost", message: (error as Error).message });
      }
    });
  }

  /** Sends the next chunk; resolves once the service took it. */
  write<D extends DataType>(content: Content<D, TJson>, dataType: D): Promise<void> {
    if (this.closedWith !== undefined) return Promise.reject(this.closedError());
    const streamSequenceId = this.nextSequenceId++;
    const value = UpstreamMessage_StreamDataMessage.create({
      streamId: this.streamId,
      streamSequenceId,
      data: toMessageData(content, dataType),
    });
    return new Promise<void>((resolve, reject) => {
      this.writes.set(streamSequenceId, { resolve, reject });
      this.trySend({ message: { case: "streamDataMessage", value } });
    });
  }

  /** Tells the service the stream is alive without a chunk (it ends idle streams). */
  keepAlive(): void {
    if (this.closedWith !== undefined) throw this.closedError();
    const value = UpstreamMessage_StreamDataMessage.create({ streamId: this.streamId });
    this.sendMessage({ message: { case: "streamDataMessage", value } });
  }

  /** Ends the stream (with an error for its readers, if given); resolves once the service closed it. */
  end(error?: { message: string; userErrorCode?: string }): Promise<void> {
    if (this.closedWith !== undefined) return Promise.reject(this.closedError());
    const value = UpstreamMessage_StreamEndMessage.create({ streamId: this.streamId });
    if (error !== undefined) {
      value.error = { message: error.message };
      if (error.userErrorCode !== undefined) value.error.userErrorCode = error.userErrorCode;
    }
    return new Promise<void>((resolve, reject) => {
      this.ending = { resolve, reject };
      this.trySend({ message: { case: "streamEndMessage", value } });
    });
  }

  private trySend(message: UpstreamMessage): void {
    try {
      this.sendMessage(message);
    } catch (error) {
      this.onClosed({ name: "ConnectionLost", message: (error as Error).message });
    }
  }

  private closedError(): Error {
    return this.closedWith ?? new GroupStreamError(this.streamId, "StreamClosed", `stream ${this.streamId} is closed`);
  }

  /** @internal `streamAck`: every chunk before `expected` was taken. */
  onAck(expected: number): void {
    if (expected === 1 && this.opening !== undefined) {
      this.opening.resolve();
      this.opening = undefined;
    }
    for (const [id, pending] of this.writes) {
      if (id < expected) {
        this.writes.delete(id);
        pending.resolve();
      }
    }
  }

  /** @internal `streamNack`: the chunks from `expected` on were refused. */
  onNack(name: string, message: string, expected: number): void {
    for (const [id, pending] of this.writes) {
      if (id >= expected) {
        this.writes.delete(id);
        pending.reject(new GroupStreamError(this.streamId, name, message));
      }
    }
    this.nextSequenceId = expected;
  }

  /** @internal `streamClosed` (or the connection's end). */
  onClosed(error: { name: string; message: string } | undefined): void {
    if (this.closedWith !== undefined) return;
    this.forget();
    const failure = error === undefined ? null : new GroupStreamError(this.streamId, error.name, error.message);
    this.closedWith = failure;
    const rejection = failure ?? this.closedError();
    this.opening?.reject(rejection);
    this.opening = undefined;
    for (const pending of this.writes.values()) pending.reject(rejection);
    this.writes.clear();
    if (this.ending !== undefined) {
      if (failure === null) this.ending.resolve();
      else this.ending.reject(failure);
      this.ending = undefined;
    }
  }
}

/** One `onGroupStream` callback and the streams it was given. */
class StreamSubscription<TJson> {
  private readonly active = new Map<string, InboundStream<TJson>>();

  constructor(
    private readonly callback: (stream: InboundGroupStream<TJson>) => void,
    private readonly groupNames: string[] | undefined,
  ) {}

  onMessage(group: string, info: DownstreamMessage_StreamInfo, fromUserId: string | undefined, payload: Payload<TJson>): void {
    if (this.groupNames !== undefined && !this.groupNames.includes(group)) return;
    const key = JSON.stringify([group, info.streamId]);
    let stream = this.active.get(key);
    if (stream === undefined) {
      stream = new InboundStream<TJson>(group, info.streamId);
      this.active.set(key, stream);
      try {
        this.callback(stream);
      } catch {
        // The callback's own failure does not stop the client.
      }
    }
    if (info.endOfStream) {
      this.active.delete(key);
      stream.finish(info);
    } else {
      stream.push(info.streamSequenceId, fromUserId, payload);
    }
  }

  close(): void {
    for (const stream of this.active.values()) stream.finish(undefined);
    this.active.clear();
  }
}

/** A received group stream: a queue of chunks read by one async iterator. */
class InboundStream<TJson> implements InboundGroupStream<TJson> {
  missedChunks = 0;
  private last = 0;
  private readonly chunks: GroupStreamChunk<TJson>[] = [];
  private readonly readers: { resolve: (r: IteratorResult<GroupStreamChunk<TJson>>) => void; reject: (e: Error) => void }[] = [];
  private done: Error | null | undefined;

  constructor(
    readonly groupName: string,
    readonly streamId: string,
  ) {}

  push(sequenceId: number, fromUserId: string | undefined, payload: Payload<TJson>): void {
    if (this.done !== undefined || sequenceId <= this.last) return;
    const missed = sequenceId - this.last - 1;
    this.missedChunks += missed;
    this.last = sequenceId;
    const chunk = { ...payload, streamSequenceId: sequenceId, missed } as GroupStreamChunk<TJson>;
    if (fromUserId) chunk.fromUserId = fromUserId;
    const reader = this.readers.shift();
    if (reader !== undefined) reader.resolve({ done: false, value: chunk });
    else this.chunks.push(chunk);
  }

  finish(info: DownstreamMessage_StreamInfo | undefined): void {
    if (this.done !== undefined) return;
    if (info !== undefined) this.missedChunks += Math.max(0, info.streamSequenceId - this.last - 1);
    const e = info?.error;
    this.done = e === undefined ? null : new GroupStreamError(this.streamId, e.name, e.message, e.userErrorCode);
    for (const reader of this.readers.splice(0)) {
      if (this.done === null) reader.resolve({ done: true, value: undefined });
      else reader.reject(this.done);
    }
  }

  [Symbol.asyncIterator](): AsyncIterator<GroupStreamChunk<TJson>> {
    return {
      next: () => {
        const chunk = this.chunks.shift();
        if (chunk !== undefined) return Promise.resolve({ done: false, value: chunk });
        if (this.done === null) return Promise.resolve({ done: true, value: undefined });
        if (this.done !== undefined) return Promise.reject(this.done);
        return new Promise((resolve, reject) => this.readers.push({ resolve, reject }));
      },
    };
  }
}

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
