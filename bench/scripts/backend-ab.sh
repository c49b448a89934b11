#!/usr/bin/env bash
# Throughput and broker CPU per delivery, --io-backend epoll against io_uring, back to back
# (epoll, io_uring, epoll, ...): one-shard broker pinned to CPU 0, ringmq-bench on CPU 1.
# Broker CPU is utime+stime from /proc/PID/stat over the whole run (setup included), which
# stays comparable on a shared machine where wall-clock throughput swings. A scenario without
# subscribers (QoS 1 ingest: `pubsub --publishers 50 -s 0 --qos 1`) is counted per message published.
#
#   bench/scripts/backend-ab.sh RINGMQ_BIN BENCH_BIN ROUNDS -- SCENARIO ARGS...
#   bench/scripts/backend-ab.sh target/release/ringmq target/release/ringmq-bench 2 -- pairs --pairs 50 --qos 0 --payload 64 --duration 5
#
# Environment: BACKENDS (default "epoll io_uring"; an entry BACKEND=BIN runs another build),
# RT=1 (broker and generator under `chrt -f 50`, ahead of compilers on a shared machine),
# EXTRA (more broker flags).
set -euo pipefail
ringmq=$1 bench=$2 rounds=$3
shift 3
[[ "${1:-}" == -- ]] && shift
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
for ((r = 1; r <= rounds; r++)); do
  for spec in ${BACKENDS:-epoll io_uring}; do
    backend=${spec%%=*} bin=$ringmq
    [[ "$spec" == *=* ]] && bin=${spec#*=}
    rt=()
    [[ -n "${RT:-}" ]] && rt=(chrt -f 50)
    port=$(free_port)
    mkdir -p "$tmp/data"
    "${rt[@]}" taskset -c 0 "$bin" --listen "mqtt://127.0.0.1:$port" --cores 1 --allow-anonymous true \
      --io-backend "$backend" --data-dir "$tmp/data" ${EXTRA:-} >"$tmp/broker.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do
      (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
      sleep 0.1
    done
    t0=$(cpu_ticks "$pid")
    "${rt[@]}" "$bench" "$@" -p "$port" --mqtt 3.1.1 --cpus 1 --json -q >"$tmp/bench.json" 2>"$tmp/bench.err" || true
    t1=$(cpu_ticks "$pid")
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    rm -rf "$tmp/data"
    python3 - "$spec" "$((t1 - t0))" "$(getconf CLK_TCK)" "$tmp/bench.json" <<'PY'
import json, sys
backend, ticks, hz, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
if "=" in backend:
    name, b = backend.split("=", 1)
    backend = name + "@" + b.rsplit("/", 1)[-1]
try:
    s = json.load(open(path))
except Exception as e:
    print(f"{backend[-24:]:24s} bench failed: {e}"); sys.exit(0)
n, rate, what, per = s["received"], s["delivered_per_sec"], "deliveries/s", "delivery"
if n == 0:
    # No subscribers (ingest): per message published.
    n, rate, what, per = s["sent"], s["sent_per_sec"], "published/s", "publish"
cpu_ns = ticks * 1e9 / hz
print(f"{backend[-24:]:24s} {what} {rate/1e6:6.2f}M  broker cpu {cpu_ns/1e6:7.0f} ms  "
      f"{cpu_ns/max(n,1):6.0f} ns/{per}  lost {s['lost']}  generator busy {s['generator_busy_percent']:.0f}%")
PY
  done
done
