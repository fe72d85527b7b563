# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Multi - one notebook, several modules
#
# > Summary statistics, scaling and clipping, exported as a subpackage.

# %%
#| default_exp optimization.multi.stats

# %%
#| export
import numpy as np

# %%
#| export
def mean_abs(x):
    "Mean absolute value of `x` (a float)."
    return float(np.mean(np.abs(np.asarray(x, dtype=float))))

# %%
#| export optimization.multi.scaling
import numpy as np

from tinytorch.optimization.multi.stats import mean_abs

# %%
#| exporti optimization.multi.scaling
EPS = 1e-12

# %%
#| export optimization.multi.scaling
def normalize(x):
    "Divide `x` by its mean absolute value."
    return np.asarray(x, dtype=float) / (mean_abs(x) + EPS)

# %%
#| export optimization.multi.stats
def max_abs(x):
    "Largest absolute value of `x` (a float)."
    return float(np.max(np.abs(np.asarray(x, dtype=float))))

# %%
#| export optimization.multi.clip
import numpy as np


class Clipper:
    "Clip values into [lo, hi]."
    def __init__(self, lo, hi):
        self.lo, self.hi = lo, hi

    def __call__(self, x):
        return np.minimum(np.maximum(np.asarray(x, dtype=float), self.lo), self.hi)

# %%
assert mean_abs([-1, 3]) == 2.0 and max_abs([-4, 3]) == 4.0
assert np.allclose(normalize([-1, 3]), [-0.5, 1.5])
assert np.allclose(Clipper(0, 1)([-1, 0.5, 2]), [0, 0.5, 1])
print("inline tests passed")
