"""The experiment scripts must keep running: `python -m benchmarks.run_all --quick` into a
temporary directory, then check every JSON has the expected keys and sane values.

No speed targets are asserted here (timings belong to the benchmarks, not to unit tests);
only that timings were measured, that the implementations agree, and that the accuracies
and byte counts are consistent.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = ("pruning", "structured", "size", "kernels", "distillation", "block_sparse", "deep_compression")
TOP_KEYS = {"experiment", "title", "quick", "date", "seconds", "command", "machine", "load_average",
            "config", "results", "headline", "targets", "notes", "figure"}


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    # one BLAS thread: on a busy machine multi-threaded BLAS calls can wait whole scheduler ticks
    run = subprocess.run([sys.executable, "-m", "benchmarks.run_all", "--quick", "--blas-threads", "1",
                          "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return out, {name: json.loads((out / f"{name}.json").read_text()) for name in EXPERIMENTS}


def _is_fraction(x):
    return isinstance(x, float) and 0.0 <= x <= 1.0


def test_every_experiment_wrote_json_png_and_summary(quick_results):
    out, results = quick_results
    for name, r in results.items():
        assert TOP_KEYS <= set(r), f"{name}.json lacks {TOP_KEYS - set(r)}"
        assert r["experiment"] == name and r["quick"] is True
        assert r["machine"]["numpy"] == np.__version__
        assert r["seconds"] > 0
        assert r["headline"] and all({"label", "value"} <= set(h) for h in r["headline"])
        assert all({"target", "measured", "met"} <= set(t) and isinstance(t["met"], bool) for t in r["targets"])
        png = out / r["figure"]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{png} is not a PNG"
    readme = (out / "README.md").read_text()
    for r in results.values():
        assert r["title"] in readme
    assert "pending" not in readme.lower()


def test_pruning_values(quick_results):
    r = quick_results[1]["pruning"]["results"]
    for name in ("mlp", "cnn"):
        m = r[name]
        assert m["dense_accuracy"] > 0.9, "pretrained models score > 90% on the digits test split"
        for p in m["one_shot"] + m["fine_tuned"]:
            assert _is_fraction(p["accuracy"])
            assert abs(p["measured_sparsity"] - p["sparsity"]) < 0.01, "pruned to the requested sparsity"
        ft90 = [p for p in m["fine_tuned"] if p["method"] == "magnitude (global)" and p["sparsity"] == 0.9]
        assert ft90 and ft90[0]["accuracy"] > 0.8
    lt = r["mlp"]["lottery"][0]
    assert len(lt["sparsity"]) == lt["rounds"] + 1 and lt["sparsity"][0] == 0.0
    assert all(b > a for a, b in zip(lt["sparsity"], lt["sparsity"][1:])), "each round prunes more"


def test_structured_values(quick_results):
    r = quick_results[1]["structured"]["results"]
    rows = {row["model"]: row for row in r["rows"]}
    assert rows["dense"]["speedup_batch256"] == 1.0 and rows["dense"]["macs"] == r["dense_macs"]
    structured = sorted((row for row in r["rows"] if row["kind"] == "structured"), key=lambda row: row["ratio"])
    assert structured
    macs = [r["dense_macs"]] + [row["macs"] for row in structured]
    assert all(b < a for a, b in zip(macs, macs[1:])), "more filters removed, fewer MACs"
    for row in r["rows"]:
        assert _is_fraction(row["accuracy"])
        assert all(row[f"latency_ms_batch{b}"] > 0 for b in r["batches"])


def test_size_values(quick_results):
    r = quick_results[1]["size"]["results"]
    assert {c["ratio"] for c in r["cited"]} == {40.0, 12.0}
    for m in r["models"].values():
        for row in m["rows"]:
            f32, i8 = row["formats"]["csr_float32"], row["formats"]["csr_int8"]
            assert i8["memory_bytes"] < f32["memory_bytes"] < m["dense_bytes"]
            assert abs(f32["accuracy"] - row["accuracy_pruned_dense"]) <= 0.01, \
                "a float32 CSR round trip must not change the predictions"
            assert _is_fraction(i8["accuracy"])


def test_kernel_values(quick_results):
    r = quick_results[1]["kernels"]["results"]
    for row in r["square"]:
        assert row["max_abs_error"] < 1e-3, "all implementations compute the same X @ W.T"
        assert all(ms > 0 for ms in row["ms"].values())
        assert ("scipy" in row["ms"]) == r["scipy"]
    for row in r["memory"]:
        assert row["csr_bytes"] < row["dense_weight_bytes"]
        assert row["peak_bytes"]["dense"] >= row["output_bytes"] // 2


def test_distillation_values(quick_results):
    r = quick_results[1]["distillation"]["results"]
    assert r["teacher"]["accuracy"] > 0.9
    assert r["student_params"] * 10 <= r["teacher"]["params"], "student has <= 1/10 of the teacher's parameters"
    assert len(r["seeds"]) >= 2
    for row in r["runs"]:
        assert _is_fraction(row["accuracy"])


def test_block_sparse_values(quick_results):
    r = quick_results[1]["block_sparse"]["results"]
    for row in r["layer"]:
        assert row["max_abs_error"] < 1e-2, "dense, BSR and CSR compute the same W @ X"
        assert all(ms > 0 for ms in row["ms"].values()) and set(row["ms"]) == set(row["ms_default"])
    patterns = {row["pattern"] for row in r["layer"]}
    assert "2:4" in patterns and any("blocks" in p for p in patterns)
    for row in r["accuracy"]:
        assert _is_fraction(row["accuracy"]) and _is_fraction(row["accuracy_pruned"])
        assert abs(row["sparsity"] - row["target_sparsity"]) < 0.05, "pruned to (about) the requested sparsity"
    methods = {row["method"] for row in r["accuracy"]}
    assert {"unstructured", "4x4 blocks"} <= methods and any(":" in m for m in methods)
    recovery = r["prune_then_distill"]
    assert {row["recovery"] for row in recovery["rows"]} == {"labels only", "distilled"}
    for row in recovery["rows"]:
        assert _is_fraction(row["accuracy"]) and row["speedup"] > 0
        assert row["channels"] == recovery["rows"][0]["channels"], "both recoveries train the same pruned shape"


def test_deep_compression_values(quick_results):
    r = quick_results[1]["deep_compression"]["results"]["models"]
    for name in ("mlp", "cnn"):
        m = r[name]
        stages = m["pipeline"]["stages"]
        assert [s["stage"] for s in stages][0] == "dense float32" and stages[0]["bytes"] == m["dense_bytes"]
        coded = next(s for s in stages if s["stage"] == "Huffman-coded")
        fixed = next(s for s in stages if s["stage"] == "centroids fine-tuned")
        assert coded["bytes"] < fixed["bytes"] < m["dense_bytes"], "Huffman codes are shorter than fixed-width ones"
        assert coded["ratio"] == m["dense_bytes"] / coded["bytes"] and _is_fraction(coded["accuracy"])
        for run in m["pipeline"]["runs"]:
            assert abs(run["accuracy_drop"] - (stages[0]["accuracy"] - run["stages"][5]["accuracy"])) < 1e-12
        for row in m["sweep"]:
            assert row["bytes"] <= row["fixed_bytes"] and row["bytes"] < row["file_bytes"] < m["dense_bytes"]
            assert _is_fraction(row["accuracy"]) and _is_fraction(row["shared_accuracy"])
