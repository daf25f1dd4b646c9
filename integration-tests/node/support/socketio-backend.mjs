// A Socket.IO backend as its own process, for tests that stop and start the backend while
// Hubcast keeps running: an unchanged `socket.io` 4.x server with Azure's
// `@azure/web-pubsub-socket.io` in default mode (`useAzureSocketIO`, over the tunnel).
//
//   node support/socketio-backend.mjs <hub>     (HUBCAST_CONNECTION_STRING in the environment)
//
// Prints `ready <pid>` once the package's tunnel is connected. Its sockets answer
// `hello(name, ack)` with `hello <name> from <pid>`, so a test can tell which backend answered.

import { createServer } from "node:http";

import { useAzureSocketIO } from "@azure/web-pubsub-socket.io";
import { Server } from "socket.io";

const [hub] = process.argv.slice(2);
const connectionString = process.env.HUBCAST_CONNECTION_STRING;
if (!hub || !connectionString) {
  console.error("usage: HUBCAST_CONNECTION_STRING=... node socketio-backend.mjs <hub>");
  process.exit(2);
}

const httpServer = createServer();
const io = new Server(httpServer);
await new Promise((resolve) => httpServer.listen(0, "127.0.0.1", resolve));
await useAzureSocketIO(io, { hub, connectionString });
io.on("connection", (socket) => {
  socket.on("hello", (name, ack) => ack(`hello ${name} from ${process.pid}`));
});
console.log(`ready ${process.pid}`);
