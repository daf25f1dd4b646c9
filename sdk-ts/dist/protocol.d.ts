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
    };
}
/** Codec of {@link UpstreamMessage}: protobuf binary and the JSON subprotocols' shape. */
export declare const UpstreamMessage: wire.MessageType<UpstreamMessage>;
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
    };
}
/** Codec of {@link DownstreamMessage}: protobuf binary and the JSON subprotocols' shape. */
export declare const DownstreamMessage: wire.MessageType<DownstreamMessage>;
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
    /** The user id of the client that published the message; absent (JSON `null`) when the server published it or the sender is anonymous. JSON subprotocols only. */
    fromUserId?: string;
}
/** Codec of {@link DownstreamMessage_DataMessage}: protobuf binary and the JSON subprotocols' shape. */
export declare const DownstreamMessage_DataMessage: wire.MessageType<DownstreamMessage_DataMessage>;
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
