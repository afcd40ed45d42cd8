#!/usr/bin/env python3
"""Turns a bench/run.sh run directory into DATE.json, DATE.md and DATE.svg.

    report.py RUN_DIR OUT_PREFIX      # writes OUT_PREFIX.{json,md,svg}
    report.py --summary-line SAMPLE_DIR   # one line about one sample, for run.sh's log

RUN_DIR holds meta.env, nginx.conf, rsyncd.conf, probe.json and raw/<sample>/ with
sample.env and the raw wrk / perf / idle / xfer client output. Standard library only.
"""

import html
import json
import os
import platform
import re
import statistics
import sys

CONTENDER_ORDER = ["nginx", "uring", "uring-nocounters", "epoll", "curl", "rsync", "socat", "limit"]
CONTENDER_LABEL = {
    "nginx": "nginx",
    "uring": "ringserve uring",
    "uring-nocounters": "uring, counters off",
    "epoll": "ringserve epoll",
    "curl": "curl, ringserve HTTP",
    "rsync": "rsync daemon",
    "socat": "socat stream",
    "limit": "limit reference",
}
CONTENDER_COLOR = {
    "nginx": "#2f9e44",
    "uring": "#e8590c",
    "uring-nocounters": "#f59f00",
    "epoll": "#1c7ed6",
    "curl": "#ae3ec9",
    "rsync": "#0ca678",
    "socat": "#74b816",
    "limit": "#868e96",
}
# Contenders that are ringserve itself (the rest are what it is compared with).
RINGSERVE = {"uring", "uring-nocounters", "epoll"}

WORKLOAD_TITLE = {
    "1k-1": "1 KiB file, 1 keep-alive connection",
    "1k-50": "1 KiB file, 50 keep-alive connections",
    "1k-256": "1 KiB file, 256 keep-alive connections",
    "p16-256": "1 KiB file, 256 connections, 16 pipelined requests per write (no latency: wrk records none when pipelining)",
    "100k-50": "100 KiB file, 50 connections",
    "1g-4": "1 GiB file, 4 connections",
    "idle-10k": "idle keep-alive connections, one GET each",
    "get-1g": "xfer get of a 1 GiB file into a file on tmpfs",
    "get-1g-null": "xfer get of a 1 GiB file into /dev/null (the wire only)",
    "put-1g": "xfer put of a 1 GiB file into the server's root on tmpfs",
}
WORKLOAD_SHORT = {
    "1k-1": "1 KiB, 1 conn",
    "1k-50": "1 KiB, 50 conns",
    "1k-256": "1 KiB, 256 conns",
    "p16-256": "1 KiB, pipelined ×16",
    "100k-50": "100 KiB, 50 conns",
    "1g-4": "1 GiB, 4 conns",
    "idle-10k": "idle conns",
    "get-1g": "get 1 GiB → tmpfs",
    "get-1g-null": "get 1 GiB → /dev/null",
    "put-1g": "put 1 GiB → tmpfs",
}
XFER_WORKLOADS = {"get-1g", "get-1g-null", "put-1g"}

# metric -> (label, which way is better)
METRICS = {
    "rps": ("req/s", "higher"),
    "gbps": ("GB/s", "higher"),
    "p50_us": ("p50 latency", "lower"),
    "p99_us": ("p99 latency", "lower"),
    "cpu_us_per_req": ("server CPU per request", "lower"),
    "cpu_ms_per_gb": ("server CPU per GB", "lower"),
    "client_cpu_ms_per_gb": ("client CPU per GB", "lower"),
    "syscalls_per_req": ("syscalls per request", "lower"),
    "uring_enter_per_req": ("io_uring_enter per request", "lower"),
    "rss_per_conn": ("server RSS per idle connection", "lower"),
    "server_busy": ("server CPU busy", "neither"),
    "wrk_busy": ("wrk CPU busy", "neither"),
    "client_busy": ("client CPU busy", "neither"),
}
# Context, not contest: shown without ratios.
NO_RATIO = {"server_busy", "wrk_busy", "client_busy"}
# wrk at this share of its CPU or more is probably what limits the run.
WRK_SATURATED = 0.9
# With this many connections or more, the server or wrk should keep its CPU busy; when
# neither is this busy, something outside both (the host, another tenant) held them back.
STARVED_MIN_CONNS = 50
STARVED_BELOW = 0.8
WORKLOAD_CONNS = {"1k-1": 1, "1k-50": 50, "1k-256": 256, "p16-256": 256, "100k-50": 50, "1g-4": 4}
BUSY = ["server_busy", "wrk_busy"]
XFER_METRICS = ["gbps", "cpu_ms_per_gb", "client_cpu_ms_per_gb", "server_busy", "client_busy"]
WORKLOAD_METRICS = {
    "1k-1": ["rps", "p50_us", "p99_us", "cpu_us_per_req"] + BUSY,
    "1k-50": ["rps", "p50_us", "p99_us", "cpu_us_per_req"] + BUSY,
    "1k-256": ["rps", "p50_us", "p99_us", "cpu_us_per_req", "syscalls_per_req", "uring_enter_per_req"] + BUSY,
    # No latency: wrk times only the first response of each pipelined write (its
    # pipelining script's requests are one write), so its percentiles read 0 µs.
    "p16-256": ["rps", "cpu_us_per_req"] + BUSY,
    "100k-50": ["rps", "gbps", "p99_us", "cpu_us_per_req"] + BUSY,
    "1g-4": ["gbps", "cpu_ms_per_gb"] + BUSY,
    "idle-10k": ["rss_per_conn"],
    "get-1g": XFER_METRICS,
    "get-1g-null": XFER_METRICS,
    "put-1g": XFER_METRICS,
}
# The chart's panels: (workload, metric).
PANELS = [
    ("1k-1", "rps"),
    ("1k-50", "rps"),
    ("1k-256", "rps"),
    ("1k-256", "p99_us"),
    ("p16-256", "rps"),
    ("100k-50", "gbps"),
    ("1g-4", "gbps"),
    ("idle-10k", "rss_per_conn"),
    ("1k-256", "syscalls_per_req"),
    ("1k-256", "cpu_us_per_req"),
    ("100k-50", "cpu_us_per_req"),
    ("get-1g", "gbps"),
    ("put-1g", "gbps"),
    ("get-1g", "cpu_ms_per_gb"),
    ("put-1g", "cpu_ms_per_gb"),
    ("get-1g", "client_cpu_ms_per_gb"),
    ("put-1g", "client_cpu_ms_per_gb"),
    ("get-1g-null", "gbps"),
    ("get-1g-null", "client_cpu_ms_per_gb"),
]

# The targets. kind "ratio": median(contender)/median(reference) compared with
# `need`; kind "abs": median(contender) compared with `need`. op is ">=" or "<=".
TARGETS = [
    # Performance, round two (issue 13): server CPU first.
    ("1 KiB / 256 conns: uring CPU per request ≤ 1.1× the limit", "1k-256", "cpu_us_per_req", "uring", "ratio", "limit", "<=", 1.1),
    ("1 KiB / 256 conns: uring CPU per request ≤ 0.8× nginx", "1k-256", "cpu_us_per_req", "uring", "ratio", "nginx", "<=", 0.8),
    ("pipelined ×16: uring req/s ≥ 1.2× epoll", "p16-256", "rps", "uring", "ratio", "epoll", ">=", 1.2),
    ("pipelined ×16: uring req/s ≥ 2× nginx", "p16-256", "rps", "uring", "ratio", "nginx", ">=", 2.0),
    ("1 KiB keep-alive: uring heap allocations per response ≤ 1", "allocs", "allocs.uring", "uring", "meta", None, "<=", 1.0),
    ("1 KiB keep-alive: epoll heap allocations per response ≤ 1", "allocs", "allocs.epoll", "epoll", "meta", None, "<=", 1.0),
    ("100 KiB / 50 conns: uring GB/s ≥ 0.97× the limit", "100k-50", "gbps", "uring", "ratio", "limit", ">=", 0.97),
    ("100 KiB / 50 conns: uring p99 no worse than nginx", "100k-50", "p99_us", "uring", "ratio", "nginx", "<=", 1.0),
    ("1 KiB / 256 conns: uring req/s ≥ 1.5× nginx", "1k-256", "rps", "uring", "ratio", "nginx", ">=", 1.5),
    ("1 KiB / 256 conns: uring p99 no worse than nginx", "1k-256", "p99_us", "uring", "ratio", "nginx", "<=", 1.0),
    ("1 GiB / 4 conns: uring GB/s ≥ 1.3× nginx", "1g-4", "gbps", "uring", "ratio", "nginx", ">=", 1.3),
    ("1 GiB / 4 conns: uring GB/s ≥ 90 % of the limit", "1g-4", "gbps", "uring", "ratio", "limit", ">=", 0.9),
    ("idle: uring RSS per connection ≤ nginx", "idle-10k", "rss_per_conn", "uring", "ratio", "nginx", "<=", 1.0),
    ("1 KiB / 256 conns: uring syscalls per request ≤ 0.2", "1k-256", "syscalls_per_req", "uring", "abs", None, "<=", 0.2),
    ("1 KiB / 256 conns: epoll req/s ≥ 0.8× nginx", "1k-256", "rps", "epoll", "ratio", "nginx", ">=", 0.8),
    # xfer (the file transfer issue): the file destinations carry them; /dev/null is the
    # wire-only view of the first.
    ("get 1 GiB → tmpfs: uring GB/s ≥ 90 % of the limit", "get-1g", "gbps", "uring", "ratio", "limit", ">=", 0.9),
    ("get 1 GiB → tmpfs: epoll GB/s ≥ 90 % of the limit", "get-1g", "gbps", "epoll", "ratio", "limit", ">=", 0.9),
    ("get 1 GiB → tmpfs: uring GB/s ≥ 2× rsync", "get-1g", "gbps", "uring", "ratio", "rsync", ">=", 2.0),
    ("get 1 GiB → /dev/null: uring GB/s ≥ 90 % of the limit", "get-1g-null", "gbps", "uring", "ratio", "limit", ">=", 0.9),
    ("put 1 GiB → tmpfs: uring GB/s ≥ 80 % of the limit", "put-1g", "gbps", "uring", "ratio", "limit", ">=", 0.8),
    ("put 1 GiB → tmpfs: epoll GB/s ≥ 80 % of the limit", "put-1g", "gbps", "epoll", "ratio", "limit", ">=", 0.8),
    (
        "get 1 GiB → tmpfs: ringserve get's client CPU per GB ≤ curl's",
        "get-1g",
        "client_cpu_ms_per_gb",
        "uring",
        "ratio",
        "curl",
        "<=",
        1.0,
    ),
]

# ------------------------------------------------------------------------ parsing

TIME_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}
# wrk prints bytes with binary multiples (its "MB" is MiB).
BYTE_UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4, "PB": 1024**5}
NUM = r"([0-9]+(?:\.[0-9]+)?)"


def time_us(num, unit):
    return float(num) * TIME_UNITS[unit]


def parse_wrk(text):
    """The numbers of one `wrk --latency` report; missing ones are absent."""
    out = {}
    m = re.search(NUM + r"\s+requests in\s+" + NUM + r"(us|ms|s|m|h),\s+" + NUM + r"([KMGTP]?B) read", text)
    if m:
        out["requests"] = int(float(m.group(1)))
        out["duration_s"] = time_us(m.group(2), m.group(3)) / 1e6
        out["bytes_read"] = float(m.group(4)) * BYTE_UNITS[m.group(5)]
    m = re.search(r"Requests/sec:\s+" + NUM, text)
    if m:
        out["rps"] = float(m.group(1))
    m = re.search(r"Transfer/sec:\s+" + NUM + r"([KMGTP]?B)", text)
    if m:
        out["transfer_bps"] = float(m.group(1)) * BYTE_UNITS[m.group(2)]
    m = re.search(r"Latency\s+" + NUM + r"(us|ms|s|m|h)\s+" + NUM + r"(us|ms|s|m|h)\s+" + NUM + r"(us|ms|s|m|h)", text)
    if m:
        out["lat_avg_us"] = time_us(m.group(1), m.group(2))
        out["lat_max_us"] = time_us(m.group(5), m.group(6))
    for pct, num, unit in re.findall(r"^\s*(50|75|90|99)%\s+" + NUM + r"(us|ms|s|m|h)\s*$", text, re.M):
        out["p%s_us" % pct] = time_us(num, unit)
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    out["errors"] = dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups()))) if m else {}
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    out["non_2xx_3xx"] = int(m.group(1)) if m else 0
    return out


XFER_SUMMARY = re.compile(
    r"^(received|sent) (\d+) bytes in " + NUM + r" s \(" + NUM + r" MB/s\), (\d+) (spliced|by sendfile)\s*$", re.M
)


def parse_xfer_summary(text):
    """The one line `ringserve get` / `put` prints on a non-terminal stderr, or {}."""
    m = None
    for m in XFER_SUMMARY.finditer(text or ""):
        pass
    if not m:
        return {}
    return {
        "direction": m.group(1),
        "bytes": int(m.group(2)),
        "seconds": float(m.group(3)),
        "mb_per_s": float(m.group(4)),
        "zero_copy_bytes": int(m.group(5)),
        "zero_copy": m.group(6),
    }


def pairs(text, n):
    """`text` as n numbers (ints where they are), or None."""
    f = (text or "").split()
    if len(f) != n:
        return None
    try:
        return [int(x) for x in f]
    except ValueError:
        try:
            return [float(x) for x in f]
        except ValueError:
            return None


def xfer_runs(env, raw):
    """The measured transfers of one xfer sample, as dicts, from its sample.env."""
    runs = []
    for i in range(1, int(env.get("runs", 0) or 0) + 1):
        k = "run.%d." % i
        if k + "status" not in env:
            break
        r = {"run": i, "status": env[k + "status"]}
        t = pairs(env.get(k + "time"), 3)
        if t:
            r["wall_s"], r["client_user_s"], r["client_sys_s"] = (float(x) for x in t)
        for key in ("bytes",):
            if (env.get(k + key) or "").isdigit():
                r[key] = int(env[k + key])
        for key in ("cpu_ticks", "server_cpu_stat", "load_cpu_stat"):
            v = pairs(env.get(k + key), 2 if key == "cpu_ticks" else 4)
            if v:
                r[key] = v
        for key in ("checked", "note"):
            if env.get(k + key):
                r[key] = env[k + key]
        summary = parse_xfer_summary(raw.get("client.%d.txt" % i))
        if summary:
            r["client_summary"] = summary
        runs.append(r)
    return runs


def xfer_metrics(s, env, clk_tck):
    """GB/s, server and client CPU per GB, and both sides' busy share of one xfer sample:
    each the median over the sample's measured transfers (one transfer that lands on
    fresh, slow-to-touch memory must not set the sample), plus the noise on both pinned
    CPUs during them."""
    runs = xfer_runs(env, s["raw"])
    s["runs"] = runs
    ok = [r for r in runs if r["status"] == "ok" and r.get("wall_s") and r.get("bytes") and "cpu_ticks" in r]
    if s["status"] == "ok" and (not ok or len(ok) < len(runs) or len(runs) < int(env.get("runs", 0) or 0)):
        s["status"], s["error"] = "error", s.get("error") or "could not read every transfer's numbers"
        return
    if not ok:
        return
    for r in ok:
        gb = r["bytes"] / 1e9
        client = r["client_user_s"] + r["client_sys_s"]
        server = (r["cpu_ticks"][1] - r["cpu_ticks"][0]) / clk_tck
        r["client_cpu_s"], r["server_cpu_s"] = client, server
        r["metrics"] = {
            "gbps": gb / r["wall_s"],
            "cpu_ms_per_gb": server * 1e3 / gb,
            "client_cpu_ms_per_gb": client * 1e3 / gb,
            "server_busy": server / r["wall_s"],
            "client_busy": client / r["wall_s"],
        }
    for key in XFER_METRICS:
        s["metrics"][key] = statistics.median(r["metrics"][key] for r in ok)
    s["bytes"] = sum(r["bytes"] for r in ok)
    s["wall_s"] = sum(r["wall_s"] for r in ok)
    s["client_cpu_s"] = sum(r["client_cpu_s"] for r in ok)
    s["server_cpu_s"] = sum(r["server_cpu_s"] for r in ok)
    for key, own in (("server_cpu_stat", s["server_cpu_s"]), ("load_cpu_stat", s["client_cpu_s"])):
        st = [r[key] for r in ok if key in r]
        if len(st) == len(ok):
            busy = sum(x[2] - x[0] for x in st) / clk_tck
            total = sum(x[3] - x[1] for x in st) / clk_tck
            if total > 0:
                s[key.replace("_stat", "_other_load")] = max(0.0, (busy - own) / total)
    notes = sorted({r["checked"] for r in ok if r.get("checked")} | {r["note"] for r in ok if r.get("note")})
    # The first bytes of a download arrive with its DATA frame and are copied; more than
    # that means the zero-copy path was not taken.
    copied = [
        r for r in ok if r.get("client_summary") and r["client_summary"]["zero_copy_bytes"] < 0.99 * r["bytes"]
    ]
    if copied:
        notes.append(
            "the client moved %d of %d bytes by copying, not zero-copy"
            % (sum(r["bytes"] - r["client_summary"]["zero_copy_bytes"] for r in copied), sum(r["bytes"] for r in copied))
        )
    if notes:
        s["status_note"] = "; ".join(notes)


def parse_perf_csv(text):
    """perf stat -x, output -> {event: count}; events perf could not count are absent."""
    counts = {}
    for line in text.splitlines():
        f = line.split(",")
        if len(f) >= 3 and not line.startswith("#") and re.fullmatch(r"[0-9]+", f[0]):
            counts[f[2]] = int(f[0])
    return counts


def parse_env(path):
    env = {}
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            key, sep, val = line.rstrip("\n").partition("=")
            if sep:
                env[key] = val
    return env


def read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def load_sample(sdir, clk_tck):
    """One sample: its sample.env, raw outputs, and the metrics computed from them."""
    env = parse_env(os.path.join(sdir, "sample.env"))
    s = {
        "id": os.path.basename(sdir),
        "rep": int(env.get("rep", 0)),
        "workload": env.get("workload"),
        "contender": env.get("contender"),
        "status": env.get("status", "error"),
        "error": env.get("error"),
        "server_exit_status": env.get("server_rc"),
        "pids": env.get("pids", "").split(),
        "metrics": {},
        "raw": {},
    }
    names = ["cmd.txt", "wrk.txt", "wrk.txt.time", "wrk-sys.txt", "perf.csv", "idle.txt", "warmup.txt"]
    names += ["client-cmd.txt", "warmup.txt.time", "rsyncd/rsyncd.log"]
    for i in range(1, int(env.get("runs", 0) or 0) + 1):
        names += ["client.%d.txt" % i, "client.%d.txt.time" % i]
    for name in names:
        text = read(os.path.join(sdir, name))
        if text is not None:
            s["raw"][name] = text
    m = s["metrics"]
    if s["workload"] in XFER_WORKLOADS:
        xfer_metrics(s, env, clk_tck)
    if "wrk.txt" in s["raw"]:
        w = parse_wrk(s["raw"]["wrk.txt"])
        s["wrk"] = w
        bad = sum(w.get("errors", {}).values()) + w.get("non_2xx_3xx", 0)
        if s["status"] == "ok" and ("rps" not in w or "requests" not in w):
            s["status"], s["error"] = "error", "could not parse wrk's output"
        elif s["status"] == "ok" and bad:
            s["status_note"] = "wrk reported errors: %s, non-2xx/3xx %d" % (w.get("errors"), w.get("non_2xx_3xx", 0))
        for key in ("rps", "p50_us", "p99_us"):
            if key in w:
                m[key] = w[key]
        if "transfer_bps" in w:
            m["gbps"] = w["transfer_bps"] / 1e9
        ticks = [int(x) for x in env.get("cpu_ticks", "").split()]
        if len(ticks) == 2:
            cpu_s = (ticks[1] - ticks[0]) / clk_tck
            s["server_cpu_s"] = cpu_s
            if w.get("requests"):
                m["cpu_us_per_req"] = cpu_s * 1e6 / w["requests"]
            if w.get("bytes_read"):
                m["cpu_ms_per_gb"] = cpu_s * 1e3 / (w["bytes_read"] / 1e9)
            if w.get("duration_s"):
                m["server_busy"] = cpu_s / w["duration_s"]
        client = (s["raw"].get("wrk.txt.time") or "").split()
        if len(client) == 2 and w.get("duration_s"):
            s["wrk_cpu_s"] = float(client[0]) + float(client[1])
            m["wrk_busy"] = s["wrk_cpu_s"] / w["duration_s"]
        busy = [m.get("server_busy"), m.get("wrk_busy")]
        if WORKLOAD_CONNS.get(s["workload"], 0) >= STARVED_MIN_CONNS and None not in busy:
            s["starved"] = max(busy) < STARVED_BELOW
        # Share of each pinned CPU that other processes took during the run (noise).
        for key, own in (("server_cpu_stat", s.get("server_cpu_s")), ("load_cpu_stat", s.get("wrk_cpu_s"))):
            st = [int(x) for x in env.get(key, "").split()]
            if len(st) == 4 and st[3] > st[1] and own is not None:
                busy_s = (st[2] - st[0]) / clk_tck
                s[key.replace("_stat", "_other_load")] = max(0.0, (busy_s - own) / ((st[3] - st[1]) / clk_tck))
    if "perf.csv" in s["raw"] and "wrk-sys.txt" in s["raw"]:
        counts = parse_perf_csv(s["raw"]["perf.csv"])
        reqs = parse_wrk(s["raw"]["wrk-sys.txt"]).get("requests")
        s["perf_counts"], s["syscall_run_requests"] = counts, reqs
        if reqs:
            if "raw_syscalls:sys_enter" in counts:
                m["syscalls_per_req"] = counts["raw_syscalls:sys_enter"] / reqs
            if "syscalls:sys_enter_io_uring_enter" in counts:
                m["uring_enter_per_req"] = counts["syscalls:sys_enter_io_uring_enter"] / reqs
    rss = [int(x) for x in env.get("rss_kb", "").split()]
    if len(rss) == 2:
        s["rss_kb_before"], s["rss_kb_after"] = rss
    if s["workload"] == "idle-10k" and len(rss) == 2 and int(env.get("idle_ok", 0)) > 0:
        s["idle_connections"] = int(env["idle_ok"])
        m["rss_per_conn"] = (rss[1] - rss[0]) * 1024 / int(env["idle_ok"])
    if s["status"] != "ok":
        s["metrics"] = {}
    return s


# --------------------------------------------------------------------- formatting


def fmt_value(metric, v):
    if v is None:
        return "–"
    if metric in ("p50_us", "p99_us"):
        if v < 1000:
            return "%.0f µs" % v
        if v < 1e6:
            return "%.2f ms" % (v / 1e3)
        return "%.2f s" % (v / 1e6)
    if metric == "rps":
        return "{:,.0f}".format(v)
    if metric == "gbps":
        return "%.2f" % v
    if metric == "rss_per_conn":
        return "{:,.0f} B".format(v)
    if metric in ("syscalls_per_req", "uring_enter_per_req"):
        return "%.3f" % v
    if metric in ("cpu_us_per_req",):
        return "%.2f µs" % v
    if metric in ("cpu_ms_per_gb", "client_cpu_ms_per_gb"):
        return "%.0f ms" % v
    if metric in NO_RATIO:
        return "%.0f %%" % (100 * v)
    return "%.3g" % v


def fmt_ratio(r):
    return "–" if r is None else "%.2f×" % r


# -------------------------------------------------------------------- aggregation


def summarize(samples, workloads, contenders):
    """summary[workload][contender] = {"status", "reason", metric: {median,min,max,n,values,...}}."""
    summary = {}
    for wl in workloads:
        summary[wl] = {}
        for c in contenders:
            mine = [s for s in samples if s["workload"] == wl and s["contender"] == c]
            if not mine:
                continue
            ok = [s for s in mine if s["status"] == "ok"]
            entry = {"samples": len(mine), "ok": len(ok)}
            if not ok:
                entry["status"] = "skipped" if all(s["status"] == "skipped" for s in mine) else "error"
                entry["reason"] = next((s["error"] for s in mine if s.get("error")), "no sample succeeded")
            else:
                entry["status"] = "ok"
                notes = []
                if len(ok) < len(mine):
                    notes.append(
                        "%d of %d samples failed: %s"
                        % (len(mine) - len(ok), len(mine), next((s["error"] for s in mine if s["status"] != "ok"), ""))
                    )
                # One line per distinct note, with the samples it came from.
                by_note = {}
                for x in ok:
                    if x.get("status_note"):
                        by_note.setdefault(x["status_note"], []).append(x["id"])
                for note, ids in by_note.items():
                    notes.append(
                        "%s (all %d samples)" % (note, len(ok)) if len(ids) == len(ok) else "%s: %s" % (", ".join(ids), note)
                    )
                starved = [s["id"] for s in ok if s.get("starved")]
                if starved:
                    entry["starved"] = {"samples": starved, "of": len(ok)}
                if notes:
                    entry["reason"] = "; ".join(notes)
            for metric in WORKLOAD_METRICS.get(wl, []):
                vals = [s["metrics"][metric] for s in ok if metric in s["metrics"]]
                if vals:
                    entry[metric] = {
                        "median": statistics.median(vals),
                        "min": min(vals),
                        "max": max(vals),
                        "n": len(vals),
                        "values": vals,
                    }
            summary[wl][c] = entry
    for wl, per in summary.items():
        for c, entry in per.items():
            for metric in WORKLOAD_METRICS.get(wl, []):
                if metric not in entry or metric in NO_RATIO:
                    continue
                for ref in ("nginx", "limit"):
                    r = median_of(summary, wl, ref, metric)
                    entry[metric]["vs_" + ref] = entry[metric]["median"] / r if r else None
    return summary


def median_of(summary, wl, c, metric):
    return summary.get(wl, {}).get(c, {}).get(metric, {}).get("median")


def evaluate_targets(summary, meta=None):
    out = []
    for text, wl, metric, who, kind, ref, op, need in TARGETS:
        if kind == "meta":
            # Measured once per run outside the sample loop (bench/allocs.rs), kept in meta.
            got = (meta or {}).get(metric)
            if got is None:
                continue
            v, r = float(got), None
        elif wl not in summary:
            continue  # a narrowed run: not a workload of this run
        else:
            v = median_of(summary, wl, who, metric)
            r = median_of(summary, wl, ref, metric) if ref else None
        t = {"target": text, "workload": wl, "metric": metric, "contender": who, "op": op, "need": need}
        if kind == "ratio":
            t["reference"] = ref
            measured = v / r if (v is not None and r) else None
            unit = "×"
        else:
            measured = v
            unit = ""
        t["measured"] = measured
        if measured is None:
            missing = [x for x, val in ((who, v), (ref, r)) if x and val is None]
            t["result"] = "n/a"
            t["text"] = "not measured (%s: no result)" % ", ".join(missing)
        else:
            met = measured >= need if op == ">=" else measured <= need
            t["result"] = "met" if met else "missed"
            shown = "%.2f%s" % (measured, unit) if kind == "ratio" else "%.3f" % measured
            need_s = "%s %.2f%s" % ("≥" if op == ">=" else "≤", need, unit)
            if met:
                t["text"] = "%s (needs %s): met" % (shown, need_s)
            else:
                gap = abs(need - measured)
                pct = 100.0 * gap / need
                t["text"] = "%s (needs %s): missed by %.2f%s (%.0f %% %s)" % (
                    shown,
                    need_s,
                    gap,
                    unit,
                    pct,
                    "short" if op == ">=" else "over",
                )
        bound = [
            x for x in (who, ref) if x and (median_of(summary, wl, x, "wrk_busy") or 0) >= WRK_SATURATED
        ]
        if bound and measured is not None:
            t["caveat"] = "wrk was ≥ %.0f %% busy against %s: load-generator-bound, not conclusive" % (
                100 * WRK_SATURATED,
                " and ".join(bound),
            )
        out.append(t)
    return out


# --------------------------------------------------------------------------- meta


def noise_stats(samples):
    """How much of the two pinned CPUs went to anything but the server and wrk, and how
    many loaded samples had both sides idling (the VM losing its CPUs to the host does
    not show in the guest's /proc/stat)."""
    out = {}
    judged = [s for s in samples if s["status"] == "ok" and "starved" in s]
    if judged:
        out["starved_samples"] = {"count": sum(1 for s in judged if s["starved"]), "of": len(judged)}
    for key in ("server_cpu_other_load", "load_cpu_other_load"):
        vals = [s[key] for s in samples if s["status"] == "ok" and key in s]
        if vals:
            out[key] = {"median": statistics.median(vals), "max": max(vals), "n": len(vals)}
    return out


def noise_text(meta):
    n = meta.get("noise") or {}
    srv, load, starved = n.get("server_cpu_other_load"), n.get("load_cpu_other_load"), n.get("starved_samples")
    if not srv:
        return ""
    text = ""
    if starved:
        text = "%d/%d loaded samples starved (neither server nor wrk ≥ %.0f %% busy) · " % (
            starved["count"],
            starved["of"],
            100 * STARVED_BELOW,
        )
    text += "other processes + steal on the server's CPU: median %.0f %% (max %.0f %%)" % (
        100 * srv["median"],
        100 * srv["max"],
    )
    if load:
        text += ", on the load CPU (wrk's, the xfer clients'): median %.0f %% (max %.0f %%)" % (
            100 * load["median"],
            100 * load["max"],
        )
    return text


def cpu_model():
    for line in (read("/proc/cpuinfo") or "").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def build_meta(run_dir):
    env = parse_env(os.path.join(run_dir, "meta.env"))
    meta = {k: v for k, v in env.items() if not k.startswith("skip.")}
    meta["skipped_contenders"] = {k[5:]: v for k, v in env.items() if k.startswith("skip.")}
    meta["kernel"] = platform.release()
    meta["cpu_model"] = cpu_model()
    meta["cpus"] = os.cpu_count()
    meta["mem_total_kb"] = next(
        (int(l.split()[1]) for l in (read("/proc/meminfo") or "").splitlines() if l.startswith("MemTotal:")), None
    )
    meta["nginx_config"] = read(os.path.join(run_dir, "nginx.conf"))
    meta["rsyncd_config"] = read(os.path.join(run_dir, "rsyncd.conf"))
    probe = read(os.path.join(run_dir, "probe.json"))
    try:
        meta["ringserve_probe"] = json.loads(probe) if probe else None
    except ValueError:
        meta["ringserve_probe"] = probe
    return meta


# ----------------------------------------------------------------------- markdown


def md_cell(c, entry, metric):
    m = entry.get(metric)
    if not m:
        return "–"
    cell = "**%s**" % fmt_value(metric, m["median"])
    if m["n"] > 1:
        cell += " (%s – %s)" % (fmt_value(metric, m["min"]), fmt_value(metric, m["max"]))
    ratios = []
    for ref in ("nginx", "limit"):
        if ref != c and m.get("vs_" + ref) is not None:
            ratios.append("%s %s" % (fmt_ratio(m["vs_" + ref]), ref))
    if ratios:
        cell += "<br>" + " · ".join(ratios)
    return cell


def render_md(meta, summary, targets, svg_name):
    quick = meta.get("mode") == "quick"
    L = []
    L.append(
        "# ringserve bench — %s%s%s"
        % (meta.get("date"), " (%s)" % meta["tag"] if meta.get("tag") else "", " (quick)" if quick else "")
    )
    L.append("")
    if quick:
        L.append(
            "> **Quick run**: %s repetition(s); %s. A functional check of the harness, not a measurement; "
            "read nothing into these ratios." % (meta.get("reps"), runs_text(meta))
        )
        L.append("")
    dirty = meta.get("ringserve_dirty", "0") not in ("0", "")
    L.append(
        "Kernel %s · %s · %s CPUs · ringserve `%s`%s · %s · servers on CPU %s, load on CPU %s · "
        "%s repetition(s), medians with (min – max)."
        % (
            meta.get("kernel"),
            meta.get("cpu_model"),
            meta.get("cpus"),
            (meta.get("ringserve_commit") or "?")[:12],
            " (+ uncommitted changes)" if dirty else "",
            " · ".join(tool_versions(meta)),
            meta.get("server_cpu"),
            meta.get("load_cpu"),
            meta.get("reps"),
        )
    )
    if noise_text(meta):
        L.append("")
        L.append("Noise: " + noise_text(meta) + ".")
    L.append("")
    L.append("![results](%s)" % svg_name)
    L.append("")
    L.append("## Targets")
    L.append("")
    L.append("| target | measured (medians) | result |")
    L.append("|---|---|---|")
    for t in targets:
        mark = {"met": "✅ met", "missed": "❌ missed", "n/a": "– n/a"}[t["result"]]
        caveat = "<br>⚠ " + t["caveat"] if t.get("caveat") else ""
        L.append("| %s | %s%s | %s |" % (t["target"], t["text"], caveat, mark))
    L.append("")
    skipped = meta.get("skipped_contenders") or {}
    for c, why in sorted(skipped.items()):
        L.append("**SKIP %s**: %s  " % (c, why))
    if meta.get("perf_skip") and "1k-256" in meta.get("workloads", "").split():
        L.append("**SKIP syscall counts**: %s  " % meta["perf_skip"])
    L.append("")
    L.append("## Results")
    L.append("")
    L.append(
        "Each cell: **median** (min – max over repetitions), then the median's ratio to nginx's and to "
        "the limit reference's. req/s and GB/s: higher is better; everything else: lower is better."
    )
    for wl in meta.get("workloads", "").split():
        per = summary.get(wl, {})
        if not per:
            continue
        metrics = WORKLOAD_METRICS[wl]
        L.append("")
        L.append("### %s (`%s`)" % (workload_title(wl, meta), wl))
        L.append("")
        L.append("| contender | " + " | ".join(metric_header(m) for m in metrics) + " |")
        L.append("|---" * (len(metrics) + 1) + "|")
        for c in ordered(per):
            e = per[c]
            if e["status"] != "ok":
                L.append("| %s | %s |" % (CONTENDER_LABEL.get(c, c), "**%s**: %s" % (e["status"].upper(), md_escape(e["reason"]))) + " |" * (len(metrics) - 1))
                continue
            note = "<br>⚠ " + md_escape(e["reason"]) if e.get("reason") else ""
            if e.get("starved"):
                note += "<br>⚠ starved %d/%d" % (len(e["starved"]["samples"]), e["starved"]["of"])
            L.append("| %s%s | %s |" % (CONTENDER_LABEL.get(c, c), note, " | ".join(md_cell(c, e, m) for m in metrics)))
        if any(per[c].get("starved") for c in per):
            L.append("")
            L.append(
                "⚠ starved N/M: in N of M samples neither the server nor wrk was ≥ %.0f %% busy despite ≥ %d "
                "connections — something outside both (the host, other tenants) held them back; treat those "
                "samples as noise." % (100 * STARVED_BELOW, STARVED_MIN_CONNS)
            )
        bound = [c for c in ordered(per) if ((per[c].get("wrk_busy") or {}).get("median") or 0) >= WRK_SATURATED]
        if bound:
            L.append("")
            L.append(
                "⚠ wrk (one thread, one CPU) was ≥ %.0f %% busy against %s: there the load generator, not the "
                "server, may set the numbers." % (100 * WRK_SATURATED, ", ".join(CONTENDER_LABEL.get(c, c) for c in bound))
            )
    L.append("")
    L.append("## How these were measured")
    workloads = meta.get("workloads", "").split()
    if any(w not in XFER_WORKLOADS for w in workloads):
        L.append("")
        L.append(
            "`wrk -t1 -cN -d%ss --latency` per sample (1 GiB: %s s), after a %s s warm-up; every server is started "
            "fresh per sample and contenders alternate within each repetition. Server CPU is utime+stime from "
            "/proc/PID/stat over all the server's processes during the measured run. Syscalls per request come from "
            "a separate %s s run of the same load right after the measured one, under "
            "`perf stat -e %s -p PIDS` (the tracepoint would slow the measured run), divided by that run's request "
            "count. Idle: RSS (VmRSS summed over the server's processes) with %s connections that each completed one "
            "GET, minus RSS before them, divided by the connections; kernel socket memory is not in RSS. GB = 10^9 bytes."
            % (
                meta.get("duration_s"),
                meta.get("duration_1g_s"),
                meta.get("warmup_s"),
                meta.get("syscall_duration_s"),
                meta.get("perf_events") or "raw_syscalls:sys_enter",
                meta.get("idle_connections"),
            )
        )
    if any(w in XFER_WORKLOADS for w in workloads):
        L.append("")
        L.extend(xfer_how(meta))
    if meta.get("nginx_config"):
        L.append("")
        L.append("<details><summary>nginx config (port and paths vary per sample)</summary>")
        L.append("")
        L.append("```nginx")
        L.append(meta["nginx_config"].rstrip())
        L.append("```")
        L.append("")
        L.append("</details>")
    if meta.get("rsyncd_config") and any(w in XFER_WORKLOADS for w in meta.get("workloads", "").split()):
        L.append("")
        L.append("<details><summary>rsyncd.conf (port and paths vary per sample; put: read only = no)</summary>")
        L.append("")
        L.append("```ini")
        L.append(meta["rsyncd_config"].rstrip())
        L.append("```")
        L.append("")
        L.append("</details>")
    L.append("")
    return "\n".join(L)


def tool_versions(meta):
    """What ran, for the header line: nginx and wrk for HTTP, curl rsync socat for xfer."""
    out = []
    contenders = meta.get("contenders", "").split()
    if "nginx" in contenders:
        out.append(meta.get("nginx_version") or "nginx: not run")
    if meta.get("wrk_version"):
        out.append(meta["wrk_version"].split(" Copyright")[0])
    for key in ("curl_version", "rsync_version", "socat_version"):
        if meta.get(key):
            m = re.match(r"\s*(\w+)\s+(?:version\s+)?v?([0-9][\w.]*)", meta[key])
            out.append("%s %s" % m.groups() if m else meta[key].strip())
    return out or ["no other tools"]


def xfer_how(meta):
    """The xfer section of "How these were measured": what a sample is, where the bytes
    go, how each number is taken, and every contender's command lines."""
    L = []
    runs = meta.get("xfer_runs")
    warm = "one warm-up transfer, then " if str(meta.get("warmup_s", "0")) not in ("0", "") else ""
    L.append(
        "xfer: per sample a fresh server, %s%s measured transfer(s) of the 1 GiB file, each its own client process. "
        "Every receiver writes the same kind of destination: `get-1g` a new file in a %s dir (%s), deleted after "
        "each transfer, so page-cache writes are in the numbers; `get-1g-null` /dev/null, the wire only (rsync "
        "writes only files, so it is not in it); `put-1g` a new file in the server's root in that dir. GB/s is "
        "10^9 file bytes over the client's wall time (start to exit: connect, handshake and, for put, the "
        "server's answer that the file is complete). Client CPU is user+sys from bash's `time` (rusage of "
        "the client and every child it waited for); server CPU is utime+stime+cutime+cstime from "
        "/proc/PID/stat of the server process (its per-connection children reaped: rsync, socat) before and "
        "after each transfer, in clock ticks. Each number is taken per transfer; a sample is the median of its "
        "transfers (one transfer onto fresh, slow-to-touch memory must not set it), a cell the median (min – "
        "max) of the samples. Loopback's softirq time is in neither side's CPU."
        % (warm, runs, meta.get("xfer_dir_fs") or "tmpfs", meta.get("xfer_dir") or "/dev/shm")
    )
    cmds = meta.get("xfer_commands") or {}
    if cmds:
        L.append("")
        L.append("<details><summary>xfer command lines (one sample each; ports and temp paths vary)</summary>")
        L.append("")
        for wl in [w for w in meta.get("workloads", "").split() if w in cmds]:
            L.append("`%s`:" % wl)
            L.append("")
            for c in ordered(cmds[wl]):
                L.append("- %s — server: `%s`; client: `%s`" % (CONTENDER_LABEL.get(c, c), cmds[wl][c]["server"], cmds[wl][c]["client"]))
            L.append("")
        L.append("</details>")
    return L


def metric_header(metric):
    return METRICS[metric][0]


def workload_title(wl, meta, short=False):
    title = (WORKLOAD_SHORT if short else WORKLOAD_TITLE).get(wl, wl)
    if wl == "idle-10k":
        title = "{:,} {}".format(int(meta.get("idle_connections") or 0), title)
    return title


def md_escape(s):
    return (s or "").replace("|", "\\|").replace("\n", " ")


def ordered(per):
    return [c for c in CONTENDER_ORDER if c in per] + sorted(c for c in per if c not in CONTENDER_ORDER)


# --------------------------------------------------------------------------- chart

PANEL_W = 600
ROW_H = 30
LABEL_W = 150
VALUE_W = 170
COLS = 2
FONT = "font-family=\"-apple-system, 'Segoe UI', Helvetica, Arial, sans-serif\""


def esc(s):
    return html.escape(str(s), quote=True)


def panel_target(wl, metric, summary):
    """(value, label) of a target line to draw in this panel, if the issue sets one."""
    for text, twl, tmetric, who, kind, ref, op, need in TARGETS:
        if (twl, tmetric) != (wl, metric) or who != "uring":
            continue
        if kind == "abs":
            return need, "target %s %g" % ("≤" if op == "<=" else "≥", need)
        r = median_of(summary, wl, ref, metric)
        if r:
            return need * r, "uring target %s%g× %s" % ("≤ " if op == "<=" else "", need, ref)
    return None


def render_panel(x0, y0, wl, metric, summary, meta):
    label, better = METRICS[metric]
    per = summary.get(wl, {})
    rows = ordered(per)
    h = 58 + ROW_H * max(len(rows), 1) + 12
    out = ['<g transform="translate(%d,%d)">' % (x0, y0)]
    out.append('<rect x="0" y="0" width="%d" height="%d" rx="8" fill="#f8f9fa" stroke="#dee2e6"/>' % (PANEL_W, h))
    title = "%s · %s" % (workload_title(wl, meta, short=True), label)
    out.append('<text x="14" y="24" font-size="15" font-weight="600" fill="#212529">%s</text>' % esc(title))
    sub = "%s is better · bar: median, whiskers: min–max" % better
    out.append('<text x="14" y="42" font-size="12" fill="#6c757d">%s</text>' % esc(sub))
    # Scale to the medians (and the target), not to the whiskers: one wild sample must
    # not squash every bar. Whiskers past the edge end in an arrow.
    vals = [per[c][metric]["median"] for c in rows if per[c].get(metric)]
    tgt = panel_target(wl, metric, summary)
    scale_max = max(vals) * 1.3 if vals and max(vals) > 0 else 1.0
    if tgt:
        scale_max = max(scale_max, tgt[0] * 1.05)
    bar_w = PANEL_W - LABEL_W - VALUE_W - 14
    for i, c in enumerate(rows):
        y = 58 + i * ROW_H
        out.append(
            '<text x="%d" y="%d" font-size="13" text-anchor="end" fill="#343a40">%s</text>'
            % (LABEL_W - 8, y + 18, esc(CONTENDER_LABEL.get(c, c)))
        )
        e = per[c]
        m = e.get(metric)
        if not m:
            why = e.get("reason") if e["status"] != "ok" else "not measured"
            tag = "SKIP" if e["status"] == "skipped" else ("ERROR" if e["status"] == "error" else "–")
            text = "%s: %s" % (tag, why)
            if len(text) > 70:
                text = text[:67] + "…"
            out.append('<text x="%d" y="%d" font-size="12" fill="#c92a2a">%s</text>' % (LABEL_W, y + 18, esc(text)))
            continue
        color = CONTENDER_COLOR.get(c, "#495057")
        w = max(1.0, bar_w * m["median"] / scale_max)
        out.append(
            '<rect x="%d" y="%d" width="%.1f" height="20" rx="3" fill="%s"><title>%s: %s</title></rect>'
            % (LABEL_W, y + 4, w, color, esc(c), esc(", ".join(fmt_value(metric, v) for v in m["values"])))
        )
        busy = (e.get("wrk_busy") or {}).get("median") or 0
        if metric in ("rps", "gbps") and busy >= WRK_SATURATED and w > 100:
            out.append(
                '<text x="%d" y="%d" font-size="11" fill="#ffffff">wrk %.0f %% busy</text>'
                % (LABEL_W + 6, y + 18, 100 * busy)
            )
        if m["n"] > 1:
            x1 = LABEL_W + bar_w * m["min"] / scale_max
            clipped = m["max"] > scale_max
            x2 = LABEL_W + bar_w * min(m["max"], scale_max) / scale_max
            end = (
                "M%.1f %d L%.1f %d L%.1f %d" % (x2 - 6, y + 9, x2, y + 14, x2 - 6, y + 19)
                if clipped
                else "M%.1f %d V%d" % (x2, y + 9, y + 19)
            )
            out.append(
                '<path d="M%.1f %d H%.1f M%.1f %d V%d %s" stroke="#212529" stroke-width="1.5" fill="none">'
                "<title>min %s, max %s</title></path>"
                % (x1, y + 14, x2, x1, y + 9, y + 19, end, esc(fmt_value(metric, m["min"])), esc(fmt_value(metric, m["max"])))
            )
        vx = LABEL_W + bar_w + 10
        out.append(
            '<text x="%d" y="%d" font-size="13" font-weight="600" fill="#212529">%s</text>'
            % (vx, y + 18, esc(fmt_value(metric, m["median"])))
        )
        # The ratio to nginx; to the limit where there is no nginx result.
        ref = "nginx" if m.get("vs_nginx") is not None else "limit"
        if c != ref and m.get("vs_" + ref) is not None:
            out.append(
                '<text x="%d" y="%d" font-size="12" fill="#495057">%s %s</text>'
                % (vx + 88, y + 18, esc(fmt_ratio(m["vs_" + ref])), ref)
            )
    if tgt:
        tx = LABEL_W + bar_w * tgt[0] / scale_max
        y_end = 58 + ROW_H * len(rows)
        out.append(
            '<line x1="%.1f" y1="52" x2="%.1f" y2="%d" stroke="#c2255c" stroke-width="1.5" stroke-dasharray="4 3"/>'
            % (tx, tx, y_end)
        )
        out.append(
            '<text x="%.1f" y="%d" font-size="11" fill="#c2255c" text-anchor="middle">%s</text>'
            % (min(max(tx, LABEL_W + 60), LABEL_W + bar_w - 20), y_end + 12, esc(tgt[1]))
        )
    out.append("</g>")
    return out, h + (14 if tgt else 0)


def svg_title(meta):
    others = [c for c in ordered({c: 1 for c in meta.get("contenders", "").split()}) if c not in RINGSERVE]
    names = [{"limit": "the limit"}.get(c, c) for c in others]
    if not names:
        return "ringserve"
    return "ringserve vs " + (", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0])


def runs_text(meta):
    workloads = meta.get("workloads", "").split()
    parts = []
    if any(w not in XFER_WORKLOADS for w in workloads):
        parts.append("wrk: %s s runs (1 GiB: %s s)" % (meta.get("duration_s"), meta.get("duration_1g_s")))
    if "idle-10k" in workloads:
        parts.append("{:,} idle connections".format(int(meta.get("idle_connections") or 0)))
    if any(w in XFER_WORKLOADS for w in workloads):
        parts.append("xfer: %s transfer(s) of 1 GiB per sample into %s" % (meta.get("xfer_runs"), meta.get("xfer_dir_fs") or "tmpfs"))
    return "; ".join(parts)


def render_svg(meta, summary, targets):
    panels = [(wl, m) for wl, m in PANELS if summary.get(wl) and m in WORKLOAD_METRICS[wl]]
    gap = 16
    width = COLS * PANEL_W + (COLS + 1) * gap
    body = []
    y = 112
    quick = meta.get("mode") == "quick"
    for i in range(0, len(panels), COLS):
        row_h = 0
        for j, (wl, metric) in enumerate(panels[i : i + COLS]):
            part, h = render_panel(gap + j * (PANEL_W + gap), y, wl, metric, summary, meta)
            body.extend(part)
            row_h = max(row_h, h)
        y += row_h + gap
    # Targets strip.
    body.append('<text x="%d" y="%d" font-size="15" font-weight="600" fill="#212529">Targets</text>' % (gap, y + 16))
    y += 26
    for t in targets:
        color = {"met": "#2b8a3e", "missed": "#c92a2a", "n/a": "#868e96"}[t["result"]]
        mark = {"met": "✔", "missed": "✘", "n/a": "–"}[t["result"]]
        body.append(
            '<text x="%d" y="%d" font-size="13" fill="%s"><tspan font-weight="700">%s</tspan> %s — %s</text>'
            % (gap, y + 14, color, mark, esc(t["target"]), esc(t["text"] + (" ⚠ wrk-bound" if t.get("caveat") else "")))
        )
        y += 20
    height = y + gap
    head = [
        '<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" %s>'
        % (width, height, width, height, FONT),
        '<rect width="100%" height="100%" fill="#ffffff"/>',
        '<text x="%d" y="34" font-size="22" font-weight="700" fill="#212529">%s — %s%s</text>'
        % (gap, esc(svg_title(meta)), esc(meta.get("date")), " (QUICK: functional check, not a measurement)" if quick else ""),
        '<text x="%d" y="58" font-size="13" fill="#495057">%s</text>'
        % (
            gap,
            esc(
                "kernel %s · %s · %s CPUs · ringserve %s · %s · servers pinned to CPU %s, load to CPU %s"
                % (
                    meta.get("kernel"),
                    meta.get("cpu_model"),
                    meta.get("cpus"),
                    (meta.get("ringserve_commit") or "?")[:12],
                    " · ".join(tool_versions(meta)),
                    meta.get("server_cpu"),
                    meta.get("load_cpu"),
                )
            ),
        ),
        '<text x="%d" y="78" font-size="13" fill="#495057">%s</text>'
        % (
            gap,
            esc(
                "%s repetition(s), contenders alternating; %s; bars are medians, whiskers min–max"
                % (meta.get("reps"), runs_text(meta))
            ),
        ),
        '<text x="%d" y="98" font-size="12" fill="#868e96">%s</text>' % (gap, esc(noise_text(meta))),
    ]
    return "\n".join(head + body + ["</svg>", ""])


# ---------------------------------------------------------------------------- main


def xfer_commands(samples):
    """{workload: {contender: {"server", "client"}}} from the first sample that has both."""
    out = {}
    for s in samples:
        if s["workload"] not in XFER_WORKLOADS:
            continue
        server, client = s["raw"].get("cmd.txt"), s["raw"].get("client-cmd.txt")
        if server and client and s["contender"] not in out.get(s["workload"], {}):
            out.setdefault(s["workload"], {})[s["contender"]] = {"server": server.strip(), "client": client.strip()}
    return out


def summary_line(sdir):
    clk = os.sysconf("SC_CLK_TCK")
    s = load_sample(sdir, clk)
    if s["status"] == "skipped":
        return "SKIP: %s" % s["error"]
    if s["status"] != "ok":
        return "ERROR: %s" % (s["error"] or "failed")
    m = s["metrics"]
    parts = ["%s %s" % (METRICS[k][0], fmt_value(k, m[k])) for k in WORKLOAD_METRICS.get(s["workload"], []) if k in m]
    return " · ".join(parts) + ("  [%s]" % s["status_note"] if s.get("status_note") else "")


def main(argv):
    if len(argv) == 3 and argv[1] == "--summary-line":
        print(summary_line(argv[2]))
        return 0
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    run_dir, prefix = argv[1], argv[2]
    meta = build_meta(run_dir)
    clk = int(meta.get("clk_tck") or os.sysconf("SC_CLK_TCK"))
    raw = os.path.join(run_dir, "raw")
    samples = [load_sample(os.path.join(raw, d), clk) for d in sorted(os.listdir(raw))]
    samples.sort(key=lambda s: (s["rep"], s["id"]))
    workloads = meta.get("workloads", "").split()
    contenders = ordered({c: 1 for c in meta.get("contenders", "").split()})
    summary = summarize(samples, workloads, contenders)
    meta["noise"] = noise_stats(samples)
    meta["xfer_commands"] = xfer_commands(samples)
    targets = evaluate_targets(summary, meta)
    base = os.path.basename(prefix)
    doc = {
        "meta": meta,
        "targets": targets,
        "summary": summary,
        "samples": samples,
    }
    with open(prefix + ".json", "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=1, ensure_ascii=False)
        fh.write("\n")
    with open(prefix + ".md", "w", encoding="utf-8") as fh:
        fh.write(render_md(meta, summary, targets, base + ".svg"))
    with open(prefix + ".svg", "w", encoding="utf-8") as fh:
        fh.write(render_svg(meta, summary, targets))
    for t in targets:
        print("target %-7s %s — %s%s" % (t["result"], t["target"], t["text"], " ⚠ " + t["caveat"] if t.get("caveat") else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
