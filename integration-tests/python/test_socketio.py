"""An independent second Socket.IO client, python-socketio 5.x (client mode), against the
Socket.IO edge of the real `hubcast` binary: the token comes from `hubcast token --socketio`,
the serverless backend is a plain HTTP handler, and the client connects over WebSocket and
over long-polling, emits with an ack (the handler's answer), and receives a REST send of an
Engine.IO payload to its namespace group.

Run through scripts/test, or by hand after `cargo build -p hubcast-server`:
    integration-tests/python/.venv/bin/python -m unittest integration-tests/python/test_socketio.py
"""

import json
import os
import re
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse, parse_qs

import socketio

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("HUBCAST_BIN", os.path.join(REPO, "target", "debug", "hubcast"))
HUB = "pysio"
KEY = "python-socketio-test-key-0123456789abcdefgh"
TIMEOUT = 10

EVENTS = []


class Handler(BaseHTTPRequestHandler):
    """The serverless backend: accepts every socket, answers `echo` events with an ack."""

    def log_message(self, *args):
        pass

    def do_OPTIONS(self):
        self.send_response(200)
        self.send_header("WebHook-Allowed-Origin", "*")
        self.end_headers()

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0))).decode()
        EVENTS.append((self.headers.get("ce-type"), self.headers.get("ce-eventname"), body))
        match = re.match(r"^42(/[^,]*,)?(\d+)(\[.*)$", body, re.S)
        if self.headers.get("ce-type") == "azure.webpubsub.user.message" and match:
            args = json.loads(match.group(3))[1:]
            answer = f"43{match.group(1) or ''}{match.group(2)}{json.dumps(args)}".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)
            return
        self.send_response(200 if "sys.connect" in (self.headers.get("ce-type") or "") else 204)
        self.send_header("Content-Length", "0")
        self.end_headers()


class SocketIoEdge(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.backend = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=cls.backend.serve_forever, daemon=True).start()
        backend_port = cls.backend.server_address[1]
        cls.config = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
        cls.config.write(
            f"""
[hubs.{HUB}]
event_handlers = [{{ url_template = "http://127.0.0.1:{backend_port}/eventhandler", user_event_pattern = "*", system_events = ["connect", "connected", "disconnected"] }}]
"""
        )
        cls.config.close()
        cls.server = subprocess.Popen(
            [BIN, "--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0",
             "--access-key", KEY, "--config", cls.config.name],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        deadline = time.time() + 20
        cls.endpoint = None
        while time.time() < deadline and cls.endpoint is None:
            line = cls.server.stdout.readline()
            found = re.match(r"^Endpoint=(http://127\.0\.0\.1:\d+);", line.strip())
            if found:
                cls.endpoint = found.group(1)
        if cls.endpoint is None:
            cls.server.kill()
            raise RuntimeError("hubcast did not print its endpoint")
        threading.Thread(target=cls.server.stdout.read, daemon=True).start()

    @classmethod
    def tearDownClass(cls):
        cls.server.terminate()
        cls.server.wait(15)
        cls.backend.shutdown()
        os.unlink(cls.config.name)

    def client_url(self, user):
        url = subprocess.check_output(
            [BIN, "token", "--socketio", "--hub", HUB, "--user", user,
             "--connection-string", f"Endpoint={self.endpoint};AccessKey={KEY};Version=1.0;"],
            text=True,
        ).strip()
        parsed = urlparse(url)
        self.assertEqual(parsed.path, f"/clients/socketio/hubs/{HUB}")
        return parsed.path, parse_qs(parsed.query)["access_token"][0]

    def run_client(self, transports):
        path, token = self.client_url("py")
        client = socketio.Client(reconnection=False)
        news = []
        got = threading.Event()

        @client.on("news", namespace="/py")
        def on_news(*args):
            news.append(list(args))
            got.set()

        client.connect(
            f"{self.endpoint}?access_token={token}",
            socketio_path=path,
            namespaces=["/py"],
            transports=transports,
            wait_timeout=TIMEOUT,
        )
        try:
            self.assertEqual(client.transport(), transports[-1])
            answer = client.call("echo", {"from": "python"}, namespace="/py", timeout=TIMEOUT)
            self.assertEqual(answer, {"from": "python"})
            # A REST send of an Engine.IO payload to the namespace's group `0~b64(/py)~`.
            request = urllib.request.Request(
                f"{self.endpoint}/api/hubs/{HUB}/groups/0~L3B5~/:send?api-version=2024-01-01",
                data=b'42/py,["news","from REST"]',
                headers={"Content-Type": "text/plain", "Authorization": f"Bearer {self.service_token()}"},
                method="POST",
            )
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                self.assertEqual(response.status, 202)
            self.assertTrue(got.wait(TIMEOUT), "the REST send arrives")
            self.assertEqual(news, [["from REST"]])
        finally:
            client.disconnect()
        self.assertTrue(
            any(t == "azure.webpubsub.user.message" and name == "echo" for t, name, _ in EVENTS),
            "the handler saw the event",
        )

    def service_token(self):
        return subprocess.check_output(
            [BIN, "service-token", "--url", f"/api/hubs/{HUB}/groups/0~L3B5~/:send",
             "--connection-string", f"Endpoint={self.endpoint};AccessKey={KEY};Version=1.0;"],
            text=True,
        ).strip()

    def test_websocket(self):
        self.run_client(["websocket"])

    def test_long_polling(self):
        self.run_client(["polling"])


if __name__ == "__main__":
    unittest.main()
