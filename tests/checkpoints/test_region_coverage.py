"""The grade pins every solution region: each `### BEGIN SOLUTION` region of the exported
package is executed by at least one graded capability that passes (tests/checkpoints/
checkpoint_18_*.py), every statement of it by one, and docs/grading.md's table lists every
region (scripts/grading_map.py --write regenerates it)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
import grading_map  # noqa: E402


@pytest.fixture(scope="module")
def mapped():
    """The map as the script computes it, in a fresh interpreter (it runs the checkpoint)."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")  # small matrices: threads only contend
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "grading_map.py"), "--json"], cwd=REPO,
                            capture_output=True, text=True, timeout=600, env=env)
    assert result.stdout.strip(), f"grading_map.py printed no JSON:\n{result.stderr[-3000:]}"
    return json.loads(result.stdout)


def test_every_region_is_found(mapped):
    markers = sum(line.strip() == grading_map.BEGIN
                  for path in grading_map.PACKAGE.rglob("*.py") for line in path.read_text().splitlines())
    assert markers > 0 and len(mapped["regions"]) == markers, \
        f"{markers} {grading_map.BEGIN!r} markers in the package but {len(mapped['regions'])} regions mapped"


def test_every_region_is_pinned_by_a_passing_capability(mapped):
    failed = sorted(name for name, outcome in mapped["outcomes"].items() if outcome != "passed")
    assert not failed, f"capabilities failing on the solution: {failed}"
    unpinned = [r["name"] for r in mapped["regions"] if not r["capabilities"]]
    assert not unpinned, f"solution regions no graded capability runs (a wrong version would score full marks): {unpinned}"


def test_every_region_statement_is_run(mapped):
    missed = {r["name"]: r["missed"] for r in mapped["regions"] if r["missed"]}
    assert not missed, f"statements of solution regions that no graded capability runs, by line: {missed}"


def test_every_capability_has_points(mapped):
    unpriced = sorted(set(mapped["outcomes"]) - set(mapped["points"]))
    assert not unpriced, f"capabilities missing from POINTS (they would count 1 point silently): {unpriced}"


def test_doc_table_lists_every_region(mapped):
    # region names only: which capabilities run a region changes with every new test, and the
    # table is regenerated then; a region missing from (or extra in) the table is a gap
    documented = grading_map.table_regions(grading_map.doc_table())
    assert documented == [r["name"] for r in mapped["regions"]], \
        "docs/grading.md's region table does not list the package's regions: run `python scripts/grading_map.py --write`"


def test_unmatched_markers_are_refused(tmp_path):
    (tmp_path / "broken.py").write_text(f"def f():\n    {grading_map.BEGIN}\n    return 1\n")
    with pytest.raises(ValueError, match="never closed"):
        grading_map.find_regions(tmp_path)
    (tmp_path / "broken.py").write_text(f"def f():\n    return 1\n    {grading_map.END}\n")
    with pytest.raises(ValueError, match="without"):
        grading_map.find_regions(tmp_path)


def test_regions_are_named_by_their_function(tmp_path):
    (tmp_path / "m.py").write_text(
        f"class A:\n    def f(self):\n        {grading_map.BEGIN}\n        x = 1\n        {grading_map.END}\n"
        f"        {grading_map.BEGIN}\n        return x\n        {grading_map.END}\n")
    regions = grading_map.find_regions(tmp_path)
    assert [(r.name, r.statements) for r in regions] == [("m.py::A.f", [4]), ("m.py::A.f#2", [7])]
    assert grading_map.table_regions(grading_map.render_table(regions)) == ["m.py::A.f", "m.py::A.f#2"]
