"""`tito demo 18_compression`: the module's hands-on projects, end to end, in about a minute.

On the shipped digits models, everything measured in this run:
  1. prune the pretrained SimpleCNN gradually to 90% sparsity and run it with CSR kernels;
  2. structured-prune it (2/3 of the channels removed) and fine-tune;
  3. distill the pretrained TinyTransformer into a SimpleCNN(8, 16), against the same student
     trained on labels only (same seed, same batches, same epochs).
Prints one table: params, nonzeros, bytes, accuracy and latency (one batch of the 359 test
images), before -> after.
"""
import time

import tinytorch as tt
from tinytorch.core import format_table
from tinytorch.datasets import digits_loaders
from tinytorch.models import SimpleCNN, load_pretrained
from tinytorch.optimization.compression import (
    StructuredPruner, distill, fine_tune, model_summary, progressive_prune, to_sparse)

STUDENT_CHANNELS, STUDENT_EPOCHS = (8, 16), 8


def main() -> None:
    start = time.perf_counter()
    _, test_loader = digits_loaders()
    rows = [model_summary("dense SimpleCNN (pretrained)", load_pretrained("cnn"), test_loader)]

    print("1/3 magnitude pruning to 90% (3 steps, fine-tuning in between)")
    # every pruner works in place and returns the model it was given (as torch.nn.utils.prune)
    pruned = progressive_prune(load_pretrained("cnn"), target_sparsity=0.9, steps=3,
                               train_loader=digits_loaders(32, seed=0)[0], epochs_per_step=1, scope="global",
                               val_loader=test_loader)
    rows.append(model_summary("magnitude 90%, dense kernels", pruned, test_loader))
    rows.append(model_summary("magnitude 90%, CSR int8", to_sparse(pruned, quantize=True), test_loader))

    print("2/3 structured pruning: remove 2/3 of the filters, fine-tune 4 epochs")
    small = StructuredPruner(2 / 3).prune(load_pretrained("cnn"))
    optimizer = tt.Adam(small.parameters(), lr=1e-3)
    for lr in (1e-3, 1e-3, 3e-4, 1e-4):  # step decay: settle at a small learning rate
        optimizer.lr = lr
        fine_tune(small, {}, digits_loaders(32, seed=0)[0], epochs=1, optimizer=optimizer)
    rows.append(model_summary("structured 2/3 + fine-tune", small, test_loader))

    print(f"3/3 distillation: TinyTransformer -> SimpleCNN{STUDENT_CHANNELS}, {STUDENT_EPOCHS} epochs")
    teacher = load_pretrained("transformer")
    rows.append(model_summary("teacher TinyTransformer", teacher, test_loader))
    for label, use_teacher in (("student from labels only", False), ("student distilled", True)):
        tt.manual_seed(0)
        student = SimpleCNN(channels=STUDENT_CHANNELS)
        loader = digits_loaders(32, seed=0)[0]
        if use_teacher:
            distill(teacher, student, loader, epochs=STUDENT_EPOCHS, temperature=4.0, alpha=0.9, lr=1e-2,
                    verbose=False)
        else:
            tt.fit(student, loader, tt.Adam(student.parameters(), lr=1e-2), STUDENT_EPOCHS, verbose=False)
        rows.append(model_summary(f"SimpleCNN{STUDENT_CHANNELS} {label}", student, test_loader))

    print()
    print(format_table(rows))
    dense, sparse, structured = rows[0], rows[2], rows[3]
    print(f"\nmagnitude 90% + int8 CSR: {dense['bytes'] / sparse['bytes']:.1f}x fewer bytes, "
          f"{dense['latency ms'] / sparse['latency ms']:.2f}x the dense speed")
    print(f"structured 2/3: {dense['latency ms'] / structured['latency ms']:.1f}x faster, "
          f"{dense['params'] / structured['params']:.1f}x fewer parameters")
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
