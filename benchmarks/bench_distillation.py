"""Experiment 5: knowledge distillation (Hinton, Vinyals & Dean 2015). A student with
<= 1/10 of the teacher's parameters, trained on labels only vs distilled from the teacher
(`distill`), over several seeds; a temperature sweep T in {1, 2, 4, 8} and an alpha sweep.

Protocol (the notebook's): for every seed, the labels-only and the distilled student start
from the SAME initial weights (`tt.manual_seed`), see the SAME batches (loader seed), for
the SAME number of optimizer steps with Adam at the same learning rate. Two data regimes:
a scarce-label one (10 labelled images per class) and the whole training set (1,438
images); the teacher was trained on the whole set. alpha = 0 is plain label training.

    python -m benchmarks.bench_distillation [--quick] [--out DIR]
"""
from __future__ import annotations

import sys

import numpy as np

import tinytorch as tt
from tinytorch.core import DataLoader, TensorDataset
from tinytorch.datasets import digits_loaders, load_digits
from tinytorch.models import MLP, load_pretrained
from tinytorch.optimization.compression import count_params, distill

from . import common

NAME = "distillation"
STUDENTS = {"MLP(32)": (32,), "MLP(64)": (64,)}  # hidden sizes; MLP(64) is the largest MLP within 1/10 of the MLP teacher
SWEEP_STUDENT = "MLP(64)"
PRESET = {"temperature": 8.0, "alpha": 0.9, "lr": 1e-2}  # the notebook's setting
KEEP, BATCH = 0.97, 32


def settings(quick: bool) -> dict:
    if quick:
        return {"teachers": ["mlp"], "students": ["MLP(64)"], "subsets": [100, "all"], "seeds": [0, 1], "steps": 100,
                "temperatures": [1.0, 8.0], "alphas": [0.5, 0.9], "sweep_teacher": "mlp"}
    return {"teachers": ["mlp", "cnn"], "students": ["MLP(32)", "MLP(64)"], "subsets": [100, "all"],
            "seeds": [0, 1, 2, 3, 4], "steps": 500,
            "temperatures": [1.0, 2.0, 4.0, 8.0], "alphas": [0.1, 0.25, 0.5, 0.75, 0.9, 1.0],
            "sweep_teacher": "mlp"}


def labelled_subset(n, x_train, y_train, seed: int = 0):
    """n // 10 training images per class (a seeded choice), or everything for n == "all"."""
    if n == "all":
        return x_train, y_train
    rng = np.random.default_rng(seed)
    index = np.concatenate([rng.permutation(np.flatnonzero(y_train == c))[: n // 10] for c in range(10)])
    return x_train[index], y_train[index]


def train_student(student_name, teacher, images, labels, seed: int, steps: int, temperature=None, alpha=None,
                  lr: float = PRESET["lr"], test_loader=None) -> float:
    """Test accuracy of MLP(STUDENTS[student_name]) trained ~`steps` Adam steps from seed `seed`:
    on labels only if temperature is None, else distilled from `teacher`."""
    epochs = int(np.ceil(steps / np.ceil(len(images) / BATCH)))
    tt.manual_seed(seed)
    student = MLP(hidden=STUDENTS[student_name])
    loader = DataLoader(TensorDataset(images, labels), batch_size=BATCH, shuffle=True, seed=seed)
    if temperature is None:
        tt.fit(student, loader, tt.Adam(student.parameters(), lr=lr), epochs, verbose=False)
    else:
        distill(teacher, student, loader, epochs, temperature=temperature, alpha=alpha, lr=lr, verbose=False)
    return tt.evaluate(student, test_loader)


def summary(accs: list) -> dict:
    a = np.asarray(accs, dtype=float)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
            "min": float(a.min()), "max": float(a.max()), "per_seed": a.tolist()}


def run(quick: bool, out) -> dict:
    watch = common.Stopwatch()
    cfg = settings(quick)
    x_train, y_train = load_digits("train")
    _, test_loader = digits_loaders(batch_size=BATCH, seed=0)
    student_params = {name: count_params(MLP(hidden=hidden)) for name, hidden in STUDENTS.items()}
    runs, comparisons, teachers = [], [], {}

    def record(**row):
        runs.append(row)
        return row["accuracy"]

    def measure(student, tname, teacher, images, labels, seed, T=None, alpha=0.0):
        return record(student=student, teacher=tname, subset=len(images), seed=seed,
                      mode="labels only" if T is None else "distilled", temperature=T, alpha=alpha,
                      accuracy=train_student(student, teacher, images, labels, seed, cfg["steps"], T, alpha,
                                             test_loader=test_loader))

    for tname in cfg["teachers"]:
        teacher = load_pretrained(tname)
        teachers[tname] = {"params": count_params(teacher), "accuracy": tt.evaluate(teacher, test_loader)}
        for student in cfg["students"]:
            for subset in cfg["subsets"]:
                images, labels = labelled_subset(subset, x_train, y_train)
                label_runs = [r for r in runs if r["student"] == student and r["subset"] == len(images)
                              and r["mode"] == "labels only"]  # the labels-only run does not depend on the teacher
                label_only = [r["accuracy"] for r in label_runs] or \
                    [measure(student, None, None, images, labels, seed) for seed in cfg["seeds"]]
                distilled = [measure(student, tname, teacher, images, labels, seed, PRESET["temperature"],
                                     PRESET["alpha"]) for seed in cfg["seeds"]]
                row = {"teacher": tname, "teacher_params": teachers[tname]["params"],
                       "teacher_accuracy": teachers[tname]["accuracy"], "student": student,
                       "student_params": student_params[student], "labelled_images": len(images),
                       "labels_only": summary(label_only), "distilled": summary(distilled),
                       "wins": int(sum(d > l for d, l in zip(distilled, label_only))), "seeds": len(cfg["seeds"])}
                row["gain"] = row["distilled"]["mean"] - row["labels_only"]["mean"]
                row["kept_fraction"] = row["distilled"]["mean"] / row["teacher_accuracy"]
                row["param_fraction"] = row["student_params"] / row["teacher_params"]
                comparisons.append(row)
                common.log(f"  teacher {tname}, student {student}, {len(images)} labelled: labels only "
                           f"{row['labels_only']['mean']:.2%} ± {row['labels_only']['std']:.2%}, distilled "
                           f"{row['distilled']['mean']:.2%} ± {row['distilled']['std']:.2%} (wins {row['wins']}/{row['seeds']})")

    # sweeps with the primary teacher and student: T at the preset alpha, alpha at the preset T
    tname, student = cfg["sweep_teacher"], SWEEP_STUDENT
    teacher = load_pretrained(tname)
    sweeps = {"temperature": [], "alpha": []}
    for subset in cfg["subsets"]:
        images, labels = labelled_subset(subset, x_train, y_train)
        for key, values in (("temperature", cfg["temperatures"]), ("alpha", cfg["alphas"])):
            for value in values:
                T = value if key == "temperature" else PRESET["temperature"]
                alpha = value if key == "alpha" else PRESET["alpha"]
                done = [r["accuracy"] for r in runs if r["teacher"] == tname and r["student"] == student
                        and r["subset"] == len(images) and r["temperature"] == T and r["alpha"] == alpha]
                accs = done or [measure(student, tname, teacher, images, labels, seed, T, alpha)
                                for seed in cfg["seeds"]]
                sweeps[key].append({"labelled_images": len(images), "temperature": T, "alpha": alpha, **summary(accs)})
            common.log(f"  {len(images)} labelled, {key} sweep: " + ", ".join(
                f"{r[key]:g}: {r['mean']:.2%}" for r in sweeps[key] if r["labelled_images"] == len(images)))
    plot(comparisons, sweeps, cfg, out, quick)

    headlines, targets = [], []
    for c in comparisons:
        where = (f"teacher {c['teacher'].upper()} ({c['teacher_params']:,} params, {common.pct(c['teacher_accuracy'])}) -> "
                 f"student {c['student']} ({c['student_params']:,} = {c['param_fraction']:.1%}), "
                 f"{c['labelled_images']} labelled images")
        headlines.append(common.headline(
            where, f"distilled {common.pct(c['distilled']['mean'])} ± {common.pct(c['distilled']['std'])} vs labels only "
                   f"{common.pct(c['labels_only']['mean'])} ± {common.pct(c['labels_only']['std'])} "
                   f"({c['gain']:+.2%}, wins {c['wins']}/{c['seeds']} seeds); keeps {c['kept_fraction']:.1%} of the teacher"))
        if c["student"] == SWEEP_STUDENT or len(cfg["students"]) == 1:
            met = c["param_fraction"] <= 0.1 and c["kept_fraction"] >= KEEP and c["gain"] > 0
            targets.append(common.target(
                f"distilled student with <= 1/10 of the teacher's parameters keeps >= 97% of its accuracy and "
                f"beats labels-only on the mean of {c['seeds']} seeds ({where})",
                f"{c['kept_fraction']:.1%} kept, gain {c['gain']:+.2%} (wins {c['wins']}/{c['seeds']})", met))
    for key in ("temperature", "alpha"):
        for subset in sorted({r["labelled_images"] for r in sweeps[key]}):
            pts = [r for r in sweeps[key] if r["labelled_images"] == subset]
            headlines.append(common.headline(f"{key} sweep ({tname.upper()} -> {student}), {subset} labelled images",
                                             ", ".join(f"{r[key]:g}: {common.pct(r['mean'])}" for r in pts)))
    notes = ["Students: " + ", ".join(f"{n} = MLP(hidden={h}), {student_params[n]:,} parameters"
                                      for n, h in STUDENTS.items()) +
             f". Preset: T = {PRESET['temperature']:g}, alpha = {PRESET['alpha']}, Adam lr {PRESET['lr']}, batch {BATCH}, "
             f"about {cfg['steps']} optimizer steps per run (epochs = steps / batches per epoch).",
             "The labels-only student does not depend on the teacher: it is trained once per student, data regime and seed.",
             "Spread = sample standard deviation over seeds (the plot's bars: min to max); one test image is 0.28%.",
             "The sweeps are evaluated on the test split: their best point is a selection on the test set, "
             "so only the preset rows are unbiased estimates."]
    results = {"student_params": student_params[SWEEP_STUDENT], "students": {n: {"hidden": list(h), "params": student_params[n]}
                                                                             for n, h in STUDENTS.items()},
               "teacher": teachers[cfg["sweep_teacher"]], "teachers": teachers, "seeds": cfg["seeds"],
               "preset": PRESET, "comparisons": comparisons, "sweeps": sweeps, "runs": runs}
    return common.finish(NAME, out, quick, watch, cfg, results, headlines, targets, notes)


def plot(comparisons: list, sweeps: dict, cfg: dict, out, quick: bool) -> None:
    fig, axes = common.figure(ncols=3, width=5.2)
    ax = axes[0]
    labels = []
    for x, c in enumerate(comparisons):
        for i, key in enumerate(("labels_only", "distilled")):
            s = c[key]
            ax.errorbar([x + 0.3 * i], [s["mean"]], yerr=[[s["mean"] - s["min"]], [s["max"] - s["mean"]]],
                        fmt="os"[i], color=f"C{i}", capsize=4, label=key.replace("_", " ") if x == 0 else None)
        ax.plot([x - 0.15, x + 0.45], [c["teacher_accuracy"]] * 2, "k-", lw=1, label="teacher" if x == 0 else None)
        ax.plot([x - 0.15, x + 0.45], [KEEP * c["teacher_accuracy"]] * 2, "k:", lw=1,
                label="97% of teacher" if x == 0 else None)
        labels.append(f"{c['teacher'].upper()}→{c['student']}\n{c['labelled_images']} labels")
    ax.set_xticks([i + 0.15 for i in range(len(labels))])
    ax.set_xticklabels(labels, fontsize=6, rotation=30)
    ax.set_ylabel("test accuracy (mean, min-max over seeds)")
    ax.set_title("labels only vs distilled (preset T, alpha)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    for ax, key in zip(axes[1:], ("temperature", "alpha")):
        for i, subset in enumerate(sorted({r["labelled_images"] for r in sweeps[key]})):
            pts = [r for r in sweeps[key] if r["labelled_images"] == subset]
            ax.errorbar([r[key] for r in pts], [r["mean"] for r in pts], yerr=[r["std"] for r in pts],
                        fmt="o-", capsize=3, color=f"C{i + 2}", label=f"distilled, {subset} labels")
            base = [c for c in comparisons if c["teacher"] == cfg["sweep_teacher"] and c["student"] == SWEEP_STUDENT
                    and c["labelled_images"] == subset]
            if base:
                ax.axhline(base[0]["labels_only"]["mean"], color=f"C{i + 2}", ls=":",
                           label=f"labels only, {subset} labels")
        ax.set_xlabel({"temperature": f"temperature T (alpha = {PRESET['alpha']})",
                       "alpha": f"alpha, weight of the soft term (T = {PRESET['temperature']:g})"}[key])
        if key == "temperature":
            ax.set_xscale("log", base=2)
        ax.set_ylabel("test accuracy (mean ± std over seeds)")
        ax.set_title(f"{key} sweep, {cfg['sweep_teacher'].upper()} → {SWEEP_STUDENT}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    common.save_figure(fig, out, NAME, quick)


def main(argv=None) -> dict:
    return common.cli_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
