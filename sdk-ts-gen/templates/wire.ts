// The runtime of the generated codecs: protobuf's binary wire format (a `Writer` and a
// `Reader`), base64, JSON value helpers, and `google.protobuf.Any`. No dependencies.
//
// 64-bit integers are JavaScript numbers: exact up to 2^53 - 1 (Number.MAX_SAFE_INTEGER),
// which covers ack ids and sequence ids (Azure's JSON protocol has the same limit).

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
export class DecodeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DecodeError";
  }
}

const TWO_32 = 4294967296;
const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder("utf-8", { fatal: true });

/** Writes protobuf's binary wire format. */
export class Writer {
  private buf: Uint8Array = new Uint8Array(64);
  private pos = 0;
  /** Start offsets of the length-delimited sections opened by {@link fork}. */
  private readonly forks: number[] = [];

  /** The bytes written so far. */
  finish(): Uint8Array {
    return this.buf.slice(0, this.pos);
  }

  /** Writes a field tag: `(field << 3) | wireType`. */
  tag(field: number, wireType: number): this {
    return this.uint32(((field << 3) | wireType) >>> 0);
  }

  uint32(value: number): this {
    let v = value >>> 0;
    this.reserve(5);
    while (v > 0x7f) {
      this.buf[this.pos++] = (v & 0x7f) | 0x80;
      v >>>= 7;
    }
    this.buf[this.pos++] = v;
    return this;
  }

  int32(value: number): this {
    // Negative values are sign-extended to 64 bits (ten bytes), as protobuf requires.
    return value < 0 ? this.varint64(value | 0, -1) : this.uint32(value);
  }

  sint32(value: number): this {
    return this.uint32(((value << 1) ^ (value >> 31)) >>> 0);
  }

  uint64(value: number): this {
    checkInteger(value);
    return this.varint64(value % TWO_32, Math.floor(value / TWO_32));
  }

  int64(value: number): this {
    checkInteger(value);
    if (value >= 0) return this.uint64(value);
    const [lo, hi] = negative64(value);
    return this.varint64(lo, hi);
  }

  sint64(value: number): this {
    checkInteger(value);
    // ZigZag: 2n for n >= 0, -2n - 1 for n < 0.
    return this.uint64(value >= 0 ? value * 2 : -value * 2 - 1);
  }

  bool(value: boolean): this {
    this.reserve(1);
    this.buf[this.pos++] = value ? 1 : 0;
    return this;
  }

  fixed32(value: number): this {
    this.reserve(4);
    new DataView(this.buf.buffer).setUint32(this.pos, value >>> 0, true);
    this.pos += 4;
    return this;
  }

  sfixed32(value: number): this {
    return this.fixed32(value | 0);
  }

  fixed64(value: number): this {
    checkInteger(value);
    return this.fixed32(value % TWO_32).fixed32(Math.floor(value / TWO_32));
  }

  sfixed64(value: number): this {
    if (value >= 0) return this.fixed64(value);
    const [lo, hi] = negative64(value);
    return this.fixed32(lo).fixed32(hi);
  }

  float(value: number): this {
    this.reserve(4);
    new DataView(this.buf.buffer).setFloat32(this.pos, value, true);
    this.pos += 4;
    return this;
  }

  double(value: number): this {
    this.reserve(8);
    new DataView(this.buf.buffer).setFloat64(this.pos, value, true);
    this.pos += 8;
    return this;
  }

  string(value: string): this {
    return this.bytes(textEncoder.encode(value));
  }

  bytes(value: Uint8Array): this {
    this.uint32(value.length);
    this.reserve(value.length);
    this.buf.set(value, this.pos);
    this.pos += value.length;
    return this;
  }

  /** Writes `value` as a length-delimited sub-message. */
  message<T>(value: T, encode: (value: T, writer: Writer) => Writer): this {
    this.fork();
    encode(value, this);
    return this.join();
  }

  /** Writes `values` packed into one length-delimited field. */
  packed<T>(values: readonly T[], write: (writer: Writer, value: T) => void): this {
    this.fork();
    for (const v of values) write(this, v);
    return this.join();
  }

  /** Opens a length-delimited section; {@link join} closes it and writes its length. */
  fork(): this {
    this.forks.push(this.pos);
    return this;
  }

  /** Closes the section opened by the last {@link fork}, prefixing it with its length. */
  join(): this {
    const start = this.forks.pop();
    if (start === undefined) throw new Error("Writer.join() without fork()");
    const body = this.buf.slice(start, this.pos);
    this.pos = start;
    return this.bytes(body);
  }

  private varint64(lo: number, hi: number): this {
    let l = lo >>> 0;
    let h = hi >>> 0;
    this.reserve(10);
    while (h > 0 || l > 0x7f) {
      this.buf[this.pos++] = (l & 0x7f) | 0x80;
      l = ((l >>> 7) | (h << 25)) >>> 0;
      h >>>= 7;
    }
    this.buf[this.pos++] = l;
    return this;
  }

  private reserve(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const bigger = new Uint8Array(Math.max(this.buf.length * 2, this.pos + n));
    bigger.set(this.buf.subarray(0, this.pos));
    this.buf = bigger;
  }
}

/** Reads protobuf's binary wire format. Every read checks bounds. */
export class Reader {
  /** The next byte to read. */
  pos = 0;
  /** The end of the input. */
  readonly len: number;
  private readonly view: DataView;

  constructor(readonly buf: Uint8Array) {
    this.len = buf.length;
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }

  /** `input` itself if it is a reader, else a reader over it. */
  static from(input: Uint8Array | Reader): Reader {
    return input instanceof Reader ? input : new Reader(input);
  }

  /** The end position of a message of `length` bytes starting here (the input's end if none). */
  end(length?: number): number {
    if (length === undefined) return this.len;
    const end = this.pos + length;
    if (end > this.len) throw new DecodeError(`truncated message: ${length} bytes announced, ${this.len - this.pos} left`);
    return end;
  }

  /** Checks that a message ended exactly at `end`. */
  done(end: number): void {
    if (this.pos !== end) throw new DecodeError("a field runs past the end of its message");
  }

  uint32(): number {
    const [lo] = this.varint();
    return lo >>> 0;
  }

  int32(): number {
    const [lo] = this.varint();
    return lo | 0;
  }

  sint32(): number {
    const v = this.uint32();
    return (v >>> 1) ^ -(v & 1);
  }

  uint64(): number {
    const [lo, hi] = this.varint();
    return hi * TWO_32 + lo;
  }

  int64(): number {
    const [lo, hi] = this.varint();
    return signed64(lo, hi);
  }

  sint64(): number {
    const v = this.uint64();
    // ZigZag: even -> v / 2, odd -> -(v + 1) / 2.
    return v % 2 === 0 ? v / 2 : -(v + 1) / 2;
  }

  bool(): boolean {
    const [lo, hi] = this.varint();
    return lo !== 0 || hi !== 0;
  }

  fixed32(): number {
    this.need(4);
    const v = this.view.getUint32(this.pos, true);
    this.pos += 4;
    return v;
  }

  sfixed32(): number {
    return this.fixed32() | 0;
  }

  fixed64(): number {
    const lo = this.fixed32();
    return this.fixed32() * TWO_32 + lo;
  }

  sfixed64(): number {
    const lo = this.fixed32();
    return signed64(lo, this.fixed32());
  }

  float(): number {
    this.need(4);
    const v = this.view.getFloat32(this.pos, true);
    this.pos += 4;
    return v;
  }

  double(): number {
    this.need(8);
    const v = this.view.getFloat64(this.pos, true);
    this.pos += 8;
    return v;
  }

  bytes(): Uint8Array {
    const n = this.uint32();
    this.need(n);
    const v = this.buf.slice(this.pos, this.pos + n);
    this.pos += n;
    return v;
  }

  string(): string {
    const n = this.uint32();
    this.need(n);
    const v = textDecoder.decode(this.buf.subarray(this.pos, this.pos + n));
    this.pos += n;
    return v;
  }

  /** Reads a packed repeated field into `out`. */
  packed<T>(read: (reader: Reader) => T, out: T[]): void {
    const end = this.end(this.uint32());
    while (this.pos < end) out.push(read(this));
    this.done(end);
  }

  /** Reads one map entry (a length-delimited key/value message). */
  mapEntry<K, V>(
    keyTag: number,
    readKey: (reader: Reader) => K,
    key: K,
    valueTag: number,
    readValue: (reader: Reader) => V,
    value: V,
  ): [K, V] {
    const end = this.end(this.uint32());
    let k = key;
    let v = value;
    while (this.pos < end) {
      const tag = this.uint32();
      if (tag === keyTag) k = readKey(this);
      else if (tag === valueTag) v = readValue(this);
      else this.skip(tag);
    }
    this.done(end);
    return [k, v];
  }

  /** Skips the value of an unknown field with this tag. */
  skip(tag: number): void {
    if (tag >>> 3 === 0) throw new DecodeError(`invalid tag ${tag} (field number 0)`);
    switch (tag & 7) {
      case 0:
        this.varint();
        return;
      case 1:
        this.need(8);
        this.pos += 8;
        return;
      case 2: {
        const n = this.uint32();
        this.need(n);
        this.pos += n;
        return;
      }
      case 3: {
        // A group: skip fields until the matching end-group tag.
        for (;;) {
          const inner = this.uint32();
          if ((inner & 7) === 4) {
            if (inner >>> 3 !== tag >>> 3) throw new DecodeError("mismatched end-group tag");
            return;
          }
          this.skip(inner);
        }
      }
      case 5:
        this.need(4);
        this.pos += 4;
        return;
      default:
        throw new DecodeError(`invalid wire type ${tag & 7}`);
    }
  }

  /** A varint as its low and high 32 bits. */
  private varint(): [number, number] {
    let lo = 0;
    let hi = 0;
    for (let i = 0; i < 10; i++) {
      this.need(1);
      const b = this.buf[this.pos++] as number;
      if (i < 4) {
        lo |= (b & 0x7f) << (i * 7);
      } else if (i === 4) {
        lo |= (b & 0x0f) << 28;
        hi |= (b & 0x7f) >> 4;
      } else {
        hi |= (b & 0x7f) << (i * 7 - 32);
      }
      if (b < 0x80) return [lo >>> 0, hi >>> 0];
    }
    throw new DecodeError("varint longer than 10 bytes");
  }

  private need(n: number): void {
    if (this.pos + n > this.len) throw new DecodeError("unexpected end of input");
  }
}

function checkInteger(value: number): void {
  if (!Number.isInteger(value)) throw new RangeError(`not an integer: ${value}`);
}

/** Two's complement 64-bit halves of a negative integer. */
function negative64(value: number): [number, number] {
  const abs = -value;
  let lo = abs % TWO_32;
  let hi = Math.floor(abs / TWO_32);
  // Negate: invert and add one.
  lo = ~lo >>> 0;
  hi = ~hi >>> 0;
  lo = (lo + 1) >>> 0;
  if (lo === 0) hi = (hi + 1) >>> 0;
  return [lo, hi];
}

/** A signed 64-bit integer from its two's complement halves. */
function signed64(lo: number, hi: number): number {
  if (hi & 0x80000000) {
    const nlo = (~lo + 1) >>> 0;
    const nhi = (~hi + (nlo === 0 ? 1 : 0)) >>> 0;
    return -(nhi * TWO_32 + nlo);
  }
  return hi * TWO_32 + lo;
}

// --- base64 (standard alphabet, padded), without Buffer or atob ---

const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const B64_INDEX = new Int16Array(128).fill(-1);
for (let i = 0; i < B64.length; i++) B64_INDEX[B64.charCodeAt(i)] = i;
// The URL-safe alphabet decodes too.
B64_INDEX["-".charCodeAt(0)] = 62;
B64_INDEX["_".charCodeAt(0)] = 63;

/** Standard, padded base64 of `bytes`. */
export function base64Encode(bytes: Uint8Array): string {
  let out = "";
  let i = 0;
  for (; i + 2 < bytes.length; i += 3) {
    const n = ((bytes[i] as number) << 16) | ((bytes[i + 1] as number) << 8) | (bytes[i + 2] as number);
    out += B64[n >> 18]! + B64[(n >> 12) & 63]! + B64[(n >> 6) & 63]! + B64[n & 63]!;
  }
  const rest = bytes.length - i;
  if (rest === 1) {
    const n = (bytes[i] as number) << 16;
    out += B64[n >> 18]! + B64[(n >> 12) & 63]! + "==";
  } else if (rest === 2) {
    const n = ((bytes[i] as number) << 16) | ((bytes[i + 1] as number) << 8);
    out += B64[n >> 18]! + B64[(n >> 12) & 63]! + B64[(n >> 6) & 63]! + "=";
  }
  return out;
}

/** Decodes base64 (standard or URL-safe alphabet, padding optional). */
export function base64Decode(text: string): Uint8Array {
  const s = text.replace(/=+$/, "");
  if (s.length % 4 === 1) throw new DecodeError("invalid base64 length");
  const out = new Uint8Array(Math.floor((s.length * 3) / 4));
  let bits = 0;
  let acc = 0;
  let o = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const v = c < 128 ? (B64_INDEX[c] as number) : -1;
    if (v < 0) throw new DecodeError(`invalid base64 character ${JSON.stringify(s[i])}`);
    acc = (acc << 6) | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (acc >> bits) & 0xff;
    }
  }
  return out;
}

// --- JSON helpers used by the generated fromJson/toJson ---

/** `JSON.parse`, typed. */
export function parseJson(text: string): JsonValue {
  return JSON.parse(text) as JsonValue;
}

export function jsonString(value: JsonValue, key: string): string {
  if (typeof value !== "string") throw new DecodeError(`"${key}" must be a string`);
  return value;
}

export function jsonNumber(value: JsonValue, key: string): number {
  // protobuf's canonical JSON writes 64-bit integers as strings; accept both.
  const n = typeof value === "string" && value.trim() !== "" ? Number(value) : value;
  if (typeof n !== "number" || Number.isNaN(n)) throw new DecodeError(`"${key}" must be a number`);
  return n;
}

export function jsonBool(value: JsonValue, key: string): boolean {
  if (typeof value !== "boolean") throw new DecodeError(`"${key}" must be a boolean`);
  return value;
}

export function jsonObject(value: JsonValue, key: string): JsonObject {
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new DecodeError(`"${key}" must be an object`);
  }
  return value;
}

export function jsonArray(value: JsonValue, key: string): JsonValue[] {
  if (!Array.isArray(value)) throw new DecodeError(`"${key}" must be an array`);
  return value;
}

export function mapToJson<V>(map: { [key: string]: V }, convert: (value: V) => JsonValue): JsonObject {
  const out: JsonObject = {};
  for (const [k, v] of Object.entries(map)) out[k] = convert(v);
  return out;
}

export function mapFromJson<V>(json: JsonObject, convert: (value: JsonValue) => V): { [key: string]: V } {
  const out: { [key: string]: V } = {};
  for (const [k, v] of Object.entries(json)) out[k] = convert(v);
  return out;
}

// --- google.protobuf.Any ---

/** `google.protobuf.Any`: a serialized protobuf message and the URL of its type. */
export interface Any {
  /** Identifies the message type, e.g. `type.googleapis.com/my.pkg.Thing`. */
  typeUrl: string;
  /** The serialized message. */
  value: Uint8Array;
}

/** Codec of {@link Any}. */
export const Any: MessageType<Any> = {
  typeName: "google.protobuf.Any",
  jsonKeys: ["typeUrl", "value"],
  create(init?: Partial<Any>): Any {
    return { typeUrl: "", value: new Uint8Array(0), ...init };
  },
  encode(m: Any, w: Writer = new Writer()): Writer {
    if (m.typeUrl) w.tag(1, 2).string(m.typeUrl);
    if (m.value && m.value.length) w.tag(2, 2).bytes(m.value);
    return w;
  },
  decode(input: Uint8Array | Reader, length?: number): Any {
    const r = Reader.from(input);
    const end = r.end(length);
    const m = Any.create();
    while (r.pos < end) {
      const tag = r.uint32();
      if (tag === 10) m.typeUrl = r.string();
      else if (tag === 18) m.value = r.bytes();
      else r.skip(tag);
    }
    r.done(end);
    return m;
  },
  toJson(m: Any): JsonObject {
    return { typeUrl: m.typeUrl, value: base64Encode(m.value) };
  },
  fromJson(o: JsonObject): Any {
    const m = Any.create();
    if (o.typeUrl != null) m.typeUrl = jsonString(o.typeUrl, "typeUrl");
    if (o.value != null) m.value = base64Decode(jsonString(o.value, "value"));
    return m;
  },
};
