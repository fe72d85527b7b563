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
# # Demo - a tiny module for tito's tests
#
# > Scaling and clipping helpers.

# %%
#| default_exp optimization.demo

# %%
#| export
import numpy as np

# %% nbgrader={"grade": false, "grade_id": "scale", "solution": true}
#| export
def scale(x, factor):
    "Multiply every element of `x` by `factor`."
    ### BEGIN SOLUTION
    return np.asarray(x, dtype=float) * factor
    ### END SOLUTION

# %%
#| export
class Clipper:
    "Clip values into [lo, hi]."
    def __init__(self, lo, hi):
        self.lo, self.hi = lo, hi

    def __call__(self, x):
        ### BEGIN SOLUTION
        x = np.asarray(x, dtype=float)
        return np.minimum(np.maximum(x, self.lo), self.hi)
        ### END SOLUTION

# %%
assert np.allclose(scale([1, 2], 3), [3, 6])
assert np.allclose(Clipper(0, 1)([-1, 0.5, 2]), [0, 0.5, 1])
print("inline tests passed")
