// Unit tests of the generated codecs (dist/, the compiled checked-in package): protobuf
// bytes as Azure's `protobuf.webpubsub.azure.v1` encodes them, and the JSON shapes of
// `json.webpubsub.azure.v1` as the service and Azure's clients write them.
//
// Run: cd sdk-ts && npm ci && node --test test/codec.test.mjs

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  AckErrorName,
  Any,
  CloseCode,
  DecodeError,
  DownstreamMessage,
  MessageData,
  Reader,
  Subprotocol,
  UpstreamMessage,
  UpstreamMessage_JoinGroupMessage,
  Writer,
  base64Decode,
  base64Encode,
} from "../dist/index.js";

const bytes = (...b) => new Uint8Array(b);
const ascii = (s) => [...s].map((c) => c.charCodeAt(0));
const encodeUp = (m) => UpstreamMessage.encode(m).finish();
const encodeDown = (m) => DownstreamMessage.encode(m).finish();
const up = (kind, value) => ({ message: { case: kind, value } });
const upJson = (m) => UpstreamMessage.toJson(m);
const downFromJson = (text) => DownstreamMessage.fromJson(JSON.parse(text));

describe("protobuf: bytes as Azure encodes them", () => {
  test("joinGroup { group: 'g', ackId: 1 }", () => {
    const m = up("joinGroupMessage", UpstreamMessage_JoinGroupMessage.create({ group: "g", ackId: 1 }));
    const expected = bytes(0x32, 0x05, 0x0a, 0x01, 0x67, 0x10, 0x01);
    assert.deepEqual(encodeUp(m), expected);
    assert.deepEqual(UpstreamMessage.decode(expected), m);
  });

  test("leaveGroup without an ack id omits field 2", () => {
    const m = up("leaveGroupMessage", { group: "g" });
    assert.deepEqual(encodeUp(m), bytes(0x3a, 0x03, 0x0a, 0x01, 0x67));
  });

  test("sequenceAck 300 and ping", () => {
    assert.deepEqual(encodeUp(up("sequenceAckMessage", { sequenceId: 300 })), bytes(0x42, 0x03, 0x08, 0xac, 0x02));
    assert.deepEqual(encodeUp(up("pingMessage", {})), bytes(0x4a, 0x00));
    assert.deepEqual(UpstreamMessage.decode(bytes(0x4a, 0x00)), up("pingMessage", {}));
  });

  test("sendToGroup with binary data, noEcho and metadata", () => {
    const m = up("sendToGroupMessage", {
      group: "room",
      ackId: 7,
      data: { data: { case: "binaryData", value: bytes(0, 1, 2, 255) } },
      noEcho: true,
      metadata: { k: "v" },
    });
    const inner = [
      0x0a, 0x04, ...ascii("room"), // group
      0x10, 0x07, // ack_id
      0x1a, 0x06, 0x12, 0x04, 0, 1, 2, 255, // data.binary_data
      0x20, 0x01, // no_echo
      0x32, 0x06, 0x0a, 0x01, ...ascii("k"), 0x12, 0x01, ...ascii("v"), // metadata entry
    ];
    const expected = bytes(0x0a, inner.length, ...inner);
    assert.deepEqual(encodeUp(m), expected);
    assert.deepEqual(UpstreamMessage.decode(expected), m);
  });

  test("event with protobuf (Any) data", () => {
    const any = { typeUrl: "t/x", value: bytes(8, 1) };
    const m = up("eventMessage", { event: "e", data: { data: { case: "protobufData", value: any } }, ackId: 2, metadata: {} });
    const anyBytes = [0x0a, 0x03, ...ascii("t/x"), 0x12, 0x02, 8, 1];
    const data = [0x1a, anyBytes.length, ...anyBytes];
    const inner = [0x0a, 0x01, ...ascii("e"), 0x12, data.length, ...data, 0x18, 0x02];
    const expected = bytes(0x2a, inner.length, ...inner);
    assert.deepEqual(encodeUp(m), expected);
    assert.deepEqual(UpstreamMessage.decode(expected), m);
  });

  test("group data message with text and a sequence id", () => {
    const expected = bytes(
      0x12, 0x12, // data_message, 18 bytes
      0x0a, 0x05, ...ascii("group"),
      0x12, 0x01, ...ascii("g"),
      0x1a, 0x04, 0x0a, 0x02, ...ascii("hi"),
      0x20, 0x05,
    );
    const m = DownstreamMessage.decode(expected);
    assert.deepEqual(m, {
      message: {
        case: "dataMessage",
        value: { from: "group", group: "g", data: { data: { case: "textData", value: "hi" } }, sequenceId: 5, metadata: {} },
      },
    });
    assert.deepEqual(encodeDown(m), expected);
  });

  test("disconnected carries its reason in field 2", () => {
    const expected = bytes(0x1a, 0x05, 0x12, 0x03, 0x12, 0x01, ...ascii("x"));
    const m = DownstreamMessage.decode(expected);
    assert.deepEqual(m, {
      message: { case: "systemMessage", value: { message: { case: "disconnectedMessage", value: { reason: "x" } } } },
    });
    assert.deepEqual(encodeDown(m), expected);
  });

  test("connected, ack with error, pong", () => {
    const connected = {
      message: {
        case: "systemMessage",
        value: { message: { case: "connectedMessage", value: { connectionId: "c1", userId: "u", reconnectionToken: "t" } } },
      },
    };
    const connectedBytes = bytes(
      0x1a, 0x0c, // system_message, 12 bytes
      0x0a, 0x0a, // connected_message, 10 bytes
      0x0a, 0x02, ...ascii("c1"), 0x12, 0x01, ...ascii("u"), 0x1a, 0x01, ...ascii("t"),
    );
    assert.deepEqual(encodeDown(connected), connectedBytes);
    assert.deepEqual(DownstreamMessage.decode(connectedBytes), connected);

    // success = false is proto3's default value, so it is not written.
    const ack = { message: { case: "ackMessage", value: { ackId: 2, success: false, error: { name: "Duplicate", message: "m" } } } };
    const ackBytes = bytes(
      0x0a, 0x12, // ack_message, 18 bytes
      0x08, 0x02, // ack_id
      0x1a, 0x0e, 0x0a, 0x09, ...ascii("Duplicate"), 0x12, 0x01, ...ascii("m"), // error
    );
    assert.deepEqual(encodeDown(ack), ackBytes);
    assert.deepEqual(DownstreamMessage.decode(ackBytes), ack);

    assert.deepEqual(DownstreamMessage.decode(bytes(0x22, 0x00)), { message: { case: "pongMessage", value: {} } });
  });

  test("unknown fields are skipped", () => {
    // joinGroup plus field 15 (varint 150) inside, and field 20 (fixed32) outside.
    const withUnknown = bytes(0x32, 0x08, 0x0a, 0x01, 0x67, 0x10, 0x01, 0x78, 0x96, 0x01, 0xa5, 0x01, 1, 2, 3, 4);
    assert.deepEqual(UpstreamMessage.decode(withUnknown), up("joinGroupMessage", { group: "g", ackId: 1 }));
  });

  test("64-bit ids beyond 32 bits round-trip", () => {
    const ackId = 2 ** 40 + 5;
    const m = up("joinGroupMessage", { group: "g", ackId });
    assert.deepEqual(UpstreamMessage.decode(encodeUp(m)), m);
    assert.deepEqual(new Writer().uint64(2 ** 35).finish(), bytes(0x80, 0x80, 0x80, 0x80, 0x80, 0x01));
    assert.equal(new Reader(new Writer().uint64(Number.MAX_SAFE_INTEGER).finish()).uint64(), Number.MAX_SAFE_INTEGER);
  });

  test("signed integers use protobuf's encodings", () => {
    assert.deepEqual(new Writer().int32(-1).finish(), bytes(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01));
    assert.equal(new Reader(new Writer().int32(-123456).finish()).int32(), -123456);
    assert.equal(new Reader(new Writer().int64(-(2 ** 40)).finish()).int64(), -(2 ** 40));
    assert.deepEqual(new Writer().sint32(-1).finish(), bytes(0x01));
    assert.equal(new Reader(new Writer().sint64(-(2 ** 33)).finish()).sint64(), -(2 ** 33));
    assert.equal(new Reader(new Writer().sfixed64(-5).finish()).sfixed64(), -5);
    assert.equal(new Reader(new Writer().double(1.5).finish()).double(), 1.5);
  });

  test("truncated or malformed input is a DecodeError", () => {
    assert.throws(() => UpstreamMessage.decode(bytes(0x32, 0x05, 0x0a, 0x01)), DecodeError);
    assert.throws(() => UpstreamMessage.decode(bytes(0x32, 0x02, 0x0a, 0x05, 0x67)), DecodeError);
    assert.throws(() => UpstreamMessage.decode(bytes(0x07)), DecodeError); // wire type 7
    assert.throws(() => UpstreamMessage.decode(bytes(0x00)), DecodeError); // field number 0
  });
});

describe("JSON: the shapes of json.webpubsub.azure.v1", () => {
  test("client requests as the spec writes them", () => {
    assert.deepEqual(upJson(up("joinGroupMessage", { group: "g1", ackId: 1 })), { type: "joinGroup", group: "g1", ackId: 1 });
    assert.deepEqual(upJson(up("leaveGroupMessage", { group: "g1" })), { type: "leaveGroup", group: "g1" });
    assert.deepEqual(
      upJson(up("sendToGroupMessage", { group: "g1", ackId: 2, noEcho: true, data: { data: { case: "textData", value: "hi" } }, metadata: {} })),
      { type: "sendToGroup", group: "g1", ackId: 2, noEcho: true, dataType: "text", data: "hi" },
    );
    assert.deepEqual(
      upJson(up("eventMessage", { event: "chat", ackId: 3, data: { data: { case: "jsonData", value: '{"a":1}' } }, metadata: {} })),
      { type: "event", event: "chat", ackId: 3, dataType: "json", data: { a: 1 } },
    );
    assert.deepEqual(upJson(up("sequenceAckMessage", { sequenceId: 57 })), { type: "sequenceAck", sequenceId: 57 });
    assert.deepEqual(upJson(up("pingMessage", {})), { type: "ping" });
  });

  test("binary and protobuf payloads are standard padded base64", () => {
    const binary = upJson(up("sendToGroupMessage", { group: "g", data: { data: { case: "binaryData", value: bytes(0, 1, 2, 3) } }, metadata: {} }));
    assert.deepEqual(binary, { type: "sendToGroup", group: "g", dataType: "binary", data: "AAECAw==" });
    const any = { typeUrl: "t", value: bytes(1) };
    const proto = upJson(up("sendToGroupMessage", { group: "g", data: { data: { case: "protobufData", value: any } }, metadata: {} }));
    assert.equal(proto.dataType, "protobuf");
    assert.deepEqual(Any.decode(base64Decode(proto.data)), any);
    assert.deepEqual(MessageData.fromJson({ dataType: "protobuf", data: proto.data }), { data: { case: "protobufData", value: any } });
  });

  test("server messages parse", () => {
    assert.deepEqual(
      downFromJson('{"type":"system","event":"connected","userId":null,"connectionId":"c","reconnectionToken":"t"}'),
      { message: { case: "systemMessage", value: { message: { case: "connectedMessage", value: { connectionId: "c", userId: "", reconnectionToken: "t" } } } } },
    );
    assert.deepEqual(downFromJson('{"type":"system","event":"disconnected","message":"bye"}'), {
      message: { case: "systemMessage", value: { message: { case: "disconnectedMessage", value: { reason: "bye" } } } },
    });
    assert.deepEqual(downFromJson('{"type":"ack","ackId":1,"success":true}'), {
      message: { case: "ackMessage", value: { ackId: 1, success: true } },
    });
    const ack = downFromJson('{"type":"ack","ackId":2,"success":false,"error":{"name":"Forbidden","message":"no"}}');
    assert.deepEqual(ack.message.value.error, { name: AckErrorName.Forbidden, message: "no" });
    assert.deepEqual(
      downFromJson('{"type":"message","from":"group","fromUserId":"alice","group":"g","dataType":"json","data":{"x":[1,2]},"sequenceId":3}'),
      {
        message: {
          case: "dataMessage",
          value: { from: "group", group: "g", data: { data: { case: "jsonData", value: '{"x":[1,2]}' } }, sequenceId: 3, metadata: {}, fromUserId: "alice" },
        },
      },
    );
    const server = downFromJson('{"type":"message","from":"server","dataType":"binary","data":"AAE="}');
    assert.deepEqual(server.message.value.data, { data: { case: "binaryData", value: bytes(0, 1) } });
    assert.equal(server.message.value.fromUserId, undefined);
    assert.deepEqual(downFromJson('{"type":"pong"}'), { message: { case: "pongMessage", value: {} } });
  });

  test("a missing dataType means json; an unknown type decodes to no message", () => {
    assert.deepEqual(MessageData.fromJson({ data: "s" }), { data: { case: "jsonData", value: '"s"' } });
    assert.deepEqual(downFromJson('{"type":"somethingNew","x":1}'), {});
  });

  test("connected writes an empty user id as null", () => {
    const m = { message: { case: "systemMessage", value: { message: { case: "connectedMessage", value: { connectionId: "c", userId: "" } } } } };
    assert.deepEqual(DownstreamMessage.toJson(m), { type: "system", event: "connected", connectionId: "c", userId: null });
  });

  test("wrongly typed fields are DecodeErrors", () => {
    assert.throws(() => downFromJson('{"type":"ack","ackId":"x","success":true}'), DecodeError);
    assert.throws(() => downFromJson('{"type":"message","from":"group","group":5,"data":1}'), DecodeError);
  });

  test("JSON and protobuf round-trip the same values", () => {
    const samples = [
      up("sendToGroupMessage", { group: "g", ackId: 9, noEcho: false, ttlSeconds: 30, data: { data: { case: "textData", value: "ü✓" } }, metadata: { a: "b" }, stream: { streamId: "s", idleTimeoutMs: 5 } }),
      up("eventMessage", { event: "e", data: { data: { case: "jsonData", value: "[1,2]" } }, metadata: {} }),
      up("joinGroupMessage", { group: "g" }),
    ];
    for (const m of samples) {
      assert.deepEqual(UpstreamMessage.decode(encodeUp(m)), m);
      assert.deepEqual(UpstreamMessage.fromJson(JSON.parse(JSON.stringify(upJson(m)))), m);
    }
  });
});

describe("enums and runtime helpers", () => {
  test("enums come from client.proto", () => {
    assert.equal(Subprotocol.Json, "json.webpubsub.azure.v1");
    assert.equal(Subprotocol.ProtobufReliable, "protobuf.reliable.webpubsub.azure.v1");
    assert.equal(CloseCode.PolicyViolation, 1008);
    assert.deepEqual(Object.values(AckErrorName).sort(), ["BadRequest", "Duplicate", "Forbidden", "InternalServerError"]);
  });

  test("base64 matches Node's Buffer for every length", () => {
    for (let n = 0; n < 40; n++) {
      const b = new Uint8Array(n).map((_, i) => (i * 37 + n) & 0xff);
      const expected = Buffer.from(b).toString("base64");
      assert.equal(base64Encode(b), expected);
      assert.deepEqual(base64Decode(expected), b);
      assert.deepEqual(base64Decode(expected.replace(/=+$/, "")), b);
    }
    assert.throws(() => base64Decode("A"), DecodeError);
    assert.throws(() => base64Decode("AA*A"), DecodeError);
  });
});
