#!/usr/bin/env python3
"""Issue 17 fairness benchmark: a healthy pair's latency while other clients attack its shard.

A healthy pair (a QoS 1 publisher at --rate msg/s and its QoS 1 subscriber, both placed on
shard 0 by client-id hash) runs through four phases, each on a fresh broker:

  baseline   nothing else
  subflood   --flood-conns connections, each alternately SUBSCRIBEs and UNSUBSCRIBEs its 1000
             multi-level filters (issue 17 case 4: ~76 SUBSCRIBE/s in total)
  stalled    one QoS 1 subscriber on `#` that reads nothing and acknowledges nothing (case 5)
  massclose  --close-conns clean sessions x 1000 subscriptions, all closed at once (case 4)
  takeover   --close-conns persistent sessions x --subs subscriptions, each taken over by
             a clean-start CONNECT with its client id (the old session and its subscriptions
             are discarded [MQTT-3.1.2-4])

Attackers get ids that hash to shard 0 too (worst case: same shard as the pair). Reports the
pair's p50/p99/max latency (publish to receipt, measured by the subscriber), messages lost, and
the broker's drop counters. Talks MQTT 3.1.1 over raw sockets (no dependency); 127.0.0.1 only.

Usage: bench/scripts/fairness.py --broker target/release/ringmq [--json out.json]
"""

import argparse
import json
import multiprocessing
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time


def fnv1a(b: bytes) -> int:
    h = 0xCBF29CE484222325
    for x in b:
        h ^= x
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def ids_on(shard: int, shards: int, prefix: str, n: int):
    """`n` client ids whose home shard (`ringmq_shard::home_shard`) is `shard`."""
    out, i = [], 0
    while len(out) < n:
        cid = f"{prefix}-{i}"
        i += 1
        if fnv1a(cid.encode()) % shards == shard:
            out.append(cid)
    return out


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def s16(b: bytes) -> bytes:
    return struct.pack(">H", len(b)) + b


def frame(first: int, body: bytes) -> bytes:
    return bytes([first]) + varint(len(body)) + body


def connect_pkt(cid: str, clean=True, keep_alive=60) -> bytes:
    flags = 0x02 if clean else 0x00
    return frame(0x10, s16(b"MQTT") + bytes([4, flags]) + struct.pack(">H", keep_alive) + s16(cid.encode()))


def subscribe_pkt(pid: int, filters, qos=1) -> bytes:
    body = struct.pack(">H", pid) + b"".join(s16(f.encode()) + bytes([qos]) for f in filters)
    return frame(0x82, body)


def unsubscribe_pkt(pid: int, filters) -> bytes:
    return frame(0xA2, struct.pack(">H", pid) + b"".join(s16(f.encode()) for f in filters))


def publish_pkt(topic: str, payload: bytes, qos=0, pid=0) -> bytes:
    body = s16(topic.encode()) + (struct.pack(">H", pid) if qos else b"") + payload
    return frame(0x30 | (qos << 1), body)


def puback_pkt(pid: int) -> bytes:
    return b"\x40\x02" + struct.pack(">H", pid)


class Conn:
    """A blocking MQTT 3.1.1 connection with a packet reader."""

    def __init__(self, port, cid, clean=True, rcvbuf=None):
        self.cid = cid
        self.s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.s.connect(("127.0.0.1", port))
        self.buf = bytearray()
        self.s.sendall(connect_pkt(cid, clean))
        t, _ = self.read()
        assert t == 0x20, "CONNACK expected"

    def read(self):
        """Next packet: (first byte, body); (None, None) on close."""
        while True:
            if len(self.buf) >= 2:
                mult, n, i = 1, 0, 1
                ok = False
                while i < len(self.buf) and i <= 4:
                    b = self.buf[i]
                    n += (b & 0x7F) * mult
                    mult *= 128
                    i += 1
                    if not b & 0x80:
                        ok = True
                        break
                if ok and len(self.buf) >= i + n:
                    first, body = self.buf[0], bytes(self.buf[i : i + n])
                    del self.buf[: i + n]
                    return first, body
            try:
                chunk = self.s.recv(65536)
            except OSError:
                return None, None
            if not chunk:
                return None, None
            self.buf += chunk

    def send(self, b: bytes):
        self.s.sendall(b)

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def start_broker(binary, cores, extra, durability="none"):
    d = tempfile.mkdtemp(prefix="ringmq-fair-")
    args = [binary, "--listen", "mqtt://127.0.0.1:0", "--allow-anonymous", "true", "--cores", str(cores), "--data-dir", d,
            "--durability", durability, "--log-level", "error", "--pin", "false"] + extra
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    end = time.time() + 20
    for line in p.stdout:
        if line.startswith("ringmq listening on mqtt://"):
            port = int(line.strip().rsplit(":", 1)[1])
            threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
            return p, port, d
        if time.time() > end:
            break
    p.kill()
    raise SystemExit("broker did not start")


def ctl_metrics(binary, d):
    out = subprocess.run([binary, "ctl", "--data-dir", d, "--json", "metrics"], capture_output=True, text=True)
    try:
        m = json.loads(out.stdout)["result"]
    except (ValueError, KeyError):
        return {}
    drops = {}
    for s in m.get("shards", []):
        for k, v in s.get("drops", {}).items():
            drops[k] = drops.get(k, 0) + v
    return {k: v for k, v in drops.items() if v}


class Pair:
    """The healthy pair: QoS 1 publisher at `rate`/s, QoS 1 subscriber recording latencies."""

    def __init__(self, port, pub_id, sub_id, rate):
        self.sub = Conn(port, sub_id)
        self.sub.send(subscribe_pkt(1, ["healthy/t"], 1))
        assert self.sub.read()[0] == 0x90
        self.pub = Conn(port, pub_id)
        self.rate, self.lat, self.sent, self.stop = rate, [], 0, False
        self.recording = False
        threading.Thread(target=self._recv, daemon=True).start()
        threading.Thread(target=self._acks, daemon=True).start()

    def _recv(self):
        while True:
            t, body = self.sub.read()
            if t is None:
                return
            if t >> 4 != 3:
                continue
            tl = struct.unpack(">H", body[:2])[0]
            qos = (t >> 1) & 3
            off = 2 + tl
            if qos:
                pid = struct.unpack(">H", body[off : off + 2])[0]
                off += 2
                self.sub.send(puback_pkt(pid))
            seq, ts, rec = struct.unpack(">QdB", body[off : off + 17])
            if rec:
                self.lat.append((time.monotonic() - ts) * 1000.0)

    def _acks(self):
        while self.pub.read()[0] is not None:
            pass

    def run(self, seconds):
        """Publishes for `seconds`, recording; returns (sent while recording)."""
        period, nxt, end, n = 1.0 / self.rate, time.monotonic(), time.monotonic() + seconds, 0
        while time.monotonic() < end:
            n += 1
            payload = struct.pack(">QdB", n, time.monotonic(), 1) + b"x" * 15
            self.pub.send(publish_pkt("healthy/t", payload, 1, n % 65535 + 1))
            nxt += period
            time.sleep(max(0.0, nxt - time.monotonic()))
        return n


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100.0))]


def flood(port, ids, filters_per, stop, counter, rate=0.0):
    """Each connection alternately SUBSCRIBEs and UNSUBSCRIBEs its filters, waiting for the ack;
    `rate` > 0 paces the SUBSCRIBEs of all connections together to that many per second."""
    period = len(ids) / rate if rate > 0 else 0.0

    def one(cid):
        c = Conn(port, cid)
        fs = [f"flood/{cid}/{k % 10}/{k // 10 % 10}/{k // 100}/x" for k in range(filters_per)]
        pid = 0
        nxt = time.monotonic()
        while not stop.is_set():
            if period:
                nxt += period
                time.sleep(max(0.0, nxt - time.monotonic()))
            pid = pid % 65000 + 1
            c.send(subscribe_pkt(pid, fs, 1))
            if c.read()[0] is None:
                return
            with counter.get_lock():
                counter.value += 1
            c.send(unsubscribe_pkt(pid + 1, fs))
            pid += 1
            if c.read()[0] is None:
                return
        c.close()
    if NICE_ATTACKERS:
        os.nice(19)
    threads = [threading.Thread(target=one, args=(cid,), daemon=True) for cid in ids]
    for t in threads:
        t.start()
    stop.wait()


NICE_ATTACKERS = False


def start_flood(port, ids, filters_per, stop, counter, rate):
    """The flood runs in its own process: in the pair's process its 50 threads would hold the
    GIL (5 ms switch interval) and the pair would measure Python, not the broker."""
    proc = multiprocessing.Process(
        target=flood, args=(port, ids, filters_per, stop, counter, rate), daemon=True)
    proc.start()
    return proc


def phase(args, name):
    shards = args.cores
    p, port, d = start_broker(args.broker, shards, args.extra, args.durability)
    try:
        pub_id, sub_id = ids_on(0, shards, "pair", 2)
        pair = Pair(port, pub_id, sub_id, args.rate)
        pair.run(1.0)  # warm-up
        pair.lat.clear()
        stop, counter, note = multiprocessing.Event(), multiprocessing.Value("q", 0), ""
        held = []
        if name == "subflood":
            start_flood(port, ids_on(0, shards, "flood", args.flood_conns), 1000, stop, counter,
                        args.flood_rate)
            time.sleep(1.0)
        elif name == "stalled":
            # A persistent session: its messages are queued (and, with sync, stored).
            st = Conn(port, ids_on(0, shards, "stalled", 1)[0], clean=False, rcvbuf=4096)
            st.send(subscribe_pkt(1, ["#"], 1))
            held.append(st)  # never read again: window full, nothing acknowledged
        elif name in ("massclose", "takeover"):
            for cid in ids_on(0, shards, "mass", args.close_conns):
                c = Conn(port, cid, clean=(name == "massclose"))
                for k in range(0, args.subs, 250):
                    c.send(subscribe_pkt(k // 250 % 65535 + 1, [f"mass/{cid}/{j % 10}/{j // 10}/x" for j in range(k, k + 250)], 1))
                for _ in range(args.subs // 250):
                    c.read()
                held.append(c)
            time.sleep(0.5)
        t0 = time.monotonic()
        if name == "massclose":
            threading.Timer(1.0, lambda: [c.close() for c in held]).start()
        elif name == "takeover":
            def take_over():
                for c in list(held):
                    held.append(Conn(port, c.cid, clean=True))
            threading.Timer(1.0, take_over).start()
        sent = pair.run(args.seconds)
        elapsed = time.monotonic() - t0
        stop.set()
        end = time.time() + 10
        while len(pair.lat) < sent and time.time() < end:
            time.sleep(0.05)
        if name == "subflood":
            note = f"{counter.value / elapsed:.0f} SUBSCRIBE/s of 1000 filters (each followed by UNSUBSCRIBE)"
        res = {
            "phase": name,
            "sent": sent,
            "received": len(pair.lat),
            "p50_ms": round(pct(pair.lat, 50), 2),
            "p99_ms": round(pct(pair.lat, 99), 2),
            "max_ms": round(max(pair.lat) if pair.lat else float("nan"), 2),
            "drops": ctl_metrics(args.broker, d),
            "note": note,
        }
        for c in held:
            c.close()
        return res
    finally:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
        subprocess.run(["rm", "-rf", d])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--broker", required=True)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--rate", type=int, default=500)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--flood-conns", type=int, default=50)
    ap.add_argument("--nice-attackers", action="store_true",
                    help="run the flood process at nice 19: on a 2-CPU machine the attackers "
                         "otherwise share the broker's CPUs and the pair measures the OS scheduler")
    ap.add_argument("--flood-rate", type=float, default=0.0,
                    help="SUBSCRIBE/s of all flood connections together (issue 17 case 4: 76); "
                         "0 = each as fast as acknowledged")
    ap.add_argument("--close-conns", type=int, default=200)
    ap.add_argument("--subs", type=int, default=1000,
                    help="subscriptions per massclose/takeover connection (a multiple of 250)")
    ap.add_argument("--phases", default="baseline,subflood,stalled,massclose")
    ap.add_argument("--durability", default="none", help="broker --durability (none, sync, batch)")
    ap.add_argument("--json")
    ap.add_argument("--label", default="", help="name of this binary in the printed table")
    ap.add_argument("extra", nargs="*", help="extra broker flags after --")
    args = ap.parse_args()
    global NICE_ATTACKERS
    NICE_ATTACKERS = args.nice_attackers
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"# {args.label or args.broker}: {os.cpu_count()} CPUs ({cpu}), kernel {os.uname().release}, "
          f"load average {os.getloadavg()[0]:.1f} at start, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"{args.cores} shards, durability {args.durability}, pair {args.rate} msg/s QoS 1, {args.seconds:.0f} s per phase",
          flush=True)
    results = []
    for name in args.phases.split(","):
        r = phase(args, name)
        results.append(r)
        print(f"{r['phase']:10} sent {r['sent']:6} recv {r['received']:6}  p50 {r['p50_ms']:8.2f} ms  "
              f"p99 {r['p99_ms']:8.2f} ms  max {r['max_ms']:8.2f} ms  drops {r['drops']} {r['note']}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
