#!/usr/bin/env bash
# SEND_ZC against plain SEND on io_uring, one binary, back to back: broker CPU per delivery and
# throughput (bench/scripts/backend-ab.sh does the runs: one-shard broker pinned to CPU 0,
# ringmq-bench on CPU 1, RT=1 for `chrt -f 50`). Each build is a small wrapper that adds
# `--io-uring-send-zc BYTES` (0: off).
#
#   bench/scripts/send-zc-ab.sh RINGMQ_BIN BENCH_BIN ROUNDS THRESHOLD -- SCENARIO ARGS...
#   RT=1 bench/scripts/send-zc-ab.sh target/release/ringmq target/release/ringmq-bench 2 4096 -- \
#       pairs --pairs 10 --qos 0 --payload 65536 --duration 4 --warmup 1
set -euo pipefail
ringmq=$(realpath "$1") bench=$2 rounds=$3 zc=$4
shift 4
[[ "${1:-}" == -- ]] && shift
wrap=$(mktemp -d)
trap 'rm -rf "$wrap"' EXIT
for t in 0 "$zc"; do
  printf '#!/bin/sh\nexec %q --io-uring-send-zc %s "$@"\n' "$ringmq" "$t" >"$wrap/zc$t"
  chmod +x "$wrap/zc$t"
done
here=$(cd "$(dirname "$0")" && pwd)
BACKENDS="io_uring=$wrap/zc0 io_uring=$wrap/zc$zc" "$here/backend-ab.sh" "$ringmq" "$bench" "$rounds" -- "$@"
