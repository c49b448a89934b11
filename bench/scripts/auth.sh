#!/usr/bin/env bash
# Authentication cost: connects/s with auth off (anonymous), $7$ (Mosquitto
# 2.x PBKDF2-SHA512, 101 iterations), argon2id (ringmq passwd default) and
# $6$; then the latency of 10 QoS 0 pairs (1000 msg/s each) without and with a
# wrong-password storm against the same shard (argon2id user).
# Everything on 127.0.0.1, bounded in time; the broker is stopped by PID.
# --auth-fail-max 0: the storm comes from 127.0.0.1 like the pairs, and the
# brute-force ban would otherwise stop it (and the pairs) after 10 failures.
# usage: bench/scripts/auth.sh [TARGET_DIR]   (release binaries: ringmq, ringmq-bench)
set -euo pipefail
T=${1:-${CARGO_TARGET_DIR:-target}/release}
RINGMQ=$T/ringmq
BENCH=$T/ringmq-bench
HERE=$(cd "$(dirname "$0")" && pwd)
DIR=$(mktemp -d)
PORT=${PORT:-28950}
trap 'kill $PID 2>/dev/null || true; wait $PID 2>/dev/null || true; rm -rf "$DIR"' EXIT

mosquitto_passwd -c -b "$DIR/pw" seven pw >/dev/null
mosquitto_passwd -H sha512 -b "$DIR/pw" six pw >/dev/null
"$RINGMQ" passwd -b "$DIR/pw" argon pw
"$RINGMQ" passwd --scram -b "$DIR/pw" scram pw

# The shard pins itself to CPU 0 (--cpu-list 0); the password-check thread
# floats (SCHED_IDLE), as deployed. BROKER_TASKSET=0 squeezes the whole
# process onto CPU 0 instead (the worst case: check thread and shard share it).
${BROKER_TASKSET:+taskset -c "$BROKER_TASKSET"} "$RINGMQ" --listen mqtt://127.0.0.1:$PORT --cores 1 --cpu-list 0 --allow-anonymous true \
  --password-file "$DIR/pw" --durability none --data-dir "$DIR/data" --log-level warn \
  --sys-interval-secs 0 --auth-fail-max 0 > "$DIR/out" 2>&1 &
PID=$!
for _ in $(seq 100); do grep -q "listening" "$DIR/out" && break; sleep 0.1; done

echo "== connects/s, 1 shard pinned to CPU 0, generator on CPU 1, 64 in flight (2000 connections; argon2id 200)"
for who in anonymous six seven scram argon; do
  creds=()
  [ "$who" != anonymous ] && creds=(-u "$who" -P pw)
  n=2000
  [ "$who" = argon ] && n=200
  printf '%-10s ' "$who"
  taskset -c 1 "$BENCH" conn -p $PORT --mqtt 3.1.1 "${creds[@]}" -n $n --concurrency 64 \
    --hold 0 --client-prefix "c-$who" 2>&1 | grep -E "connections |connects/s|connect p50" | head -3 | tr '\n' ' '
  echo
done

pairs() {
  taskset -c 1 "$BENCH" pairs -p $PORT --mqtt 3.1.1 --pairs 10 --qos 0 --rate 1000 \
    --duration 6 --warmup 1 --client-prefix "$1" 2>&1 | grep -E "latency p50" || true
}
echo "== 10 QoS 0 pairs at 1000 msg/s each: quiet and during a wrong-password storm"
echo "   (argon2id user, 64 CONNECTs in flight), alternating, ${ROUNDS:=3} rounds"
for r in $(seq "$ROUNDS"); do
  printf 'quiet  %s: ' "$r"; pairs "q$r"
  taskset -c 1 python3 "$HERE/auth_storm.py" 127.0.0.1 $PORT argon 9 64 > "$DIR/storm" &
  SP=$!
  sleep 1
  printf 'storm  %s: ' "$r"; pairs "s$r"
  wait $SP
  cat "$DIR/storm"
done
