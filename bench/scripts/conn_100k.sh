#!/usr/bin/env bash
# 100,000 idle MQTT connections on one machine (issue 15), across several ringmq processes.
#
# One process cannot hold them in this container: its hard RLIMIT_NOFILE is 20000 and cannot be
# raised (no CAP_SYS_RESOURCE), so neither one broker nor one generator can own more than ~19,900
# sockets. The script therefore starts BROKERS independent one-shard brokers (not a cluster: a
# cluster would add raft metadata and node links to what is measured, and the per-connection cost
# of an idle connection is a property of one shard) and one `ringmq-bench conn` generator per
# broker, each opening TOTAL/BROKERS clean-session MQTT 3.1.1 connections (keep alive 0) to its
# broker and holding them. Each broker listens on its own port, so each generator's sockets have a
# destination of their own and the 28k ephemeral ports per destination are enough.
#
# While every connection is held it reads each broker's RSS (/proc/PID/status VmRSS, before and
# while held), the kernel's socket figures (/proc/net/sockstat) and its slab memory
# (/proc/meminfo Slab, SUnreclaim; slab covers BOTH ends of each loopback connection: the broker's
# and the generator's socket), and prints one line per broker and a total.
#
#   bench/scripts/conn_100k.sh RINGMQ_BIN BENCH_BIN [TOTAL] [BROKERS]
#   bench/scripts/conn_100k.sh target/release/ringmq target/release/ringmq-bench 100000 6
#
# Environment: BACKEND (default io_uring), HOLD (seconds each generator holds, default 60),
# EXTRA (more broker flags). Bounded: every process it starts is stopped by its PID at the end.
set -euo pipefail
ringmq=$1 bench=$2 total=${3:-100000} brokers=${4:-6}
backend=${BACKEND:-io_uring} hold=${HOLD:-60}
per=$(((total + brokers - 1) / brokers))
ulimit -n "$(ulimit -Hn)"
if ((per + 100 > $(ulimit -n))); then
  echo "conn_100k: $per connections per process exceed the descriptor limit $(ulimit -n): use more brokers" >&2
  exit 2
fi
tmp=$(mktemp -d)
pids=() gens=()
cleanup() {
  for p in "${gens[@]}" "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${gens[@]}" "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
meminfo_kb() { awk -v k="$1:" '$1 == k {print $2}' /proc/meminfo; }
sock_tcp() { awk '/^TCP:/ {print $3, $11}' /proc/net/sockstat; } # inuse, mem (pages)
fds() { ls "/proc/$1/fd" | wc -l; }

ports=()
for ((i = 0; i < brokers; i++)); do
  port=$(free_port)
  mkdir -p "$tmp/d$i"
  taskset -c $((i % $(nproc))) "$ringmq" --listen "mqtt://127.0.0.1:$port" --cores 1 --pin false \
    --allow-anonymous true --io-backend "$backend" --data-dir "$tmp/d$i" --sys-interval-secs 0 \
    ${EXTRA:-} >"$tmp/broker$i.log" 2>&1 &
  pids+=($!) ports+=("$port")
done
for ((i = 0; i < brokers; i++)); do
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/${ports[$i]}") 2>/dev/null && break
    sleep 0.1
  done
done
sleep 1
rss0=() fd0=()
for ((i = 0; i < brokers; i++)); do rss0+=("$(rss_kb "${pids[$i]}")") fd0+=("$(fds "${pids[$i]}")"); done
read -r tcp0 tcpmem0 < <(sock_tcp)
slab0=$(meminfo_kb Slab) unrecl0=$(meminfo_kb SUnreclaim) avail0=$(meminfo_kb MemAvailable)
echo "# $brokers brokers (--io-backend $backend, one shard each), $per connections each, hold ${hold}s"
echo "# kernel $(uname -r), $(nproc) CPUs, $(date -u +%FT%TZ); brokers: ${pids[*]}"
t0=$(date +%s)
for ((i = 0; i < brokers; i++)); do
  "$bench" conn -n "$per" --hold "$hold" --mqtt 3.1.1 --keep-alive 0 --no-pin -q --json \
    --client-prefix "c100k-$i-" -p "${ports[$i]}" --broker-pid "${pids[$i]}" \
    >"$tmp/gen$i.json" 2>"$tmp/gen$i.err" &
  gens+=($!)
done
# Wait until every broker holds its connections (one descriptor each), at most hold-5 s.
deadline=$((t0 + hold - 5))
while :; do
  held=0
  for ((i = 0; i < brokers; i++)); do held=$((held + $(fds "${pids[$i]}") - fd0[i])); done
  ((held >= per * brokers)) && break
  if (($(date +%s) >= deadline)); then
    echo "# only $held connections held after $((hold - 5)) s" >&2
    break
  fi
  sleep 1
done
sleep 2 # let every CONNACK's buffers go (and jemalloc's 1 s decay pass)
echo "# all held after $(($(date +%s) - t0)) s"
read -r tcp1 tcpmem1 < <(sock_tcp)
slab1=$(meminfo_kb Slab) unrecl1=$(meminfo_kb SUnreclaim) avail1=$(meminfo_kb MemAvailable)
sum_conns=0 sum_delta=0
printf '%-7s %6s %8s %10s %10s %8s\n' broker port conns rss0_kB rss_kB B/conn
for ((i = 0; i < brokers; i++)); do
  c=$(($(fds "${pids[$i]}") - fd0[i]))
  r=$(rss_kb "${pids[$i]}")
  d=$((r - rss0[i]))
  sum_conns=$((sum_conns + c)) sum_delta=$((sum_delta + d))
  printf '%-7s %6s %8d %10d %10d %8d\n' "$i" "${ports[$i]}" "$c" "${rss0[$i]}" "$r" $((d * 1024 / (c > 0 ? c : 1)))
done
printf '%-7s %6s %8d %10s %10d %8d\n' total - "$sum_conns" - "$sum_delta" $((sum_delta * 1024 / (sum_conns > 0 ? sum_conns : 1)))
n=$((sum_conns > 0 ? sum_conns : 1))
echo "# kernel: TCP sockets in use $tcp0 -> $tcp1 (both ends), socket buffer memory $tcpmem0 -> $tcpmem1 pages"
echo "# kernel: Slab $slab0 -> $slab1 kB ($(((slab1 - slab0) * 1024 / n)) B per connection, both ends), SUnreclaim $unrecl0 -> $unrecl1 kB ($(((unrecl1 - unrecl0) * 1024 / n)) B)"
echo "# MemAvailable $avail0 -> $avail1 kB ($(((avail0 - avail1) * 1024 / n)) B per connection: brokers, generators and kernel)"
for ((i = 0; i < brokers; i++)); do
  wait "${gens[$i]}" || echo "# generator $i failed: $(tail -2 "$tmp/gen$i.err")" >&2
done
gens=()
python3 - "$tmp" "$brokers" <<'PY'
import json, sys
tmp, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    try:
        s = json.load(open(f"{tmp}/gen{i}.json"))
    except Exception as e:
        print(f"# generator {i}: no result ({e})"); continue
    m = s.get("broker_memory") or {}
    print(f"# generator {i}: {s['connections']} connected, {s['connect_failures']} failed, "
          f"{s['connects_per_sec']:.0f}/s; its own reading: {m.get('per_connection_bytes')} B/conn")
PY
