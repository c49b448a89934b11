#!/usr/bin/env bash
# The fixed-rate latency cell (`pairs --pairs 50 --rate 1000`, 3.1.1, QoS 0, 64 B) with the
# independent C reference generator (bench/ref/fixed_rate.c) and ringmq-bench, back to back
# against the same broker process, for each broker: what the kernel floor is for this load
# shape on this machine, beside the tool's figure (docs/benchmarking.md, sixth pass).
#
# Usage: bench/ref/fixed_rate.sh [BROKERS] [-- EXTRA RINGMQ-BENCH ARGS]
#   BROKERS: comma list of ringmq, mosquitto, mosquitto-nodelay, flashmq
#            (default ringmq,mosquitto-nodelay,flashmq)
# Environment: RINGMQ (default target/release/ringmq), BENCH (default
#   target/release/ringmq-bench), FLASHMQ (default flashmq on PATH, else /work/peers/bin/flashmq),
#   PAIRS (50), RATE (1000), DURATION (5), WARMUP (1), ROUNDS (1),
#   VARIANTS: ringmq-bench variants, `;`-separated extra args (default ";--wake-on-delivery"),
#   REF_VARIANTS: reference variants (default ";--batch-recv --kstamp"),
#   BENCH_OLD: another ringmq-bench binary run first with the same arguments (an A/B).
# Brokers are pinned to CPU 0 and generators to CPU 1, all under SCHED_FIFO 50 (chrt), as
# bench/scripts do with RT=1; the broker configurations are the ones `ringmq-bench compare`
# writes, printed. Processes are stopped by PID. Wrap in `flock /work/helpers/bench.lock`
# on a shared machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
BROKERS=${1:-ringmq,mosquitto-nodelay,flashmq}
shift || true
[[ ${1:-} == -- ]] && shift
EXTRA=("$@")
RINGMQ=${RINGMQ:-target/release/ringmq}
BENCH=${BENCH:-target/release/ringmq-bench}
[[ -n ${CARGO_TARGET_DIR:-} && ! -x $RINGMQ ]] && RINGMQ=$CARGO_TARGET_DIR/release/ringmq
[[ -n ${CARGO_TARGET_DIR:-} && ! -x $BENCH ]] && BENCH=$CARGO_TARGET_DIR/release/ringmq-bench
RINGMQ=$(realpath "$RINGMQ") BENCH=$(realpath "$BENCH")
FLASHMQ=${FLASHMQ:-$(command -v flashmq || echo /work/peers/bin/flashmq)}
MOSQUITTO=${MOSQUITTO:-$(command -v mosquitto || echo /usr/sbin/mosquitto)}
PAIRS=${PAIRS:-50} RATE=${RATE:-1000} DURATION=${DURATION:-5} WARMUP=${WARMUP:-1} ROUNDS=${ROUNDS:-1}
VARIANTS=${VARIANTS:-";--wake-on-delivery"}
REF_VARIANTS=${REF_VARIANTS:-";--batch-recv --kstamp"}
RT=(chrt -f 50)
work=$(mktemp -d /tmp/fixed-rate-ref.XXXXXX)
REF=$work/fixed_rate
cc -O2 -Wall -o "$REF" bench/ref/fixed_rate.c
bpid=
cleanup() { [[ -n $bpid ]] && kill "$bpid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 200); do
    (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "broker did not listen on $1" >&2
  return 1
}

start_broker() { # name port
  local name=$1 port=$2 d=$work/$1
  mkdir -p "$d"
  case $name in
    ringmq)
      echo "  ringmq: $RINGMQ --listen mqtt://127.0.0.1:$port --allow-anonymous true --cores 1 (fresh dir)"
      (cd "$d" && exec "${RT[@]}" taskset -c 0 "$RINGMQ" \
        --listen "mqtt://127.0.0.1:$port" --allow-anonymous true --cores 1 >"$d/log" 2>&1) &
      ;;
    mosquitto | mosquitto-nodelay)
      printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\nmax_queued_messages 10000\nmax_inflight_messages 256\n' \
        "$port" >"$d/mosquitto.conf"
      [[ $name == mosquitto-nodelay ]] && echo 'set_tcp_nodelay true' >>"$d/mosquitto.conf"
      echo "  $name: $MOSQUITTO -c mosquitto.conf ($(paste -sd';' "$d/mosquitto.conf"))"
      "${RT[@]}" taskset -c 0 "$MOSQUITTO" -c "$d/mosquitto.conf" &
      ;;
    flashmq)
      printf 'thread_count 1\nallow_anonymous true\nquiet true\nlog_file %s/flashmq.log\nmax_qos_msg_pending_per_client 10000\nmax_qos_bytes_pending_per_client 67108864\nlisten {\n  protocol mqtt\n  inet_protocol ip4\n  inet4_bind_address 127.0.0.1\n  port %s\n  tcp_nodelay true\n}\n' \
        "$d" "$port" >"$d/flashmq.conf"
      echo "  flashmq: $FLASHMQ -c flashmq.conf ($(grep -v log_file "$d/flashmq.conf" | paste -sd' '))"
      "${RT[@]}" taskset -c 0 "$FLASHMQ" -c "$d/flashmq.conf" &
      ;;
    *) echo "unknown broker $name" >&2; exit 2 ;;
  esac
  bpid=$!
  wait_port "$port"
}

echo "# fixed-rate cell: $PAIRS pairs x $RATE msg/s, 3.1.1, QoS 0, 64 B; ${DURATION}s after ${WARMUP}s warm-up"
echo "# $(date -u '+%F %H:%M UTC'), $(uname -r), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg); brokers CPU 0, generators CPU 1, SCHED_FIFO 50"
printf '%-18s %-32s %7s %9s %8s %8s %8s %8s\n' broker generator busy% ns/msg p50µs p99µs p99.9µs lost
IFS=, read -ra names <<<"$BROKERS"
for name in "${names[@]}"; do
  port=$(free_port)
  start_broker "$name" "$port"
  for _ in $(seq "$ROUNDS"); do
    IFS=';' read -ra rv <<<"$REF_VARIANTS"
    for v in "${rv[@]}"; do
      # shellcheck disable=SC2086
      out=$("${RT[@]}" taskset -c 1 "$REF" -p "$port" --pairs "$PAIRS" --rate "$RATE" \
        --duration "$DURATION" --warmup "$WARMUP" --json $v 2>/dev/null) || true
      jq -r --arg b "$name" --arg g "ref ${v:-(default)}" \
        '[$b, $g, .busy_percent, .ns_per_message, .p50_us, .p99_us, .p999_us, .lost] | @tsv' <<<"$out" |
        awk -F'\t' '{printf "%-18s %-32s %7.1f %9.0f %8s %8s %8s %8s\n", $1, $2, $3, $4, $5, $6, $7, $8}'
    done
    IFS=';' read -ra bv <<<"$VARIANTS"
    runs=()
    [[ -n ${BENCH_OLD:-} ]] && runs+=("old|$BENCH_OLD|")
    for v in "${bv[@]}"; do runs+=("|$BENCH|$v"); done
    for r in "${runs[@]}"; do
      IFS='|' read -r tag bin v <<<"$r"
      # shellcheck disable=SC2086
      out=$("${RT[@]}" "$bin" pairs --pairs "$PAIRS" --rate "$RATE" --mqtt 3.1.1 -p "$port" \
        --duration "$DURATION" --warmup "$WARMUP" --cpus 1 -q --json $v "${EXTRA[@]}" 2>/dev/null) || true
      jq -r --arg b "$name" --arg g "ringmq-bench${tag:+ $tag} ${v:-(default)}" \
        '[$b, $g, .generator_busy_percent, .generator_ns_per_message, .latency.p50_us, .latency.p99_us, .latency.p999_us, .lost] | @tsv' <<<"$out" |
        awk -F'\t' '{printf "%-18s %-32s %7.1f %9.0f %8s %8s %8s %8s\n", $1, $2, $3, $4, $5, $6, $7, $8}'
    done
  done
  kill "$bpid"
  wait "$bpid" 2>/dev/null || true
  bpid=
done
