"""Mutation testing of the solution regions, with the graded checkpoints alone as the test.

Runs mutmut 3 (`pip install -e ".[mutation]"`) on a scratch copy of the package and the
checkpoints, so the checkout is never touched:

1. copies tinytorch/, the checkpoints of the pass and pyproject.toml (plus a [tool.mutmut]
   section) into a work directory; two passes: the graded notebooks' regions (GRADED_NOTEBOOKS)
   with the graded checkpoint alone (tests/checkpoints/checkpoint_18_compression.py, the score),
   the bonus notebooks' regions with every checkpoint of the module (checkpoint_18_*.py);
2. lets mutmut generate every mutant of the files holding solution regions (`mutmut run`
   on one mutant; mutmut generates all of them before it runs any);
3. keeps the mutants whose changed lines lie inside a `### BEGIN/END SOLUTION` region
   (found by diffing each mutant function against mutmut's copy of the original);
4. runs exactly those (`mutmut run --max-children N <names>`): each is tested by the
   capabilities that call its function, with `-x -q -p no:cacheprovider`
   and mutmut's CPU-time limit per mutant;
5. reads `mutmut results`, explains every survivor from EQUIVALENT below (or reports it as
   a hole in the grading) and writes the result into docs/grading.md.

    python scripts/mutation_check.py                 # full run (minutes on 2 cores: see docs/grading.md)
    python scripts/mutation_check.py --only csr.py   # regions of one file
    python scripts/mutation_check.py --no-write      # do not touch docs/grading.md

Exit status 0 when, in every graded notebook (GRADED_NOTEBOOKS), at least TARGET of the
non-equivalent mutants are killed and every survivor is explained, 1 otherwise; the bonus
notebooks' results are reported (their unexplained survivors are holes in the bonus
checkpoints, not in the grade). Not part of the default test run: it is CPU-heavy.
"""
import argparse
import ast
import difflib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grading_map import CHECKPOINT, CHECKPOINTS, DOC, PACKAGE, REPO, find_regions  # noqa: E402

TARGET = 0.95


def graded_notebooks() -> tuple:
    """The module's notebooks holding a test that module.yaml's `notebook_tests` maps to a
    capability of checkpoint_18_compression.py (the score): their regions are graded."""
    sys.path.insert(0, str(REPO))
    from tito.project import Project

    module = Project.find(REPO).module("18")
    graded_tests = {test for test, capabilities in module.meta["notebook_tests"].items() if capabilities}
    return tuple(path.name for path in module.notebooks
                 if graded_tests & set(re.findall(r"^def (test_\w+)\(", path.read_text(), re.M)))


GRADED_NOTEBOOKS = graded_notebooks()  # the lesson, its part 2 and the more-pruning notebook
MUTATION_START, MUTATION_END = "<!-- mutation:start -->", "<!-- mutation:end -->"
KILLED = {"killed", "timeout", "segfault", "caught by type check"}

# Survivors that behave exactly like the solution, keyed by (function, original line, mutated
# line): the region's function (Class.method) without its file, so a function moved to another
# module keeps its entries; lines stripped of indentation and trailing comments. The value says
# why no test can tell them apart. A key that no longer matches makes its mutant a hole again.
_CLIP = ("never acts: int8_scale rounds the scale up, so |w / scale| <= 127 and rint gives a value in "
         "[-127, 127] with or without this bound")
_ANY_NEGATIVE_RESHAPE = "NumPy reads any negative size in reshape as the one inferred dimension"
_ANY_MODE = ('every column was validated against cols when the matrix was built, so np.take\'s default '
             'mode="raise" (bounds checked) gathers the same values as mode="wrap" (not checked), only slower')
EQUIVALENT = {
    ("csr_to_dense",
     "np.add.at(out, (A.row_ids(), A.indices), A.data.astype(dtype))",
     "np.add.at(out, (A.row_ids(), A.indices), A.data.astype(None))"):
        "`out` already has the values' dtype and np.add.at rounds every sum into it; widening the "
        "float or int8 values to float64 first adds only exact digits",
    ("int8_arrays",
     "q = np.clip(np.rint(w / per_value), -127, 127).astype(np.int8)",
     "q = np.clip(np.rint(w / per_value), None, 127).astype(np.int8)"): "the lower clip " + _CLIP,
    ("int8_arrays",
     "q = np.clip(np.rint(w / per_value), -127, 127).astype(np.int8)",
     "q = np.clip(np.rint(w / per_value), -128, 127).astype(np.int8)"): "the lower clip " + _CLIP,
    ("int8_arrays",
     "q = np.clip(np.rint(w / per_value), -127, 127).astype(np.int8)",
     "q = np.clip(np.rint(w / per_value), -127, None).astype(np.int8)"): "the upper clip " + _CLIP,
    ("int8_arrays",
     "q = np.clip(np.rint(w / per_value), -127, 127).astype(np.int8)",
     "q = np.clip(np.rint(w / per_value), -127, 128).astype(np.int8)"): "the upper clip " + _CLIP,
    ("kd_loss",
     'soft = kl_div(log_student, soft_targets, reduction="batchmean")',
     "soft = kl_div(log_student, soft_targets, )"):
        'kl_div\'s default reduction is "batchmean" (as required here)',
    ("_prune_and_fine_tune",
     "lr=lr, epochs_per_step=max(1, fine_tune_epochs // steps), verbose=False)",
     "lr=lr, epochs_per_step=max(1, fine_tune_epochs // steps), verbose=None)"):
        "None is falsy like False: progressive_prune prints nothing either way",
    ("keep_mask",
     'mask[np.argsort(scores, axis=None, kind="stable")[:n_prune]] = False',
     'mask[np.argsort(scores, axis=None, kind="stable")[:n_prune]] = None'):
        "assigning None into a boolean array stores False",
    ("keep_mask",
     'mask[np.argsort(scores, axis=None, kind="stable")[:n_prune]] = False',
     'mask[np.argsort(scores, axis=None, kind="STABLE")[:n_prune]] = False'):
        "NumPy reads the sort kind case-insensitively: still the stable sort",
    ("unit_norms",
     "rows = w.reshape(w.shape[0], -1).astype(np.float64)",
     "rows = w.reshape(w.shape[0], -2).astype(np.float64)"): _ANY_NEGATIVE_RESHAPE,
    ("unit_norms",
     "rows = w.reshape(w.shape[0], -1).astype(np.float64)",
     "rows = w.reshape(w.shape[0], -1).astype(None)"): "astype(None) is astype(float64)",
    ("_shrink_pairs",
     "inputs, group = keep_in.get(name, (None, 1))",
     "inputs, group = keep_in.get(name, (None, 2))"):
        "the default applies only to layers whose inputs are not pruned (inputs None), and _shrink "
        "reads `group` only when it prunes inputs",
    ("row_segments",
     "rows = None if len(nonempty) == A.shape[0] else nonempty",
     "rows = None if (len(nonempty) == A.shape[0]) and False else nonempty"):
        "None is a shortcut: scattering the sums into zeros at every row (rows = all of them) gives the "
        "same array, one copy later",
    **{(function, take, take.replace(mode, other)): _ANY_MODE
       for function, take in [("csr_matvec", 'products = np.take(x.astype(dtype, copy=False), columns, mode="wrap")'),
                              ("_gather_matmul", 'np.take(X, idx[start:stop], axis=0, out=gathered, mode="wrap")')]
       for mode, other in [('mode="wrap"', "mode=None"), (', mode="wrap"', ", ")]},
    **{("csr_matvec", 'products = np.take(x.astype(dtype, copy=False), columns, mode="wrap")',
        'products = np.take(x.astype(' + copy + '), columns, mode="wrap")'):
       "np.take returns a new array either way: copying x first (or not) changes neither the products nor x"
       for copy in ("dtype, copy=None", "dtype, ", "dtype, copy=True")},
    ("_prune_and_fine_tune",
     "gradual = steps > 1 and fine_tune_epochs > 0",
     "gradual = steps >= 1 and fine_tune_epochs > 0"):
        "with steps=1 the gradual path is the one-shot one: progressive_prune's single step prunes to "
        "`sparsity` at once and fine-tunes max(1, E // 1) = E epochs with one Adam(lr) and the masks "
        "(the checkpoint's steps=1 case compares the result with that reference); one_shot is a copy "
        "pruned the same way",
    ("_prune_survivors",
     "scores = np.where(alive, np.abs(layer.weight.data), -1.0)",
     "scores = np.where(alive, np.abs(layer.weight.data), -2.0)"):
        "any negative score ranks the dead weights before every |w| >= 0",
    ("BSRMatrix.from_dense",
     "return cls(data.reshape(-1, R, C), block_col.astype(np.int32), indptr.astype(np.int32), (rows, cols))",
     "return cls(data.reshape(-2, R, C), block_col.astype(np.int32), indptr.astype(np.int32), (rows, cols))"):
        _ANY_NEGATIVE_RESHAPE,
    ("BlockSparseLinear.forward",
     "out = self.weight.rmatmul_T(data.reshape(-1, self.in_features))",
     "out = self.weight.rmatmul_T(data.reshape(-2, self.in_features))"): _ANY_NEGATIVE_RESHAPE,
    **{("bsr_matmul", take, take.replace(mode, other)):
       "every block column was validated when the matrix was built, so np.take's default mode=\"raise\" "
       "gathers the same blocks as mode=\"wrap\", only slower"
       for take in ['np.take(X_slices, columns[start:stop], axis=0, out=gathered, mode="wrap")']
       for mode, other in [('mode="wrap"', "mode=None"), (', mode="wrap"', ", ")]},
    ("nm_mask",
     'order = np.argsort(-groups, axis=2, kind="stable")',
     'order = np.argsort(-groups, axis=2, kind="STABLE")'):
        "NumPy reads the sort kind case-insensitively: still the stable sort",
    # bonus notebooks (checkpoint_18_compression_fast_sparsity.py / _advanced.py)
    ('nm_mask',
     'order = np.argsort(-groups, axis=2, kind="stable")',
     'order = np.argsort(-groups, kind="stable")'):
        "groups is always 3-D (rows, cols // m, m), so argsort's default axis=-1 is axis 2: the same "
        'stable sort of every group, no input can tell them apart',
    ('deep_compress',
     'coded_nbytes(to_shared(work, shared), huffman=False), params_bytes, dense_bytes, score(work)))',
     'coded_nbytes(to_shared(work, shared), huffman=None), params_bytes, dense_bytes, score(work)))'):
        'coded_nbytes only asks `not huffman`, and None is falsy like False, so the fixed-width re-'
        'encoding and its byte count are the same for every model',
    ('deep_compress',
     'rows.append(_stage("centroids fine-tuned", nonzeros, coded_nbytes(to_shared(work, shared), huffman=False),',
     'rows.append(_stage("centroids fine-tuned", nonzeros, coded_nbytes(to_shared(work, shared), huffman=None),'):
        'coded_nbytes only asks `not huffman`, and None is falsy like False, so the fixed-width re-'
        'encoding and its byte count are the same for every model',
    ('deep_compress',
     'params_bytes, dense_bytes, rows[-1]["accuracy"]))',
     'params_bytes, dense_bytes, rows[-2]["accuracy"]))'):
        'rows[-2] is the fine-tuned model `work`, whose weights are tied to exactly the codebooks, codes '
        'and biases the Huffman-coded model decodes, so both rows measure the same function on the same '
        'test_loader and carry the same accuracy (only a float summation-order flip on an exact logit tie'
        ' could separate them, which no test can arrange)',
    ('assign_clusters',
     'return np.searchsorted(midpoints, values, side="left")',
     'return np.searchsorted(midpoints, values, )'):
        'side="left" is np.searchsorted\'s default, so the call is the same',
    ('huffman_code_lengths',
     'order += 1',
     'order += 2'):
        "the tie-break numbers of merged subtrees still increase with age and stay above every leaf's, so"
        ' every heap comparison, hence every code length, comes out the same',
    ('huffman_decode',
     'while len(starts) < count:',
     'while len(starts) <= count:'):
        'at most one extra pointer-doubling round: jump maps dead ends to n and jump[n] = n, so it stays '
        'in range and never raises, and starts[:count] drops the extra starts, giving the same symbols '
        'and errors (only slightly slower)',
}

_MUTANT_DEF = re.compile(r"^(x_|xǁ)(?P<unit>.+?)__mutmut_(?P<id>orig|\d+)$")


@dataclass
class Mutant:
    name: str            # mutmut's key, e.g. tinytorch.optimization.compression.csr.x_csr_matmul__mutmut_7
    region: str          # grading_map region name
    notebook: str        # the notebook the region is exported from
    lines: list          # source line numbers the mutation changes
    before: str          # the original line(s), stripped
    after: str           # the mutated line(s), stripped
    status: str = "not checked"

    @property
    def key(self) -> tuple:
        return (self.region.split("::", 1)[1], self.before, self.after)


def _code(line: str) -> str:
    """A source line without indentation and trailing comment (a '#' after two spaces; the
    package's lines hold no such text inside strings)."""
    return re.sub(r"\s{2,}#.*$", "", line).strip()


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts)


def _unit_of(qualname: str) -> str:
    """mutmut's unit (top-level function or Class.method) for a def's qualified name."""
    parts = qualname.split(".")
    return ".".join(parts[:2]) if parts[0][:1].isupper() and len(parts) > 1 else parts[0]


def _mangled(unit: str) -> str:
    """keep_mask -> x_keep_mask; CSRMatrix.from_dense -> xǁCSRMatrixǁfrom_dense (mutmut's names)."""
    return "xǁ" + "ǁ".join(unit.split(".")) if "." in unit else "x_" + unit


def prepare(workdir: Path, files: list, checkpoints: list) -> None:
    """A scratch copy of the package and the `checkpoints` (absolute paths) with a
    [tool.mutmut] section restricting mutation to `files` (paths relative to the repository)."""
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    shutil.copytree(REPO / "tinytorch", workdir / "tinytorch", ignore=shutil.ignore_patterns("__pycache__"))
    checkpoints = [c.relative_to(REPO) for c in checkpoints]
    for checkpoint in checkpoints:
        (workdir / checkpoint.parent).mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / checkpoint, workdir / checkpoint)
    config = (REPO / "pyproject.toml").read_text()
    config += "\n[tool.mutmut]\n" + "\n".join([
        'source_paths = ["tinytorch"]',
        f"only_mutate = {json.dumps(files)}",
        f"pytest_add_cli_args_test_selection = {json.dumps([c.as_posix() for c in checkpoints])}",
        'pytest_add_cli_args = ["-p", "no:cacheprovider"]',   # mutmut itself adds -x -q
        "timeout_multiplier = 5.0",                           # CPU-time limit: 10 x (test time + 1 s)
        "use_git_change_detection = false",
    ]) + "\n"
    (workdir / "pyproject.toml").write_text(config)


def mutmut(workdir: Path, *args: str, log: Path = None) -> subprocess.CompletedProcess:
    """Run the mutmut CLI in `workdir` (output to `log` if given, else captured)."""
    command = [sys.executable, "-m", "mutmut", *args]
    # one BLAS thread per worker: mutmut already runs --max-children workers side by side
    env = dict(os.environ, PYTHONPATH="", PYTHONHASHSEED="0", OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1")
    if log is None:
        return subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)
    with open(log, "a") as out:
        return subprocess.run(command, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)


def _defs(tree: ast.AST):
    """Every FunctionDef at module level or in a top-level class body."""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            yield node
        elif isinstance(node, ast.ClassDef):
            yield from (n for n in node.body if isinstance(n, ast.FunctionDef))


def region_mutants(workdir: Path, regions: list) -> tuple:
    """(mutants inside regions, {file: count of mutants outside them}) from mutmut's mutated files."""
    inside, outside = [], Counter()
    for path in sorted({r.path for r in regions}):
        rel = path.relative_to(REPO)
        source = (workdir / rel).read_text().splitlines()
        def_line = {}
        for qualname, first, _ in _functions_with_def_line(ast.parse("\n".join(source))):
            def_line[qualname] = first
        mutated_text = (workdir / "mutants" / rel).read_text()
        mutated = mutated_text.splitlines()
        groups = {}
        for node in _defs(ast.parse(mutated_text)):
            match = _MUTANT_DEF.match(node.name)
            if match:
                text = mutated[node.lineno - 1:node.end_lineno]
                text[0] = text[0].replace(node.name, "__f__", 1)
                groups.setdefault(match["unit"], {})[match["id"]] = text
        file_regions = [r for r in regions if r.path == path]
        for unit, versions in groups.items():
            qualname = unit.replace("ǁ", ".")
            original = versions.pop("orig")
            start = def_line[qualname]
            expected = source[start - 1:start - 1 + len(original)]
            expected[0] = re.sub(r"def \w+", "def __f__", expected[0], count=1)
            if original != expected:
                raise RuntimeError(f"mutmut's copy of {rel}::{qualname} differs from the source: cannot map lines")
            for number, text in versions.items():
                changed, before, after = [], [], []
                for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, original, text).get_opcodes():
                    if tag != "equal":
                        changed += [start + i for i in range(i1, max(i2, i1 + 1))]
                        before += [_code(line) for line in original[i1:i2]]
                        after += [_code(line) for line in text[j1:j2]]
                region = next((r for r in file_regions if all(r.begin < n < r.end for n in changed)), None)
                if region is None or not changed:
                    outside[rel.as_posix()] += 1
                    continue
                name = f"{_module_name(path)}.{_mangled(qualname)}__mutmut_{number}"
                inside.append(Mutant(name, region.name, region.notebook, changed, " / ".join(before), " / ".join(after)))
    return inside, outside


def _functions_with_def_line(tree: ast.AST):
    """(Class.method or function, def line, last line) for mutmut's units."""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            yield node.name, node.lineno, node.end_lineno
        elif isinstance(node, ast.ClassDef):
            for child in node.body:
                if isinstance(child, ast.FunctionDef):
                    yield f"{node.name}.{child.name}", child.lineno, child.end_lineno


def read_statuses(workdir: Path) -> dict:
    """{mutant name: status} from `mutmut results --all true`."""
    result = mutmut(workdir, "results", "--all", "true")
    statuses = {}
    for line in result.stdout.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and "__mutmut_" in name:
            statuses[name] = status
    return statuses


def summarize(mutants: list, outside: int, seconds: float, jobs: int) -> dict:
    """Counts per notebook and in total: generated, killed, survived, equivalent, unexplained."""
    def counts(group):
        survivors = [m for m in group if m.status not in KILLED]
        equivalent = sum(m.key in EQUIVALENT for m in survivors)
        killed = len(group) - len(survivors)
        scored = len(group) - equivalent
        return {"generated": len(group), "killed": killed, "survived": len(survivors), "equivalent": equivalent,
                "unexplained": len(survivors) - equivalent, "score": killed / scored if scored else 1.0,
                "statuses": dict(Counter(m.status for m in group))}

    notebooks = sorted({m.notebook for m in mutants})
    return {"total": counts(mutants), "notebooks": {nb: counts([m for m in mutants if m.notebook == nb])
                                                     for nb in notebooks},
            "outside_regions": outside, "seconds": round(seconds), "jobs": jobs}


def render(mutants: list, summary: dict) -> str:
    """The mutation section of docs/grading.md."""
    import mutmut as mutmut_package

    lines = [
        f"mutmut {mutmut_package.__version__}, `python scripts/mutation_check.py`: {summary['jobs']} workers, "
        f"{summary['seconds']} s for the mutant runs, {summary['seconds_total']} s in all, on a shared 2-core "
        "machine. A mutant is kept when every line "
        f"it changes lies inside a solution region ({summary['outside_regions']} others in the same files were "
        "generated and not run). A mutant of a graded notebook (" + ", ".join(GRADED_NOTEBOOKS) + ") is "
        "tested by the graded checkpoint alone (`tests/checkpoints/checkpoint_18_compression.py`, the "
        "score); a mutant of a bonus notebook by every checkpoint of the module, its bonus checkpoint "
        "included.",
        "",
        "| notebook | generated | killed | survived | equivalent | killed / non-equivalent |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for label, c in [*summary["notebooks"].items(), ("**all**", summary["total"])]:
        lines.append(f"| {label} | {c['generated']} | {c['killed']} | {c['survived']} | {c['equivalent']} "
                     f"| {c['score']:.1%} |")
    lines += ["", "Statuses (all): " + ", ".join(f"{k} {v}" for k, v in sorted(summary["total"]["statuses"].items()))
              + ". Killed counts mutmut's killed and timeout.",
              "", f"Target: at least {TARGET:.0%} of the non-equivalent mutants of each graded notebook "
              "killed, every survivor explained. The other going-further notebooks are graded by bonus "
              "checkpoints only; their unexplained survivors are listed below as holes in that bonus "
              "grading, not in the score."]
    survivors = [m for m in mutants if m.status not in KILLED]
    if survivors:
        lines += ["", "| survivor | original | mutated | why it survives |", "| --- | --- | --- | --- |"]
        for m in sorted(survivors, key=lambda m: (m.notebook, m.region, m.lines)):
            why = EQUIVALENT.get(m.key, f"**not explained: a hole in the grading** ({m.status})")
            lines.append(f"| `{m.region}` line {m.lines[0]} | `{_cell(m.before)}` | `{_cell(m.after)}` | {why} |")
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("`", "'")


def write_section(body: str, doc: Path = DOC) -> None:
    text = doc.read_text() if doc.exists() else ""
    block = f"{MUTATION_START}\n{body}\n{MUTATION_END}"
    if MUTATION_START in text:
        text = re.sub(re.escape(MUTATION_START) + ".*?" + re.escape(MUTATION_END), lambda _: block, text, flags=re.S)
    else:
        text += ("\n" if text else "") + block + "\n"
    doc.write_text(text)


def run_pass(workdir: Path, regions: list, all_regions: list, checkpoints: list, jobs: int) -> tuple:
    """Generate the mutants of the files holding `regions` and run those inside `regions`
    with `checkpoints` as the only tests: (mutants with their status, {file: count of mutants
    outside every region of `all_regions`}, seconds)."""
    files = sorted({r.path.relative_to(REPO).as_posix() for r in regions})
    prepare(workdir, files, checkpoints)
    log = workdir / "mutmut.log"
    # mutmut generates every mutant before it runs any: run one to get them all.
    first = regions[0]
    unit = _mangled(_unit_of(first.function))
    seed = mutmut(workdir, "run", "--max-children", str(jobs), f"{_module_name(first.path)}.{unit}__mutmut_1", log=log)
    if seed.returncode != 0:
        raise SystemExit(f"mutmut could not generate the mutants; see {log}")
    mutants, outside = region_mutants(workdir, [r for r in all_regions if r.path in {q.path for q in regions}])
    names = {r.name for r in regions}
    mutants = [m for m in mutants if m.region in names]   # the other pass runs the rest
    print(f"{len(mutants)} mutants inside {len(regions)} regions ({sum(outside.values())} outside them, not run), "
          f"tested by {', '.join(c.name for c in checkpoints)}; work dir {workdir}")
    start = time.perf_counter()
    run = mutmut(workdir, "run", "--max-children", str(jobs), *[m.name for m in mutants], log=log)
    seconds = time.perf_counter() - start
    if run.returncode != 0:
        raise SystemExit(f"mutmut run failed (exit {run.returncode}); see {log}")
    statuses = read_statuses(workdir)
    for m in mutants:
        m.status = statuses.get(m.name, "not checked")
    return mutants, outside, seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, help="scratch directory (default: a new temporary one)")
    parser.add_argument("--jobs", type=int, default=2, help="mutmut --max-children (default 2)")
    parser.add_argument("--only", help="only the regions of files whose name contains this text")
    parser.add_argument("--no-write", action="store_true", help="do not update docs/grading.md")
    args = parser.parse_args(argv)

    began = time.perf_counter()
    regions = [r for r in find_regions(PACKAGE) if not args.only or args.only in str(r.path)]
    if not regions:
        raise SystemExit("no solution region matches --only")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mutation-"))
    # The graded notebooks' regions are tested by the graded checkpoint alone (the score); the
    # bonus notebooks' regions by every checkpoint of the module (the bonus ones too).
    passes = [("graded", [r for r in regions if r.notebook in GRADED_NOTEBOOKS], [CHECKPOINT]),
              ("bonus", [r for r in regions if r.notebook not in GRADED_NOTEBOOKS], CHECKPOINTS)]
    mutants, outside, seconds = [], {}, 0.0
    for name, pass_regions, checkpoints in passes:
        if pass_regions:
            found, pass_outside, pass_seconds = run_pass(workdir / name, pass_regions, regions, checkpoints,
                                                                args.jobs)
            mutants += found
            outside.update(pass_outside)   # a file in both passes: the same mutants, counted once
            seconds += pass_seconds
    outside = sum(outside.values())
    summary = summarize(mutants, outside, seconds, args.jobs)
    summary["seconds_total"] = round(time.perf_counter() - began)
    (workdir / "mutation.json").write_text(json.dumps(
        {"summary": summary, "mutants": [vars(m) for m in mutants]}, indent=1))
    print(render(mutants, summary))
    if not args.no_write and not args.only:
        write_section(render(mutants, summary))
    graded = [summary["notebooks"][nb] for nb in GRADED_NOTEBOOKS if nb in summary["notebooks"]]
    met = all(result["score"] >= TARGET and result["unexplained"] == 0 for result in graded)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
