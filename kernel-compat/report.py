#!/usr/bin/env python3
"""Turns the matrix's per-cell logs into results/matrix.{md,json} and checks each cell
against what the issue expects of it. Exit: 0 all ran cells passed, 1 a cell failed,
3 only infrastructure failures (a guest that never started)."""

import argparse
import datetime
import json
import re
import subprocess
from pathlib import Path

# Cells where io_uring is blocked: the errno the probe must name, and words of the
# likely cause its reason must contain.
BLOCKED = {
    "host-eperm": ("EPERM", ["seccomp"]),
    "host-enosys": ("ENOSYS", ["seccomp", "gVisor"]),
    "6.12-disabled": ("EPERM", ["io_uring_disabled=2"]),
}
# What 5.10 lacks (KERNEL-COMPAT-NOTES.md) and 6.1+ has.
NEW_FEATURES = ["multishot_accept", "buf_ring", "msg_ring", "defer_taskrun"]
DESCRIPTION = {
    "host": "host",
    "host-eperm": "host, io_uring blocked by seccomp (EPERM, as Docker)",
    "host-enosys": "host, io_uring blocked by seccomp (ENOSYS, as gVisor)",
    "host-nofeat": "host, RINGSERVE_URING_DISABLE=all",
    "5.10": "bullseye 5.10",
    "6.1": "bookworm 6.1",
    "6.12": "trixie 6.12",
    "7.3": "trixie-backports 7.3",
    "6.12-disabled": "6.12, kernel.io_uring_disabled=2",
    "5.10-memlock": "5.10, RLIMIT_MEMLOCK 64 KiB",
}


def read_meta(path):
    meta = {}
    for line in path.read_text().splitlines():
        k, _, v = line.partition("=")
        meta[k] = v
    return meta


def parse_log(text):
    """Probe JSON, the uring start attempt, and per-mode test counts from a cell log."""
    out = {"probe": None, "uring_rc": None, "uring_err": [], "modes": {}, "skips": {}}
    m = re.search(r"^KC-PROBE-BEGIN\n(.*?)\nKC-PROBE-END$", text, re.S | re.M)
    if m:
        # The JSON is one line; kernel messages could interleave on a serial console.
        for line in m.group(1).splitlines():
            if line.startswith("{"):
                try:
                    out["probe"] = json.loads(line)
                except json.JSONDecodeError:
                    pass
    m = re.search(r"^KC-URING rc=(\d+)$", text, re.M)
    if m:
        out["uring_rc"] = int(m.group(1))
    out["uring_err"] = re.findall(r"^KC-URING-ERR: (.*)$", text, re.M)
    mode = name = None
    in_failures = False
    for line in text.splitlines():
        # libtest's closing "failures:" list names each failed test, indented.
        if line == "failures:":
            in_failures = True
            continue
        if in_failures:
            if line.startswith("    ") and mode:
                out["modes"][mode]["failed_tests"].append(line.strip())
                continue
            in_failures = bool(line.strip() == "")
        b = re.match(r"KC-SUITE-BEGIN (\S+) (\S+)", line)
        if b:
            mode, name = b.groups()
            md = out["modes"].setdefault(
                mode, {"passed": 0, "failed": 0, "ignored": 0, "skipped": 0, "binaries": 0,
                       "failed_binaries": [], "failed_tests": [], "secs": 0})
            md["binaries"] += 1
            continue
        e = re.match(r"KC-SUITE-END (\S+) (\S+) rc=(\d+) secs=(\d+)", line)
        if e:
            md = out["modes"][e.group(1)]
            md["secs"] += int(e.group(4))
            if int(e.group(3)) != 0:
                md["failed_binaries"].append(f"{e.group(2)} (exit {e.group(3)})")
            mode = None
            continue
        r = re.match(r"test result: \w+\. (\d+) passed; (\d+) failed; (\d+) ignored", line)
        if r and mode:
            md = out["modes"][mode]
            md["passed"] += int(r.group(1))
            md["failed"] += int(r.group(2))
            md["ignored"] += int(r.group(3))
        # `SKIP NAME::uring: why` (tests/common's skip()) goes to stderr unbuffered, so it
        # can land mid-line, after libtest's "test NAME ... " or its terse dots.
        s = re.search(r"\bSKIP:? (.*)", line)
        if s and mode:
            out["modes"][mode]["skipped"] += 1
            # Grouped by reason, as the test names make every line unique; a check a
            # test skipped (`NAME::uring (its X check): why`) keeps the check's name.
            what, _, why = s.group(1).strip().partition(": ")
            if "::" not in what:
                why = s.group(1).strip()
            elif c := re.search(r"\((.*)\)$", what):
                why = f"{c.group(1)}: {why}"
            out["skips"][why] = out["skips"].get(why, 0) + 1
    return out


def optional_present(probe):
    return [o["name"] for o in probe["io_uring"]["optional"] if o["present"]]


def optional_used(probe):
    """What the uring backend uses here (present and not left alone on purpose)."""
    return [o["name"] for o in probe["io_uring"]["optional"] if o.get("used", o["present"])]


def check(cid, where, parsed, meta):
    """Problems (each fails the cell) and notes (recorded, not failing)."""
    problems, notes = [], []
    p = parsed["probe"]
    if p is None:
        return ["no probe JSON in the log"], notes
    u = p["io_uring"]
    # Every build has the uring backend. The probe JSON no longer carries
    # `uring_backend_built`; older logs that do (always `true`) are read the same way.
    reason = p["reason"]
    uring_rc = parsed["uring_rc"]
    uring_err = " ".join(parsed["uring_err"])

    if cid in BLOCKED:
        errno, causes = BLOCKED[cid]
        if u["available"]:
            problems.append("io_uring should be unavailable here")
        if p["backend"] != "epoll":
            problems.append(f"auto chose {p['backend']}, expected epoll")
        if errno not in reason:
            problems.append(f"the reason does not name {errno}")
        if not any(c in reason for c in causes):
            problems.append(f"the reason names no likely cause ({' / '.join(causes)})")
        if uring_rc != 2:
            problems.append(f"--backend uring exited {uring_rc}, expected 2")
        elif errno not in uring_err:
            problems.append(f"--backend uring's message does not name {errno}")
    elif cid == "5.10-memlock":
        if p.get("memlock_limit") != 64 * 1024:
            problems.append(f"the probe saw RLIMIT_MEMLOCK {p.get('memlock_limit')}, "
                            "not the cell's 64 KiB: the setup did not apply")
        if not u["available"]:
            if "RLIMIT_MEMLOCK" not in reason or "ENOMEM" not in reason:
                problems.append("io_uring failed but the reason does not name ENOMEM and RLIMIT_MEMLOCK")
            if p["backend"] != "epoll":
                problems.append(f"auto chose {p['backend']} although io_uring is unavailable")
            if uring_rc != 2:
                problems.append(f"--backend uring exited {uring_rc}, expected 2")
        elif p["backend"] == "epoll":
            # The probe's tiny ring fits; a full-size one does not (no CAP_IPC_LOCK).
            if "RLIMIT_MEMLOCK" not in reason:
                problems.append("auto fell back to epoll but the reason does not name RLIMIT_MEMLOCK")
            if uring_rc != 2 or "RLIMIT_MEMLOCK" not in uring_err:
                problems.append(f"--backend uring should exit 2 naming RLIMIT_MEMLOCK (exit {uring_rc})")
            notes.append("a full-size ring does not fit in 64 KiB of RLIMIT_MEMLOCK without "
                         "CAP_IPC_LOCK: auto falls back to epoll with that reason, "
                         "--backend uring exits 2 with it")
        else:
            lim = p.get("memlock_limit")
            shown = f"{lim // 1024} KiB" if isinstance(lim, int) else str(lim)
            notes.append(
                f"RLIMIT_MEMLOCK was {shown} in the guest (probe) and full-size rings still "
                "set up: Debian's 5.10 carries the 5.15-stable io_uring since 5.10.162-1 "
                "(its changelog: \"io_uring: import 5.15-stable io_uring\"), and from 5.12 "
                "io_uring charges ring memory to the memory cgroup, not RLIMIT_MEMLOCK. "
                "build_ring's raise-and-retry path is for upstream 5.10/5.11 kernels, "
                "which this matrix cannot boot")
    else:
        if not u["available"]:
            problems.append(f"io_uring should be available: {u['error']}")
        if u.get("missing_required"):
            problems.append(f"required ops missing: {u['missing_required']}")
        present = set(optional_present(p))
        if cid == "host-nofeat":
            on = [o["name"] for o in u["optional"] if o["present"] or "RINGSERVE_URING_DISABLE" not in o["how"]]
            if on:
                problems.append(f"features not disabled by RINGSERVE_URING_DISABLE=all: {on}")
        elif cid.startswith("5.10"):
            have = [f for f in NEW_FEATURES if f in present]
            if have:
                problems.append(f"5.10 should lack {have}")
            absent = [o["name"] for o in u["optional"] if not o["present"]]
            notes.append("absent on 5.10 (the uring backend must do without): " + ", ".join(absent))
        else:
            lack = [f for f in NEW_FEATURES if f not in present]
            if lack:
                problems.append(f"expected {lack} on this kernel")
        # cachestat(2) came in 6.5: 6.1 lacks it, 6.12 and 7.3 have it (the host's
        # kernel is whatever CI runs on, so it is not judged).
        kid = meta.get("kernel_id", "")
        if cid != "host-nofeat" and kid in ("5.10", "6.1") and "cachestat" in present:
            problems.append(f"{kid} should lack cachestat (6.5)")
        if cid != "host-nofeat" and kid in ("6.12", "7.3") and "cachestat" not in present:
            problems.append("expected cachestat on this kernel (6.5+)")
        if u["available"] and not u.get("missing_required"):
            if p["backend"] != "uring":
                problems.append(f"auto chose {p['backend']} where io_uring is usable")
            if uring_rc != 0:
                problems.append(f"--backend uring did not start (exit {uring_rc}): {uring_err}")

    # The suite: every binary exits 0, nothing failed, something ran.
    modes = parsed["modes"]
    if "auto" not in modes:
        problems.append("the suite did not run")
    if uring_rc == 0 and "epoll" not in modes:
        if "epoll" in meta.get("modes", "auto epoll").split():
            problems.append("uring starts here but the suite was not run forced to epoll")
        elif meta.get("modes_why") == "auto-only":
            notes.append("not run forced to epoll in this run (--auto-only: CI's short matrix; "
                         "the full matrix runs it)")
        else:
            notes.append("not run forced to epoll here (matrix.sh: the setup changes only "
                         "io_uring, or the kernel lies between 5.10 and 7.3, which do run it)")
    if meta.get("bins", "all") != "all":
        if meta.get("bins_why") == "short":
            why = ("--short, CI's matrix: io_uring cannot be had here, so these test the probe's "
                   "choice; the whole suite on epoll with io_uring refused is host-eperm's")
        else:
            why = ("matrix.sh: this setup changes only ring memory accounting; the rest of the "
                   "suite is its kernel's plain cell's")
        notes.append(f"test binaries run here: {meta['bins']} ({why})")
    for mode, md in modes.items():
        if md["failed"] or md["failed_binaries"]:
            problems.append(f"{mode}: {md['failed']} tests failed ("
                            + (", ".join(md["failed_tests"]) or "see the log") + "); binaries failing: "
                            + (", ".join(md["failed_binaries"]) or "none"))
        if md["passed"] == 0:
            problems.append(f"{mode}: no test passed")
    for why, n in sorted(parsed["skips"].items()):
        notes.append(f"test SKIP ({n}×): {why}")
    return problems, notes


def cell_result(cid, logs):
    meta = read_meta(logs / f"{cid}.meta")
    res = {"id": cid, "description": DESCRIPTION.get(cid, cid), "where": meta.get("where"),
           "setup": meta.get("setup"), "wall_secs": int(meta["wall_secs"]) if "wall_secs" in meta else None}
    if meta.get("kpkg_package"):
        res["kernel_package"] = f"{meta['kpkg_package']} {meta['kpkg_version']} ({meta['kpkg_suite']})"
        res["qemu"] = meta.get("qemu")
    if "skipped" in meta:
        res.update(status="SKIPPED", problems=[], notes=[meta["skipped"]])
        return res
    text = (logs / f"{cid}.log").read_text(errors="replace")
    parsed = parse_log(text)
    p = parsed["probe"]
    rc = int(meta.get("rc", "1"))
    if p:
        res.update(
            kernel=p["kernel"],
            io_uring_available=p["io_uring"]["available"],
            io_uring_error=p["io_uring"]["error"],
            chosen_backend=p["backend"],
            reason=p["reason"],
            optional_features=optional_present(p),
            optional_features_used=optional_used(p),
            probe=p,
        )
    res["uring_start"] = {"exit": parsed["uring_rc"], "stderr": parsed["uring_err"]}
    res["tests"] = {m: {k: v for k, v in md.items()} for m, md in parsed["modes"].items()}
    res["tests_passed"] = sum(md["passed"] for md in parsed["modes"].values())
    res["tests_failed"] = sum(md["failed"] for md in parsed["modes"].values())
    if rc == 125:
        res.update(status="INFRA", problems=["the guest never reached its script (see the log)"], notes=[])
        return res
    problems, notes = check(cid, res["where"], parsed, meta)
    if rc == 124:
        problems.insert(0, "the guest timed out")
    elif rc == 126:
        problems.insert(0, "the guest died while the suite ran (oops/panic; see the log)")
    elif rc != 0 and not problems:
        problems.append(f"the cell exited {rc}")
    res.update(status="FAIL" if problems else "PASS", problems=problems, notes=notes)
    return res


def fmt_features(r):
    """Present / used, naming the used ones (or the present ones when none is used)."""
    feats = r.get("optional_features")
    if feats is None:
        return "–"
    used = r.get("optional_features_used", feats)
    total = len(r["probe"]["io_uring"]["optional"])
    if not feats:
        return "none"
    return f"{len(feats)}/{total} present, {len(used)} used: " + ", ".join(used or feats)


def fmt_tests(r):
    t = r.get("tests") or {}
    if not t:
        return "–"
    return "; ".join(f"{m}: {md['passed']}/{md['failed']}" for m, md in t.items())


def markdown(cells, total, meta):
    lines = [
        "# Kernel-compatibility matrix",
        "",
        f"Run {meta['date']} on commit `{meta['commit']}`; host kernel {meta['host_kernel']}; "
        + (f"qemu {meta['qemu']} (TCG, 2 vCPUs; 4 GiB guests, 8 GiB for 5.10). " if meta["qemu"] else "no VM cells. ") + f"Total wall time {total} s. "
        "Made by `kernel-compat/matrix.sh`.",
        "",
        "Tests are passed/failed counts over the lib unit tests and every integration test "
        "binary, run with `RINGSERVE_TEST_BACKENDS` set to the backend `auto` chose "
        "(`auto`), and again forced to epoll (`epoll`) where the uring backend starts and the cell runs it (see matrix.sh). "
        "Optional features: how many the probe found present, and which of them the uring backend uses.",
        "",
        "| cell | kernel | io_uring | auto → | reason | optional features | tests auto: pass/fail | wall | result |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in cells:
        if r["status"] == "SKIPPED":
            lines.append(f"| {r['description']} | – | – | – | – | – | – | – | **SKIPPED**: {r['notes'][0]} |")
            continue
        avail = r.get("io_uring_available")
        reason = (r.get("reason") or "–").replace("|", "\\|")
        lines.append(
            f"| {r['description']} | {r.get('kernel', '–')} | "
            f"{'yes' if avail else ('no' if avail is not None else '–')} | {r.get('chosen_backend', '–')} | "
            f"{reason} | {fmt_features(r)} | {fmt_tests(r)} | {r['wall_secs']} s | **{r['status']}** |"
        )
    lines += ["", "## Notes per cell", ""]
    for r in cells:
        bits = []
        if r.get("kernel_package"):
            bits.append(f"kernel package {r['kernel_package']}")
        t = r.get("tests") or {}
        for m, md in t.items():
            bits.append(f"{m}: {md['binaries']} test binaries, {md['passed']} passed, "
                        f"{md['failed']} failed, {md['ignored']} ignored, "
                        f"{md['skipped']} skipped, {md['secs']} s")
        us = r.get("uring_start")
        if us and us["exit"] is not None:
            msg = " ".join(us["stderr"]) or "(started)"
            bits.append(f"`serve --backend uring` exit {us['exit']}: {msg}")
        bits += [f"**problem:** {x}" for x in r["problems"]] + r["notes"]
        lines.append(f"- **{r['description']}** — " + "; ".join(bits))
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--logs", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--cells", required=True)
    ap.add_argument("--total-secs", type=int, required=True)
    ap.add_argument("--strict", type=int, default=0)
    a = ap.parse_args()
    cells = [cell_result(c, a.logs) for c in a.cells.split()]
    repo = Path(__file__).resolve().parent.parent
    git = lambda *args: subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True).stdout.strip()
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git("rev-parse", "--short", "HEAD"),
        "host_kernel": subprocess.run(["uname", "-r"], capture_output=True, text=True).stdout.strip(),
        "qemu": next((c["qemu"] for c in cells if c.get("qemu")), None),
    }
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "matrix.json").write_text(json.dumps(
        {**meta, "total_wall_secs": a.total_secs, "cells": cells}, indent=2) + "\n")
    (a.out / "matrix.md").write_text(markdown(cells, a.total_secs, meta))
    for r in cells:
        extra = "; ".join(r["problems"] or r["notes"][:1])
        print(f"{r['status']:8} {r['id']:14} {r.get('wall_secs') or 0:5} s  {fmt_tests(r)}  {extra}")
    print(f"wrote {a.out / 'matrix.md'} and matrix.json")
    statuses = {r["status"] for r in cells}
    if "FAIL" in statuses or (a.strict and "SKIPPED" in statuses):
        return 1
    if "INFRA" in statuses:
        return 3
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
