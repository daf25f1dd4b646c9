"""An independent second MQTT client, Eclipse paho-mqtt 2.x, against the MQTT edge of the
real `hubcast` binary, over WebSocket (subprotocol `mqtt`), as MQTT 3.1.1 and as 5.0: the
token comes from `hubcast token --mqtt`; the client subscribes, publishes at QoS 0 and 1 and
receives its own publishes, receives REST sends to its connection (its client id) and to
all on `$webpubsub/server/messages`, and is refused with the CONNACK code Azure gives.

Run through scripts/test, or by hand after `cargo build -p hubcast-server`:
    integration-tests/python/.venv/bin/python -m unittest integration-tests/python/test_mqtt.py
"""

import json
import os
import queue
import re
import subprocess
import time
import unittest
import urllib.request
from urllib.parse import urlparse

import paho.mqtt.client as mqtt

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("HUBCAST_BIN", os.path.join(REPO, "target", "debug", "hubcast"))
HUB = "pymqtt"
KEY = "paho-mqtt-test-key-0123456789abcdefghijklm"
TIMEOUT = 10
SERVER_MESSAGES = "$webpubsub/server/messages"
ROLES = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]
VERSIONS = [("3.1.1", mqtt.MQTTv311), ("5.0", mqtt.MQTTv5)]

_seq = 0


def client_id(prefix):
    """A fresh client id of `[0-9a-zA-Z]`, as Azure requires."""
    global _seq
    _seq += 1
    return f"{prefix}{int(time.time() * 1000):x}{_seq}"


class Client:
    """A paho client on its own network thread; what it receives goes to queues."""

    def __init__(self, path, cid, protocol):
        self.connacks = queue.Queue()
        self.messages = queue.Queue()
        self.subacks = queue.Queue()
        self.paho = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=cid,
            transport="websockets",
            protocol=protocol,
        )
        self.paho.ws_set_options(path=path)
        self.paho.on_connect = lambda _c, _u, _f, reason, _p: self.connacks.put(reason)
        self.paho.on_message = lambda _c, _u, msg: self.messages.put(msg)
        self.paho.on_subscribe = lambda _c, _u, _mid, reasons, _p: self.subacks.put(reasons)

    def connect(self, endpoint):
        url = urlparse(endpoint)
        self.paho.connect(url.hostname, url.port, keepalive=30)
        self.paho.loop_start()
        return self.connacks.get(timeout=TIMEOUT)

    def next_message(self, topic):
        deadline = time.time() + TIMEOUT
        while True:
            msg = self.messages.get(timeout=max(0.01, deadline - time.time()))
            if msg.topic == topic:
                return msg

    def close(self):
        self.paho.disconnect()
        self.paho.loop_stop()


class MqttEdge(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = subprocess.Popen(
            [BIN, "--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0", "--access-key", KEY],
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
        cls.connection_string = f"Endpoint={cls.endpoint};AccessKey={KEY};Version=1.0;"

    @classmethod
    def tearDownClass(cls):
        cls.server.terminate()
        cls.server.wait(15)
        cls.server.stdout.close()

    def setUp(self):
        self.clients = []

    def tearDown(self):
        for client in self.clients:
            client.close()

    def path(self, user, roles=ROLES):
        """The path and query of a client URL minted by `hubcast token --mqtt`."""
        args = [BIN, "token", "--mqtt", "--hub", HUB, "--user", user,
                "--connection-string", self.connection_string]
        for role in roles:
            args += ["--role", role]
        url = urlparse(subprocess.check_output(args, text=True).strip())
        self.assertEqual(url.path, f"/clients/mqtt/hubs/{HUB}")
        return f"{url.path}?{url.query}"

    def client(self, path, cid, protocol):
        client = Client(path, cid, protocol)
        self.clients.append(client)
        return client

    def rest(self, path, body, content_type):
        """A REST call of the service, with a token for its URL; returns the status."""
        token = subprocess.check_output(
            [BIN, "service-token", "--url", path, "--connection-string", self.connection_string],
            text=True,
        ).strip()
        request = urllib.request.Request(
            f"{self.endpoint}{path}?api-version=2024-01-01",
            data=body,
            headers={"Content-Type": content_type, "Authorization": f"Bearer {token}"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return response.status

    def test_subscribe_publish_and_rest_sends(self):
        for name, protocol in VERSIONS:
            with self.subTest(name):
                cid = client_id("paho")
                client = self.client(self.path("pyuser"), cid, protocol)
                self.assertEqual(client.connect(self.endpoint), "Success")
                topic = f"room{protocol}"
                client.paho.subscribe([(topic, 1), (SERVER_MESSAGES, 1)])
                self.assertEqual([r.value for r in client.subacks.get(timeout=TIMEOUT)], [1, 1])
                for qos in (0, 1, 2):
                    info = client.paho.publish(topic, f"hello {qos}".encode(), qos=qos)
                    info.wait_for_publish(TIMEOUT)
                    self.assertTrue(info.is_published(), f"QoS {qos} publish sent (and acked)")
                    msg = client.next_message(topic)
                    self.assertEqual(msg.payload, f"hello {qos}".encode())
                    # MQTT to MQTT: the lower of the publish's and the subscription's QoS.
                    self.assertEqual(msg.qos, min(qos, 1))
                # The client id is the connection id: a REST send to it arrives.
                status = self.rest(f"/api/hubs/{HUB}/connections/{cid}/:send",
                                   b"to the connection", "text/plain")
                self.assertEqual(status, 202)
                msg = client.next_message(SERVER_MESSAGES)
                self.assertEqual(msg.payload, b"to the connection")
                status = self.rest(f"/api/hubs/{HUB}/:send", json.dumps({"kind": "all"}).encode(),
                                   "application/json")
                self.assertEqual(status, 202)
                msg = client.next_message(SERVER_MESSAGES)
                self.assertEqual(json.loads(msg.payload), {"kind": "all"})
                if protocol == mqtt.MQTTv5:
                    self.assertEqual(msg.properties.ContentType, "application/json")
                client.close()

    def test_refusals_come_with_their_connack_codes(self):
        for name, protocol in VERSIONS:
            with self.subTest(name):
                # paho reports a 3.1.1 return code as the MQTT 5 reason code of that meaning.
                bad_token = f"/clients/mqtt/hubs/{HUB}?access_token=not.a.token"
                refused = self.client(bad_token, client_id("tok"), protocol).connect(self.endpoint)
                self.assertEqual(refused, "Not authorized")
                refused = self.client(self.path("u"), "not-alnum", protocol).connect(self.endpoint)
                self.assertEqual(refused, "Client identifier not valid")

    def test_a_client_without_roles_cannot_subscribe(self):
        client = self.client(self.path("noroles", roles=[]), client_id("none"), mqtt.MQTTv5)
        self.assertEqual(client.connect(self.endpoint), "Success")
        client.paho.subscribe("room", qos=1)
        [reason] = client.subacks.get(timeout=TIMEOUT)
        self.assertEqual(reason, "Not authorized")


if __name__ == "__main__":
    unittest.main()
