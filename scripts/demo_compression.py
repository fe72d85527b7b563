"""`tito demo 18_compression`: the module's hands-on projects, end to end, in about a minute.

On the shipped digits models, everything measured in this run:
  1. prune the pretrained SimpleCNN gradually to 90% sparsity and run it with CSR kernels;
  2. structured-prune it (2/3 of the channels removed) and fine-tune;
  3. distill the pretrained TinyTransformer into a SimpleCNN(8, 16), against the same student
     trained on labels only (same seed, same batches, same epochs).
Prints one table: params, nonzeros, bytes, accuracy and latency (one batch of the 359 test
images). Latencies are timed at the end, every model interleaved, the fastest of five medians
after a warm-up, with BLAS pinned to one thread when threadpoolctl is installed (the speed-ups
are also given with the default BLAS threads).
"""
import contextlib
import importlib.util
import time

import tinytorch as tt
from tinytorch.core import best_median_times, format_table, no_grad
from tinytorch.datasets import digits_loaders
from tinytorch.models import SimpleCNN, load_pretrained
from tinytorch.optimization.compression import (
    StructuredPruner, distill, fine_tune, model_summary, progressive_prune, to_sparse)

STUDENT_CHANNELS, STUDENT_EPOCHS = (8, 16), 8


def one_blas_thread():
    """BLAS pinned to one thread if threadpoolctl is installed (a second BLAS thread on a busy
    2-core machine makes a forward pass swing by 10x and more), else the default threads."""
    if importlib.util.find_spec("threadpoolctl") is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits
    return threadpool_limits(limits=1, user_api="blas")


def latencies(models: dict, batch, threads) -> dict:
    """{name: ms per forward pass on `batch`}: models interleaved, fastest of five medians."""
    fns = {name: (lambda model=model: model(batch)) for name, model in models.items()}
    with no_grad(), threads():
        return {name: 1e3 * seconds for name, seconds in best_median_times(fns, 5, 7).items()}


def main() -> None:
    start = time.perf_counter()
    _, test_loader = digits_loaders()
    models = {"dense SimpleCNN (pretrained)": load_pretrained("cnn")}

    print("1/3 magnitude pruning to 90% (3 steps, fine-tuning in between)")
    # every pruner works in place and returns the model it was given (as torch.nn.utils.prune)
    pruned = progressive_prune(load_pretrained("cnn"), target_sparsity=0.9, steps=3,
                               train_loader=digits_loaders(32, seed=0)[0], epochs_per_step=1, scope="global",
                               val_loader=test_loader)
    models["magnitude 90%, dense kernels"] = pruned
    models["magnitude 90%, CSR int8"] = to_sparse(pruned, quantize=True)

    print("2/3 structured pruning: remove 2/3 of the filters, fine-tune 4 epochs")
    small = StructuredPruner(2 / 3).prune(load_pretrained("cnn"))
    optimizer = tt.Adam(small.parameters(), lr=1e-3)
    for lr in (1e-3, 1e-3, 3e-4, 1e-4):  # step decay: settle at a small learning rate
        optimizer.lr = lr
        fine_tune(small, {}, digits_loaders(32, seed=0)[0], epochs=1, optimizer=optimizer)
    models["structured 2/3 + fine-tune"] = small

    print(f"3/3 distillation: TinyTransformer -> SimpleCNN{STUDENT_CHANNELS}, {STUDENT_EPOCHS} epochs")
    teacher = load_pretrained("transformer")
    models["teacher TinyTransformer"] = teacher
    for label, use_teacher in (("student from labels only", False), ("student distilled", True)):
        tt.manual_seed(0)
        student = SimpleCNN(channels=STUDENT_CHANNELS)
        loader = digits_loaders(32, seed=0)[0]
        if use_teacher:
            distill(teacher, student, loader, epochs=STUDENT_EPOCHS, temperature=4.0, alpha=0.9, lr=1e-2,
                    verbose=False)
        else:
            tt.fit(student, loader, tt.Adam(student.parameters(), lr=1e-2), STUDENT_EPOCHS, verbose=False)
        models[f"SimpleCNN{STUDENT_CHANNELS} {label}"] = student

    print("timing every model (interleaved, BLAS pinned to one thread when threadpoolctl is installed)")
    batch = next(iter(test_loader))[0]
    pinned = latencies(models, batch, one_blas_thread)
    default = latencies(models, batch, contextlib.nullcontext)
    rows = [dict(model_summary(name, model, test_loader, repeats=1), **{"latency ms": pinned[name]})
            for name, model in models.items()]
    print()
    print(format_table(rows))
    dense, sparse, structured = (rows[0], rows[2], rows[3])
    speed = {label: (times[dense["technique"]] / times[sparse["technique"]],
                     times[dense["technique"]] / times[structured["technique"]])
             for label, times in (("one thread", pinned), ("default threads", default))}
    print(f"\nmagnitude 90% + int8 CSR: {dense['bytes'] / sparse['bytes']:.1f}x fewer bytes, "
          f"{speed['one thread'][0]:.2f}x the dense speed ({speed['default threads'][0]:.2f}x with the "
          "default BLAS threads)")
    print(f"structured 2/3: {speed['one thread'][1]:.2f}x faster ({speed['default threads'][1]:.2f}x with the "
          f"default BLAS threads), {dense['params'] / structured['params']:.1f}x fewer parameters")
    print(f"({time.perf_counter() - start:.0f} s)")
    print("\nNext: `tito module start 18` writes your own copy of the lesson (exercises blanked) to "
          "workspace/18_compression/;\nopen it with `jupyter lab workspace/18_compression/compression_dev.ipynb`, "
          "then `tito module complete 18` scores it.")


if __name__ == "__main__":
    main()
