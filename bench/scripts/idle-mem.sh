#!/usr/bin/env bash
# Bytes per idle connection, several builds and backends one after the other (a fresh one-shard
# broker each: broker pinned to CPU 0 under `chrt -f 50`, the client on CPU 1), with
# bench/scripts/conn_mem.py: N sequential clean-session MQTT 3.1.1 CONNECTs, RSS growth after
# HOLD seconds held, divided by N. docs/connection-memory.md.
#
#   bench/scripts/idle-mem.sh N BACKEND=BIN [BACKEND=BIN ...]
#   bench/scripts/idle-mem.sh 19000 epoll=target/release/ringmq io_uring=target/release/ringmq
#
# Environment: HOLD (seconds, default 2), EXTRA (more broker flags), SMAPS=1 (also print the
# broker's smaps_rollup before and while held).
set -u
n=$1
shift
ulimit -n 20000
here=$(cd "$(dirname "$0")" && pwd)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
for spec in "$@"; do
  backend=${spec%%=*} bin=${spec#*=}
  port=$(free_port)
  data=$(mktemp -d)
  taskset -c 0 chrt -f 50 "$bin" --listen "mqtt://127.0.0.1:$port" --cores 1 --allow-anonymous true \
    --io-backend "$backend" --data-dir "$data" ${EXTRA:-} >"$data.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
  [[ -n "${SMAPS:-}" ]] && grep -E "^(Rss|Anonymous)" "/proc/$pid/smaps_rollup" | tr '\n' ' ' && echo
  echo -n "$backend $bin: "
  taskset -c 1 python3 "$here/conn_mem.py" --pid "$pid" --port "$port" -n "$n" --hold "${HOLD:-2}"
  kill "$pid"
  wait "$pid" 2>/dev/null
  rm -rf "$data" "$data.log"
done
