#!/usr/bin/env python3
"""What pminit's Node preload costs a keep-alive hello world, in req/s.

usage: python3 bench/preload_cost.py [--pminit PATH] [--node PATH]
                                     [--rounds N] [--seconds S]

Runs wrk (-t1 -c32, keep-alive, loopback, S seconds after a 1 s warm-up)
against bench/hello.js under three launchers, in alternating order, N
rounds:

- bare:       node hello.js (the app binds the port)
- pminit:     pminit -i 1 -- node hello.js (pminit binds PORT; the preload
              maps listen(PORT) to its socket)
- no-preload: pminit -i 1 --no-preload -- node hello.js (the app binds)

When taskset is available the server side runs on CPU 0 and wrk on CPU 1,
so the two do not compete for one core. Reports, for pminit and
no-preload, the median over rounds of (req/s / bare req/s of the same
round) with the lowest and highest round, and writes them to
bench/PRELOAD_COST.md.

Throughput on a shared 2-CPU machine swings by 20 % from round to round,
which hides a 1 % cost. So each run also measures the server side's CPU
time per request: utime + stime of every process of the launcher's
session (node, and pminit when it is there) over the measured window,
divided by the requests served. That is what a per-request cost adds to,
and it does not depend on how the scheduler shared the CPUs. Every run is bounded: S seconds of load, 20 s to
start.
"""
import argparse
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

from layouts import free_port, parse_wrk

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
APP = os.path.join(HERE, "hello.js")
LAUNCHERS = ["bare", "pminit", "no-preload"]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def wait_port(port, proc, limit=20.0):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"not listening on {port} within {limit} s")


def start(launcher, args, port):
    env = dict(os.environ)
    env.pop("PORT", None)
    env.pop("HELLO_PORT", None)
    node = [args.node, APP]
    if launcher == "bare":
        cmd, env["HELLO_PORT"] = node, str(port)
    elif launcher == "pminit":
        cmd, env["PORT"] = [args.pminit, "-i", "1", "--"] + node, str(port)
    else:
        cmd = [args.pminit, "-i", "1", "--no-preload", "--"] + node
        env["HELLO_PORT"] = str(port)
    if args.taskset:
        cmd = ["taskset", "-c", "0"] + cmd
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    wait_port(port, proc)
    return proc


def stop(proc):
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def session_cpu_ticks(sid):
    """utime + stime, in clock ticks, of every live process of session sid."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # after the comm: state(0) ppid(1) pgrp(2) session(3) ... utime(11) stime(12)
        if int(fields[3]) == sid:
            total += int(fields[11]) + int(fields[12])
    return total


def wrk(args, port, seconds):
    cmd = ["wrk", "-t1", "-c32", f"-d{seconds}s", f"http://127.0.0.1:{port}/"]
    if args.taskset:
        cmd = ["taskset", "-c", "1"] + cmd
    out = subprocess.run(cmd, capture_output=True, text=True,
                         timeout=seconds + 30, check=True).stdout
    return parse_wrk(out)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--pminit", default=os.path.join(ROOT, "target", "release", "pminit"))
    p.add_argument("--node", default=shutil.which("node") or "node")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--seconds", type=int, default=5)
    args = p.parse_args()
    args.taskset = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    if not shutil.which("wrk"):
        sys.exit("needs wrk (apt-get install wrk)")
    if not os.path.exists(args.pminit):
        log("building pminit (cargo build --release)")
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    version = subprocess.run([args.node, "--version"], capture_output=True,
                             text=True, check=True).stdout.strip()
    rps = {name: [] for name in LAUNCHERS}
    cpu = {name: [] for name in LAUNCHERS}  # server CPU microseconds per request
    tick_us = 1e6 / os.sysconf("SC_CLK_TCK")
    for r in range(args.rounds):
        # Rotate the order so no launcher always runs first or last.
        order = LAUNCHERS[r % 3:] + LAUNCHERS[:r % 3]
        for name in order:
            port = free_port()
            proc = start(name, args, port)
            try:
                wrk(args, port, 1)  # warm-up: JIT, connections
                before = session_cpu_ticks(proc.pid)
                result = wrk(args, port, args.seconds)
                used = session_cpu_ticks(proc.pid) - before
            finally:
                stop(proc)
            if result["errors"]:
                sys.exit(f"{name}: {result['errors']} errors")
            rps[name].append(result["rps"])
            cpu[name].append(used * tick_us / max(result["requests"], 1))
            log(f"round {r + 1} {name:<10} {result['rps']:>10.0f} req/s "
                f"{cpu[name][-1]:6.2f} CPU us/request")
    rows = []
    for name in LAUNCHERS[1:]:
        ratios = [x / b for x, b in zip(rps[name], rps["bare"])]
        rows.append((name, statistics.median(rps[name]), statistics.median(ratios),
                     min(ratios), max(ratios)))
    lines = [
        "# Preload cost (generated by bench/preload_cost.py)",
        "",
        f"Keep-alive hello world (bench/hello.js), wrk -t1 -c32, {args.rounds} rounds of "
        f"{args.seconds} s in alternating order, Node {version}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs"
        + (", server on CPU 0 and wrk on CPU 1 (taskset)." if args.taskset else "."),
        "",
        "| launcher | median req/s | vs bare node (median) | lowest round | highest round |",
        "|---|---:|---:|---:|---:|",
        f"| node hello.js (bare) | {statistics.median(rps['bare']):.0f} | 1.000 | | |",
    ]
    names = {"pminit": "pminit -i 1 (preload)", "no-preload": "pminit -i 1 --no-preload"}
    for name, med, ratio, lo, hi in rows:
        lines.append(f"| {names[name]} | {med:.0f} | {ratio:.3f} | {lo:.3f} | {hi:.3f} |")
    cpu_rows = []
    for name in LAUNCHERS[1:]:
        ratios = [x / b for x, b in zip(cpu[name], cpu["bare"])]
        cpu_rows.append((name, statistics.median(cpu[name]), statistics.median(ratios),
                         min(ratios), max(ratios)))
    lines += [
        "",
        "Server CPU time per request (utime + stime of the launcher's whole session over the "
        "measured window / requests served; lower is cheaper; the steady-state cost of the "
        "preload is the pminit row's excess over 1.000):",
        "",
        "| launcher | median CPU us/request | vs bare node (median of paired rounds) | lowest round | highest round |",
        "|---|---:|---:|---:|---:|",
        f"| node hello.js (bare) | {statistics.median(cpu['bare']):.2f} | 1.000 | | |",
    ]
    for name, med, ratio, lo, hi in cpu_rows:
        lines.append(f"| {names[name]} | {med:.2f} | {ratio:.3f} | {lo:.3f} | {hi:.3f} |")
    lines += ["", "Per round (req/s): " + "; ".join(
        f"{name} " + ", ".join(f"{x:.0f}" for x in rps[name]) for name in LAUNCHERS),
        "", "Per round (CPU us/request): " + "; ".join(
        f"{name} " + ", ".join(f"{x:.2f}" for x in cpu[name]) for name in LAUNCHERS), ""]
    text = "\n".join(lines)
    with open(os.path.join(HERE, "PRELOAD_COST.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
