"""Symmetric int8 quantization."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinytorch.core import Linear, Sequential, dequantize_int8, int8_scale, model_nbytes, quantization_error, quantize_int8


def test_per_tensor_round_trip_error_bound():
    w = np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32)
    q, scale = quantize_int8(w)
    assert q.dtype == np.int8 and q.shape == w.shape
    assert scale.shape == () and scale == pytest.approx(np.abs(w).max() / 127)
    err = np.abs(dequantize_int8(q, scale) - w)
    assert err.max() <= scale / 2 * (1 + 1e-5)
    assert quantization_error(w) == pytest.approx(err.max())
    assert q.max() == 127 or q.min() == -127  # the peak maps to +-127


@pytest.mark.parametrize("axis,shape", [(0, (4, 1, 1, 1)), (1, (1, 3, 1, 1)), (-1, (1, 1, 1, 5))])
def test_per_channel_scales(axis, shape):
    w = np.random.default_rng(1).standard_normal((4, 3, 2, 5)).astype(np.float32)
    w[1] *= 100  # channels with very different ranges
    q, scale = quantize_int8(w, axis=axis)
    assert scale.shape == shape
    reduce_axes = tuple(a for a in range(4) if a != axis % 4)
    np.testing.assert_allclose(scale, np.abs(w).max(axis=reduce_axes, keepdims=True) / 127, rtol=1e-6)
    assert np.all(np.abs(dequantize_int8(q, scale) - w) <= scale / 2 * (1 + 1e-5))


def test_per_channel_is_more_accurate_than_per_tensor_for_uneven_channels():
    w = np.random.default_rng(2).standard_normal((4, 16)).astype(np.float32)
    w[0] *= 1000
    small = slice(1, None)
    per_tensor = np.abs(dequantize_int8(*quantize_int8(w)) - w)[small].max()
    per_channel = np.abs(dequantize_int8(*quantize_int8(w, axis=0)) - w)[small].max()
    assert per_channel < per_tensor / 10


def test_zeros_stay_exactly_zero():
    w = np.random.default_rng(3).standard_normal((6, 6)).astype(np.float32)
    w[w < 0.3] = 0.0
    for axis in (None, 0):
        q, scale = quantize_int8(w, axis=axis)
        assert np.all(q[w == 0] == 0)
        assert np.all(dequantize_int8(q, scale)[w == 0] == 0)


def test_all_zero_tensor_and_all_zero_channel():
    q, scale = quantize_int8(np.zeros((3, 4)))
    assert np.all(q == 0) and scale == 1.0
    assert quantization_error(np.zeros((3, 4))) == 0.0
    w = np.ones((2, 3), dtype=np.float32)
    w[1] = 0
    q, scale = quantize_int8(w, axis=0)
    np.testing.assert_allclose(scale.ravel(), [1 / 127, 1.0], rtol=1e-6)
    np.testing.assert_allclose(dequantize_int8(q, scale), w, rtol=1e-6)
    assert np.all(q[1] == 0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_raise(bad):
    w = np.ones(5)
    w[2] = bad
    with pytest.raises(ValueError):
        quantize_int8(w)
    with pytest.raises(ValueError):
        quantization_error(w)


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=3, max_side=6),
                  elements=st.floats(-1e4, 1e4, width=32, allow_subnormal=False)),
       st.sampled_from([None, 0, -1]))
def test_round_trip_error_is_at_most_half_a_step(w, axis):
    q, scale = quantize_int8(w, axis=axis)
    assert q.dtype == np.int8 and np.all(np.abs(q.astype(int)) <= 127)
    err = np.abs(dequantize_int8(q, scale).astype(np.float64) - w)
    bound = np.broadcast_to(scale, w.shape) / 2
    assert np.all(err <= bound * (1 + 1e-5) + 1e-30)


def test_int8_scale_matches_formula():
    w = np.array([[0.5, -2.54], [1.27, 0.0]])
    assert int8_scale(w) == pytest.approx(2.54 / 127)
    np.testing.assert_allclose(int8_scale(w, axis=0).ravel(), [2.54 / 127, 1.27 / 127], rtol=1e-6)


def test_model_nbytes():
    model = Sequential(Linear(10, 5), Linear(5, 2, bias=False))
    assert model_nbytes(model) == (55 + 10) * 4
    assert model_nbytes(model, bytes_per_value=1) == 65


def test_int8_scale_keeps_the_error_bound_for_subnormal_weights():
    tiny = np.float32(np.finfo(np.float32).smallest_subnormal)
    # 940 * 2**-149 / 127 = 7.4 * 2**-149 would round DOWN to 7 units: 940 / 7 > 127 would clip
    for peak_units in (1, 126, 127, 940, 30000):
        w = np.array([peak_units, -3, 0], dtype=np.float32) * tiny
        q, scale = quantize_int8(w)
        assert scale > 0 and np.abs(q).max() <= 127
        err = np.abs(dequantize_int8(q, scale).astype(np.float64) - w.astype(np.float64))
        assert (err <= float(scale) / 2 + 1e-60).all(), (peak_units, err.max(), scale)
