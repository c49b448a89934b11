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
# DURATION (default 10) and WARMUP (default 2) seconds per run; FLASHMQ (its binary, see
# docs/benchmarking.md), CERTS (directory for the throwaway TLS certificate).
set -euo pipefail
cd "$(dirname "$0")/../.."
export RESULTS="${RESULTS:-bench/results}"
d="${DURATION:-10}"
w="${WARMUP:-2}"
common=(--mqtt 3.1.1 --duration "$d" --warmup "$w" -q)
runs=("${@:-pairs fanout fanin qos1 latency sweep tls conn qos2 selfcheck}")
bench="${CARGO_TARGET_DIR:-target}/release/ringmq-bench"
rt=()
if [[ "${RT:-0}" == 1 ]]; then rt=(chrt -f 50); fi
certs="${CERTS:-/tmp/ringmq-bench-certs}"
peers=(--ringmq-bin "${CARGO_TARGET_DIR:-target}/release/ringmq" --results-dir "$RESULTS"
       ${FLASHMQ:+--flashmq-bin "$FLASHMQ"} ${NOTE:+--note "$NOTE"})
for run in ${runs[@]}; do
  case "$run" in
    pairs)   bench/compare.sh pairs --pairs 50 --qos 0 --payload 64 "${common[@]}" ;;
    fanout)  bench/compare.sh fanout -s 1000 --qos 0 --payload 64 "${common[@]}" ;;
    fanin)   bench/compare.sh fanin --publishers 100 --qos 0 --payload 64 "${common[@]}" ;;
    qos1)    bench/compare.sh --label qos1 pairs --pairs 50 --qos 1 "${common[@]}"
             bench/compare.sh --label qos1-ingest pubsub --publishers 50 -s 0 --qos 1 "${common[@]}" ;;
    sweep)   BUILD=0 "${rt[@]}" "$bench" sweep "${peers[@]}" --brokers ringmq,mosquitto-nodelay,flashmq \
               --rates 200,1000,5000,20000,50000,100000 pairs --pairs 10 "${common[@]}" ;;
    tls)     bench/scripts/test-cert.sh "$certs" >/dev/null
             tlsc=(--server-cert "$certs/server.crt" --server-key "$certs/server.key")
             tlsl=(--ca "$certs/ca.crt" --tls-version 1.3 --tls-suite TLS13_AES_128_GCM_SHA256)
             for t in tls ws wss; do
               "${rt[@]}" "$bench" compare "${peers[@]}" --label "$t" --brokers ringmq,mosquitto-nodelay,flashmq \
                 "${tlsc[@]}" pairs --pairs 50 "${common[@]}" --transport "$t" "${tlsl[@]}"
             done
             "${rt[@]}" "$bench" compare "${peers[@]}" --label tls --brokers ringmq,mosquitto-nodelay,flashmq \
               "${tlsc[@]}" fanout -s 1000 "${common[@]}" --transport tls "${tlsl[@]}"
             "${rt[@]}" "$bench" compare "${peers[@]}" --label tls-qos1 --brokers ringmq,mosquitto-nodelay,flashmq \
               "${tlsc[@]}" pairs --pairs 50 --qos 1 "${common[@]}" --transport tls "${tlsl[@]}"
             "${rt[@]}" "$bench" compare "${peers[@]}" --label tls-handshakes --brokers ringmq,mosquitto-nodelay,flashmq \
               "${tlsc[@]}" conn -n 5000 --hold 1 --mqtt 3.1.1 -q --tls --ca "$certs/ca.crt" --no-tls-resume
             "${rt[@]}" "$bench" compare "${peers[@]}" --label tls-resumed-handshakes --brokers ringmq,mosquitto-nodelay,flashmq \
               "${tlsc[@]}" conn -n 5000 --hold 1 --mqtt 3.1.1 -q --tls --ca "$certs/ca.crt" ;;
    latency) bench/compare.sh --label rate1000 pairs --pairs 50 --rate 1000 "${common[@]}"
             bench/compare.sh --label rate500 pairs --pairs 50 --rate 500 "${common[@]}"
             bench/compare.sh --label rate200 pairs --pairs 50 --rate 200 "${common[@]}" ;;
    conn)    bench/compare.sh conn -n 9000 --hold 2 --mqtt 3.1.1 -q ;;  # 9000: ringmq uses 2 fds per connection, the hard limit here is 20000
    qos2)    bench/compare.sh qos2-fanout "${common[@]}" ;;
    selfcheck)
      "${CARGO_TARGET_DIR:-target}/release/ringmq-bench" selfcheck --results-dir bench/results \
        ${NOTE:+--note "$NOTE"} ;;
    *) echo "unknown run $run (pairs fanout fanin qos1 latency sweep tls conn qos2 selfcheck)" >&2; exit 2 ;;
  esac
done
