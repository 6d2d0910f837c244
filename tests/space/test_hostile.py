"""Hostile and careless input, all in one child process: each case exits 2 with one line and
no traceback, within 5 s, and the process's peak memory (``resource``) stays under 500 MB."""

from __future__ import annotations

import json
import subprocess
import sys

from helpers import MALFORMED, ROOT

CHILD = r"""
import contextlib, io, json, os, resource, sys, time
from resnas.cli import main

work = sys.argv[1]
fifo = os.path.join(work, "fifo.yaml"); os.mkfifo(fifo)
big = os.path.join(work, "comments.yaml")
with open(big, "w") as f:
    f.write(("# " + "x" * 70 + "\n") * 15_000 + "name: a\n")  # 1.1 MB of comments
sparse = os.path.join(work, "sparse.yaml")
with open(sparse, "w") as f:
    f.truncate(50_000_000)  # 50 MB, refused before it is read
cases = [["validate", p] for p in sys.argv[2:]] + [
    ["validate", fifo], ["validate", "/dev/zero"], ["validate", big], ["validate", sparse], ["validate", work],
    ["show", sys.argv[2], "--seed", "-5"],
    ["studies", "--storage", "sqlite://"],
    ["studies", "--storage", "sqlite:///:memory:"],
    ["search", sys.argv[2], "--storage", "sqlite:///" + os.path.join(big, "x.db")],
    ["export", "--rank", "0"],
]
results = []
for args in cases:
    err = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(args)
    results.append([args, code, err.getvalue(), time.perf_counter() - start])
# Linux carries a forking parent's peak into ru_maxrss across exec (a pytest process that
# built a large model would count); VmHWM is this process's own peak.
try:
    with open("/proc/self/status") as status:
        peak_mb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
except OSError:
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"results": results, "peak_mb": peak_mb}))
"""


def test_every_hostile_case_is_one_line_fast_and_small(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path), *map(str, MALFORMED)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(report["results"]) == len(MALFORMED) + 10
    for args, code, err, seconds in report["results"]:
        assert code == 2, (args, err)
        assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), (args, err)
        assert "Traceback" not in err, args
        assert seconds < 5, (args, seconds)
    assert report["peak_mb"] < 500, report["peak_mb"]
