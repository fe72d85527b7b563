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
# # Multi, going further - a second notebook for the same package
#
# > Robust scaling, exported into the package of multi_dev.py.

# %%
#| default_exp optimization.multi.robust

# %%
#| export
import numpy as np

from tinytorch.optimization.multi.stats import max_abs

# %%
#| export
def unit_max(x):
    "Divide `x` by its largest absolute value."
    return np.asarray(x, dtype=float) / max_abs(x)

# %%
assert np.allclose(unit_max([-4, 2]), [-1, 0.5])
print("inline tests passed")
