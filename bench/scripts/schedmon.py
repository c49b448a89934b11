#!/usr/bin/env python3
"""Samples, every --interval, what the scheduler gave the named processes and the
kernel's softirq threads, to find who starved whom during a benchmark
(bench/scripts/cluster.sh SCHEDMON=1). One line per sample, tab separated:

  t  name:cpu_ms:R-threads:policy ...  ksoftirqd/N:exec_ms:state ...  netrx/N ...

cpu_ms: the process's utime+stime so far; R-threads: its threads in state R now;
exec_ms:state: the kernel thread's se.sum_exec_runtime (/proc/PID/sched) and
its state now (R: runnable or running); netrx/N: NET_RX softirqs on CPU N so far.
Runs until killed or --secs pass.  Usage: schedmon.py --secs 120 name=PID ...
`schedmon.py --report FILE` summarises a sample file: the longest stretch each
ksoftirqd thread stayed runnable without getting 1 ms of CPU.
"""
import argparse, os, sys, time

def ksoftirqd():
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                c = open(f"/proc/{p}/comm").read().strip()
            except OSError:
                continue
            if c.startswith("ksoftirqd/"):
                out.append((c, int(p)))
    return sorted(out)

def sched(pid):
    d = {}
    try:
        for line in open(f"/proc/{pid}/sched"):
            if ":" in line:
                k, v = line.split(":", 1)
                d[k.strip()] = v.strip()
    except OSError:
        pass
    return d

def proc(pid):
    try:
        s = open(f"/proc/{pid}/stat").read()
    except OSError:
        return None
    f = s[s.rfind(")") + 2:].split()
    ticks = int(f[11]) + int(f[12])
    running = 0
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            ts = open(f"/proc/{pid}/task/{t}/stat").read()
            if ts[ts.rfind(")") + 2] == "R":
                running += 1
    except OSError:
        pass
    return ticks * 1000 // os.sysconf("SC_CLK_TCK"), running

def netrx():
    for line in open("/proc/softirqs"):
        if line.strip().startswith("NET_RX"):
            return line.split()[1:]
    return []

def report(path):
    rows = []
    for line in open(path):
        c = line.rstrip("\n").split("\t")
        rows.append((float(c[0]), dict(x.split(":", 1) for x in c[1:])))
    if not rows:
        return
    t0 = rows[0][0]
    for k in sorted(x for x in rows[0][1] if x.startswith("ksoftirqd/")):
        best, start, prev = (0.0, 0.0, 0.0), None, None
        for t, d in rows:
            ex, st = d[k].split(":")
            ex = float(ex)
            if st == "R" and prev is not None and ex - prev < 1:
                start = start if start is not None else t
                if t - start > best[0]:
                    best = (t - start, start - t0, t - t0)
            else:
                start = None
            prev = ex
        print(f"{k}: longest runnable without CPU {best[0]:.1f} s (at {best[1]:.1f}..{best[2]:.1f} s)")

def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--report":
        return report(sys.argv[2])
    ap = argparse.ArgumentParser()
    ap.add_argument("--secs", type=float, default=180)
    ap.add_argument("--interval", type=float, default=0.1)
    ap.add_argument("procs", nargs="+")
    a = ap.parse_args()
    named = [(p.split("=")[0], int(p.split("=")[1])) for p in a.procs]
    ks = ksoftirqd()
    t0 = time.monotonic()
    while time.monotonic() - t0 < a.secs:
        cols = [f"{time.time():.2f}"]
        for n, pid in named:
            r = proc(pid)
            cols.append(f"{n}:{r[0]}:{r[1]}" if r else f"{n}:-")
        for n, pid in ks:
            d = sched(pid)
            ex = float(d.get("se.sum_exec_runtime", "0"))
            try:
                st = open(f"/proc/{pid}/stat").read()
                state = st[st.rfind(")") + 2]
            except OSError:
                state = "-"
            cols.append(f"{n}:{ex:.0f}:{state}")
        cols += [f"netrx/{i}:{v}" for i, v in enumerate(netrx())]
        print("\t".join(cols), flush=True)
        time.sleep(a.interval)

if __name__ == "__main__":
    sys.exit(main())
