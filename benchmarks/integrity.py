"""What verifying an artifact costs: build_once records every file's size and SHA-256, and each
reuse checks them (stages/store.verify). Times the check on an artifact of --mb megabytes of
random bytes (weights do not compress), min/median/max of --repeat runs, as seconds per GB.

    python benchmarks/integrity.py --mb 100 --out results/benchmarks/integrity.md
"""
from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from common import emit, parser, setup
from degenbench.stages.store import build_once, verify


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--mb", type=int, default=100)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--out")
    a = setup(p.parse_args())
    if a.smoke:
        a.mb, a.repeat = 1, 1
    with tempfile.TemporaryDirectory() as root:
        def build(work: Path):  # two files, as a model folder holds weights and a config
            (work / "model").mkdir()
            with open(work / "model" / "model.safetensors", "wb") as f:
                for _ in range(a.mb):
                    f.write(os.urandom(2**20))
            (work / "model" / "config.json").write_text("{}")

        start = time.perf_counter()
        path = build_once(root, "dpo", "bench", "0" * 12, build)
        built = time.perf_counter() - start
        times = []
        for _ in range(a.repeat):  # the page cache holds the file after the first read, as on reuse
            t = time.perf_counter()
            verify(path)
            times.append(time.perf_counter() - t)
    gb = a.mb / 1024
    emit(f"Artifact verification: {a.mb} MB artifact, {a.repeat} runs, {platform.processor() or platform.machine()}, "
         f"{os.cpu_count()} cores", [
             "| what | min s | median s | max s | s per GB (median) |", "|---|---|---|---|---|",
             f"| verify (size + SHA-256 of every file) | {min(times):.3f} | {statistics.median(times):.3f} | "
             f"{max(times):.3f} | {statistics.median(times) / gb:.2f} |",
             f"| build with the record (writing {a.mb} MB, then hashing it) | {built:.3f} | | | |"], a.out)


if __name__ == "__main__":
    main()
