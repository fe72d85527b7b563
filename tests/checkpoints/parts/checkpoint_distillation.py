"""Checkpoint 18, part: knowledge distillation (section 4)."""
import numpy as np
import pytest

import tinytorch as tt
from tinytorch.core import Adam, DataLoader, Dropout, Flatten, Linear, ReLU, Sequential, Tensor, TensorDataset
from tinytorch.datasets import load_digits
from tinytorch.models import MLP
from tinytorch.optimization import compression as C

POINTS = {
    "test_kd_loss_value": 3,
    "test_kd_gradient": 2,
    "test_kd_temperature_scaling": 1,
    "test_teacher_frozen": 2,
    "test_kd_validation": 1,
}

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
    result = C.distill(teacher, student, loader, epochs=2, lr=1e-2, verbose=False)
    assert isinstance(result, tuple) and result[0] is student, "distill must return (student, history)"
    history = result[1]
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
