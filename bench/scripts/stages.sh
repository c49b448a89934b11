#!/bin/bash
# Where a fixed-rate message's time goes inside the broker, from kernel tracepoints: a
# one-shard broker pinned to CPU 0 and ringmq-bench on CPU 1 (both `chrt -f 50`, as in
# wakeups.sh), then 1 s of `perf record -a` of net:netif_rx, sched:sched_waking/switch,
# raw_syscalls:sys_enter/exit, power:cpu_idle and io_uring:io_uring_local_work_run.
# Each publish segment (netif_rx on the generator's side, data) is paired in order with
# the broker's next delivery segment (netif_rx by the broker, data); for each pair the
# stages in between are printed as medians/means (bench/scripts/stages.py). Wrap it in
# `flock /work/helpers/bench.lock` on a shared machine.
#
#   bench/scripts/stages.sh BIN_DIR BACKEND [RATE_PER_PUBLISHER] [PAIRS] [EXTRA BROKER ARGS...]
#   bench/scripts/stages.sh target/release io_uring 1000 10
#
# BACKEND `mosquitto` runs Debian's Mosquitto with `set_tcp_nodelay true`.
set -u
B=$1; backend=$2; rate=${3:-1000}; pairs=${4:-10}; shift 4 2>/dev/null || shift $#
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d); port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
if [ "$backend" = mosquitto ]; then
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\nmax_queued_messages 10000\nmax_inflight_messages 256\nset_tcp_nodelay true\n' $port >$tmp/m.conf
chrt -f 50 taskset -c 0 mosquitto -c $tmp/m.conf >$tmp/b.log 2>&1 &
else
chrt -f 50 taskset -c 0 $B/ringmq --listen mqtt://127.0.0.1:$port --cores 1 --allow-anonymous true --io-backend $backend --data-dir $tmp/data "$@" >$tmp/b.log 2>&1 &
fi
pid=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
chrt -f 50 $B/ringmq-bench pairs --pairs $pairs --rate $rate --qos 0 --payload 64 -p $port --mqtt 3.1.1 --duration 5 --warmup 1 --cpus 1 --json -q >$tmp/bench.json 2>$tmp/bench.err &
bpid=$!
sleep 2.5
bt=$(ls /proc/$pid/task | tr '\n' ,); gt=$(ls /proc/$bpid/task | tr '\n' ,)
perf record -q -a -o $tmp/t.data -e net:netif_rx,sched:sched_waking,sched:sched_switch,raw_syscalls:sys_enter,raw_syscalls:sys_exit,power:cpu_idle,io_uring:io_uring_local_work_run -- sleep 1 >/dev/null 2>&1
wait $bpid; kill $pid; wait $pid 2>/dev/null
python3 -c 'import json,sys; b=json.load(open(sys.argv[1])); l=b.get("latency") or {}; print("generator: deliv/s %.0f p50 %.1f p99 %.1f us" % (b["delivered_per_sec"], l.get("p50_us",0), l.get("p99_us",0)))' $tmp/bench.json
perf script --ns -i $tmp/t.data -F comm,tid,cpu,time,event,trace 2>/dev/null >$tmp/t.txt
python3 $here/stages.py $bt $gt <$tmp/t.txt
# KEEP=FILE keeps the trace (and the thread ids on its first line) for a closer look.
[ -n "${KEEP:-}" ] && { echo "$bt $gt" >$KEEP; cat $tmp/t.txt >>$KEEP; }
rm -rf $tmp
