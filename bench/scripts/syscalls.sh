#!/usr/bin/env bash
# Syscalls per delivered message and latency, --io-backend epoll against io_uring, back to back
# (epoll, io_uring, epoll, io_uring, ...): one-shard broker pinned to CPU 0, ringmq-bench on
# CPU 1, QoS 0 pairs of 64-byte messages at a fixed rate. The broker's syscalls are counted with
# `perf stat -e raw_syscalls:sys_enter -p PID` over the steady part of each run (warm-up and
# the first second left out), per syscall too, and divided by the deliveries over the same time.
#
#   bench/scripts/syscalls.sh RINGMQ_BIN BENCH_BIN [RATE_PER_PUBLISHER] [PAIRS] [ROUNDS]
#   bench/scripts/syscalls.sh target/release/ringmq target/release/ringmq-bench 1000 10 2
#
# Environment: DURATION (default 10 s of measured publishing), BACKENDS (default
# "epoll io_uring"), EXTRA (more broker flags).
set -euo pipefail
ringmq=$1 bench=$2 rate=${3:-1000} pairs=${4:-10} rounds=${5:-2}
dur=${DURATION:-10}
backends=${BACKENDS:-epoll io_uring}
events=raw_syscalls:sys_enter,syscalls:sys_enter_io_uring_enter,syscalls:sys_enter_sendto,syscalls:sys_enter_recvfrom,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_membarrier
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
printf '%-9s %6s %12s %10s %8s %8s %8s %8s %8s %8s %8s\n' backend rate deliveries/s sys/msg enter send recv epoll other p50us p99us
for ((r = 1; r <= rounds; r++)); do
  for backend in $backends; do
    port=$(free_port)
    mkdir -p "$tmp/data"
    taskset -c 0 "$ringmq" --listen "mqtt://127.0.0.1:$port" --cores 1 --allow-anonymous true \
      --io-backend "$backend" --data-dir "$tmp/data" ${EXTRA:-} >"$tmp/broker.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do
      (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
      sleep 0.1
    done
    "$bench" pairs --pairs "$pairs" --rate "$rate" --qos 0 --payload 64 -p "$port" --mqtt 3.1.1 \
      --duration "$dur" --warmup 1 --cpus 1 --json -q >"$tmp/bench.json" 2>"$tmp/bench.err" &
    bpid=$!
    sleep 2.5
    perf stat -x, -e "$events" -p "$pid" -o "$tmp/perf.csv" -- sleep "$((dur - 3))" >/dev/null 2>&1
    wait "$bpid" || true
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    rm -rf "$tmp/data"
    python3 - "$backend" "$rate" "$((dur - 3))" "$tmp/perf.csv" "$tmp/bench.json" <<'PY'
import json, sys
backend, rate, secs, perf, bench = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4], sys.argv[5]
c = {}
for line in open(perf):
    f = line.strip().split(",")
    if len(f) > 2 and f[0].replace(".", "").isdigit():
        c[f[2]] = float(f[0])
b = json.load(open(bench))
d = b["delivered_per_sec"] * secs
per = lambda k: c.get(k, 0) / d if d else 0
tot = per("raw_syscalls:sys_enter")
parts = [per("syscalls:sys_enter_" + k) for k in ("io_uring_enter", "sendto", "recvfrom", "epoll_wait")]
lat = b.get("latency") or {}
p50 = round(lat.get("p50_us", 0)); p99 = round(lat.get("p99_us", 0))
print(f"{backend:9s} {rate:>6s} {b['delivered_per_sec']:12.0f} {tot:10.2f} " +
      " ".join(f"{x:8.2f}" for x in parts) + f" {tot - sum(parts):8.2f} {p50:8} {p99:8}")
PY
  done
done
