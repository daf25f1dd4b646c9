// The Socket.IO peer of the load generator (hubcast-bench --target socketio): a plain
// Socket.IO server doing the same fan-out as Hubcast's group sends.
//
//   join(groups, ack)        joins the rooms, then acknowledges (the generator waits for it)
//   pub(group, payload)      emits "msg" with the payload to every member of the room
//
// WebSocket transport only (no long-polling upgrade), per-message deflate off, as the
// generator speaks Engine.IO v4 / Socket.IO v5 over a plain WebSocket.
"use strict";

const http = require("node:http");
const { Server } = require("socket.io");

const port = Number(process.env.PORT || 0);
const httpServer = http.createServer();
const io = new Server(httpServer, {
  transports: ["websocket"],
  perMessageDeflate: false,
  serveClient: false,
  maxHttpBufferSize: 1e6,
});

io.on("connection", (socket) => {
  socket.on("join", (groups, ack) => {
    socket.join(groups);
    if (typeof ack === "function") ack();
  });
  socket.on("pub", (group, payload) => {
    io.to(group).emit("msg", payload);
  });
});

httpServer.listen(port, "127.0.0.1", () => {
  console.error(`socket.io peer listening on 127.0.0.1:${httpServer.address().port}`);
});
