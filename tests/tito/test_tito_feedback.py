"""tito.feedback: package lines map back to the notebook line they were exported from, and
messages are cut at word boundaries."""
import os
import re
import subprocess
import sys

from hypothesis import example, given, settings
from hypothesis import strategies as st

from tito.feedback import PackageLines, from_pytest_output, shorten
from tito.project import Project

NB = "modules/99_demo/demo_dev.py"
PKG = "tinytorch/optimization/demo.py"


def test_every_exported_line_maps_back_to_its_notebook_line(tito, project):
    assert tito("export", "99").returncode == 0
    lines = PackageLines(Project.find(project))
    notebook = (project / NB).read_text().split("\n")
    package = (project / PKG).read_text().split("\n")
    first_cell = next(i for i, line in enumerate(package) if re.match(r"^# %% \S+ #", line) and "auto" not in line)
    mapped = 0
    for k in range(first_cell + 1, len(package)):
        if package[k].startswith("# %% ") or not package[k].strip():
            continue
        where = lines.locate(project / PKG, k + 1)
        assert where is not None, package[k]
        assert notebook[where.line - 1] == package[k] == where.code  # the same line of code, found by number
        mapped += 1
    assert mapped >= 8
    where = lines.locate(project / PKG, package.index("        return np.minimum(np.maximum(x, self.lo), self.hi)") + 1)
    assert where.func == "Clipper.__call__" and where.path == NB


def test_lines_outside_cells_or_of_a_changed_notebook_do_not_map(tito, project):
    assert tito("export", "99").returncode == 0
    lines = PackageLines(Project.find(project))
    assert lines.locate(project / PKG, 1) is None            # the module docstring
    assert lines.locate(project / PKG, 10_000) is None
    line = (project / PKG).read_text().split("\n").index("        return np.minimum(np.maximum(x, self.lo), self.hi)") + 1
    p = project / NB
    p.write_text(p.read_text().replace("np.minimum(np.maximum(x, self.lo), self.hi)", "np.clip(x, self.lo, self.hi)"))
    assert PackageLines(Project.find(project)).locate(project / PKG, line) is None  # that cell is gone


def test_a_workspace_export_maps_to_the_workspace_notebook(tito, project):
    assert tito("module", "start", "99").returncode == 0
    assert tito("export", "99").returncode == 0
    text = (project / PKG).read_text().split("\n")
    where = PackageLines(Project.find(project)).locate(project / PKG, text.index("    raise NotImplementedError()") + 1)
    assert where.path == "workspace/99_demo/demo_dev.py" and where.func == "scale"


def test_pytest_failure_is_located_in_the_notebook(tito, project):
    p = project / NB
    p.write_text(p.read_text().replace("np.minimum(np.maximum(x, self.lo), self.hi)", "x[0] + None"))
    assert tito("export", "99").returncode == 0
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "tests/checkpoints/checkpoint_99_demo.py::test_can_clip"], cwd=project,
                         env=dict(os.environ, PYTHONPATH=str(project)), capture_output=True, text=True)
    assert run.returncode == 1
    where = from_pytest_output(run.stdout, Project.find(project))
    assert where.path == NB and where.func == "Clipper.__call__"
    assert where.code.strip() == "return x[0] + None"
    assert p.read_text().split("\n")[where.line - 1] == where.code


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab ,.:xyz\n"), max_size=200), st.integers(min_value=5, max_value=80))
@example("a" * 30, 10)                   # one long word
@example("a" * 30 + " b", 10)            # a long first word, then more
@example("ab, cd ef", 6)                 # punctuation before the cut
@example(",,,, ab cd", 5)                # nothing but punctuation before the cut
def test_shorten_keeps_whole_words_of_the_first_line(text, width):
    out = shorten(text, width)
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    if len(first) <= width or " " not in first:
        assert out == first                # fits, or a single word: shown whole, no ellipsis
        return
    assert out.endswith("…")
    kept = out[:-1]
    assert kept and len(kept) < len(first) and first.startswith(kept)
    assert first[len(kept)] in " ,;:" and (kept == kept.rstrip(" ,;:") or not kept.strip(" ,;:"))  # between words
    assert len(out) <= width or len(first.split(" ", 1)[0]) >= width - 1  # over width: a long first word
