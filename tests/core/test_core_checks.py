"""tinytorch.core.checks: what each check accepts (and returns) and what it refuses, naming the
argument. The oracle is the documented rule, spelled out case by case."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinytorch.core import (Linear, Tensor, best_median_times, check_choice, check_finite_weights,
                            check_fraction, check_index_array, check_int, check_loader,
                            check_matrix_shape, check_number, check_real_array)


@pytest.mark.parametrize("value, minimum, want", [(3, None, 3), (np.int64(3), None, 3), (np.uint8(0), 0, 0),
                                                  (-2, None, -2), (5, 5, 5)])
def test_check_int_accepts_python_and_numpy_integers(value, minimum, want):
    got = check_int("steps", value, minimum)
    assert got == want and type(got) is int


@pytest.mark.parametrize("value, minimum", [(True, None), (np.bool_(False), None), (3.0, None), ("3", None),
                                            (None, None), (4, 5), (np.int32(-1), 0)])
def test_check_int_refuses_by_name(value, minimum):
    with pytest.raises(ValueError, match="steps must be an integer"):
        check_int("steps", value, minimum)


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_check_number_accepts_exactly_the_finite_floats(x):
    if math.isfinite(x):
        assert check_number("lr", x) == x and type(check_number("lr", np.float64(x))) is float
    else:
        with pytest.raises(ValueError, match="lr must be a finite number"):
            check_number("lr", x)


@given(st.floats(min_value=-2, max_value=2))
def test_check_fraction_interval(x):
    for high_inclusive in (False, True):
        inside = 0 <= x <= 1 if high_inclusive else 0 <= x < 1
        if inside:
            assert check_fraction("sparsity", x, high_inclusive) == x
        else:
            with pytest.raises(ValueError, match=r"sparsity must be a number in \[0, 1"):
                check_fraction("sparsity", x, high_inclusive)


def test_check_fraction_refuses_non_numbers():
    for value in (True, "0.5", None, float("nan")):
        with pytest.raises(ValueError, match="alpha must be a number in"):
            check_fraction("alpha", value)


def test_check_choice_lists_what_is_allowed():
    assert check_choice("scope", "layer", ("layer", "global")) == "layer"
    for value in ("Layer", None, 1):
        with pytest.raises(ValueError, match=r"scope must be one of \['layer', 'global'\]"):
            check_choice("scope", value, ("layer", "global"))


def test_check_loader_refuses_none_and_empty():
    check_loader("loader", [(np.zeros((1, 2)), np.zeros(1))])
    check_loader("loader", iter([]))  # no length: cannot be known empty in advance
    with pytest.raises(ValueError, match="loader must be an iterable"):
        check_loader("loader", None)
    with pytest.raises(ValueError, match="loader is empty"):
        check_loader("loader", [])


def test_check_finite_weights_names_the_layer():
    good, bad = Linear(2, 2), Linear(2, 2)
    bad.weight.data[0, 1] = np.inf
    check_finite_weights({"0": good})
    with pytest.raises(ValueError, match="layer '3' has NaN or inf weights"):
        check_finite_weights({"0": good, "3": bad})


def test_check_matrix_shape():
    assert check_matrix_shape("shape", (np.int64(2), 0)) == (2, 0)
    for value in ((2,), (2, -1), (2.0, 3), (True, 3), 5, None, (1, 2, 3)):
        with pytest.raises(ValueError, match=r"shape must be a pair \(rows, cols\)"):
            check_matrix_shape("shape", value)


def test_check_index_and_real_arrays():
    ids = np.array([0, 2], dtype=np.uint16)
    assert check_index_array("indices", ids) is ids
    for value, words in ((np.array([[0]]), "1-D"), (np.array([0.0]), "integer dtype")):
        with pytest.raises(ValueError, match=f"indices must .*{words}"):
            check_index_array("indices", value)
    assert check_real_array("x", Tensor(np.ones(2))).dtype.kind == "f"
    assert check_real_array("x", [[True, False]]).dtype == np.bool_
    for value in (np.array([1j]), np.array(["a"]), np.array([None], dtype=object)):
        with pytest.raises(ValueError, match="x must be an array of real numbers"):
            check_real_array("x", value)


def test_best_median_times_interleaves_and_keeps_the_minimum():
    calls = []
    times = best_median_times({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                              rounds=2, repeats=1)
    # median_time warms up once, then times `repeats` calls: a a b b per round, rounds interleaved
    assert calls == ["a", "a", "b", "b"] * 2 and set(times) == {"a", "b"}
    assert all(0 <= t < 1 for t in times.values())
