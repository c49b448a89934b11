#!/usr/bin/env bash
# Authentication cost: connects/s with auth off (anonymous), $7$ (Mosquitto
# 2.x PBKDF2-SHA512, 101 iterations), argon2id (ringmq passwd default) and
# $6$; then the latency of 10 QoS 0 pairs (1000 msg/s each) without and with a
# wrong-password storm against the same shard (argon2id user).
# Everything on 127.0.0.1, bounded in time; the broker is stopped by PID.
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

taskset -c 0 "$RINGMQ" --listen mqtt://127.0.0.1:$PORT --cores 1 --allow-anonymous true \
  --password-file "$DIR/pw" --durability none --data-dir "$DIR/data" --log-level warn \
  --sys-interval-secs 0 > "$DIR/out" 2>&1 &
PID=$!
for _ in $(seq 100); do grep -q "listening" "$DIR/out" && break; sleep 0.1; done

echo "== connects/s, 1 shard on CPU 0, generator on CPU 1, 2000 connections, 64 in flight"
for who in anonymous six seven argon scram; do
  creds=()
  [ "$who" != anonymous ] && creds=(-u "$who" -P pw)
  printf '%-10s ' "$who"
  taskset -c 1 "$BENCH" conn -p $PORT --mqtt 3.1.1 "${creds[@]}" -n 2000 --concurrency 64 \
    --hold 0 --client-prefix "c-$who" 2>&1 | grep -iE "connects/s|connect rate|handshake" | head -3 | tr '\n' ' '
  echo
done

pairs() {
  taskset -c 1 "$BENCH" pairs -p $PORT --mqtt 3.1.1 --pairs 10 --qos 0 --rate 1000 \
    --duration 8 --warmup 1 --client-prefix "$1" 2>&1 | grep -iE "latency|p50|p99" | head -4
}
echo "== 10 QoS 0 pairs at 1000 msg/s each, no storm"
pairs quiet
echo "== the same during a wrong-password storm (argon2id user, 64 CONNECTs in flight)"
taskset -c 1 python3 "$HERE/auth_storm.py" 127.0.0.1 $PORT argon 12 64 > "$DIR/storm" &
SP=$!
sleep 1
pairs stormy
wait $SP
cat "$DIR/storm"
