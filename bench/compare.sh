#!/usr/bin/env bash
# Builds ringmq and ringmq-bench (release), then runs the same scenario against ringmq,
# Mosquitto and (if installed in /work/tools) rumqttd, one after the other, each broker
# pinned to CPU 0 and the generator to CPU 1; writes bench/results/<date>-<scenario>.md.
#
#   bench/compare.sh pairs --pairs 50 --duration 10
#   bench/compare.sh fanout -s 1000 --duration 10
#   NOTE="shared machine" bench/compare.sh qos2-fanout
#
# Environment: CARGO_TARGET_DIR (default: target), BROKERS (default ringmq,mosquitto,rumqttd),
# RUMQTTD (default /work/tools/bin/rumqttd), NOTE (free text for the results header).
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
cargo build --release -p ringmq-broker -p ringmq-bench >&2 \
  || echo "compare.sh: build failed; using the binaries already in $target/release" >&2
args=(--ringmq-bin "$target/release/ringmq" --brokers "${BROKERS:-ringmq,mosquitto,rumqttd}"
      --rumqttd-bin "${RUMQTTD:-/work/tools/bin/rumqttd}")
if [[ -n "${NOTE:-}" ]]; then args+=(--note "$NOTE"); fi
exec "$target/release/ringmq-bench" compare "${args[@]}" "$@"
