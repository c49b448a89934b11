#!/usr/bin/env python3
"""Bytes of broker memory per idle connection, plain or TLS.

Opens N MQTT 3.1.1 clean-session connections (over TLS with --tls, trusting --ca), waits for
each CONNACK, holds them idle, and reads the broker's VmRSS from /proc/PID/status before and
while they are held. Prints (RSS growth) / N.

  ringmq --cores 1 --pin false --listen mqtts://127.0.0.1:8883 --tls-cert s.pem --tls-key s.key &
  python3 bench/scripts/conn_memory_tls.py --port 8883 --tls --ca ca.pem --pid $! -n 2000
"""
import argparse
import socket
import ssl
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def connect_packet(client_id):
    cid = client_id.encode()
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(cid).to_bytes(2, "big") + cid
    return bytes([0x10, len(body)]) + body


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--tls", action="store_true")
    ap.add_argument("--ca")
    ap.add_argument("--hold", type=float, default=2.0)
    a = ap.parse_args()
    ctx = None
    if a.tls:
        ctx = ssl.create_default_context(cafile=a.ca)
        ctx.set_alpn_protocols(["mqtt"])
    before = rss_kib(a.pid)
    socks = []
    for i in range(a.n):
        s = socket.create_connection((a.host, a.port))
        if ctx:
            s = ctx.wrap_socket(s, server_hostname="localhost")
        s.sendall(connect_packet(f"mem-{i}"))
        ack = s.recv(4)
        assert ack[:1] == b"\x20", ack
        socks.append(s)
    time.sleep(a.hold)
    after = rss_kib(a.pid)
    per = (after - before) * 1024 / a.n
    kind = "TLS" if a.tls else "plain"
    print(f"{kind}: {a.n} idle connections, RSS {before} -> {after} KiB, {per:.0f} B/connection")
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
