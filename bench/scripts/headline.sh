#!/usr/bin/env bash
# The comparisons behind bench/results/: ringmq vs Mosquitto (as configured and with
# TCP_NODELAY), FlashMQ and rumqttd (those installed), brokers pinned to CPU 0,
# generator on CPU 1, MQTT 3.1.1 (what all of them speak fully). Writes into
# bench/results/ (RESULTS=DIR to change).
#
#   bench/scripts/headline.sh                 # all of them, then the generator self-check
#   NOTE="machine shared with other jobs" bench/scripts/headline.sh pairs fanout
#
# Environment: as bench/compare.sh (CARGO_TARGET_DIR, BROKERS, FLASHMQ, RUMQTTD, NOTE, RT=1 for
# SCHED_FIFO on a shared machine, BUILD=0 to reuse the built binaries);
# DURATION (default 10) and WARMUP (default 2) seconds per run.
set -euo pipefail
cd "$(dirname "$0")/../.."
export RESULTS="${RESULTS:-bench/results}"
d="${DURATION:-10}"
w="${WARMUP:-2}"
common=(--mqtt 3.1.1 --duration "$d" --warmup "$w" -q)
runs=("${@:-pairs fanout latency conn qos2 selfcheck}")
for run in ${runs[@]}; do
  case "$run" in
    pairs)   bench/compare.sh pairs --pairs 50 --qos 0 --payload 64 "${common[@]}" ;;
    fanout)  bench/compare.sh fanout -s 1000 --qos 0 --payload 64 "${common[@]}" ;;
    latency) bench/compare.sh --label rate1000 pairs --pairs 50 --rate 1000 "${common[@]}"
             bench/compare.sh --label rate500 pairs --pairs 50 --rate 500 "${common[@]}"
             bench/compare.sh --label rate200 pairs --pairs 50 --rate 200 "${common[@]}" ;;
    conn)    bench/compare.sh conn -n 9000 --hold 2 --mqtt 3.1.1 -q ;;  # 9000: ringmq uses 2 fds per connection, the hard limit here is 20000
    qos2)    bench/compare.sh qos2-fanout "${common[@]}" ;;
    selfcheck)
      "${CARGO_TARGET_DIR:-target}/release/ringmq-bench" selfcheck --results-dir bench/results \
        ${NOTE:+--note "$NOTE"} ;;
    *) echo "unknown run $run (pairs fanout latency conn qos2 selfcheck)" >&2; exit 2 ;;
  esac
done
