import { AckErrorName, CloseCode, type DownstreamMessage_DataMessage, UpstreamMessage, UpstreamMessage_EventMessage, UpstreamMessage_SendToGroupMessage } from "./protocol.js";
import * as wire from "./wire.js";
/** The subprotocols a {@link HubcastClient} speaks. */
export type ProtocolName = "json" | "json.reliable" | "protobuf" | "protobuf.reliable";
/** The WebSocket subprotocol name of each {@link ProtocolName}. */
export declare function subprotocolOf(protocol: ProtocolName): string;
/**
 * A WebSocket class: the platform's `WebSocket` (browsers, Node.js 22 and later, Deno, Bun)
 * or a compatible one such as the `ws` package's (Node.js 20).
 */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => unknown;
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
export type ClientAccessUrlProvider = string | ((options: {
    abortSignal?: AbortSignal;
}) => Promise<string>);
/** A client access URL, or something that provides one for every new connection. */
export type HubcastClientCredential = string | (() => Promise<string>) | {
    getClientAccessUrl: ClientAccessUrlProvider;
};
/** The connection states. */
export type HubcastClientState = "Stopped" | "Connecting" | "Connected" | "Recovering" | "Disconnected";
/** The payload kinds, as JSON clients name them. */
export type DataType = "json" | "text" | "binary" | "protobuf";
/** A received payload, typed by its `dataType`. `TJson` is the type of JSON payloads. */
export type Payload<TJson = unknown> = {
    dataType: "json";
    data: TJson;
} | {
    dataType: "text";
    data: string;
} | {
    dataType: "binary";
    data: Uint8Array;
} | {
    dataType: "protobuf";
    data: wire.Any;
};
/** What can be sent as each `dataType`. */
export type Content<D extends DataType, TJson = unknown> = D extends "json" ? TJson : D extends "text" ? string : D extends "binary" ? Uint8Array | ArrayBuffer : wire.Any;
/** The fields of a data message besides its source and payload (sequence id, metadata, ...). */
export type DataMessageFields = Omit<DownstreamMessage_DataMessage, "from" | "group" | "data">;
/** A message published to a group this client joined. */
export type GroupDataMessage<TJson = unknown> = DataMessageFields & {
    kind: "groupData";
    /** The group. */
    group: string;
} & Payload<TJson>;
/** A message the server sent to this connection, its user, or everyone. */
export type ServerDataMessage<TJson = unknown> = DataMessageFields & {
    kind: "serverData";
} & Payload<TJson>;
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
    message?: {
        message: string;
    };
    /** The WebSocket close code (1006: the connection dropped without a close frame). See {@link CloseCode}. */
    code?: CloseCode | number;
    /** The WebSocket close reason. */
    reason?: string;
}
/** `stopped`: the client stopped and will not reconnect. */
export interface OnStoppedArgs {
}
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
export type SendToGroupOptions = OperationOptions & Partial<Omit<UpstreamMessage_SendToGroupMessage, "group" | "data" | "ackId">> & {
    /** Send without an ack id: resolves once written, failures are not reported. */
    fireAndForget?: boolean;
};
/** Options of {@link HubcastClient.sendEvent}: every field of the protocol's message but the event, payload and ack id. */
export type SendEventOptions = OperationOptions & Partial<Omit<UpstreamMessage_EventMessage, "event" | "data" | "ackId">> & {
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
    metadata?: {
        [key: string]: string;
    };
}
/** The upstream's answer to {@link HubcastClient.invokeEvent}: its payload, if it sent one. */
export type InvokeEventResult<TJson = unknown> = {
    invocationId: string;
} & (Payload<TJson> | {
    dataType?: undefined;
    data?: undefined;
});
/**
 * An invocation failed: the upstream refused or failed it, or the service gave up on it
 * (`errorDetail`: `BadRequest`, `Forbidden`, `NotFound`, `InternalServerError`, `Timeout`, …),
 * or it was cancelled, timed out at the client, or lost with its connection.
 */
export declare class InvocationError extends Error {
    /** The invocation's id. */
    readonly invocationId: string;
    /** The service's error, when it answered with one. */
    readonly errorDetail: {
        name: string;
        message: string;
    } | undefined;
    constructor(message: string, options: {
        invocationId: string;
        errorDetail?: {
            name: string;
            message: string;
        };
        cause?: unknown;
    });
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
export declare class GroupStreamError extends Error {
    /** The stream's id. */
    readonly streamId: string;
    /** The publisher's own code, for a `UserError`. */
    readonly userErrorCode: string | undefined;
    constructor(streamId: string, name: string, message: string, userErrorCode?: string);
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
export declare class SendMessageError extends Error {
    /** The ack id of the operation, if it had one. */
    readonly ackId: number | undefined;
    /** The service's error, when it answered with one. */
    readonly errorDetail: {
        name: AckErrorName | (string & {});
        message: string;
    } | undefined;
    constructor(message: string, options?: {
        ackId?: number;
        errorDetail?: {
            name: string;
            message: string;
        };
        cause?: unknown;
    });
}
/** A connection attempt failed: the handshake was refused or the socket closed before `connected`. */
export declare class ConnectionError extends Error {
    /** The WebSocket close code, if the socket closed. */
    readonly code: number | undefined;
    /** The close reason or the socket's error message. */
    readonly reason: string | undefined;
    constructor(message: string, code?: number, reason?: string);
}
type Listener<A> = (args: A) => void;
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
export declare class HubcastClient<TJson = unknown> {
    private readonly getUrl;
    private readonly protocolInfo;
    private readonly WebSocketImpl;
    private readonly opts;
    private currentState;
    private socket;
    private stopping;
    /** Aborted by `stop()`: cancels sleeps and URL requests of the connection loop. */
    private stopController;
    private id;
    private user;
    private reconnectionToken;
    /** The URL of the current logical connection, to which recovery parameters are appended. */
    private baseUrl;
    /** Groups joined, to join again on a new connection. */
    private readonly groups;
    private nextAckId;
    private readonly pendingAcks;
    /** Operations waiting for the client to be connected. */
    private readonly waiters;
    private nextInvocationId;
    /** Invocations waiting for their `invokeResponse`, by id. */
    private readonly pendingInvocations;
    /** Group streams this client publishes, by stream id. */
    private readonly outboundStreams;
    /** `onGroupStream` callbacks. */
    private readonly streamSubscriptions;
    /** Highest data-message sequence id received, and the one last acknowledged. */
    private sequenceId;
    private sequenceAcked;
    private lastReceivedAt;
    private timers;
    /** Listeners by event name (each set holds listeners of that event's argument type). */
    private readonly listeners;
    /**
     * @param credential A client access URL, a function that returns a fresh one (called for
     *   every new connection, so tokens can be renewed), or `{ getClientAccessUrl }` as in
     *   Azure's client.
     * @param options See {@link HubcastClientOptions}.
     */
    constructor(credential: HubcastClientCredential, options?: HubcastClientOptions);
    /** The connection state. */
    get state(): HubcastClientState;
    /** The id of the current connection, once connected. */
    get connectionId(): string | undefined;
    /** The user id of the current connection, if it has one. */
    get userId(): string | undefined;
    /** The WebSocket subprotocol this client speaks. */
    get subprotocol(): string;
    /** Adds a listener; returns a function that removes it. */
    on<K extends keyof HubcastClientEvents<TJson>>(event: K, listener: Listener<HubcastClientEvents<TJson>[K]>): () => void;
    /** Removes a listener. */
    off<K extends keyof HubcastClientEvents<TJson>>(event: K, listener: Listener<HubcastClientEvents<TJson>[K]>): void;
    /**
     * Connects. Resolves once the service's `connected` message arrived (so
     * {@link connectionId} is set); rejects with a {@link ConnectionError} if this first attempt
     * fails (later drops are handled by reconnection).
     */
    start(options?: {
        abortSignal?: AbortSignal;
    }): Promise<void>;
    /** Closes the connection and stops reconnecting; `stopped` follows. Pending operations reject. */
    stop(): void;
    /** Joins a group; it is joined again on every new connection (`autoRejoinGroups`). */
    joinGroup(group: string, options?: OperationOptions): Promise<AckResult>;
    /** Leaves a group. */
    leaveGroup(group: string, options?: OperationOptions): Promise<AckResult>;
    /** Publishes to a group. `content` is typed by `dataType`. */
    sendToGroup<D extends DataType>(group: string, content: Content<D, TJson>, dataType: D, options?: SendToGroupOptions): Promise<AckResult>;
    /** Raises an event to the hub's upstream handler. `content` is typed by `dataType`. */
    sendEvent<D extends DataType>(event: string, content: Content<D, TJson>, dataType: D, options?: SendEventOptions): Promise<AckResult>;
    /**
     * Calls the hub's upstream (`invoke`: the user event `azure.webpubsub.user.<event>`) and
     * resolves with its answer. Rejects with an {@link InvocationError}: the upstream's refusal
     * or failure, the service's timeout, or this client's (`timeoutInMs`, `abortSignal`, which
     * also tell the service to give up the call), or a dropped connection.
     */
    invokeEvent<D extends DataType>(event: string, content: Content<D, TJson>, dataType: D, options?: InvokeEventOptions): Promise<InvokeEventResult<TJson>>;
    /**
     * Opens a group stream (`sendToGroup` with `stream`): resolves once the service took it, with
     * a writer whose chunks reach the group's members in order, as one stream.
     */
    openGroupStream(group: string, options?: OpenGroupStreamOptions): Promise<GroupStreamWriter<TJson>>;
    /**
     * Calls `callback` with every group stream that starts arriving (of `groupNames`, or of
     * every group); returns a handle whose `close()` stops it.
     */
    onGroupStream(callback: (stream: InboundGroupStream<TJson>) => void, options?: {
        groupNames?: string[];
    }): {
        close(): void;
    };
    private invoke;
    private sendWithAck;
    private onAck;
    /** Resolves once connected; rejects if the client is stopped (or stops) first. */
    private waitConnected;
    private releaseWaiters;
    private send;
    /** Gets a fresh URL and opens a new connection (not a recovery). */
    private connect;
    /** Opens a socket; resolves once it is established (new: `connected` handled; recovery: open). */
    private open;
    private onFrame;
    private onConnected;
    private onData;
    /** The socket is usable: start the timers and release waiting operations. */
    private established;
    private onSocketClosed;
    /** An established connection closed: recover it, reconnect, or stop. */
    private afterDrop;
    /**
     * Reliable protocols: reopens the logical connection (same connection id, the service
     * resends what was not acknowledged). Undefined if it worked, else how the last attempt
     * failed: recovery stops at a 1008 close, at the end of the recovery window, or at `stop()`.
     */
    private recover;
    /** Starts new connections until one works, the retries run out, or the client stops. */
    private reconnect;
    private finishStop;
    /** Closes a socket on the client's initiative and handles it as closed right away. */
    private abandon;
    private startTimers;
    private stopTimers;
    private sendSequenceAck;
    private setState;
    private emit;
}
/**
 * A group stream this client publishes ({@link HubcastClient.openGroupStream}). `write`
 * resolves once the service took the chunk (`streamAck`) and rejects if it refused it
 * (`streamNack`) or the stream closed; `end` resolves once the service closed the stream.
 */
export declare class GroupStreamWriter<TJson = unknown> {
    private readonly sendMessage;
    private readonly forget;
    /** The stream's id. */
    readonly streamId: string;
    private nextSequenceId;
    private readonly writes;
    private opening;
    private ending;
    private closedWith;
    /** @internal */
    constructor(streamId: string, sendMessage: (message: UpstreamMessage) => void, forget: () => void);
    /** @internal Sends the start and waits for the service to take it. */
    started(send: () => void): Promise<void>;
    /** Sends the next chunk; resolves once the service took it. */
    write<D extends DataType>(content: Content<D, TJson>, dataType: D): Promise<void>;
    /** Tells the service the stream is alive without a chunk (it ends idle streams). */
    keepAlive(): void;
    /** Ends the stream (with an error for its readers, if given); resolves once the service closed it. */
    end(error?: {
        message: string;
        userErrorCode?: string;
    }): Promise<void>;
    private trySend;
    private closedError;
    /** @internal `streamAck`: every chunk before `expected` was taken. */
    onAck(expected: number): void;
    /** @internal `streamNack`: the chunks from `expected` on were refused. */
    onNack(name: string, message: string, expected: number): void;
    /** @internal `streamClosed` (or the connection's end). */
    onClosed(error: {
        name: string;
        message: string;
    } | undefined): void;
}
export {};
