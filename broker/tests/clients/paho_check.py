#!/usr/bin/env python3
"""paho-mqtt (a client we did not write) against a running broker.

One subscriber and one publisher, both paho, over the given transport:
the subscriber takes t/<run>/#, the publisher sends QoS 0, 1 and 2 messages
(one of 300 KB, spanning many TCP reads and WebSocket frames) and a retained
one; the subscriber must get them all, in order per QoS, with intact payloads.
Prints one JSON line with what happened; exits 0 only when all checks pass.

Usage: paho_check.py --port P [--host H] [--transport tcp|websockets]
       [--path /mqtt] [--proto 4|5|3] [--cafile FILE] [--cert FILE --key FILE]
       [--run NAME]

--cert/--key present a client certificate (mTLS), with no user name or
password: for a listener that takes the certificate's CN as the user name.
"""
import argparse
import json
import ssl
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

PROTOS = {"3": mqtt.MQTTv31, "4": mqtt.MQTTv311, "5": mqtt.MQTTv5}


def client(args, cid):
    c = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=cid,
        protocol=PROTOS[args.proto],
        transport=args.transport,
    )
    if args.transport == "websockets":
        c.ws_set_options(path=args.path)
    if args.cafile:
        c.tls_set(
            ca_certs=args.cafile,
            certfile=args.cert,
            keyfile=args.key,
            cert_reqs=ssl.CERT_REQUIRED,
        )
    return c


def wait(ev, what, within=10.0):
    if not ev.wait(within):
        raise SystemExit(json.dumps({"ok": False, "timeout": what}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--transport", default="tcp")
    ap.add_argument("--path", default="/mqtt")
    ap.add_argument("--proto", default="4")
    ap.add_argument("--cafile")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--run", default="paho")
    args = ap.parse_args()
    base = f"t/{args.run}"
    big = bytes(i % 251 for i in range(300_000))
    sent = [
        (f"{base}/q0", b"zero", 0, False),
        (f"{base}/q1", b"one", 1, False),
        (f"{base}/q2", b"two", 2, False),
        (f"{base}/big", big, 1, False),
        (f"{base}/ret", b"kept", 1, True),
    ]
    got = []
    lock = threading.Lock()
    all_in = threading.Event()
    sub_ready = threading.Event()
    connected = {}

    def on_connect(c, userdata, flags, reason_code, props):
        connected[c._client_id.decode()] = str(reason_code)
        userdata.set()

    def on_subscribe(c, userdata, mid, reason_codes, props):
        sub_ready.set()

    def on_message(c, userdata, msg):
        with lock:
            got.append((msg.topic, bytes(msg.payload), msg.qos, msg.retain))
            if len(got) >= len(sent):
                all_in.set()

    sub_conn = threading.Event()
    sub = client(args, f"{args.run}-sub")
    sub.user_data_set(sub_conn)
    sub.on_connect = on_connect
    sub.on_subscribe = on_subscribe
    sub.on_message = on_message
    sub.connect(args.host, args.port, keepalive=30)
    sub.loop_start()
    wait(sub_conn, "subscriber CONNACK")
    sub.subscribe(f"{base}/#", qos=2)
    wait(sub_ready, "SUBACK")

    pub_conn = threading.Event()
    pub = client(args, f"{args.run}-pub")
    pub.user_data_set(pub_conn)
    pub.on_connect = on_connect
    pub.connect(args.host, args.port, keepalive=30)
    pub.loop_start()
    wait(pub_conn, "publisher CONNACK")
    for topic, payload, qos, retain in sent:
        pub.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(10)
    wait(all_in, f"{len(sent)} messages")
    with lock:
        snapshot = list(got)
    # Clear the retained message so runs do not see each other's.
    pub.publish(f"{base}/ret", b"", qos=1, retain=True).wait_for_publish(10)
    pub.disconnect()
    sub.disconnect()
    pub.loop_stop()
    sub.loop_stop()

    want = {(t, p, q) for t, p, q, _ in sent}
    have = {(t, p, q) for t, p, q, _ in snapshot}
    ok = want == have and all(connected[k] == "Success" for k in connected)
    print(json.dumps({
        "ok": ok,
        "connected": connected,
        "received": [[t, len(p), q, r] for t, p, q, r in snapshot],
        "big_intact": any(p == big for _, p, _, _ in snapshot),
    }))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    start = time.time()
    main()
