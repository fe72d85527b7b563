"""Checkpoint 18, Compression: the capabilities a finished module 18 must have.

Each test is one graded capability, run by `tito checkpoint run 18` and `tito grade 18`
against the package as exported (tinytorch/optimization/compression/). Every assertion
names what is wrong, so a student sees which idea is missing, not just a traceback.
Points per capability are defined here, in POINTS (tests not listed are worth 1).
"""
import copy
import os
import sys

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.core import (SGD, Adam, Conv2d, DataLoader, Dropout, Flatten, LayerNorm, Linear, MaxPool2d, ReLU,
                            Sequential, Tensor, TensorDataset, TransformerBlock, no_grad)
from tinytorch.datasets import load_digits
from tinytorch.models import MLP, SimpleCNN, TokenMean, load_pretrained
from tinytorch.optimization import compression as C

POINTS = {
    "test_sparsity_metrics": 1,
    "test_magnitude_pruning_exact_count": 2,
    "test_global_pruning_single_threshold": 2,
    "test_taylor_importance": 1,
    "test_fine_tune_keeps_pruned_weights_zero": 2,
    "test_polynomial_schedule": 1,
    "test_progressive_prune": 1,
    "test_lottery_ticket_rewind": 2,
    "test_sensitivity_analysis": 1,
    "test_pruning_validation": 1,
    # section 3: structured pruning
    "test_filter_norm_ranking": 2,
    "test_structured_dependent_shapes": 2,
    "test_structured_equals_masked_original": 3,
    "test_structured_in_place_keeps_class_and_classifier": 1,
    "test_structured_refuses_skip_connection": 1,
    "test_structured_validation": 1,
    "test_prune_layers_drops_least_important_block": 2,
    # section 4: knowledge distillation
    "test_kd_loss_value": 3,
    "test_kd_gradient": 2,
    "test_kd_temperature_scaling": 1,
    "test_teacher_frozen": 2,
    "test_kd_validation": 1,
    # section 5: sparse inference and the pipeline
    "test_csr_from_dense_canonical": 2,
    "test_csr_matvec": 2,
    "test_csr_kernels_vectorized": 1,
    "test_csr_validation": 1,
    "test_quantized_csr_storage": 2,
    "test_to_sparse_equivalence": 3,
    "test_compressed_roundtrip": 2,
    "test_compressed_file_errors": 1,
}


# -------------------------------------------------------------------- Sections 1-2: metrics and pruning

def _loader(n=160):
    x, y = load_digits("train")
    return DataLoader(TensorDataset(x[:n], y[:n]), batch_size=32, shuffle=True, seed=0)


def _model(seed=0):
    tt.manual_seed(seed)
    return MLP(hidden=(24, 16))


def test_sparsity_metrics():
    model = Sequential(Linear(2, 2), ReLU(), Linear(2, 1))
    model[0].weight.data = np.array([[0, 1], [2, 0]], dtype=np.float32)
    model[0].bias.data = np.zeros(2, dtype=np.float32)
    model[2].weight.data = np.array([[3, 4]], dtype=np.float32)
    model[2].bias.data = np.array([5], dtype=np.float32)
    assert C.count_params(model) == 9, "count_params must count every parameter, weights and biases"
    assert C.count_params(model, nonzero=True) == 5, "count_params(nonzero=True) must count nonzero entries"
    assert C.measure_sparsity(model) == pytest.approx(2 / 6), \
        "measure_sparsity must be zeros / size over Linear/Conv2d weights only (biases excluded)"


def test_magnitude_pruning_exact_count():
    model = _model(1)
    weights = {name: layer.weight.data.copy() for name, layer in C.prunable_layers(model).items()}
    masks = C.MagnitudePruner(0.6, scope="layer").prune(model)
    for name, w in weights.items():
        k = round(0.6 * w.size)
        assert (~masks[name]).sum() == k, f"layer {name}: expected exactly round(0.6 * {w.size}) = {k} pruned weights"
        smallest = np.sort(np.abs(w).ravel())[:k]
        assert np.allclose(np.sort(np.abs(w[~masks[name]])), smallest), \
            f"layer {name}: the pruned weights must be the ones with the smallest |w|"
        assert np.all(C.prunable_layers(model)[name].weight.data[~masks[name]] == 0), \
            "prune() must set the pruned weights to zero in the model"


def test_global_pruning_single_threshold():
    model = _model(2)
    weights = [layer.weight.data.copy() for layer in C.prunable_layers(model).values()]
    masks = list(C.MagnitudePruner(0.8, scope="global").prune(model).values())
    pruned = np.concatenate([np.abs(w)[~m] for w, m in zip(weights, masks)])
    kept = np.concatenate([np.abs(w)[m] for w, m in zip(weights, masks)])
    assert pruned.size == round(0.8 * sum(w.size for w in weights)), \
        "global pruning must remove round(sparsity * total prunable weights)"
    assert pruned.max() <= kept.min(), "global pruning must rank all layers together (one threshold)"


def test_taylor_importance():
    tt.manual_seed(3)
    model = Sequential(Linear(4, 3))
    x, y = tt.Tensor(np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)), np.array([0, 1, 2, 0, 1])
    scores = C.taylor_importance(model, [(x, y)])["0"]
    tt.cross_entropy(model(x), y).backward()
    expected = np.abs(model[0].weight.data * model[0].weight.grad)
    assert np.allclose(scores, expected, rtol=1e-4, atol=1e-7), "Taylor importance must be |w * dL/dw|"


def test_fine_tune_keeps_pruned_weights_zero():
    loader = _loader()
    for name, make in (("SGD with momentum", lambda p: SGD(p, lr=0.1, momentum=0.9)), ("Adam", lambda p: Adam(p, lr=1e-2))):
        model = _model(4)
        optimizer = make(model.parameters())
        tt.train_epoch(model, loader, optimizer)
        masks = C.prune_magnitude(model, 0.7)
        C.fine_tune(model, masks, loader, epochs=1, optimizer=optimizer)
        for layer_name, layer in C.prunable_layers(model).items():
            assert np.all(layer.weight.data[~masks[layer_name]] == 0), \
                f"fine_tune with {name}: pruned weights of layer {layer_name} came back (mask the gradient and re-apply the mask after each step)"


def test_polynomial_schedule():
    schedule = C.PolynomialSchedule(0.0, 0.9, steps=3)
    expected = [0.9 - 0.9 * (1 - t / 3) ** 3 for t in (1, 2, 3)]
    assert np.allclose(list(schedule), expected), \
        f"PolynomialSchedule must follow s_t = s_f + (s_i - s_f)(1 - t/n)^3: expected {expected}, got {list(schedule)}"


def test_progressive_prune():
    model = _model(5)
    pruned, history = C.progressive_prune(model, 0.85, steps=3, train_loader=_loader(), epochs_per_step=1,
                                          verbose=False, return_history=True)
    assert pruned is model, "progressive_prune prunes the model it is given and returns it"
    assert C.measure_sparsity(model) == pytest.approx(0.85, abs=2e-3), "progressive_prune must end at target_sparsity"
    assert len(history) == 3 and history[0]["sparsity"] < history[-1]["sparsity"], \
        "progressive_prune must raise sparsity step by step"


def test_lottery_ticket_rewind():
    def build():
        tt.manual_seed(6)
        return MLP(hidden=(16,))

    init = build().state_dict()
    result = C.lottery_ticket(build, _loader(), rounds=2, rate_per_round=0.5, epochs=1, verbose=False)
    for name, keep in result["masks"].items():
        ticket = result["rewind_weights"][f"{name}.weight"]
        assert np.array_equal(ticket[keep], init[f"{name}.weight"][keep]), \
            "lottery_ticket must rewind the kept weights to their initial values"
        assert (~keep).mean() == pytest.approx(0.75, abs=0.01), \
            "each round must prune rate_per_round of the SURVIVING weights (2 rounds of 50% -> 75%)"


def test_sensitivity_analysis():
    model = _model(7)
    x, y = load_digits("test")
    loader = DataLoader(TensorDataset(x[:64], y[:64]), batch_size=64)
    before = model.state_dict()
    analysis = C.sensitivity_analysis(model, loader, sparsities=(0.5, 0.9))
    assert set(analysis["table"]) == set(C.prunable_layers(model)), "one row per prunable layer"
    assert all(np.array_equal(before[k], v) for k, v in model.state_dict().items()), \
        "sensitivity_analysis must restore the model's weights"


def test_pruning_validation():
    valid = C.MagnitudePruner(0.5).prune(_model())
    assert all((~m).sum() == round(0.5 * m.size) for m in valid.values()), "valid arguments must prune"
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="sparsity"):
            C.MagnitudePruner(bad)
    with pytest.raises(ValueError, match="scope"):
        C.MagnitudePruner(0.5, scope="channel")
    model = _model()
    model[1].weight.data[0, 0] = np.nan
    with pytest.raises(ValueError):
        C.prune_magnitude(model, 0.5)


# -------------------- Section 3: structured pruning

def _randomized(model, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.data = (scale * rng.standard_normal(p.shape)).astype(np.float32)
    return model.eval()


def _cnn():
    return _randomized(Sequential(Conv2d(1, 6, 3, padding=1), ReLU(), MaxPool2d(2),
                                  Conv2d(6, 8, 3, padding=1), ReLU(), MaxPool2d(2), Flatten(),
                                  Linear(32, 6), ReLU(), Dropout(0.2), Linear(6, 3)))


def _run(model, x):
    with no_grad():
        return model(Tensor(x)).data


def test_filter_norm_ranking():
    conv = Conv2d(1, 4, 2)
    conv.weight.data = np.array([[1, 1, 1, 1], [3, 0, 0, 0], [0, -1, 0, 0], [0, 0, 0, 1]],
                                dtype=np.float32).reshape(4, 1, 2, 2)
    keep = C.prune_structured(conv, 2)
    assert sorted(np.asarray(keep).tolist()) == [0, 1], \
        "prune_structured must drop the filters with the smallest L1 norm (sum |w| over the whole filter)"
    assert np.asarray(C.prune_structured(conv, 3, criterion="l1")).tolist() == [0], \
        "with criterion='l1' the filter [3,0,0,0] (L1 = 3) goes before [1,1,1,1] (L1 = 4)"
    assert np.asarray(C.prune_structured(conv, 3, criterion="l2")).tolist() == [1], \
        "with criterion='l2' the filter [1,1,1,1] (L2 = 2) goes before [3,0,0,0] (L2 = 3)"
    assert np.asarray(C.prune_structured(conv, 1)).tolist() == [0, 1, 2], \
        "kept indices must be sorted, and equal norms must keep the lower index"


def test_structured_dependent_shapes():
    net = _cnn()
    small = C.StructuredPruner(0.5).prune(net)
    assert small[0].weight.shape == (3, 1, 3, 3), "Conv2d filters were not removed (expected 3 of 6 kept)"
    assert small[3].weight.shape == (4, 3, 3, 3) and small[3].in_channels == 3, \
        "the next Conv2d must lose the input channels of the removed filters (and update in_channels)"
    assert small[7].weight.shape == (3, 16) and small[7].in_features == 16, \
        "after Flatten, each removed channel must remove its H*W feature columns from the Linear"
    assert small[10].weight.shape == (3, 3), "Linear -> Linear: the removed neurons' columns must go"


def test_structured_equals_masked_original():
    net = _cnn()
    pruner = C.StructuredPruner(0.5)
    small = pruner.prune(copy.deepcopy(net))     # prune works in place: keep `net` as the reference
    masked = copy.deepcopy(net)
    layers = dict(masked.named_modules())
    for name in ("0", "3", "7"):
        w = layers[name].weight.data
        norms = np.abs(w.reshape(len(w), -1)).sum(axis=1)
        drop = np.argsort(norms, kind="stable")[: len(w) // 2]
        layers[name].weight.data[drop] = 0.0
        layers[name].bias.data[drop] = 0.0
    x = np.random.default_rng(1).standard_normal((6, 1, 8, 8)).astype(np.float32)
    assert np.allclose(_run(small, x), _run(masked, x), atol=1e-5), \
        "the pruned model must compute exactly what the original computes with the removed units zeroed " \
        "(check the feature-group order after Flatten and that biases are sliced with their rows)"


def test_structured_in_place_keeps_class_and_classifier():
    net = _randomized(SimpleCNN(channels=(6, 8)))
    names = list(net.state_dict())
    small = C.StructuredPruner(0.5).prune(net)
    assert small is net, "StructuredPruner.prune must shrink the model it is given and return it (in place)"
    assert type(net) is SimpleCNN, "the pruned model must keep its class"
    assert net[0].out_channels == 3 and net[3].in_channels == 3, "prune must shrink the model's own layers"
    assert net[-1].out_features == 10, "the classifier's outputs (the classes) must never be pruned"
    assert list(net.state_dict()) == names, "the parameters must keep their names and order"


def test_structured_refuses_skip_connection():
    class SkipConnection(Sequential):
        """x + layers(x): its layer list is not its computation."""

        def forward(self, x):
            return x + super().forward(x)

    layers = [Linear(4, 4), ReLU(), Linear(4, 4)]
    skip = _randomized(SkipConnection(*layers))
    before = {k: v.copy() for k, v in skip.state_dict().items()}
    with pytest.raises(ValueError) as err:
        C.StructuredPruner(0.5).prune(skip)
    assert "SkipConnection" in str(err.value), "the refusal must name the class whose forward it cannot follow"
    assert all(np.array_equal(before[k], v) for k, v in skip.state_dict().items()), \
        "a refused model must be left untouched"
    plain = _randomized(Sequential(*copy.deepcopy(layers)))
    C.StructuredPruner(0.5).prune(plain)
    assert plain[0].weight.shape == (2, 4) and plain[2].weight.shape == (4, 2), \
        "the same layers in a plain Sequential must be pruned: only the custom forward is refused"


def test_structured_validation():
    for ratio in (1.0, -0.5):
        with pytest.raises(ValueError, match="ratio"):
            C.StructuredPruner(ratio)
    with pytest.raises(ValueError, match="criterion"):
        C.StructuredPruner(0.5, criterion="l7")
    with pytest.raises(ValueError):
        C.StructuredPruner(0.5).prune(Sequential(Flatten(), Linear(64, 10)))
    with pytest.raises(ValueError):
        C.prune_structured(Conv2d(1, 3, 2), 3)


def test_prune_layers_drops_least_important_block():
    net = _randomized(Sequential(TransformerBlock(8, 2), TransformerBlock(8, 2), LayerNorm(8), TokenMean(),
                                 Linear(8, 3)), seed=1, scale=0.5)
    for layer in (net[0].attn.proj, net[0].mlp[2]):  # block 0 now computes x + 0 + 0 = x
        layer.weight.data[:] = 0.0
        layer.bias.data[:] = 0.0
    x = np.random.default_rng(2).standard_normal((16, 5, 8)).astype(np.float32)
    original = copy.deepcopy(net)
    small, _ = C.prune_layers(net, 1, inputs=x, metric="output")
    assert small is net and len(net) == 4, "prune_layers must remove n blocks from the model itself and return it"
    assert np.allclose(_run(net, x), _run(original, x), atol=1e-5), \
        "the identity block (importance 0) is the one that must be removed"
    with pytest.raises(ValueError):
        C.prune_layers(net, 1, inputs=x)


# -------------------- Section 4: knowledge distillation

_S = np.array([[2.0, -1.0, 0.5], [0.0, 1.5, -0.5]])   # student logits
_T = np.array([[3.0, 0.0, -2.0], [-1.0, 2.5, 1.0]])   # teacher logits
_Y = np.array([0, 2])


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _kd(temperature, alpha, classes=3):
    return C.KnowledgeDistiller(Linear(4, classes), Linear(4, classes), temperature=temperature, alpha=alpha)


def test_kd_loss_value():
    T, alpha = 4.0, 0.7
    got = _kd(T, alpha).loss(Tensor(_S, dtype=np.float64), _T, _Y).item()
    p, q = _softmax(_T / T), _softmax(_S / T)
    kl = np.sum(p * np.log(p / q)) / len(_S)                  # batchmean
    ce = -np.mean(np.log(_softmax(_S)[np.arange(2), _Y]))
    expected = alpha * T * T * kl + (1 - alpha) * ce
    wrong = {
        "KD loss is missing the T**2 factor": alpha * kl + (1 - alpha) * ce,
        "KD loss has alpha and 1 - alpha swapped (alpha must weight the soft term)":
            (1 - alpha) * T * T * kl + alpha * ce,
        "KD loss uses KL(student || teacher); it must be KL(teacher || student)":
            alpha * T * T * np.sum(q * np.log(q / p)) / len(_S) + (1 - alpha) * ce,
        "KD loss averages the KL over classes too (reduction='mean'); use 'batchmean'":
            alpha * T * T * kl / 3 + (1 - alpha) * ce,
        "KD loss computes the hard cross-entropy at temperature T; it must use T = 1":
            alpha * T * T * kl - (1 - alpha) * np.mean(np.log(q[np.arange(2), _Y])),
    }
    if abs(got - expected) > 1e-8:
        for message, value in wrong.items():
            assert abs(got - value) > 1e-5, message
    assert got == pytest.approx(expected, abs=1e-8), f"KD loss is {got}, expected {expected}"
    # float32 student with the teacher logits given as a Tensor
    got32 = _kd(T, alpha).loss(Tensor(_S), Tensor(_T), Tensor(_Y)).item()
    assert got32 == pytest.approx(expected, abs=1e-5), "KD loss wrong for float32 Tensors"
    huge = _kd(1.0, 0.5).loss(Tensor(_S * 1e4), _T * 1e4, _Y).item()
    assert np.isfinite(huge), "KD loss overflows for large logits: use log_softmax"


def test_kd_gradient():
    rng = np.random.default_rng(0)
    s, t, y = rng.standard_normal((4, 5)), 2 * rng.standard_normal((4, 5)), np.array([0, 3, 1, 4])
    T, alpha = 3.0, 0.6
    kd = _kd(T, alpha, classes=5)
    student = Tensor(s, requires_grad=True, dtype=np.float64)
    teacher = Tensor(t, requires_grad=True, dtype=np.float64)
    kd.loss(student, teacher, y).backward()
    assert teacher.grad is None, "gradient reached the teacher logits: treat them as constants"
    assert student.grad is not None, "no gradient reached the student logits"
    eps, numeric = 1e-6, np.zeros_like(s)
    for index in np.ndindex(*s.shape):
        up, down = s.copy(), s.copy()
        up[index] += eps
        down[index] -= eps
        numeric[index] = (kd.loss(Tensor(up, dtype=np.float64), t, y).item()
                          - kd.loss(Tensor(down, dtype=np.float64), t, y).item()) / (2 * eps)
    assert np.allclose(student.grad, numeric, atol=1e-7), \
        "KD gradient w.r.t. the student logits disagrees with finite differences"
    closed = (alpha * T * (_softmax(s / T) - _softmax(t / T)) + (1 - alpha) * (_softmax(s) - np.eye(5)[y])) / 4
    assert np.allclose(student.grad, closed, atol=1e-10), "KD gradient differs from its closed form"


def test_kd_temperature_scaling():
    rng = np.random.default_rng(1)
    s, t = rng.standard_normal((4, 10)), rng.standard_normal((4, 10))
    norms = []
    for T in (1.0, 2.0, 4.0, 8.0):
        student = Tensor(s, requires_grad=True, dtype=np.float64)
        _kd(T, 1.0, classes=10).loss(student, t, np.zeros(4, dtype=np.int64)).backward()
        norms.append(np.linalg.norm(student.grad))
    assert max(norms) / min(norms) < 1.5, \
        f"soft-term gradient should keep its scale across T = 1..8 (T**2 factor): {np.round(norms, 4)}"


def test_teacher_frozen():
    x, y = load_digits("train")
    loader = DataLoader(TensorDataset(x[:96], y[:96]), batch_size=32, shuffle=True, seed=0)
    tt.manual_seed(0)
    teacher = Sequential(Flatten(), Linear(64, 16), ReLU(), Dropout(0.5), Linear(16, 10))
    student = MLP(hidden=(8,))
    before = teacher.state_dict()
    student_before = student.state_dict()
    modes = []
    teacher.register_forward_hook(lambda module, inputs, output: modes.append(module.training))
    teacher.train()
    trained, history = C.distill(teacher, student, loader, epochs=2, lr=1e-2, verbose=False, return_history=True)
    assert trained is student, "distill must train the student it is given and return it"
    assert modes, "the teacher was never called"
    assert not any(modes), "the teacher must run in eval mode during distillation"
    assert teacher.training, "the teacher's training mode must be restored afterwards"
    for name, p in teacher.named_parameters():
        assert np.array_equal(p.data, before[name]), f"teacher weight {name} changed during distillation"
        assert p.grad is None, f"teacher weight {name} received a gradient (run it under no_grad)"
    assert any(not np.array_equal(p, student_before[n]) for n, p in student.state_dict().items()), \
        "the student did not train"
    assert len(history["loss"]) == 2 and len(history["accuracy"]) == 2, "history must hold one entry per epoch"
    with pytest.raises(ValueError, match="teacher"):
        C.KnowledgeDistiller(teacher, student).train(loader, 1, Adam(teacher.parameters()), verbose=False)


def test_kd_validation():
    loss = _kd(4.0, 0.5).loss(Tensor(_S), _T, _Y).item()
    assert np.isfinite(loss) and loss > 0, "valid arguments must give a finite, positive KD loss"
    teacher, student = MLP(hidden=(8,)), MLP(hidden=(4,))
    for T in (0.0, -2.0):
        with pytest.raises(ValueError, match="temperature"):
            C.KnowledgeDistiller(teacher, student, temperature=T)
    for alpha in (-0.5, 1.5):
        with pytest.raises(ValueError, match="alpha"):
            C.KnowledgeDistiller(teacher, student, alpha=alpha)
    with pytest.raises(ValueError) as err:
        C.KnowledgeDistiller(teacher, MLP(hidden=(4,), num_classes=7))
    assert "10" in str(err.value) and "7" in str(err.value), \
        "a class-count mismatch must name both counts"
    kd = C.KnowledgeDistiller(Sequential(Flatten()), Sequential(Flatten()))
    with pytest.raises(ValueError) as err:
        kd.loss(Tensor(np.zeros((2, 6))), np.zeros((2, 9)), np.array([0, 1]))
    assert "6" in str(err.value) and "9" in str(err.value), \
        "logits with different class counts must raise ValueError naming both counts"


# -------------------- Section 5: sparse inference and the compression pipeline

_W = np.array([[0, 5, 0, 0],
               [0, 0, 0, 0],      # an empty row: indptr must repeat
               [1, 0, 0, 2],
               [0, 0, 0, 3]], dtype=np.float32)


def _pruned(name, sparsity=0.9):
    model = load_pretrained(name)
    C.prune_magnitude(model, sparsity)
    return model


def test_csr_from_dense_canonical():
    A = C.CSRMatrix.from_dense(_W)
    assert A.data.tolist() == [5, 1, 2, 3], f"data must list the nonzeros row by row, got {A.data.tolist()}"
    assert A.indices.tolist() == [1, 0, 3, 3], f"indices must be the column of each value, got {A.indices.tolist()}"
    assert A.indptr.tolist() == [0, 1, 1, 3, 4], (
        f"indptr must be [0, 1, 1, 3, 4] (length rows + 1, starting at 0, repeated for the empty row); "
        f"got {A.indptr.tolist()}: off by one?")
    assert A.nnz == 4 and A.shape == (4, 4), "nnz or shape is wrong"
    assert np.array_equal(A.to_dense(), _W), "to_dense does not give back the matrix"
    W = np.array([[0.0, 0.0, 7.0, 0.0, -1.0], [2.0, 0.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    B = C.CSRMatrix.from_dense(W)
    assert B.indices.tolist() == [2, 4, 0], "columns must be sorted within each row (canonical CSR)"
    assert B.nbytes == B.data.nbytes + B.indices.nbytes + B.indptr.nbytes, "nbytes must be data + indices + indptr"
    E = C.CSRMatrix.from_dense(np.zeros((3, 2), np.float32))
    assert E.nnz == 0 and E.indptr.tolist() == [0, 0, 0, 0], "an all-zero matrix has nnz 0 and indptr all 0"


def test_csr_matvec():
    rng = np.random.default_rng(0)
    W = rng.standard_normal((12, 9)).astype(np.float32) * (rng.random((12, 9)) < 0.3)
    W[[0, 6, 11]] = 0.0
    for M in (W, _W, np.zeros((3, 4), np.float32), np.ones((3, 4), np.float32), np.zeros((0, 4), np.float32)):
        A = C.CSRMatrix.from_dense(M)
        x = rng.standard_normal(M.shape[1]).astype(np.float32)
        X = rng.standard_normal((M.shape[1], 5)).astype(np.float32)
        y = C.csr_matvec(A, x)
        assert y.shape == (M.shape[0],), f"csr_matvec must return shape (rows,), got {y.shape}"
        assert np.allclose(y, M.astype(np.float64) @ x, atol=1e-5), "csr_matvec differs from the dense product"
        assert np.allclose(C.csr_matmul(A, X), M.astype(np.float64) @ X, atol=1e-5), \
            "csr_matmul differs from the dense product (empty rows? reduceat?)"
        assert np.allclose(A.matvec(x), y) and np.allclose(A.matmul(X), M @ X, atol=1e-5), \
            "the matvec/matmul methods must agree with the kernels"


def _lines_run_in_package(fn) -> int:
    """How many lines of the compression package's modules run during fn() (sys.settrace)."""
    package_dir = os.path.dirname(os.path.abspath(C.__file__)) + os.sep
    count = 0

    def tracer(frame, event, arg):
        nonlocal count
        if not os.path.abspath(frame.f_code.co_filename).startswith(package_dir):
            return None
        if event == "line":
            count += 1
        return tracer

    sys.settrace(tracer)
    try:
        fn()
    finally:
        sys.settrace(None)
    return count


def test_csr_kernels_vectorized():
    def work(rows):
        W = np.zeros((rows, 4), np.float32)
        W[np.arange(rows), np.arange(rows) % 4] = 2.0
        W[rows // 2] = 0.0                                     # an empty row too
        A = C.CSRMatrix.from_dense(W)
        y = C.csr_matvec(A, np.arange(4, dtype=np.float32))
        Y = C.csr_matmul(A, np.ones((4, 2), np.float32))
        assert np.allclose(y, W @ np.arange(4)) and np.allclose(Y, W @ np.ones((4, 2))), "wrong result on a tall matrix"

    small, large = _lines_run_in_package(lambda: work(40)), _lines_run_in_package(lambda: work(4000))
    assert small > 0, "no line of the compression package was traced: this check would prove nothing"
    assert large <= small + 5, (f"from_dense + csr_matvec + csr_matmul ran {small} lines of Python for 40 rows "
                                f"but {large} for 4000 rows: a Python loop over rows or nonzeros?")


def test_csr_validation():
    good = dict(data=[5.0, 1.0], indices=[1, 0], indptr=[0, 1, 1, 2], shape=(3, 2))
    assert np.array_equal(C.CSRMatrix(**good).to_dense(), [[0, 5], [0, 0], [1, 0]]), \
        "a valid CSRMatrix must hold its values (to_dense)"
    assert np.array_equal(C.CSRMatrix.from_dense(_W).to_dense(), _W), "from_dense -> to_dense must round-trip"
    cases = [("indptr", dict(indptr=[0, 1, 2])), ("indptr", dict(indptr=[1, 1, 1, 2])),
             ("indptr", dict(indptr=[0, 2, 1, 2])), ("indptr", dict(indptr=[0, 1, 1, 3])),
             ("indices", dict(indices=[1, 2])), ("indices", dict(indices=[1.0, 0.0])),
             ("data", dict(data=[5.0])), ("shape", dict(shape=(3, -1)))]
    for name, change in cases:
        with pytest.raises(ValueError) as info:
            C.CSRMatrix(**{**good, **change})
        assert name in str(info.value), f"CSRMatrix({change}) must raise ValueError naming {name!r}"


def test_quantized_csr_storage():
    rng = np.random.default_rng(1)
    W = rng.standard_normal((40, 200)).astype(np.float32) * (rng.random((40, 200)) < 0.2)
    Q = C.CSRMatrix.from_dense(W).quantize("row")
    assert Q.values.dtype == np.int8, "values must be stored as int8"
    assert Q.indices.dtype == np.uint8, f"200 columns fit uint8 indices, got {Q.indices.dtype}"
    assert Q.indptr.dtype == np.uint16, f"indptr holds up to nnz={Q.nnz} (needs uint16), got {Q.indptr.dtype}"
    assert Q.scale.shape == (40,) and Q.scale.dtype == np.float32, "per-row scales must be float32, one per row"
    err = np.abs(Q.dequantize().to_dense() - W)
    assert (err <= Q.scale[:, None] / 2 * (1 + 1e-6)).all(), "int8 round-trip error exceeds scale / 2"
    assert Q.nbytes == Q.values.nbytes + Q.scale.nbytes + Q.indices.nbytes + Q.indptr.nbytes, "wrong nbytes"
    wide = C.CSRMatrix.from_dense(np.ones((1, 300), np.float32)).quantize()
    assert wide.indices.dtype == np.uint16, "300 columns need uint16 indices"


def test_to_sparse_equivalence():
    x = Tensor(load_digits("test")[0][:32])
    for name in ("mlp", "cnn"):
        dense = _pruned(name)
        sparse = C.to_sparse(dense)
        assert not any(isinstance(m, (Linear, Conv2d)) for m in sparse.modules()), \
            f"to_sparse left a dense Linear/Conv2d in the 90%-pruned {name}"
        assert any(isinstance(m, Linear) for m in dense.modules()), "to_sparse must not modify its input"
        with no_grad():
            want, got = dense(x).data, sparse(x).data
        assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max(), f"sparse {name} outputs differ from dense"
    nested = Sequential(Sequential(Linear(4, 4), ReLU()), Linear(4, 2))
    nested[0][0].weight.data[:, :3] = 0.0
    out = C.to_sparse(nested, min_sparsity=0.5)
    assert isinstance(out[0][0], C.SparseLinear), "to_sparse must reach layers inside nested Sequentials"
    assert isinstance(out[1], Linear), "a layer below min_sparsity must stay dense"
    with pytest.raises(ValueError):
        C.to_sparse(nested, min_sparsity=1.5)


def test_compressed_roundtrip(tmp_path):
    model = C.to_sparse(_pruned("mlp"), quantize=True)
    path = tmp_path / "mlp.npz"
    C.save_compressed(model, path)
    with np.load(path, allow_pickle=False) as archive:
        dtypes = {k: archive[k].dtype for k in archive.files}
    assert np.dtype(np.int8) in dtypes.values(), "sparse values must be saved as int8"
    assert not any(d == np.float32 and "indices" in k for k, d in dtypes.items()), "indices saved as floats"
    loaded = C.load_compressed(path)
    x = Tensor(load_digits("test")[0][:32])
    with no_grad():
        assert np.array_equal(loaded(x).data, model(x).data), "the loaded model computes something else"
    dense_bytes = 4 * sum(p.size for p in load_pretrained("mlp").parameters())
    assert C.model_nbytes_compressed(model) * 10 <= dense_bytes, "90% sparse int8 CSR must be >= 10x smaller"


def test_compressed_file_errors(tmp_path):
    model = C.to_sparse(_pruned("mlp"), quantize=True)
    path = tmp_path / "mlp.npz"
    C.save_compressed(model, path)
    raw = path.read_bytes()
    bad = tmp_path / "bad.npz"
    for content in (raw[: len(raw) // 2], b"", b"definitely not a zip"):
        bad.write_bytes(content)
        with pytest.raises(ValueError):
            C.load_compressed(bad)
    with np.load(path, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    arrays.pop("sparse:1:indptr")
    np.savez(bad, **arrays)
    with pytest.raises(ValueError):
        C.load_compressed(bad)
