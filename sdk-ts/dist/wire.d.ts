/** A JSON value, as `JSON.parse` returns it. */
export type JsonValue = null | boolean | number | string | JsonValue[] | JsonObject;
/** A JSON object. */
export interface JsonObject {
    [key: string]: JsonValue;
}
/** What every generated message codec provides. */
export interface MessageType<T> {
    /** The full protobuf name, e.g. `hubcast.v1.UpstreamMessage`. */
    readonly typeName: string;
    /** The top-level keys the JSON form reads (used to detect inlined messages). */
    readonly jsonKeys: readonly string[];
    /** A message with every field at its default, overridden by `init`. */
    create(init?: Partial<T>): T;
    /** Appends the protobuf encoding of `message` to `writer` (a new one by default). */
    encode(message: T, writer?: Writer): Writer;
    /** Decodes protobuf bytes (or the next `length` bytes of a reader). */
    decode(input: Uint8Array | Reader, length?: number): T;
    /** The message in the JSON subprotocols' shape. */
    toJson(message: T): JsonObject;
    /** Reads a message from the JSON subprotocols' shape. */
    fromJson(json: JsonObject): T;
}
/** A malformed protobuf or JSON message. */
export declare class DecodeError extends Error {
    constructor(message: string);
}
/** Writes protobuf's binary wire format. */
export declare class Writer {
    private buf;
    private pos;
    /** Start offsets of the length-delimited sections opened by {@link fork}. */
    private readonly forks;
    /** The bytes written so far. */
    finish(): Uint8Array;
    /** Writes a field tag: `(field << 3) | wireType`. */
    tag(field: number, wireType: number): this;
    uint32(value: number): this;
    int32(value: number): this;
    sint32(value: number): this;
    uint64(value: number): this;
    int64(value: number): this;
    sint64(value: number): this;
    bool(value: boolean): this;
    fixed32(value: number): this;
    sfixed32(value: number): this;
    fixed64(value: number): this;
    sfixed64(value: number): this;
    float(value: number): this;
    double(value: number): this;
    string(value: string): this;
    bytes(value: Uint8Array): this;
    /** Writes `value` as a length-delimited sub-message. */
    message<T>(value: T, encode: (value: T, writer: Writer) => Writer): this;
    /** Writes `values` packed into one length-delimited field. */
    packed<T>(values: readonly T[], write: (writer: Writer, value: T) => void): this;
    /** Opens a length-delimited section; {@link join} closes it and writes its length. */
    fork(): this;
    /** Closes the section opened by the last {@link fork}, prefixing it with its length. */
    join(): this;
    private varint64;
    private reserve;
}
/** Reads protobuf's binary wire format. Every read checks bounds. */
export declare class Reader {
    readonly buf: Uint8Array;
    /** The next byte to read. */
    pos: number;
    /** The end of the input. */
    readonly len: number;
    private readonly view;
    constructor(buf: Uint8Array);
    /** `input` itself if it is a reader, else a reader over it. */
    static from(input: Uint8Array | Reader): Reader;
    /** The end position of a message of `length` bytes starting here (the input's end if none). */
    end(length?: number): number;
    /** Checks that a message ended exactly at `end`. */
    done(end: number): void;
    uint32(): number;
    int32(): number;
    sint32(): number;
    uint64(): number;
    int64(): number;
    sint64(): number;
    bool(): boolean;
    fixed32(): number;
    sfixed32(): number;
    fixed64(): number;
    sfixed64(): number;
    float(): number;
    double(): number;
    bytes(): Uint8Array;
    string(): string;
    /** Reads a packed repeated field into `out`. */
    packed<T>(read: (reader: Reader) => T, out: T[]): void;
    /** Reads one map entry (a length-delimited key/value message). */
    mapEntry<K, V>(keyTag: number, readKey: (reader: Reader) => K, key: K, valueTag: number, readValue: (reader: Reader) => V, value: V): [K, V];
    /** Skips the value of an unknown field with this tag. */
    skip(tag: number): void;
    /** A varint as its low and high 32 bits. */
    private varint;
    private need;
}
/** Standard, padded base64 of `bytes`. */
export declare function base64Encode(bytes: Uint8Array): string;
/** Decodes base64 (standard or URL-safe alphabet, padding optional). */
export declare function base64Decode(text: string): Uint8Array;
/** `JSON.parse`, typed. */
export declare function parseJson(text: string): JsonValue;
export declare function jsonString(value: JsonValue, key: string): string;
export declare function jsonNumber(value: JsonValue, key: string): number;
export declare function jsonBool(value: JsonValue, key: string): boolean;
export declare function jsonObject(value: JsonValue, key: string): JsonObject;
export declare function jsonArray(value: JsonValue, key: string): JsonValue[];
export declare function mapToJson<V>(map: {
    [key: string]: V;
}, convert: (value: V) => JsonValue): JsonObject;
export declare function mapFromJson<V>(json: JsonObject, convert: (value: JsonValue) => V): {
    [key: string]: V;
};
/** `google.protobuf.Any`: a serialized protobuf message and the URL of its type. */
export interface Any {
    /** Identifies the message type, e.g. `type.googleapis.com/my.pkg.Thing`. */
    typeUrl: string;
    /** The serialized message. */
    value: Uint8Array;
}
/** Codec of {@link Any}. */
export declare const Any: MessageType<Any>;
