#!/usr/bin/env python3
"""Bytes per idle connection of a running broker, over plain MQTT or WebSocket.

Opens N connections one after another (TCP, for `ws` the RFC 6455 upgrade
with subprotocol mqtt, then an MQTT 3.1.1 CONNECT with clean session and
keep alive 0 in one masked binary frame), waits for every CONNACK, holds
them, and reads the broker's RSS (/proc/PID/status VmRSS) before and while
they are held. Prints one line: transport, N, RSS growth, bytes/connection.

  bench/scripts/conn_mem.py --pid PID --port PORT [--ws /mqtt] [--tls --ca CA.pem] [-n 5000]

(`--tls`: a TLS handshake first, trusting CA.pem: `mqtts://`, or `wss://` with --ws.)

(raise `ulimit -n` above N first).
"""
import argparse
import os
import socket
import ssl
import struct
import sys
import time


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise SystemExit("no VmRSS")


def connect_packet(cid):
    cid = cid.encode()
    var = b"\x00\x04MQTT\x04\x02\x00\x00" + struct.pack(">H", len(cid)) + cid
    return bytes([0x10, len(var)]) + var


def ws_frame(payload, mask=b"\x01\x02\x03\x04"):
    assert len(payload) < 126
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x82, 0x80 | len(payload)]) + mask + body


def read_until(s, pred):
    buf = b""
    while not pred(buf):
        chunk = s.recv(4096)
        if not chunk:
            raise SystemExit(f"closed by broker after {buf!r}")
        buf += chunk
    return buf


def open_one(port, path, i, tls=None):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    if tls:
        s = tls.wrap_socket(s, server_hostname="127.0.0.1")
    pkt = connect_packet(f"mem-{os.getpid()}-{i}")
    if path:
        s.sendall(
            (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
             "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
             "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n").encode())
        head = read_until(s, lambda b: b"\r\n\r\n" in b)
        if not head.startswith(b"HTTP/1.1 101"):
            raise SystemExit(f"upgrade refused: {head!r}")
        rest = head.split(b"\r\n\r\n", 1)[1]
        s.sendall(ws_frame(pkt))
        # CONNACK in a binary frame: 0x82 0x04 0x20 0x02 0x00 0x00.
        ack = rest + read_until(s, lambda b: len(b) >= 6 - len(rest))
        if ack[:6] != b"\x82\x04\x20\x02\x00\x00":
            raise SystemExit(f"bad CONNACK frame {ack!r}")
    else:
        s.sendall(pkt)
        ack = read_until(s, lambda b: len(b) >= 4)
        if ack[:4] != b"\x20\x02\x00\x00":
            raise SystemExit(f"bad CONNACK {ack!r}")
    return s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--ws", metavar="PATH", help="WebSocket path (default: plain MQTT)")
    ap.add_argument("-n", type=int, default=5000)
    ap.add_argument("--hold", type=float, default=2.0)
    ap.add_argument("--tls", action="store_true")
    ap.add_argument("--ca")
    a = ap.parse_args()
    tls = None
    if a.tls:
        tls = ssl.create_default_context(cafile=a.ca)
    # Warm up: a few connections first so one-off allocations are not counted.
    warm = [open_one(a.port, a.ws, -1 - i, tls) for i in range(50)]
    for s in warm:
        s.close()
    time.sleep(a.hold)
    before = rss(a.pid)
    conns = [open_one(a.port, a.ws, i, tls) for i in range(a.n)]
    time.sleep(a.hold)
    after = rss(a.pid)
    kind = ("wss" if a.tls else "ws") + f" {a.ws}" if a.ws else ("mqtts" if a.tls else "mqtt")
    print(f"{kind}: {a.n} idle connections, RSS +{after - before} B, "
          f"{(after - before) / a.n:.0f} B/connection")
    for s in conns:
        s.close()


if __name__ == "__main__":
    sys.exit(main())
