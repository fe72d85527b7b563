"""Run every experiment and regenerate the summary docs/results/README.md.

    python -m benchmarks.run_all                 # full run (~15 min on 2 cores): the committed results
    python -m benchmarks.run_all --quick         # smoke run (< 2 min)
    python -m benchmarks.run_all --out /tmp/r    # write somewhere else (tests do this)
    python -m benchmarks.run_all --only kernels size

Timings are sensitive to other programs: run on an otherwise idle machine (each JSON records
the load average before and after). On a busy machine, multi-threaded BLAS calls can wait
for a free core for whole scheduler ticks; `OPENBLAS_NUM_THREADS=1 python -m benchmarks.run_all`
or `--blas-threads 1` gives steadier (single-core) numbers; the setting is recorded in the
machine description of every JSON.
"""
from __future__ import annotations

import argparse
import os
import sys

from . import (bench_block_sparse, bench_deep_compression, bench_distillation, bench_kernels, bench_pruning,
               bench_size, bench_structured, common)

MODULES = {"pruning": bench_pruning, "structured": bench_structured, "size": bench_size,
           "kernels": bench_kernels, "distillation": bench_distillation, "block_sparse": bench_block_sparse,
           "deep_compression": bench_deep_compression}
assert tuple(MODULES) == common.EXPERIMENTS
BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Run the Module 18 compression experiments.")
    parser.add_argument("--quick", action="store_true", help="fewer points, epochs and repeats (< 2 min)")
    parser.add_argument("--out", type=common.Path, default=common.RESULTS_DIR,
                        help="output directory (default: docs/results)")
    parser.add_argument("--blas-threads", type=int, default=None,
                        help="restart with OPENBLAS/OMP/MKL_NUM_THREADS set to this (BLAS reads them at start-up)")
    parser.add_argument("--only", nargs="+", choices=list(MODULES), default=list(MODULES),
                        help="run only these experiments (the summary still lists all found in --out)")
    args = parser.parse_args(argv)
    if args.blas_threads is not None and os.environ.get("OPENBLAS_NUM_THREADS") != str(args.blas_threads):
        env = dict(os.environ, **{var: str(args.blas_threads) for var in BLAS_THREAD_VARS})
        command = [sys.executable, "-m", "benchmarks.run_all", *(sys.argv[1:] if argv is None else argv)]
        os.execve(sys.executable, command, env)  # does not return
    args.out.mkdir(parents=True, exist_ok=True)
    watch = common.Stopwatch()
    times = {}
    for name in args.only:
        common.log(f"=== {name} ===")
        payload = MODULES[name].run(args.quick, args.out)
        times[name] = payload["seconds"]
        common.write_summary(args.out)
    readme = common.write_summary(args.out)
    common.log("\n" + "  ".join(f"{k} {v:.1f}s" for k, v in times.items()) + f"  total {watch():.1f}s")
    common.log(f"summary: {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
