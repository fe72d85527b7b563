"""Reproducible experiments for Module 18 (Compression).

Every number the README, the notebook summary or docs/results/ state about compression is
produced by one of these scripts. Run all of them with

    python -m benchmarks.run_all            # full run, writes docs/results/ (~15 min on 2 cores)
    python -m benchmarks.run_all --quick    # fewer points, epochs and repeats (< 2 min)

or one at a time, e.g. ``python -m benchmarks.bench_kernels --quick --out /tmp/results``.
Each experiment writes ``<out>/<name>.json`` and ``<out>/<name>.png`` and regenerates the
summary ``<out>/README.md``.
"""
