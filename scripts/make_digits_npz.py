"""Rebuild tinytorch/datasets/digits.npz from scikit-learn's copy of the UCI digits.

    pip download --no-deps scikit-learn -d /tmp/skl
    python scripts/make_digits_npz.py /tmp/skl/scikit_learn-*.whl

The wheel is a zip file holding sklearn/datasets/data/digits.csv.gz (1797 rows of 64 pixel
values 0..16 followed by the label). We store uint8 images (1797, 8, 8) and labels (1797,).
"""
import gzip
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

MEMBER = "sklearn/datasets/data/digits.csv.gz"
OUT = Path(__file__).resolve().parents[1] / "tinytorch" / "datasets" / "digits.npz"


def main(wheel: str) -> None:
    with zipfile.ZipFile(wheel) as archive:
        text = gzip.decompress(archive.read(MEMBER)).decode()
    table = np.loadtxt(io.StringIO(text), delimiter=",").astype(np.uint8)
    images, labels = table[:, :64].reshape(-1, 8, 8), table[:, 64]
    assert images.shape == (1797, 8, 8) and images.max() == 16 and set(labels) == set(range(10))
    np.savez_compressed(OUT, images=images, labels=labels)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main(sys.argv[1])
