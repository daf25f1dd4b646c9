export * from "./client.js";
export * from "./protocol.js";
export { Any, DecodeError, Reader, Writer, base64Decode, base64Encode, type JsonObject, type JsonValue, type MessageType, } from "./wire.js";
