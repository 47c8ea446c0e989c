"""Tiny inputs shared by the tests, the bad-input sweep and the cluster bench: the one small
ImageFolder generator and the tiny search setting (fidelity, space, baseline).

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


# A search that trains in seconds: 2 classes, 8 + 4 images each, 1 epoch; a space of 16 members.
TINY_FIDELITY = {"classes": 2, "images_per_class": 8, "val_per_class": 4, "epochs": 1,
                 "batch_size": 8, "eval_batch_size": 8, "warmup_epochs": 0.0}
TINY_SPACE = {"depths": [[1], [1], [1, 2], [1, 2]], "widths": [[16], [16, 24], [32, 48], [32, 48]],
              "mlp_ratios": [2.0], "attn_modes": ["none", "last1"], "resolutions": [224]}
TINY_BASELINE = {"depths": [1, 1, 1, 1], "widths": [16, 16, 32, 32],
                 "mlp_ratios": [2.0, 2.0, 2.0, 2.0], "attn_blocks": [0, 0, 0, 1]}
