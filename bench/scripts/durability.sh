#!/usr/bin/env bash
# QoS 1 publish throughput of ringmq with --durability sync, batch and none, and Mosquitto's
# QoS 1 beside them, same load, one run (issue 5). Each broker runs alone, pinned to CPU 0; the
# generator (ringmq-bench) is pinned to CPU 1. ringmq's data dir is on the same disk as the
# repository (never tmpfs: fsync must cost what it costs). Writes
# bench/results/<date>-durability.md (RESULTS= to override, RESULTS=- for stdout only).
#
#   bench/scripts/durability.sh
#   NOTE="machine shared with other jobs" SCENARIOS="pairs50 fanin100" DURATION=10 bench/scripts/durability.sh
#
# Scenarios (SCENARIOS, space separated; default "pairs1 pairs50 fanin100"):
#   pairsN   N publisher/subscriber pairs, one topic each (ringmq-bench pairs --pairs N)
#   faninN   N publishers, one wildcard subscriber (ringmq-bench fanin --publishers N)
# Load (same for every broker): QoS 1, PAYLOAD (64) bytes, unlimited rate with the bench's
# closed-loop window, WARMUP (2) s then DURATION (10) s measured, MQTT 3.1.1 with clean
# session 0 (--no-clean-start): every session is persistent, so ringmq stores every QoS 1
# message it routes (with v5 the bench sends no Session Expiry Interval: expiry 0 sessions
# are never stored, and sync would measure nothing).
# Environment: CARGO_TARGET_DIR (default target), MOSQUITTO (/usr/sbin/mosquitto),
# BATCH_MS (10, ringmq --batch-interval-ms), MODES ("sync batch none"), NOTE (header text),
# INFLIGHT ("20 100": QoS 1 windows per publisher, each a row; sync throughput is window /
# commit latency, so the window is what lets group commit batch), RT (1: run brokers and
# generator SCHED_FIFO with chrt -f 50, to shield them from other jobs on a shared machine),
# BUILD (0: use the binaries already built).
set -euo pipefail
cd "$(dirname "$0")/../.."
target="${CARGO_TARGET_DIR:-target}"
RINGMQ="$target/release/ringmq"
BENCH="$target/release/ringmq-bench"
MOSQUITTO="${MOSQUITTO:-/usr/sbin/mosquitto}"
SCENARIOS="${SCENARIOS:-pairs1 pairs50 fanin100}"
MODES="${MODES:-sync batch none}"
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-2}"
PAYLOAD="${PAYLOAD:-64}"
MQTT="${MQTT:-3.1.1}"
BATCH_MS="${BATCH_MS:-10}"
INFLIGHT="${INFLIGHT:-20 100}"
rt=()
if [[ "${RT:-0}" == 1 ]]; then rt=(chrt -f 50); fi
date_tag="$(date -u +%Y-%m-%d)"
RESULTS="${RESULTS:-bench/results/${date_tag}-durability.md}"

if [[ "${BUILD:-1}" == 1 ]]; then cargo build --release -p ringmq-broker -p ringmq-bench >&2; fi

mkdir -p "$target"
work="$(mktemp -d "$target/durability.XXXXXX")"
broker_pid=""
cleanup() {
    if [[ -n "$broker_pid" ]] && kill -0 "$broker_pid" 2>/dev/null; then
        kill -TERM "$broker_pid" 2>/dev/null || true
        wait "$broker_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# Waits (up to 20 s) for FILE to contain a line matching REGEX; prints the match.
wait_line() {
    local file=$1 regex=$2 i
    for ((i = 0; i < 400; i++)); do
        if grep -m1 -oE "$regex" "$file" 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "timed out waiting for /$regex/ in $file" >&2
    return 1
}

stop_broker() {
    kill -TERM "$broker_pid" 2>/dev/null || true
    wait "$broker_pid" 2>/dev/null || true
    broker_pid=""
}

# Starts ringmq with --durability $1 on a fresh data dir; sets broker_pid and port.
start_ringmq() {
    local mode=$1 dir="$work/ringmq-$1"
    mkdir -p "$dir"
    "${rt[@]}" taskset -c 0 "$RINGMQ" --listen mqtt://127.0.0.1:0 --allow-anonymous true --cores 1 --durability "$mode" \
        --batch-interval-ms "$BATCH_MS" --data-dir "$dir/data" --sys-interval-secs 0 \
        --log-level warn >"$dir/out" 2>"$dir/err" &
    broker_pid=$!
    port=$(wait_line "$dir/out" 'mqtt://127\.0\.0\.1:[0-9]+' | sed 's/.*://')
    [[ -n "$port" ]]
}

# Starts Mosquitto on a free loopback port; sets broker_pid and port.
start_mosquitto() {
    local dir="$work/mosquitto" i
    mkdir -p "$dir"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\n' \
        "$port" >"$dir/mosquitto.conf"
    "${rt[@]}" taskset -c 0 "$MOSQUITTO" -c "$dir/mosquitto.conf" >"$dir/out" 2>&1 &
    broker_pid=$!
    for ((i = 0; i < 200; i++)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "mosquitto did not listen on $port" >&2
    return 1
}

# ringmq-bench arguments for a scenario name.
scenario_args() {
    case "$1" in
        pairs*) echo "pairs --pairs ${1#pairs}" ;;
        fanin*) echo "fanin --publishers ${1#fanin}" ;;
        *) echo "unknown scenario $1" >&2; return 1 ;;
    esac
}

load_args=(--qos 1 --payload "$PAYLOAD" --duration "$DURATION" --warmup "$WARMUP"
           --mqtt "$MQTT" --no-clean-start --cpus 1 --json --quiet)
brokers=()
for m in $MODES; do brokers+=("ringmq-$m"); done
brokers+=(mosquitto)

for sc in $SCENARIOS; do
    for win in $INFLIGHT; do
        for b in "${brokers[@]}"; do
            case "$b" in
                ringmq-*) start_ringmq "${b#ringmq-}" ;;
                mosquitto) start_mosquitto ;;
            esac
            echo "== $sc inflight $win on $b (port $port)" >&2
            # shellcheck disable=SC2046 # scenario_args is words on purpose
            "${rt[@]}" "$BENCH" $(scenario_args "$sc") "${load_args[@]}" --inflight "$win" -p "$port" \
                >"$work/$sc-$win-$b.json" || echo '{"errors":["ringmq-bench failed"]}' >"$work/$sc-$win-$b.json"
            stop_broker
        done
    done
done

commit="$(git rev-parse --short HEAD)"
if ! git diff --quiet HEAD -- shard broker codec 2>/dev/null; then commit="$commit (+ uncommitted changes in the shared tree)"; fi
{
    echo "# Durability: QoS 1 publish throughput, ringmq sync / batch / none vs Mosquitto"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $commit"
    echo "- CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; kernel $(uname -r);" \
         "data dir on $(df -T "$work" | awk 'NR==2 {print $2}') ($(df "$work" | awk 'NR==2 {print $1}'))"
    echo "- load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- brokers pinned to CPU 0 (taskset), ringmq-bench to CPU 1"
    echo "- ringmq: \`ringmq --cores 1 --durability MODE --batch-interval-ms $BATCH_MS --sys-interval-secs 0\`"
    echo "- mosquitto: \`$($MOSQUITTO -h 2>/dev/null | head -1)\`, \`persistence false\` (its default; its"
    echo "  persistence is a periodic snapshot, never a per-message fsync)"
    echo "- load: \`ringmq-bench SCENARIO ${load_args[*]} --inflight WINDOW\`"
    if [[ ${#rt[@]} -gt 0 ]]; then echo "- brokers and generator run SCHED_FIFO (\`chrt -f 50\`)"; fi
    if [[ -n "${NOTE:-}" ]]; then echo "- note: $NOTE"; fi
    echo
    echo "| scenario | window | broker | publish msg/s | delivered msg/s | p50 µs | p99 µs | lost | dup | vs ringmq none |"
    echo "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"
    for sc in $SCENARIOS; do
      for win in $INFLIGHT; do
        none=$(jq -r '.sent_per_sec // 0' "$work/$sc-$win-ringmq-none.json" 2>/dev/null || echo 0)
        for b in "${brokers[@]}"; do
            jq -r --arg sc "$sc" --arg w "$win" --arg b "$b" --argjson none "${none:-0}" '
                "| \($sc) | \($w) | \($b) | \(.sent_per_sec // 0 | round) | \(.delivered_per_sec // 0 | round)"
                + " | \(.latency.p50_us // 0 | round) | \(.latency.p99_us // 0 | round)"
                + " | \(.lost // "-") | \(.duplicated // "-")"
                + " | \(if $none > 0 then ((.sent_per_sec // 0) / $none * 100 | round | tostring) + " %" else "-" end) |"
                + (if (.errors // []) | length > 0 then " errors: \(.errors | join("; "))" else "" end)
            ' "$work/$sc-$win-$b.json"
        done
      done
    done
} >"$work/report.md"

if [[ "$RESULTS" == "-" ]]; then
    cat "$work/report.md"
else
    mkdir -p "$(dirname "$RESULTS")"
    cp "$work/report.md" "$RESULTS"
    cat "$RESULTS"
    echo "written: $RESULTS" >&2
fi
