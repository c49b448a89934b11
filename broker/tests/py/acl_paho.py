#!/usr/bin/env python3
"""One ACL scenario with paho-mqtt (a client we did not write) against any
broker: prints what each client was granted, acknowledged and received, as
JSON, so the same scenario can be run against ringmq and Debian's mosquitto
with the same acl_file and the decisions compared (broker/tests/authz_paho.rs).

Usage: acl_paho.py HOST PORT 311|5 PREFIX
Every wait is bounded; the script exits within about 15 s.
"""
import json
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

HOST, PORT, PROTO, PREFIX = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
VERSION = mqtt.MQTTv5 if PROTO == "5" else mqtt.MQTTv311


class C:
    def __init__(self, name, user):
        self.id = f"{PREFIX}-{name}"
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.id, protocol=VERSION)
        if user:
            self.c.username_pw_set(user, "")
        self.connected = threading.Event()
        self.lock = threading.Lock()
        self.subacks = {}
        self.pubacks = {}
        self.received = []
        self.pending = {}
        self.c.on_connect = self.on_connect
        self.c.on_subscribe = self.on_subscribe
        self.c.on_publish = self.on_publish
        self.c.on_message = self.on_message
        self.c.connect(HOST, PORT, keepalive=30)
        self.c.loop_start()
        if not self.connected.wait(5):
            raise SystemExit(f"{self.id}: no CONNACK")

    def on_connect(self, client, userdata, flags, reason_code, properties):
        self.connected.set()

    def on_subscribe(self, client, userdata, mid, codes, properties):
        with self.lock:
            self.pending[mid] = [c.value for c in codes]

    def on_publish(self, client, userdata, mid, reason_code, properties):
        with self.lock:
            self.pending[mid] = reason_code.value

    def on_message(self, client, userdata, msg):
        with self.lock:
            self.received.append(msg.topic)

    def wait_mid(self, mid):
        end = time.time() + 5
        while time.time() < end:
            with self.lock:
                if mid in self.pending:
                    return self.pending.pop(mid)
            time.sleep(0.01)
        raise SystemExit(f"{self.id}: no ack for mid {mid}")

    def sub(self, f):
        _, mid = self.c.subscribe(f, qos=1)
        self.subacks[f] = self.wait_mid(mid)[0]

    def pub(self, t):
        info = self.c.publish(t, b"x", qos=1)
        self.pubacks[t] = self.wait_mid(info.mid)


alice = C("alice", "alice")
bob = C("bob", "bob")
anon = C("anon", None)
for f in ["sensors/#", "alice/#", "bob/#", f"devices/{alice.id}/#", "public/#"]:
    alice.sub(f)
for f in ["bob/#", "sensors/+/t", "public/+"]:
    bob.sub(f)
for f in ["public/#", "#", "sensors/#"]:
    anon.sub(f)
for t in ["sensors/1/t", "sensors/private/k", "public/news", "public/secret", "bob/x",
          "alice/x", f"devices/{alice.id}/x"]:
    bob.pub(t)
for t in ["alice/y", "bob/y", "sensors/2/t", f"devices/{alice.id}/z", "public/z"]:
    alice.pub(t)
for t in ["public/a", "anon/b"]:
    anon.pub(t)
# Deliveries are asynchronous: wait until nothing new arrives for 500 ms (bounded).
last, quiet_since, end = -1, time.time(), time.time() + 5
while time.time() < end:
    n = sum(len(c.received) for c in (alice, bob, anon))
    if n != last:
        last, quiet_since = n, time.time()
    elif time.time() - quiet_since > 0.5:
        break
    time.sleep(0.02)
out = {
    c.id.split("-", 1)[1]: {
        "suback": c.subacks,
        "puback": c.pubacks,
        "received": sorted(c.received),
    }
    for c in (alice, bob, anon)
}
for c in (alice, bob, anon):
    c.c.disconnect()
    c.c.loop_stop()
print(json.dumps(out, sort_keys=True))
