import * as wire from "./wire.js";
/**
 * The error names an `AckMessage` can carry (`AckMessage.ErrorMessage.name`, a string on the
 * wire). Not used as a field type, so that unknown names still decode.
 */
export declare const AckErrorName: {
    /** The connection lacks the role the request needs. */
    readonly Forbidden: "Forbidden";
    /** The request is invalid (missing group, bad payload, unsupported type). */
    readonly BadRequest: "BadRequest";
    /**
     * The ack id was processed before; the request was not executed again. Clients treat it as
     * success and must not retry.
     */
    readonly Duplicate: "Duplicate";
    /** The service failed to process the request; retrying (with the same ack id) is safe. */
    readonly InternalServerError: "InternalServerError";
};
/**
 * The error names an `AckMessage` can carry (`AckMessage.ErrorMessage.name`, a string on the
 * wire). Not used as a field type, so that unknown names still decode.
 */
export type AckErrorName = (typeof AckErrorName)[keyof typeof AckErrorName];
/**
 * WebSocket close codes the service uses when it closes a client connection (RFC 6455 §7.4),
 * and what a client should do about each. Not used as a field type: close codes travel in the
 * WebSocket close frame.
 */
export declare const CloseCode: {
    /** No code; never sent. */
    readonly Unspecified: 0;
    /** Normal closure: the connection was closed on request (REST or control-plane close). */
    readonly Normal: 1000;
    /** The service is shutting down or restarting; reconnecting (to another node) is expected. */
    readonly GoingAway: 1001;
    /** The client sent a frame of a kind its subprotocol does not allow (binary on JSON). */
    readonly UnsupportedData: 1003;
    /** The client sent a message that is not valid for its subprotocol. */
    readonly InvalidPayload: 1007;
    /**
     * Recovery of a reliable connection is impossible (unknown or expired connection, bad
     * reconnection token): stop recovering and start a new connection.
     */
    readonly PolicyViolation: 1008;
    /** The client sent a message larger than the service accepts. */
    readonly MessageTooBig: 1009;
    /** The service failed (for a simple client: no upstream handler took its message). */
    readonly InternalError: 1011;
    /** The client fell too far behind reading its messages and was closed as slow. */
    readonly TryAgainLater: 1013;
};
/**
 * WebSocket close codes the service uses when it closes a client connection (RFC 6455 §7.4),
 * and what a client should do about each. Not used as a field type: close codes travel in the
 * WebSocket close frame.
 */
export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode];
/**
 * The WebSocket subprotocols of the client protocol: the `Sec-WebSocket-Protocol` values a
 * client offers. Not used as a field type.
 */
export declare const Subprotocol: {
    /** JSON messages in text frames. */
    readonly Json: "json.webpubsub.azure.v1";
    /** JSON messages, plus sequence ids, `sequenceAck` and recovery of a dropped connection. */
    readonly JsonReliable: "json.reliable.webpubsub.azure.v1";
    /** `UpstreamMessage` / `DownstreamMessage` in binary frames. */
    readonly Protobuf: "protobuf.webpubsub.azure.v1";
    /** Protobuf messages, plus sequence ids, acknowledgements and recovery. */
    readonly ProtobufReliable: "protobuf.reliable.webpubsub.azure.v1";
};
/**
 * The WebSocket subprotocols of the client protocol: the `Sec-WebSocket-Protocol` values a
 * client offers. Not used as a field type.
 */
export type Subprotocol = (typeof Subprotocol)[keyof typeof Subprotocol];
/** A message sent by a client to the service. */
export interface UpstreamMessage {
    /** The request. Exactly one is set; a message with none set is rejected. */
    message?: 
    /**
     * Publish data to a group. Requires the `webpubsub.sendToGroup` role (for any group) or
     * `webpubsub.sendToGroup.<group>` (for that group).
     */
    {
        case: "sendToGroupMessage";
        value: UpstreamMessage_SendToGroupMessage;
    }
    /**
     * Raise a custom event to the upstream application (webhook `azure.webpubsub.user.<event>`
     * or the gRPC event stream). Always allowed; needs no role.
     */
     | {
        case: "eventMessage";
        value: UpstreamMessage_EventMessage;
    }
    /**
     * Join a group. Requires the `webpubsub.joinLeaveGroup` role (for any group) or
     * `webpubsub.joinLeaveGroup.<group>` (for that group).
     */
     | {
        case: "joinGroupMessage";
        value: UpstreamMessage_JoinGroupMessage;
    }
    /** Leave a group. Requires the same role as joining. */
     | {
        case: "leaveGroupMessage";
        value: UpstreamMessage_LeaveGroupMessage;
    }
    /**
     * Reliable subprotocol only: acknowledge every data message up to and including a sequence
     * id (cumulative), so the service can drop them from its resend buffer.
     */
     | {
        case: "sequenceAckMessage";
        value: UpstreamMessage_SequenceAckMessage;
    }
    /** Keep-alive probe; the service replies with a `DownstreamMessage.PongMessage`. */
     | {
        case: "pingMessage";
        value: UpstreamMessage_PingMessage;
    }
    /** Call the upstream application and wait for its answer (`InvokeResponseMessage`). */
     | {
        case: "invokeMessage";
        value: UpstreamMessage_InvokeMessage;
    }
    /** Stop waiting for an invocation: the service abandons it and sends no answer. */
     | {
        case: "cancelInvocationMessage";
        value: UpstreamMessage_CancelInvocationMessage;
    }
    /** A chunk of a group stream opened by `SendToGroupMessage.stream`, or a keep-alive. */
     | {
        case: "streamDataMessage";
        value: UpstreamMessage_StreamDataMessage;
    }
    /** The end of a group stream. */
     | {
        case: "streamEndMessage";
        value: UpstreamMessage_StreamEndMessage;
    };
}
/** Codec of {@link UpstreamMessage}: protobuf binary and the JSON subprotocols' shape. */
export declare const UpstreamMessage: wire.MessageType<UpstreamMessage>;
/**
 * A call of the upstream application: the user event `azure.webpubsub.user.<event>`, whose
 * answer comes back as an `InvokeResponseMessage` with the same id.
 */
export interface UpstreamMessage_InvokeMessage {
    /** Chosen by the client, unique among its invocations in flight. */
    invocationId: string;
    /** What is called: `event` (the only target). */
    target: string;
    /** The event name. */
    event: string;
    /** The payload, if any. */
    data?: MessageData;
    /** Application metadata forwarded to the upstream. */
    metadata: {
        [key: string]: string;
    };
}
/** Codec of {@link UpstreamMessage_InvokeMessage}: protobuf binary and the JSON subprotocols' shape. */
export declare const UpstreamMessage_InvokeMessage: wire.MessageType<UpstreamMessage_InvokeMessage>;
/** Stop waiting for an invocation. */
export interface UpstreamMessage_CancelInvocationMessage {
    /** The invocation's id. */
    invocationId: string;
}
/** Codec of {@link UpstreamMessage_CancelInvocationMessage}: protobuf binary and the JSON subprotocols' shape. */
export declare const UpstreamMessage_CancelInvocationMessage: wire.MessageType<UpstreamMessage_CancelInvocationMessage>;
/**
 * A chunk of a group stream (with `stream_sequence_id` and `data`), or a keep-alive (with
 * neither).
 */
export interface UpstreamMessage_StreamDataMessage {
    /** The stream's id. */
    streamId: string;
    /** 1 for the first chunk, one more for each next one. */
    streamSequenceId?: number;
    /** The chunk. */
    data?: MessageData;
}
/** Codec of {@link UpstreamMessage_StreamDataMessage}: protobuf binary and the JSON subprotocols' shape. */
export declare const UpstreamMessage_StreamDataMessage: wire.MessageType<UpstreamMessage_StreamDataMessage>;
/** The end of a group stream, with the publisher's error if it gives up. */
export interface UpstreamMessage_StreamEndMessage {
    /** The stream's id. */
    streamId: string;
    /** Why the publisher gives up; unset for a normal end. */
    error?: UpstreamMessage_StreamEndMessage_StreamEndError;
}
/** Codec of {@link UpstreamMessage_StreamEndMessage}: protobuf binary and the JSON subprotocols' shape. */
export declare const UpstreamMessage_StreamEndMessage: wire.MessageType<UpstreamMessage_StreamEndMessage>;
/** The publisher's error. */
export interface UpstreamMessage_StreamEndMessage_StreamEndError {
    /** What happened. */
    message?: string;
    /** The publisher's own code. */
    userErrorCode?: string;
}
/** Codec of {@link UpstreamMessage_StreamEndMessage_StreamEndError}: protobuf binary and the JSON subprotocols' shape. */
export declare const UpstreamMessage_StreamEndMessage_StreamEndError: wire.MessageType<UpstreamMessage_StreamEndMessage_StreamEndError>;
/** Publish data to every connection in a group. */
export interface UpstreamMessage_SendToGroupMessage {
    /** The target group name. */
    group: string;
    /**
     * If set, the service replies with an `AckMessage` carrying this id once the message is
     * processed (or refused). Reusing an id that was already processed yields a `Duplicate`
     * error ack instead of a second publication, so retries are idempotent. Unset means
     * fire-and-forget: failures are silent.
     */
    ackId?: number;
    /** The payload. */
    data?: MessageData;
    /** If true, the message is not delivered back to the sending connection. Default false. */
    noEcho?: boolean;
    /**
     * Time to live in seconds (0..300): a message not delivered to a recipient within this
     * time is dropped for that recipient. Unset or 0 means no expiry.
     */
    ttlSeconds?: number;
    /** Application metadata forwarded to the recipients alongside the data. */
    metadata: {
        [key: string]: string;
    };
    /** Set when this message opens a group stream (a sequence of chunks with one stream id). */
    stream?: UpstreamMessage_StreamStartInfo;
}
/** Codec of {@link UpstreamMessage_SendToGroupMessage}: protobuf binary and the JSON subprotocols' shape. */
export declare const UpstreamMessage_SendToGroupMessage: wire.MessageType<UpstreamMessage_SendToGroupMessage>;
/** Raise a custom event to the upstream application. */
export interface UpstreamMessage_EventMessage {
    /** The event name; the upstream sees it as CloudEvents type `azure.webpubsub.user.<event>`. */
    event: string;
    /** The payload, forwarded as the event body with the matching content type. */
    data?: MessageData;
    /** Optional acknowledgement id; see `SendToGroupMessage.ack_id`. */
    ackId?: number;
    /** Application metadata forwarded to the upstream alongside the data. */
    metadata: {
        [key: string]: string;
    };
    /** Set when this message opens an event stream. */
    stream?: UpstreamMessage_StreamStartInfo;
}
/** Codec of {@link UpstreamMessage_EventMessage}: protobuf binary and the JSON subprotocols' shape. */
export declare const UpstreamMessage_EventMessage: wire.MessageType<UpstreamMessage_EventMessage>;
/** Join a group. */
export interface UpstreamMessage_JoinGroupMessage {
    /** The group to join. */
    group: string;
    /** Optional acknowledgement id; see `SendToGroupMessage.ack_id`. */
    ackId?: number;
}
/** Codec of {@link UpstreamMessage_JoinGroupMessage}: protobuf binary and the JSON subprotocols' shape. */
export declare const UpstreamMessage_JoinGroupMessage: wire.MessageType<UpstreamMessage_JoinGroupMessage>;
/** Leave a group. */
export interface UpstreamMessage_LeaveGroupMessage {
    /** The group to leave. */
    group: string;
    /** Optional acknowledgement id; see `SendToGroupMessage.ack_id`. */
    ackId?: number;
}
/** Codec of {@link UpstreamMessage_LeaveGroupMessage}: protobuf binary and the JSON subprotocols' shape. */
export declare const UpstreamMessage_LeaveGroupMessage: wire.MessageType<UpstreamMessage_LeaveGroupMessage>;
/** Cumulative acknowledgement of received data messages (reliable subprotocol only). */
export interface UpstreamMessage_SequenceAckMessage {
    /** The highest `DataMessage.sequence_id` received without gaps. */
    sequenceId: number;
}
/** Codec of {@link UpstreamMessage_SequenceAckMessage}: protobuf binary and the JSON subprotocols' shape. */
export declare const UpstreamMessage_SequenceAckMessage: wire.MessageType<UpstreamMessage_SequenceAckMessage>;
/** Keep-alive probe. Carries no fields. */
export interface UpstreamMessage_PingMessage {
}
/** Codec of {@link UpstreamMessage_PingMessage}: protobuf binary and the JSON subprotocols' shape. */
export declare const UpstreamMessage_PingMessage: wire.MessageType<UpstreamMessage_PingMessage>;
/** Opens a stream of messages that share one stream id. */
export interface UpstreamMessage_StreamStartInfo {
    /** Identifies the stream; chosen by the client, unique per connection. */
    streamId: string;
    /**
     * The stream is closed if no chunk arrives for this many milliseconds. Unset means the
     * service default.
     */
    idleTimeoutMs?: number;
}
/** Codec of {@link UpstreamMessage_StreamStartInfo}: protobuf binary and the JSON subprotocols' shape. */
export declare const UpstreamMessage_StreamStartInfo: wire.MessageType<UpstreamMessage_StreamStartInfo>;
/** A message sent by the service to a client. */
export interface DownstreamMessage {
    /** The message. Exactly one is set. */
    message?: 
    /** The result of an upstream request that carried an `ack_id`. */
    {
        case: "ackMessage";
        value: DownstreamMessage_AckMessage;
    }
    /** Data published to a group the client joined, or sent by the server to this client. */
     | {
        case: "dataMessage";
        value: DownstreamMessage_DataMessage;
    }
    /** A connection lifecycle notification. */
     | {
        case: "systemMessage";
        value: DownstreamMessage_SystemMessage;
    }
    /** The reply to an `UpstreamMessage.PingMessage`. */
     | {
        case: "pongMessage";
        value: DownstreamMessage_PongMessage;
    }
    /** The answer to an `UpstreamMessage.InvokeMessage`. */
     | {
        case: "invokeResponseMessage";
        value: DownstreamMessage_InvokeResponseMessage;
    }
    /** A group stream's chunks up to `expected_sequence_id` were taken (or the stream opened). */
     | {
        case: "streamAckMessage";
        value: DownstreamMessage_StreamAckMessage;
    }
    /** A chunk was refused (out of order, or unreadable); the stream goes on. */
     | {
        case: "streamNackMessage";
        value: DownstreamMessage_StreamNackMessage;
    }
    /** A group stream is over: ended by its publisher, or by the service (with an error). */
     | {
        case: "streamClosedMessage";
        value: DownstreamMessage_StreamClosedMessage;
    };
}
/** Codec of {@link DownstreamMessage}: protobuf binary and the JSON subprotocols' shape. */
export declare const DownstreamMessage: wire.MessageType<DownstreamMessage>;
/** The answer to an invocation. */
export interface DownstreamMessage_InvokeResponseMessage {
    /** The invocation's id. */
    invocationId: string;
    /** True if the upstream answered; `data` is its answer, if any. */
    success: boolean;
    /** The upstream's answer. */
    data?: MessageData;
    /** Why the invocation failed; set only when `success` is false. */
    error?: DownstreamMessage_InvokeResponseMessage_InvokeError;
}
/** Codec of {@link DownstreamMessage_InvokeResponseMessage}: protobuf binary and the JSON subprotocols' shape. */
export declare const DownstreamMessage_InvokeResponseMessage: wire.MessageType<DownstreamMessage_InvokeResponseMessage>;
/**
 * A failed invocation: `name` is `BadRequest`, `Unauthorized`, `Forbidden`, `NotFound`,
 * `InternalServerError`, `Timeout` or `Duplicate`.
 */
export interface DownstreamMessage_InvokeResponseMessage_InvokeError {
    /** Machine-readable name. */
    name: string;
    /** The upstream's words, or the service's. */
    message: string;
}
/** Codec of {@link DownstreamMessage_InvokeResponseMessage_InvokeError}: protobuf binary and the JSON subprotocols' shape. */
export declare const DownstreamMessage_InvokeResponseMessage_InvokeError: wire.MessageType<DownstreamMessage_InvokeResponseMessage_InvokeError>;
/** Progress of a group stream. */
export interface DownstreamMessage_StreamAckMessage {
    /** The stream's id. */
    streamId: string;
    /** The sequence id of the next chunk the service takes. */
    expectedSequenceId: number;
}
/** Codec of {@link DownstreamMessage_StreamAckMessage}: protobuf binary and the JSON subprotocols' shape. */
export declare const DownstreamMessage_StreamAckMessage: wire.MessageType<DownstreamMessage_StreamAckMessage>;
/** A refused chunk. */
export interface DownstreamMessage_StreamNackMessage {
    /** The stream's id. */
    streamId: string;
    /** `InvalidSequenceId` (a gap: a chunk was lost) or `BadRequest`. */
    name: string;
    /** What happened. */
    message: string;
    /** The sequence id of the next chunk the service takes. */
    expectedSequenceId: number;
}
/** Codec of {@link DownstreamMessage_StreamNackMessage}: protobuf binary and the JSON subprotocols' shape. */
export declare const DownstreamMessage_StreamNackMessage: wire.MessageType<DownstreamMessage_StreamNackMessage>;
/** The end of a group stream for its publisher. */
export interface DownstreamMessage_StreamClosedMessage {
    /** The stream's id. */
    streamId: string;
    /** Why the service ended it: `IdleTimeout`, `StreamNotFound`, `Forbidden`, `BadRequest`. */
    error?: StreamError;
}
/** Codec of {@link DownstreamMessage_StreamClosedMessage}: protobuf binary and the JSON subprotocols' shape. */
export declare const DownstreamMessage_StreamClosedMessage: wire.MessageType<DownstreamMessage_StreamClosedMessage>;
/** The outcome of an acknowledged request. */
export interface DownstreamMessage_AckMessage {
    /** The `ack_id` of the request this acknowledges. */
    ackId: number;
    /**
     * True if the request was processed. A `Duplicate` error also means the request had been
     * processed before, so clients treat it as success.
     */
    success: boolean;
    /** Why the request failed; set only when `success` is false. */
    error?: DownstreamMessage_AckMessage_ErrorMessage;
}
/** Codec of {@link DownstreamMessage_AckMessage}: protobuf binary and the JSON subprotocols' shape. */
export declare const DownstreamMessage_AckMessage: wire.MessageType<DownstreamMessage_AckMessage>;
/** A failure description. */
export interface DownstreamMessage_AckMessage_ErrorMessage {
    /**
     * Machine-readable error name: `Forbidden` (missing role), `InternalServerError`
     * (retryable), `Duplicate` (the ack id was already processed; do not retry) or
     * `BadRequest`; see `AckErrorName`. Clients treat unknown names as errors.
     */
    name: AckErrorName | (string & {});
    /** Human-readable detail. */
    message: string;
}
/** Codec of {@link DownstreamMessage_AckMessage_ErrorMessage}: protobuf binary and the JSON subprotocols' shape. */
export declare const DownstreamMessage_AckMessage_ErrorMessage: wire.MessageType<DownstreamMessage_AckMessage_ErrorMessage>;
/** A data message delivered to the client. */
export interface DownstreamMessage_DataMessage {
    /**
     * Where the data came from: `"group"` (a group publication, from a client or the server)
     * or `"server"` (sent to this connection, its user, or everyone by the server, or the
     * upstream's reply to an event).
     */
    from: string;
    /** The group the message was published to; set when `from` is `"group"`. */
    group?: string;
    /** The payload. Its set field tells the data type (text, binary, protobuf or JSON). */
    data?: MessageData;
    /**
     * Reliable subprotocol only: per-connection sequence number, starting at 1 and increasing
     * by 1 per data message. Clients acknowledge it with `SequenceAckMessage` and drop
     * messages whose id they have already seen.
     */
    sequenceId?: number;
    /** Application metadata attached by the publisher. */
    metadata: {
        [key: string]: string;
    };
    /** Set when the message is a chunk, or the end, of a group stream. */
    stream?: DownstreamMessage_StreamInfo;
    /** The user id of the client that published the message; absent (JSON `null`) when the server published it or the sender is anonymous. JSON subprotocols only. */
    fromUserId?: string;
}
/** Codec of {@link DownstreamMessage_DataMessage}: protobuf binary and the JSON subprotocols' shape. */
export declare const DownstreamMessage_DataMessage: wire.MessageType<DownstreamMessage_DataMessage>;
/** A group message's place in a group stream. */
export interface DownstreamMessage_StreamInfo {
    /** The stream's id. */
    streamId: string;
    /** The chunk's number; for the end, one past the last chunk's. */
    streamSequenceId: number;
    /** The last message of the stream (it carries no chunk). */
    endOfStream?: boolean;
    /** Why the stream ended early: `UserError` (the publisher's), `IdleTimeout`, `Cancelled`. */
    error?: StreamError;
}
/** Codec of {@link DownstreamMessage_StreamInfo}: protobuf binary and the JSON subprotocols' shape. */
export declare const DownstreamMessage_StreamInfo: wire.MessageType<DownstreamMessage_StreamInfo>;
/** A connection lifecycle notification. */
export interface DownstreamMessage_SystemMessage {
    /** The notification. Exactly one is set. */
    message?: 
    /**
     * Sent once the connection is established (and again, with a fresh reconnection token,
     * after a reliable connection recovers).
     */
    {
        case: "connectedMessage";
        value: DownstreamMessage_SystemMessage_ConnectedMessage;
    }
    /** Sent right before the service closes the connection. */
     | {
        case: "disconnectedMessage";
        value: DownstreamMessage_SystemMessage_DisconnectedMessage;
    };
}
/** Codec of {@link DownstreamMessage_SystemMessage}: protobuf binary and the JSON subprotocols' shape. */
export declare const DownstreamMessage_SystemMessage: wire.MessageType<DownstreamMessage_SystemMessage>;
/** The connection is established. */
export interface DownstreamMessage_SystemMessage_ConnectedMessage {
    /** The id the service assigned to this connection. */
    connectionId: string;
    /** The user the connection is authenticated as; empty if anonymous (JSON `null`). */
    userId: string;
    /**
     * Reliable subprotocol only: the token that, with `connection_id`, lets the client
     * recover this connection (and its unacknowledged messages) after a drop.
     */
    reconnectionToken?: string;
}
/** Codec of {@link DownstreamMessage_SystemMessage_ConnectedMessage}: protobuf binary and the JSON subprotocols' shape. */
export declare const DownstreamMessage_SystemMessage_ConnectedMessage: wire.MessageType<DownstreamMessage_SystemMessage_ConnectedMessage>;
/** The service is about to close the connection. */
export interface DownstreamMessage_SystemMessage_DisconnectedMessage {
    /**
     * Why the connection is being closed. Field number 2, as in Azure's protocol; the JSON
     * key is `message`.
     */
    reason: string;
}
/** Codec of {@link DownstreamMessage_SystemMessage_DisconnectedMessage}: protobuf binary and the JSON subprotocols' shape. */
export declare const DownstreamMessage_SystemMessage_DisconnectedMessage: wire.MessageType<DownstreamMessage_SystemMessage_DisconnectedMessage>;
/** The reply to a ping. Carries no fields. */
export interface DownstreamMessage_PongMessage {
}
/** Codec of {@link DownstreamMessage_PongMessage}: protobuf binary and the JSON subprotocols' shape. */
export declare const DownstreamMessage_PongMessage: wire.MessageType<DownstreamMessage_PongMessage>;
/** Why a group stream ended early. */
export interface StreamError {
    /** Machine-readable name. */
    name: string;
    /** What happened. */
    message: string;
    /** The publisher's own code (`UserError`). */
    userErrorCode?: string;
}
/** Codec of {@link StreamError}: protobuf binary and the JSON subprotocols' shape. */
export declare const StreamError: wire.MessageType<StreamError>;
/**
 * A message payload. Which field is set determines the data type, and how the payload maps to
 * JSON clients (`dataType`) and to upstream content types.
 */
export interface MessageData {
    /**
     * The payload. Exactly one is set. In JSON: `"dataType"` names the member, `"data"` holds
     * the value, and a missing `"dataType"` means `json`.
     */
    data?: 
    /** UTF-8 text: JSON `dataType` `text`, content type `text/plain`. */
    {
        case: "textData";
        value: string;
    }
    /** Raw bytes: JSON `dataType` `binary`, content type `application/octet-stream`. */
     | {
        case: "binaryData";
        value: Uint8Array;
    }
    /**
     * A protobuf message: JSON `dataType` `protobuf` (base64 of the serialized `Any`),
     * content type `application/x-protobuf`.
     */
     | {
        case: "protobufData";
        value: wire.Any;
    }
    /**
     * A JSON document, as text: JSON `dataType` `json`, content type `application/json`.
     * (Azure's original 2021 protocol put JSON into `text_data`.)
     */
     | {
        case: "jsonData";
        value: string;
    };
}
/** Codec of {@link MessageData}: protobuf binary and the JSON subprotocols' shape. */
export declare const MessageData: wire.MessageType<MessageData>;
