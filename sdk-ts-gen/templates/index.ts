// The Hubcast TypeScript client: `HubcastClient`, the protocol's message types and codecs
// (generated from proto/hubcast/v1/client.proto), and the protobuf/base64 runtime.

export * from "./client.js";
export * from "./protocol.js";
export {
  Any,
  DecodeError,
  Reader,
  Writer,
  base64Decode,
  base64Encode,
  type JsonObject,
  type JsonValue,
  type MessageType,
} from "./wire.js";
