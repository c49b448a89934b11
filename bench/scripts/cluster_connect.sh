#!/usr/bin/env bash
# What the cluster costs a CONNECT (issue 13): connects/s of `ringmq-bench conn`
# (clean sessions: each connection claims its client id at CONNECT and
# releases it at close) against one node alone and against node 1 of a
# three-node cluster on this machine; the claim latency p50/p99 from node 1's
# ringmq_cluster_ownership_claim_seconds histogram, and how many claims rode
# in one log entry; then the time to a new leader after kill -9 of the leader.
# Everything on 127.0.0.1, bounded; brokers stopped by PID.
# usage: bench/scripts/cluster_connect.sh [TARGET_DIR]   (release: ringmq, ringmq-bench)
set -euo pipefail
T=${1:-${CARGO_TARGET_DIR:-target}/release}
RINGMQ=$T/ringmq
BENCH=$T/ringmq-bench
DIR=$(mktemp -d)
BASE=${PORT:-29100}
N=${N:-4000}
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
conn() { # port label
  printf '%-22s ' "$2"
  "$BENCH" conn -p "$1" --mqtt 5 -n "$N" --concurrency 64 --hold 0 --client-prefix "c$RANDOM" 2>&1 \
    | grep -E "connects/s|connect p50" | head -2 | tr -s ' ' | tr '\n' ' '
  echo
}
metric() { curl -s "http://127.0.0.1:$((BASE + 10 + $1))/metrics" | grep "^$2" ; }

echo "== machine: $(nproc) CPUs, $(uname -r); load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== connects/s, $N clean v5 connections, 64 in flight"
start 0
conn $((BASE + 0)) "one node (no cluster)"
kill ${PIDS[0]}; wait ${PIDS[0]} 2>/dev/null || true; unset 'PIDS[0]'

P=1@127.0.0.1:$((BASE + 21)),2@127.0.0.1:$((BASE + 22)),3@127.0.0.1:$((BASE + 23))
for id in 1 2 3; do start $id --node-id $id --cluster-peers "$P" --node-down-after 1s; done
for _ in $(seq 100); do
  "$RINGMQ" ctl --data-dir "$DIR/d1" --json cluster status 2>/dev/null | grep -q '"leader"' && break
  sleep 0.1
done
sleep 2
conn $((BASE + 1)) "cluster node 1"
conn $((BASE + 1)) "cluster node 1 again"
echo "== node 1: claims, commits through it, claim latency"
metric 1 "ringmq_cluster_ownership_claims_total"
metric 1 "ringmq_cluster_ownership_conflicts_total"
metric 1 "ringmq_cluster_commits_total"
metric 1 "ringmq_cluster_committed_ops_total"
curl -s "http://127.0.0.1:$((BASE + 11))/metrics" | python3 -c '
import sys
b=[(l.split("le=\"")[1].split("\"")[0], float(l.split()[-1])) for l in sys.stdin if l.startswith("ringmq_cluster_ownership_claim_seconds_bucket")]
total=b[-1][1]
def q(p):
    for le,c in b:
        if c >= p*total: return le
print("claim latency (bucket upper bound): p50 <= %ss, p99 <= %ss, of %d claims" % (q(0.5), q(0.99), total))'

echo "== time to a new leader after kill -9 of the leader (ctl polled every 50 ms)"
L=$("$RINGMQ" ctl --data-dir "$DIR/d1" --json cluster status | python3 -c 'import json,sys; print(json.load(sys.stdin)["leader"])')
O=$(( L % 3 + 1 ))
t0=$(date +%s%N)
kill -9 ${PIDS[$L]}
while true; do
  NL=$("$RINGMQ" ctl --data-dir "$DIR/d$O" --json cluster status 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin).get("leader",0))' || echo 0)
  if [ "$NL" != 0 ] && [ "$NL" != "$L" ]; then break; fi
  sleep 0.05
done
echo "leader $L killed; node $NL leads after $(( ($(date +%s%N) - t0) / 1000000 )) ms (election timeout 500-1000 ms)"
