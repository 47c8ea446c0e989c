"""Build the embedded proxy dataset (search/proxy/embedded/cifar10_subset.npz) from CIFAR-10 JPEGs.

Usage (the exact command that produced the shipped file):
    python search/proxy/embedded/build_embedded.py /path/to/cifar10 \
        --train-per-class 500 --val-per-class 100 --out search/proxy/embedded/cifar10_subset.npz

The source is CIFAR-10 (Krizhevsky, 2009, "Learning Multiple Layers of Features from Tiny
Images") in ImageFolder layout: <src>/train/<class>/*.jpg and <src>/val/<class>/*.jpg, 32x32.
The subset is deterministic: classes in sorted order, and per class the first N files by sorted
file name. The output holds uint8 NHWC images, int64 labels, the class names and the file names
that went in (provenance travels with the data). Nothing reads the source at run time.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys

import numpy as np
from PIL import Image

from search.proxy.images import class_dirs
from search_space.cli_types import number_type
from search_space.io import atomic_write

EXTS = (".jpg", ".jpeg", ".png")


def _split(root: str, split: str, per_class: int, classes: list[str]):
    xs, ys, names = [], [], []
    for label, cls in enumerate(classes):
        d = os.path.join(root, split, cls)
        files = sorted(f for f in os.listdir(d) if f.lower().endswith(EXTS))[:per_class]
        if len(files) < per_class:
            raise ValueError(f"{d}: has {len(files)} images, need {per_class}")
        for f in files:
            with Image.open(os.path.join(d, f)) as im:
                a = np.asarray(im.convert("RGB"), dtype=np.uint8)
            if a.shape != (32, 32, 3):
                raise ValueError(f"{os.path.join(d, f)}: shape {a.shape}, expected 32x32 RGB")
            xs.append(a)
            ys.append(label)
            names.append(f"{split}/{cls}/{f}")
    return np.stack(xs), np.asarray(ys, dtype=np.int64), names


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src", help="CIFAR-10 root with train/ and val/ class folders")
    ap.add_argument("--train-per-class", type=number_type(int, 1), default=500)
    ap.add_argument("--val-per-class", type=number_type(int, 1), default=100)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "cifar10_subset.npz"))
    a = ap.parse_args(argv)
    for split in ("train", "val"):
        if not os.path.isdir(os.path.join(a.src, split)):
            print(f"error: {os.path.join(a.src, split)}: not a directory "
                  "(expected an ImageFolder root with train/ and val/)", file=sys.stderr)
            return 2
    classes = class_dirs(os.path.join(a.src, "train"))  # hidden directories are no classes
    tx, ty, tn = _split(a.src, "train", a.train_per_class, classes)
    vx, vy, vn = _split(a.src, "val", a.val_per_class, classes)
    arrays = dict(train_x=tx, train_y=ty, val_x=vx, val_y=vy, classes=np.asarray(classes),
                  train_files=np.asarray(tn), val_files=np.asarray(vn),
                  source=np.asarray("CIFAR-10 (Krizhevsky 2009), ImageFolder JPEGs"))

    def write(tmp):
        with open(tmp, "wb") as f:   # a file object: savez would append ".npz" to a tmp name
            np.savez_compressed(f, **arrays)

    atomic_write(a.out, write)
    h = hashlib.sha256(open(a.out, "rb").read()).hexdigest()
    print(f"wrote {a.out}: train {tx.shape}, val {vx.shape}, {len(classes)} classes, "
          f"{os.path.getsize(a.out) / 1e6:.2f} MB, sha256 {h}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
