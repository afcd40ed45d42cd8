#!/usr/bin/env python3
"""Checks report.py's parsers on wrk / perf output of every unit wrk prints, on the xfer
clients' output and sample files, and the target arithmetic.

    python3 bench/test_report.py
"""

import os
import shutil
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report  # noqa: E402

WRK_SMALL = """Running 2s test @ http://127.0.0.1:18402/1k.bin
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   285.80us  506.64us   8.39ms   97.86%
    Req/Sec   126.36k    30.91k  158.61k    60.00%
  Latency Distribution
     50%  171.00us
     75%  313.00us
     90%  437.00us
     99%    2.63ms
  251214 requests in 2.00s, 293.48MB read
Requests/sec: 125514.43
Transfer/sec:    146.63MB
"""

WRK_HUGE = """Running 10s test @ http://127.0.0.1:18404/1g.bin
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.52s   200.10ms   2.01s    75.00%
    Req/Sec     0.50      0.71     2.00     70.00%
  Latency Distribution
     50%    1.50s 
     75%    1.60s 
     90%    1.90s 
     99%    2.01s 
  8 requests in 10.01s, 15.23GB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 3
Requests/sec:      0.80
Transfer/sec:      1.52GB
"""


class ParseWrk(unittest.TestCase):
    def test_small_file_units(self):
        w = report.parse_wrk(WRK_SMALL)
        self.assertEqual(w["requests"], 251214)
        self.assertAlmostEqual(w["duration_s"], 2.0)
        self.assertAlmostEqual(w["rps"], 125514.43)
        self.assertAlmostEqual(w["p50_us"], 171.0)
        self.assertAlmostEqual(w["p99_us"], 2630.0)
        self.assertAlmostEqual(w["lat_max_us"], 8390.0)
        self.assertAlmostEqual(w["transfer_bps"], 146.63 * 1024**2)
        self.assertAlmostEqual(w["bytes_read"], 293.48 * 1024**2)
        self.assertEqual(w["errors"], {})
        self.assertEqual(w["non_2xx_3xx"], 0)

    def test_seconds_gigabytes_and_errors(self):
        w = report.parse_wrk(WRK_HUGE)
        self.assertEqual(w["requests"], 8)
        self.assertAlmostEqual(w["duration_s"], 10.01)
        self.assertAlmostEqual(w["p50_us"], 1.5e6)
        self.assertAlmostEqual(w["p99_us"], 2.01e6)
        self.assertAlmostEqual(w["transfer_bps"], 1.52 * 1024**3)
        self.assertEqual(w["errors"], {"connect": 0, "read": 2, "write": 0, "timeout": 1})
        self.assertEqual(w["non_2xx_3xx"], 3)

    def test_garbage_gives_nothing(self):
        w = report.parse_wrk("unable to connect to 127.0.0.1:18401 Connection refused\n")
        self.assertNotIn("rps", w)
        self.assertNotIn("requests", w)


class ParsePerf(unittest.TestCase):
    def test_counted_and_not_counted(self):
        text = (
            "# started on Mon Nov 23 07:44:50 2026\n\n"
            "157450,,raw_syscalls:sys_enter,440082266,100.00,,\n"
            "<not counted>,,syscalls:sys_enter_io_uring_enter,0,100.00,,\n"
        )
        self.assertEqual(report.parse_perf_csv(text), {"raw_syscalls:sys_enter": 157450})


XFER_GET = "received 1073741824 bytes in 0.52 s (2064.9 MB/s), 1073676288 spliced\n"
XFER_PUT = "sent 1073741824 bytes in 0.80 s (1342.2 MB/s), 1073741824 by sendfile\n"


class ParseXfer(unittest.TestCase):
    def test_get_and_put_summaries(self):
        g = report.parse_xfer_summary("connecting\n" + XFER_GET)
        self.assertEqual(g["direction"], "received")
        self.assertEqual(g["bytes"], 1073741824)
        self.assertAlmostEqual(g["seconds"], 0.52)
        self.assertAlmostEqual(g["mb_per_s"], 2064.9)
        self.assertEqual(g["zero_copy_bytes"], 1073676288)
        p = report.parse_xfer_summary(XFER_PUT)
        self.assertEqual((p["direction"], p["zero_copy"]), ("sent", "by sendfile"))

    def test_no_summary(self):
        self.assertEqual(report.parse_xfer_summary("ringserve: connecting to 127.0.0.1:1: refused\n"), {})
        self.assertEqual(report.parse_xfer_summary(None), {})


class XferSample(unittest.TestCase):
    """load_sample on a sample dir as run.sh's sample_xfer writes it."""

    GIB = 1073741824

    def write(self, env, files):
        d = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, d)
        with open(os.path.join(d, "sample.env"), "w") as fh:
            fh.write(env)
        for name, text in files.items():
            with open(os.path.join(d, name), "w") as fh:
                fh.write(text)
        return d

    def env(self, runs, status="ok", extra=""):
        lines = ["rep=1", "workload=get-1g", "contender=uring", "status=" + status, "runs=%d" % len(runs)]
        for i, (wall, user, sys_, ticks, bytes_) in enumerate(runs, 1):
            lines += [
                "run.%d.cpu_ticks=1000 %d" % (i, 1000 + ticks),
                # server CPU: 60 ticks busy of 100, of which `ticks` are the server's own
                "run.%d.server_cpu_stat=5000 10000 5060 10100" % i,
                "run.%d.load_cpu_stat=7000 20000 7080 20100" % i,
                "run.%d.time=%s %s %s" % (i, wall, user, sys_),
                "run.%d.bytes=%d" % (i, bytes_),
                "run.%d.status=ok" % i,
            ]
        return "\n".join(lines) + "\n" + extra

    def test_median_over_transfers(self):
        runs = [(0.5, 0.01, 0.29, 40, self.GIB), (0.7, 0.02, 0.38, 50, self.GIB), (4.0, 0.01, 3.9, 45, self.GIB)]
        files = {"client.%d.txt" % i: XFER_GET for i in (1, 2, 3)}
        s = report.load_sample(self.write(self.env(runs), files), 100)
        self.assertEqual(s["status"], "ok")
        m = s["metrics"]
        gb = self.GIB / 1e9
        # the slow third transfer (fresh memory) does not set the sample: medians
        self.assertAlmostEqual(m["gbps"], gb / 0.7)
        self.assertAlmostEqual(m["cpu_ms_per_gb"], 450 / gb)  # 45 ticks = 0.45 s
        self.assertAlmostEqual(m["client_cpu_ms_per_gb"], 400 / gb)
        self.assertAlmostEqual(m["server_busy"], 0.5 / 0.7)  # per transfer: 0.8, 0.71, 0.11
        self.assertAlmostEqual(m["client_busy"], 0.30 / 0.5)
        self.assertAlmostEqual(s["wall_s"], 5.2)
        self.assertAlmostEqual(s["server_cpu_s"], 1.35)
        # 1.8 s of the server CPU busy over 3 s, 1.35 s of it the server's own
        self.assertAlmostEqual(s["server_cpu_other_load"], (1.8 - 1.35) / 3.0)
        # the client's own 4.61 s is more than the load CPU's 2.4 s busy: never below 0
        self.assertEqual(s["load_cpu_other_load"], 0.0)
        self.assertEqual(s["runs"][0]["client_summary"]["zero_copy_bytes"], 1073676288)
        self.assertNotIn("status_note", s)

    def test_copied_bytes_are_noted(self):
        copy = "received 1073741824 bytes in 0.52 s (2064.9 MB/s), 0 spliced\n"
        d = self.write(self.env([(0.5, 0.01, 0.29, 40, self.GIB)]), {"client.1.txt": copy})
        s = report.load_sample(d, 100)
        self.assertEqual(s["status"], "ok")
        self.assertIn("by copying", s["status_note"])

    def test_failed_transfer_is_an_error_without_metrics(self):
        env = self.env([(0.5, 0.01, 0.29, 40, 5)], status="error", extra="error=transfer 1: 5 of 1073741824 bytes arrived\n")
        env = env.replace("run.1.status=ok", "run.1.status=error")
        s = report.load_sample(self.write(env, {}), 100)
        self.assertEqual(s["status"], "error")
        self.assertEqual(s["metrics"], {})
        self.assertIn("5 of", s["error"])

    def test_missing_numbers_are_an_error(self):
        env = self.env([(0.5, 0.01, 0.29, 40, self.GIB)]).replace("run.1.time=0.5 0.01 0.29", "run.1.time=")
        s = report.load_sample(self.write(env, {}), 100)
        self.assertEqual(s["status"], "error")


class Targets(unittest.TestCase):
    def summary(self, uring, nginx):
        return {"1k-256": {"uring": {"rps": {"median": uring}}, "nginx": {"rps": {"median": nginx}}}}

    def first(self, summary):
        """The req/s-against-nginx target the summaries below are made for."""
        ts = report.evaluate_targets(summary)
        return next(t for t in ts if t["target"].startswith("1 KiB / 256 conns: uring req/s ≥ 1.5× nginx"))

    def test_met_and_missed(self):
        self.assertEqual(self.first(self.summary(160.0, 100.0))["result"], "met")
        t = self.first(self.summary(120.0, 100.0))
        self.assertEqual(t["result"], "missed")
        self.assertIn("missed by 0.30×", t["text"])
        self.assertIn("20 % short", t["text"])

    def test_missing_side_is_not_applicable(self):
        t = self.first({"1k-256": {"uring": {"rps": {"median": 1.0}}}})
        self.assertEqual(t["result"], "n/a")

    def test_only_the_workloads_of_the_run(self):
        ts = report.evaluate_targets({"put-1g": {}})
        self.assertTrue(ts)
        self.assertEqual({t["workload"] for t in ts}, {"put-1g"})

    def by_target(self, summary):
        return {(t["workload"], t["metric"], t["contender"], t.get("reference")): t for t in report.evaluate_targets(summary)}

    def test_xfer_ratios(self):
        def e(**kw):
            return {k: {"median": v} for k, v in kw.items()}

        summary = {
            "get-1g": {
                "uring": e(gbps=1.9, client_cpu_ms_per_gb=330.0),
                "limit": e(gbps=2.0),
                "rsync": e(gbps=1.0),
                "curl": e(client_cpu_ms_per_gb=300.0),
            }
        }
        t = self.by_target(summary)
        self.assertEqual(t[("get-1g", "gbps", "uring", "limit")]["result"], "met")  # 0.95 ≥ 0.9
        r = t[("get-1g", "gbps", "uring", "rsync")]
        self.assertEqual(r["result"], "missed")  # 1.9 < 2
        self.assertIn("missed by 0.10×", r["text"])
        self.assertIn("5 % short", r["text"])
        c = t[("get-1g", "client_cpu_ms_per_gb", "uring", "curl")]
        self.assertEqual(c["result"], "missed")  # 1.10× curl's, needs ≤ 1
        self.assertIn("10 % over", c["text"])
        self.assertEqual(t[("get-1g", "gbps", "epoll", "limit")]["result"], "n/a")


if __name__ == "__main__":
    unittest.main()
