"""Wrong-password CONNECT storm: keeps N raw MQTT 3.1.1 CONNECTs in flight
against HOST:PORT for SECONDS, each with USER and a wrong password, and
prints how many were answered (CONNACK seen) per second.

usage: auth_storm.py HOST PORT USER SECONDS [CONCURRENCY]
Traffic goes to the address given only (the bench uses 127.0.0.1).
"""
import asyncio
import struct
import sys
import time


def connect_packet(client_id: bytes, user: bytes, password: bytes) -> bytes:
    def s(b):
        return struct.pack("!H", len(b)) + b

    var = s(b"MQTT") + bytes([4, 0xC2]) + struct.pack("!H", 30)
    payload = s(client_id) + s(user) + s(password)
    body = var + payload
    n, rl = len(body), b""
    while True:
        d, n = n % 128, n // 128
        rl += bytes([d | (0x80 if n else 0)])
        if not n:
            break
    return bytes([0x10]) + rl + body


async def one(host, port, user, i, stats):
    try:
        r, w = await asyncio.open_connection(host, port)
        w.write(connect_packet(b"storm-%d" % i, user, b"wrong-password"))
        await w.drain()
        ack = await asyncio.wait_for(r.read(4), 15)
        if len(ack) == 4 and ack[0] == 0x20:
            stats["answered"] += 1
            stats["codes"][ack[3]] = stats["codes"].get(ack[3], 0) + 1
        w.close()
    except Exception:
        stats["errors"] += 1


async def main():
    host, port, user, secs = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode(), float(sys.argv[4])
    conc = int(sys.argv[5]) if len(sys.argv) > 5 else 64
    stats = {"answered": 0, "errors": 0, "codes": {}}
    end = time.time() + secs
    i = 0

    async def worker(k):
        nonlocal i
        while time.time() < end:
            i += 1
            await one(host, port, user, i, stats)

    t0 = time.time()
    await asyncio.gather(*(worker(k) for k in range(conc)))
    dt = time.time() - t0
    print(f"storm: {stats['answered']} answered in {dt:.1f} s ({stats['answered'] / dt:.0f}/s), "
          f"codes {stats['codes']}, errors {stats['errors']}")


asyncio.run(main())
