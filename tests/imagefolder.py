"""The one small ImageFolder generator of the tests, the bad-input sweep and the cluster bench.

Imported as a plain module (pytest puts tests/ on sys.path; the scripts run from tests/ or put
it there themselves).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def make_imagefolder(root: Path, classes: int = 2, train: int = 10, val: int = 6,
                     shift: int = 80) -> Path:
    """Random-ish 32 px JPEGs ``<root>/{train,val}/class<c>/<i:03d>.jpg``, one colour channel
    raised by ``shift`` per class (something to learn; a small shift makes it hard enough that
    candidates differ in top-1). Seeded: the same arguments give the same bytes."""
    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("val", val)):
        for c in range(classes):
            d = root / split / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
                img[..., c % 3] = np.clip(img[..., c % 3].astype(int) + shift, 0, 255)
                Image.fromarray(img).save(d / f"{i:03d}.jpg", quality=90)
    return root
