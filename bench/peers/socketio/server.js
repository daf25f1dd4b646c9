// The Socket.IO peer of the load generator (hubcast-bench --target socketio): a plain
// Socket.IO server doing the same fan-out as Hubcast's group sends.
//
//   join(groups, ack)        joins the rooms, then acknowledges (the generator waits for it)
//   pub(group, payload)      emits "msg" with the payload to every member of the room
//   POST /publish/<room>     the same from a backend: the request body is the payload
//                            (204 once emitted); the socketio-fanout scenario sends this
//                            way, as it sends to Hubcast's Socket.IO clients over REST
//
// WebSocket transport only (no long-polling upgrade), per-message deflate off, as the
// generator speaks Engine.IO v4 / Socket.IO v5 over a plain WebSocket.
"use strict";

const http = require("node:http");
const { Server } = require("socket.io");

const port = Number(process.env.PORT || 0);
// Socket.IO answers its own path (/socket.io/) and passes every other request here.
const httpServer = http.createServer((req, res) => {
  if (req.method !== "POST" || !req.url.startsWith("/publish/")) {
    res.writeHead(404).end();
    return;
  }
  let room;
  try {
    room = decodeURIComponent(req.url.slice("/publish/".length));
  } catch {
    room = "";
  }
  if (!room) {
    res.writeHead(400).end("a room name is required: POST /publish/<room>");
    return;
  }
  const chunks = [];
  req.on("data", (chunk) => chunks.push(chunk));
  req.on("end", () => {
    io.to(room).emit("msg", Buffer.concat(chunks).toString("utf8"));
    res.writeHead(204).end();
  });
});
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

// The generator keeps its HTTP connections open between sends, which may be seconds apart
// when the peer is slow: Node's default 5 s keep-alive would close one as a request starts.
httpServer.keepAliveTimeout = 120_000;
httpServer.headersTimeout = 125_000;

httpServer.listen(port, "127.0.0.1", () => {
  console.error(`socket.io peer listening on 127.0.0.1:${httpServer.address().port}`);
});
