#!/usr/bin/env python3
"""Does the broker give memory back after a burst? (issue 17, "memory goes back")

Reads the broker's VmRSS (/proc/PID/status) at baseline, at the peak of a burst and after the
burst's connections closed (polled until it stops falling, at most --settle seconds), for:

  partial  N connections each send CONNECT, then a PUBLISH whose header announces --announce
           bytes and whose body stops --short bytes before the end (the partial-packet attack,
           case 3); held until all are sent, then closed by the client.
  publish  N connections each send CONNECT and one complete --announce-byte QoS 0 PUBLISH to a
           topic nobody subscribes to, then disconnect (a burst of big packets).
  storm    N connect/disconnect cycles, M at a time, each sending a few small packets.

Talks to the broker only over the wire (127.0.0.1), bounded in count and time. Prints one
line per phase: rss_kib baseline / peak / after, and the fraction of the burst returned.
"""
import argparse
import os
import socket
import struct
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def varint(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mqtt_str(s):
    b = s.encode()
    return struct.pack(">H", len(b)) + b


def connect_packet(cid):
    body = mqtt_str("MQTT") + bytes([4, 0x02]) + struct.pack(">H", 0) + mqtt_str(cid)
    return bytes([0x10]) + varint(len(body)) + body


def publish_head(topic, total_body):
    """Fixed header + topic of a QoS 0 PUBLISH whose body is total_body bytes."""
    return bytes([0x30]) + varint(total_body) + mqtt_str(topic)


def open_conn(addr, cid):
    s = socket.create_connection(addr, timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(connect_packet(cid))
    ack = b""
    while len(ack) < 4:
        chunk = s.recv(4 - len(ack))
        if not chunk:
            raise RuntimeError("closed before CONNACK")
        ack += chunk
    if ack[0] != 0x20 or ack[3] != 0:
        raise RuntimeError(f"CONNACK refused: {ack!r}")
    return s


def settle(pid, seconds):
    """Polls RSS every 100 ms until it has not fallen for 1 s, or `seconds` passed."""
    end = time.time() + seconds
    low = rss_kib(pid)
    low_at = time.time()
    while time.time() < end:
        time.sleep(0.1)
        r = rss_kib(pid)
        if r < low:
            low, low_at = r, time.time()
        elif time.time() - low_at > 1.0:
            break
    return low


def phase_partial(a, addr):
    topic = "burst/partial"
    payload_len = a.announce - 2 - len(topic)
    conns = []
    peak = 0
    chunk = b"x" * 65536
    for i in range(a.n):
        s = open_conn(addr, f"partial-{os.getpid()}-{i}")
        s.sendall(publish_head(topic, 2 + len(topic) + payload_len))
        left = payload_len - a.short
        while left > 0:
            n = min(left, len(chunk))
            s.sendall(chunk[:n])
            left -= n
        conns.append(s)
    # Let the broker read what was sent: poll until RSS stops rising.
    end = time.time() + a.settle
    last, still = 0, 0
    while time.time() < end and still < 10:
        time.sleep(0.1)
        r = rss_kib(a.pid)
        peak = max(peak, r)
        still = still + 1 if r <= last else 0
        last = r
    closed_by_broker = 0
    for s in conns:
        s.setblocking(False)
        try:
            if s.recv(1) == b"":
                closed_by_broker += 1
        except BlockingIOError:
            pass
        except OSError:
            closed_by_broker += 1
        s.close()
    return peak, f"closed_by_broker={closed_by_broker}"


def phase_publish(a, addr):
    topic = "burst/nobody"
    body = mqtt_str(topic) + b"y" * (a.announce - 2 - len(topic))
    packet = bytes([0x30]) + varint(len(body)) + body
    peak = 0
    for i in range(a.n):
        s = open_conn(addr, f"pub-{os.getpid()}-{i}")
        s.sendall(packet)
        s.sendall(b"\xe0\x00")  # DISCONNECT
        s.close()
        if i % 50 == 0:
            peak = max(peak, rss_kib(a.pid))
    return max(peak, rss_kib(a.pid)), ""


def phase_storm(a, addr):
    peak = 0
    small = publish_head("storm/t", 2 + 7 + 100) + b"z" * 100
    done = 0
    while done < a.n:
        batch = []
        for i in range(min(a.batch, a.n - done)):
            s = open_conn(addr, f"storm-{os.getpid()}-{done + i}")
            s.sendall(small * 5)
            batch.append(s)
        peak = max(peak, rss_kib(a.pid))
        for s in batch:
            s.sendall(b"\xe0\x00")
            s.close()
        done += len(batch)
    return max(peak, rss_kib(a.pid)), ""


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("phase", choices=["partial", "publish", "storm"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--pid", type=int, required=True, help="the broker's pid (RSS is read from /proc)")
    p.add_argument("-n", type=int, default=500, help="connections (cycles for storm)")
    p.add_argument("--announce", type=int, default=(1 << 20) - 8,
                   help="PUBLISH body size, bytes (default: the largest under a 1 MiB max packet)")
    p.add_argument("--short", type=int, default=1, help="partial: bytes left unsent")
    p.add_argument("--batch", type=int, default=200, help="storm: connections open at a time")
    p.add_argument("--settle", type=float, default=10.0, help="seconds to wait for RSS to settle")
    a = p.parse_args()
    addr = ("127.0.0.1", a.port)
    base = settle(a.pid, 3)
    peak, note = {"partial": phase_partial, "publish": phase_publish, "storm": phase_storm}[
        a.phase
    ](a, addr)
    after = settle(a.pid, a.settle)
    grew = max(peak - base, 1)
    print(
        f"{a.phase} n={a.n} announce={a.announce}: rss_kib baseline={base} peak={peak} "
        f"after={after} returned={100.0 * (peak - after) / grew:.0f}% {note}".rstrip()
    )


if __name__ == "__main__":
    main()
