"""Checkpoint 99: what the demo module can do (one test per capability)."""
import numpy as np

from tinytorch.optimization.demo import Clipper, scale

POINTS = {"test_can_scale": 2, "test_can_clip": 3}


def test_can_scale():
    assert np.allclose(scale([1.0, -2.0], 2), [2.0, -4.0])


def test_can_clip():
    assert np.allclose(Clipper(-1, 1)([-5, 0, 5]), [-1, 0, 1])
