#!/usr/bin/env bash
# Builds ringmq and ringmq-bench (release), then runs the same scenario against ringmq,
# Mosquitto (as configured and with TCP_NODELAY), FlashMQ and rumqttd (those found on
# PATH or named below), one after the other, each broker pinned to CPU 0 and the
# generator to CPU 1. Results go to stdout; RESULTS=DIR also writes
# DIR/<date>-<scenario>.md and the .svg chart beside it.
#
#   bench/compare.sh pairs --pairs 50 --duration 10
#   RESULTS=bench/results bench/compare.sh fanout -s 1000 --duration 10
#   NOTE="shared machine" FLASHMQ=/work/peers/bin/flashmq bench/compare.sh qos2-fanout
#
# Environment: CARGO_TARGET_DIR (default: target), BROKERS (default: all five peers),
# FLASHMQ, RUMQTTD, MOSQUITTO (binaries; default: found on PATH), RESULTS (directory),
# NOTE (free text for the results header), RT (1: generator and brokers SCHED_FIFO,
# chrt -f 50), BUILD (0: reuse the built binaries).
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
if [[ "${BUILD:-1}" == 1 ]]; then
  cargo build --release -p ringmq-broker -p ringmq-bench >&2 \
    || echo "compare.sh: build failed; using the binaries already in $target/release" >&2
fi
args=(--ringmq-bin "$target/release/ringmq"
      --brokers "${BROKERS:-ringmq,mosquitto,mosquitto-nodelay,flashmq,rumqttd}")
[[ -n "${FLASHMQ:-}" ]] && args+=(--flashmq-bin "$FLASHMQ")
[[ -n "${RUMQTTD:-}" ]] && args+=(--rumqttd-bin "$RUMQTTD")
[[ -n "${MOSQUITTO:-}" ]] && args+=(--mosquitto-bin "$MOSQUITTO")
[[ -n "${RESULTS:-}" ]] && args+=(--results-dir "$RESULTS")
rt=()
note="${NOTE:-}"
if [[ "${RT:-0}" == 1 ]]; then
  # SCHED_FIFO for the generator and (inherited) every broker it starts: shields the
  # measured processes from other jobs on a shared machine; the same for every broker.
  rt=(chrt -f 50)
  note="${note:+$note; }brokers and generator SCHED_FIFO (chrt -f 50)"
fi
if [[ -n "$note" ]]; then args+=(--note "$note"); fi
exec "${rt[@]}" "$target/release/ringmq-bench" compare "${args[@]}" "$@"
