#!/usr/bin/env python3
"""paho-mqtt (a client we did not write) on two nodes of a ringmq cluster:
a member of share group `pg` on SUB_PORT's node, a publisher on PUB_PORT's node
publishing COUNT QoS 1 messages to `q/t` once the member's SUBACK is in.
Prints JSON: the payloads the member received and how many PUBACKs came back
(broker/tests/cluster_procs.rs). Every wait is bounded (about 15 s).

Usage: cluster_paho.py SUB_PORT PUB_PORT 311|5 PREFIX COUNT
"""
import json
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

SUB_PORT, PUB_PORT, PROTO, PREFIX, COUNT = (
    int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]))
VERSION = mqtt.MQTTv5 if PROTO == "5" else mqtt.MQTTv311


def client(name, port):
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{PREFIX}-{name}", protocol=VERSION)
    up = threading.Event()
    c.on_connect = lambda *a: up.set()
    for _ in range(50):  # the cluster may answer 0x88 while its metadata settles
        try:
            c.connect("127.0.0.1", port, keepalive=30)
            break
        except OSError:
            time.sleep(0.2)
    c.loop_start()
    if not up.wait(10):
        sys.exit(f"{name}: no CONNACK")
    return c


got, lock, subacked, acks = [], threading.Lock(), threading.Event(), []
member = client("member", SUB_PORT)
member.on_message = lambda c, u, m: (lock.acquire(), got.append(m.payload.decode()), lock.release())
member.on_subscribe = lambda *a: subacked.set()
member.subscribe("$share/pg/q/t", qos=1)
if not subacked.wait(10):
    sys.exit("member: no SUBACK")
pub = client("pub", PUB_PORT)
pub.on_publish = lambda *a: acks.append(1)
for i in range(COUNT):
    pub.publish("q/t", str(i), qos=1)
end = time.time() + 10
while time.time() < end and len(acks) < COUNT:
    time.sleep(0.05)
time.sleep(1.0)  # what crosses the links meanwhile
with lock:
    print(json.dumps({"member": got, "pubacks": len(acks)}))
member.loop_stop()
pub.loop_stop()
