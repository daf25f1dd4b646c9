// gRPC helpers for the Node tests: Hubcast's own services (`hubcast.v1.Control`,
// `hubcast.v1.Events`) through @grpc/grpc-js, loaded from the repository's proto files.

import { createHmac } from "node:crypto";

import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";

import { repoRoot } from "./hubcast.mjs";

export { grpc };

/** The `hubcast.v1` package of `file` (e.g. `hubcast/v1/events.proto`), fields as written. */
export function loadHubcast(file) {
  const definition = protoLoader.loadSync(file, {
    includeDirs: [`${repoRoot}proto`],
    keepCase: true,
    longs: String,
    defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(definition).hubcast.v1;
}

/**
 * Call metadata with a bearer token for `service` (`Control` or `Events`): HS256 with the
 * server's access key, audience `<endpoint>/hubcast.v1.<service>`.
 */
export function bearer(server, service) {
  const endpoint = /Endpoint=([^;]+);/.exec(server.connectionString)[1];
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const claims = { aud: `${endpoint}/hubcast.v1.${service}`, exp: Math.floor(Date.now() / 1000) + 3600 };
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}`;
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${body}.${createHmac("sha256", server.accessKey).update(body).digest("base64url")}`);
  return metadata;
}

/** The gRPC address of a server (of a cluster's first node). */
export async function grpcAddress(server) {
  const node = server.nodes ? server.nodes[0] : server;
  const [, addr] = await node.waitForLog(/ listening addr=\S+ grpc\.addr=(\S+)/, "the gRPC address");
  return addr;
}
