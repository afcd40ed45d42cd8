#!/usr/bin/env python3
"""Checks report.py's parsers on wrk / perf output of every unit wrk prints.

    python3 bench/test_report.py
"""

import os
import sys
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


class Targets(unittest.TestCase):
    def summary(self, uring, nginx):
        return {"1k-256": {"uring": {"rps": {"median": uring}}, "nginx": {"rps": {"median": nginx}}}}

    def first(self, summary):
        return report.evaluate_targets(summary)[0]

    def test_met_and_missed(self):
        self.assertEqual(self.first(self.summary(160.0, 100.0))["result"], "met")
        t = self.first(self.summary(120.0, 100.0))
        self.assertEqual(t["result"], "missed")
        self.assertIn("missed by 0.30×", t["text"])
        self.assertIn("20 % short", t["text"])

    def test_missing_side_is_not_applicable(self):
        t = self.first({"1k-256": {"uring": {"rps": {"median": 1.0}}}})
        self.assertEqual(t["result"], "n/a")


if __name__ == "__main__":
    unittest.main()
