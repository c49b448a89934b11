#!/usr/bin/env bash
# What a will costs in a cluster (issue 14, "Wills and node loss"), on three
# `ringmq --cores 1` nodes on this machine:
#  1. connects/s of `ringmq-bench conn` on node 1, clean v5 CONNECTs without and
#     with a will (A/B/A/B back to back): the registration is a batched raft
#     write off the CONNECT path; how many will ops rode per log entry;
#  2. kill -9 of node 3 holding W connections with wills: when the wills arrive
#     at a mosquitto_sub on node 1 (first and last, after the kill), and which
#     survivor published how many.
# Everything on 127.0.0.1, bounded; processes stopped by PID.
# usage: bench/scripts/cluster_wills.sh [TARGET_DIR]   (release: ringmq, ringmq-bench)
set -euo pipefail
T=${1:-${CARGO_TARGET_DIR:-target}/release}
RINGMQ=$T/ringmq
BENCH=$T/ringmq-bench
DIR=$(mktemp -d)
BASE=${PORT:-29300}
N=${N:-3000}
W=${W:-2000}
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill -9 $p 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$DIR"' EXIT

start() { # id extra...
  local id=$1; shift
  "$RINGMQ" --listen mqtt://127.0.0.1:$((BASE + id)) --cores 1 --allow-anonymous true \
    --durability none --data-dir "$DIR/d$id" --log-level warn --sys-interval-secs 0 \
    --metrics-listen 127.0.0.1:$((BASE + 10 + id)) "$@" > "$DIR/out$id" 2>&1 &
  PIDS[$id]=$!
  for _ in $(seq 100); do grep -q "listening" "$DIR/out$id" && return; sleep 0.1; done
  echo "node $id did not start"; cat "$DIR/out$id"; exit 1
}
metric() { curl -s "http://127.0.0.1:$((BASE + 10 + $1))/metrics" | awk -v m="$2" '$1 == m { print $2 }'; }
conn() { # label extra...
  local label=$1; shift
  printf '%-26s ' "$label"
  "$BENCH" conn -p $((BASE + 1)) --mqtt 5 -n "$N" --concurrency 64 --hold 0 --client-prefix "c$RANDOM" "$@" 2>&1 \
    | grep -E "connects/s|connect p50" | head -2 | tr -s ' ' | tr '\n' ' '
  echo
}

echo "== machine: $(nproc) CPUs, $(uname -r); load $(cut -d' ' -f1-3 /proc/loadavg); commit $(git rev-parse --short HEAD 2>/dev/null || echo ?)"
P=1@127.0.0.1:$((BASE + 21)),2@127.0.0.1:$((BASE + 23)),3@127.0.0.1:$((BASE + 25))
for id in 1 2 3; do start $id --node-id $id --cluster-peers "$P" --node-down-after 1s; done
for _ in $(seq 100); do
  "$RINGMQ" ctl --data-dir "$DIR/d1" --json cluster status 2>/dev/null | grep -q '"leader"' && break
  sleep 0.1
done
sleep 3

echo "== 1. connects/s on node 1 of three, $N clean v5 CONNECTs, 64 in flight"
ops0=$(metric 1 ringmq_cluster_committed_ops_total); commits0=$(metric 1 ringmq_cluster_commits_total)
conn "no will"
conn "with a will" --will-prefix lw1
conn "no will (again)"
conn "with a will (again)" --will-prefix lw2
echo "wills registered by node 1: $(metric 1 ringmq_cluster_wills_registered_total)," \
  "discarded (the generator ends with DISCONNECT 0x00): $(metric 1 ringmq_cluster_wills_discarded_total)"
ops1=$(metric 1 ringmq_cluster_committed_ops_total); commits1=$(metric 1 ringmq_cluster_commits_total)
echo "raft commands through node 1: $((commits1 - commits0)) carrying $((ops1 - ops0)) ops" \
  "(claims, releases, will registrations and discards)"

echo "== 2. kill -9 of node 3 holding $W connections with wills; a mosquitto_sub on node 1 counts them"
mosquitto_sub -h 127.0.0.1 -p $((BASE + 1)) -t 'lw3/#' -q 0 -v > "$DIR/wills" 2>/dev/null &
PIDS[10]=$!
sleep 1
"$BENCH" conn -p $((BASE + 3)) --mqtt 5 -n "$W" --concurrency 64 --hold 600 --client-prefix "h$RANDOM" \
  --will-prefix lw3 > "$DIR/hold" 2>&1 &
PIDS[11]=$!
for _ in $(seq 600); do
  [ "$(metric 3 ringmq_cluster_wills_registered_total)" = "$W" ] && break
  sleep 0.1
done
echo "node 3 registered $(metric 3 ringmq_cluster_wills_registered_total) wills"
kill -9 "${PIDS[3]}"; t0=$(date +%s%N)
first=""
for _ in $(seq 600); do
  n=$(wc -l < "$DIR/wills")
  if [ -z "$first" ] && [ "$n" -gt 0 ]; then first=$(( ($(date +%s%N) - t0) / 1000000 )); fi
  [ "$n" -ge "$W" ] && break
  sleep 0.05
done
last=$(( ($(date +%s%N) - t0) / 1000000 ))
kill -9 "${PIDS[11]}" 2>/dev/null || true
sleep 1
echo "wills received on node 1: $(wc -l < "$DIR/wills") of $W; first after ${first:-?} ms, all after ${last} ms (node-down-after 1 s)"
echo "published by node 1: $(metric 1 ringmq_cluster_wills_published_for_lost_total), by node 2: $(metric 2 ringmq_cluster_wills_published_for_lost_total)"
echo "distinct: $(sort -u "$DIR/wills" | wc -l) (duplicates: $(( $(wc -l < "$DIR/wills") - $(sort -u "$DIR/wills" | wc -l) )))"
