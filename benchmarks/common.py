"""Shared plumbing for the experiments: command line, machine description, timing,
JSON + PNG output and the generated docs/results/README.md summary.

Every experiment module defines NAME, TITLE and ``run(quick, out) -> dict`` (the payload it
wrote to ``<out>/<NAME>.json``) and a ``main(argv)`` built on ``cli_main``.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window: the benchmarks run headless and in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tinytorch.core import best_median_times  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "docs" / "results"
# Order of the experiments in the summary (and in run_all).
EXPERIMENTS = ("pruning", "structured", "size", "kernels", "distillation", "block_sparse", "deep_compression")
TITLES = {
    "pruning": "Accuracy vs sparsity (unstructured pruning)",
    "structured": "Structured pruning: accuracy, MACs and latency",
    "size": "Model size: dense vs CSR vs CSR + int8",
    "kernels": "Sparse kernels: CSR vs dense vs scipy.sparse",
    "distillation": "Knowledge distillation",
    "block_sparse": "Fast sparsity: block and 2:4 patterns, BSR kernels, prune-then-distill",
    "deep_compression": "Deep Compression: weight sharing and Huffman coding",
}


# --------------------------------------------------------------------------- command line
def parse_args(description: str, argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true",
                        help="fewer points, epochs and repeats (all experiments < 2 min); "
                             "for smoke tests, not for the committed numbers")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR,
                        help=f"directory for <name>.json, <name>.png and README.md "
                             f"(default: {RESULTS_DIR.relative_to(REPO_ROOT)})")
    return parser.parse_args(argv)


def cli_main(module, argv=None) -> dict:
    """`python -m benchmarks.<module>`: run one experiment, then refresh the summary."""
    args = parse_args(module.__doc__.splitlines()[0], argv)
    args.out.mkdir(parents=True, exist_ok=True)
    payload = module.run(args.quick, args.out)
    write_summary(args.out)
    print(f"{module.NAME}: {payload['seconds']:.1f} s -> {args.out / (module.NAME + '.json')}")
    return payload


# --------------------------------------------------------------------------- machine
def blas_info() -> dict:
    """BLAS NumPy was built against (np.show_config(mode="dicts"), NumPy >= 1.26), plus the
    live thread pools from threadpoolctl when that package is installed."""
    info: dict = {}
    if np.lib.NumpyVersion(np.__version__) >= "1.26.0":
        deps = np.show_config(mode="dicts").get("Build Dependencies", {})
        blas = deps.get("blas", {})
        info = {"name": blas.get("name"), "version": blas.get("version"),
                "config": blas.get("openblas configuration")}
    if importlib.util.find_spec("threadpoolctl") is not None:
        import threadpoolctl
        info["threadpools"] = [{k: pool.get(k) for k in ("internal_api", "version", "num_threads")}
                               for pool in threadpoolctl.threadpool_info()]
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        if var in os.environ:
            info[var] = os.environ[var]
    return info


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "usable_cpus": usable,
            "platform": platform.platform(), "python": platform.python_version(),
            "numpy": np.__version__, "blas": blas_info(),
            "scipy": _version_if_installed("scipy"), "matplotlib": matplotlib.__version__}


def _version_if_installed(package: str):
    if importlib.util.find_spec(package) is None:
        return None
    return __import__(package).__version__


def load_average():
    """1-minute load average (None where the OS does not report it)."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def has_scipy() -> bool:
    return importlib.util.find_spec("scipy") is not None


# --------------------------------------------------------------------------- timing
def has_threadpoolctl() -> bool:
    return importlib.util.find_spec("threadpoolctl") is not None


def blas_threads(limit):
    """Context manager: BLAS limited to `limit` threads inside it (threadpoolctl), or left as
    the process started it for limit=None. Without threadpoolctl every block runs with the
    threads the environment set (OPENBLAS_NUM_THREADS...): the JSON's machine.blas says which."""
    if limit is None or not has_threadpoolctl():
        return contextlib.nullcontext()
    import threadpoolctl
    return threadpoolctl.threadpool_limits(limits=limit, user_api="blas")


def timings_by_threads(fns: dict, rounds: int = 3, repeats: int = 7) -> dict:
    """{"one": {name: seconds}, "default": {name: seconds}}: best_median_times with BLAS pinned
    to one thread (the figures ratios and targets use: dense BLAS on two busy cores swings
    by 100x) and with the process's default threads, each interleaved in this process."""
    timings = {}
    for label, limit in (("one", 1), ("default", None)):
        with blas_threads(limit):
            timings[label] = best_median_times(fns, rounds=rounds, repeats=repeats)
    return timings


class Stopwatch:
    """Seconds since creation; also remembers the load average at the start (other programs
    running on the machine distort timings: the JSON records the load next to them)."""

    def __init__(self):
        self.start = time.perf_counter()
        self.load_at_start = load_average()

    def __call__(self) -> float:
        return time.perf_counter() - self.start


# --------------------------------------------------------------------------- output
def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def headline(label: str, value: str) -> dict:
    return {"label": label, "value": value}


def target(goal: str, measured: str, met: bool) -> dict:
    return {"target": goal, "measured": measured, "met": bool(met)}


def finish(name: str, out: Path, quick: bool, watch: Stopwatch, config: dict, results: dict,
           headlines: list, targets: list, notes: list = ()) -> dict:
    """Write <out>/<name>.json and return the payload."""
    payload = {"experiment": name, "title": TITLES[name], "quick": bool(quick),
               "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
               "seconds": round(watch(), 2), "command": command_line(name, quick),
               "machine": machine_info(),
               "load_average": {"start": watch.load_at_start, "end": load_average()}, "config": config, "results": results,
               "headline": list(headlines), "targets": list(targets), "notes": list(notes),
               "figure": f"{name}.png"}
    payload = _jsonable(payload)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(payload, indent=1) + "\n")
    return payload


def command_line(name: str, quick: bool) -> str:
    return f"python -m benchmarks.bench_{name}" + (" --quick" if quick else "")


def figure(ncols: int = 2, nrows: int = 1, width: float = 6.0, height: float = 4.2):
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    return fig, axes.ravel()


def save_figure(fig, out: Path, name: str, quick: bool = False) -> Path:
    fig.suptitle(TITLES[name] + (" — quick run" if quick else ""))
    fig.tight_layout()
    path = out / f"{name}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def pct(x: float, digits: int = 2) -> str:
    return f"{100 * x:.{digits}f}%"


# --------------------------------------------------------------------------- summary
def load_results(out: Path) -> dict:
    return {name: json.loads((out / f"{name}.json").read_text())
            for name in EXPERIMENTS if (out / f"{name}.json").exists()}


def results_section(results: dict, prefix: str = "") -> str:
    """The markdown results section: one table of headline numbers and targets, with links
    to the figures (`prefix` is prepended to file names, e.g. "docs/results/")."""
    blas = next(iter(results.values()))["machine"].get("blas", {}) if results else {}
    threads = blas.get("OPENBLAS_NUM_THREADS")
    command = "python -m benchmarks.run_all" + (f" --blas-threads {threads}" if threads else "")
    lines = ["## Results", "",
             "Measured by the scripts in `benchmarks/` on the digits models that ship with "
             f"TinyTorch; rerun with `{command}`"
             + (f" (BLAS pinned to {threads} thread{'s' if threads != '1' else ''}: the machine was shared)"
                if threads else "")
             + f"; details, machine and every measured point: [{prefix}README.md]({prefix}README.md).", ""]
    if any(r["quick"] for r in results.values()):
        lines += ["> **Quick run** (`--quick`: fewer points, epochs and repeats): smoke-test "
                  "numbers, not the committed results.", ""]
    lines += ["| experiment | target | measured | met |", "|---|---|---|---|"]
    for name in EXPERIMENTS:
        title = TITLES[name]
        if name not in results:
            lines.append(f"| {title} | pending: not run yet | | |")
            continue
        r = results[name]
        link = f"[{title}]({prefix}{r['figure']})"
        for i, t in enumerate(r["targets"]):
            met = "yes" if t["met"] else "**no**"
            lines.append(f"| {link if i == 0 else ''} | {t['target']} | {t['measured']} | {met} |")
        if not r["targets"]:
            lines.append(f"| {link} | | {r['headline'][0]['label']}: {r['headline'][0]['value']} | |")
    return "\n".join(lines) + "\n"


def write_summary(out: Path) -> Path:
    """(Re)generate <out>/README.md from every <name>.json present; for the committed results
    (out = docs/results) also the results section of the top-level README."""
    results = load_results(out)
    if not results:
        return out / "README.md"
    machine = next(iter(results.values()))["machine"]
    blas = machine.get("blas", {})
    text = [results_section(results),
            "## How these numbers were made", "",
            "Each experiment is one script in `benchmarks/`; each wrote the JSON (every measured "
            "point, the configuration and the machine) and the figure listed below. Timings are "
            "the fastest of several medians (`tinytorch.core.median_time`) of repeated calls, "
            "the compared variants interleaved in the same process; speed-ups are ratios of "
            "timings from the same run. Speed targets live here, never in unit tests.", "",
            "| | |", "|---|---|",
            f"| machine | {machine['cpu']}, {machine['cpu_count']} CPUs ({machine['usable_cpus']} usable) |",
            f"| platform | {machine['platform']}, Python {machine['python']} |",
            f"| NumPy | {machine['numpy']} |",
            f"| BLAS | {blas.get('name')} {blas.get('version')}"
            + "".join(f", {k}={blas[k]}" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
                      if k in blas) + " |",
            f"| scipy | {machine.get('scipy') or 'not installed'} |",
            f"| date (UTC) | {max(r['date'] for r in results.values())} |",
            f"| total runtime | {sum(r['seconds'] for r in results.values()):.0f} s |", ""]
    for name in EXPERIMENTS:
        text.append(f"### {TITLES[name]}")
        text.append("")
        if name not in results:
            text += ["Pending: no results yet.", ""]
            continue
        r = results[name]
        load = r.get("load_average", {})
        busy = max([v for v in load.values() if v is not None], default=0) > machine["usable_cpus"]
        text += [f"`{r['command']}` — {r['seconds']:.0f} s{' (quick run)' if r['quick'] else ''}; "
                 f"load average {load.get('start')} → {load.get('end')}"
                 f"{' (**busy machine: timings are disturbed by other programs**)' if busy else ''}; "
                 f"data: [{name}.json]({name}.json)", "",
                 f"![{r['title']}]({r['figure']})", "",
                 "| headline | measured |", "|---|---|"]
        text += [f"| {h['label']} | {h['value']} |" for h in r["headline"]]
        text.append("")
        if r["targets"]:
            text += ["| target | measured | met |", "|---|---|---|"]
            text += [f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else '**no**'} |"
                     for t in r["targets"]]
            text.append("")
        for note in r.get("notes", []):
            text.append(f"- {note}")
        if r.get("notes"):
            text.append("")
    readme = out / "README.md"
    header = ("# Compression results\n\n"
              "<!-- generated by benchmarks/common.py (write_summary); do not edit by hand -->\n\n")
    readme.write_text(header + "\n".join(text))
    if out.resolve() == RESULTS_DIR.resolve():
        update_top_readme(results_section(results, prefix="docs/results/"))
    return readme


README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"


def update_top_readme(section: str) -> None:
    """Put the results section between the markers of the repository's README.md, so the
    numbers it shows are always the ones the last full run committed to docs/results/."""
    path = REPO_ROOT / "README.md"
    text = path.read_text()
    start, end = text.index(README_START) + len(README_START), text.index(README_END)
    path.write_text(text[:start] + "\n" + section.strip() + "\n" + text[end:])


def log(*parts) -> None:
    print(*parts, flush=True, file=sys.stdout)
