"""Proxy data: a deterministic subset, decoded and resized once into a memory-mapped cache.

``prepare_data`` runs in the driver before Ray starts. It picks the subset (classes spread
evenly over the sorted class list, the first N files by sorted name per class), decodes and
resizes it once into ``<cache_dir>/<dataset_id>/`` as raw ``.npy`` files (uint8 NHWC images,
int64 labels) plus ``meta.json``. Every trial then memory-maps those files: no trial decodes a
JPEG, and the OS page cache shares one copy of the pixels between trial processes.

The cache directory is built under a temporary name and renamed into place (a directory
rename is atomic on POSIX), so concurrent builders are safe: the first rename wins, the others
find the finished cache and discard their copy.
"""
from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from search_space.errors import NotFoundError, UsageError
from search_space.io import atomic_directory, canonical_json, remove_stale_temporaries
from search_space.lazy import lazy_import

from . import images
from .fidelity import Fidelity

Image = lazy_import("PIL.Image")

EMBEDDED_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "embedded",
                             "cifar10_subset.npz")
IMAGE_EXTS = images.IMAGE_EXTS
CACHE_VERSION = 1  # bump when the decode/resize recipe changes: old caches stop matching
ARRAYS = ("train_x", "train_y", "val_x", "val_y")


@dataclass
class ProxyData:
    """A prepared subset. Arrays are opened lazily as read-only memmaps of ``path``'s files.

    Pickling carries only the path and the metadata (a few hundred bytes); the unpickled copy
    in a Ray worker re-opens the memmaps by path.
    """

    path: str  # the cache directory (train_x.npy, train_y.npy, val_x.npy, val_y.npy, meta.json)
    dataset_id: str  # hash of source identity + subset + resolution + cache recipe
    num_classes: int
    class_names: tuple[str, ...]
    resolution: int
    source: str  # "embedded:cifar10" or the ImageFolder root as given
    _arrays: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def _get(self, name: str) -> np.ndarray:
        a = self._arrays.get(name)
        if a is None:
            a = np.load(os.path.join(self.path, f"{name}.npy"), mmap_mode="r")
            self._arrays[name] = a
        return a

    @property
    def train_x(self) -> np.ndarray:
        return self._get("train_x")

    @property
    def train_y(self) -> np.ndarray:
        return self._get("train_y")

    @property
    def val_x(self) -> np.ndarray:
        return self._get("val_x")

    @property
    def val_y(self) -> np.ndarray:
        return self._get("val_y")

    @property
    def files(self) -> list[str]:
        return [os.path.join(self.path, f"{n}.npy") for n in ARRAYS]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_arrays"] = {}  # never pickle pixels: the receiver memory-maps by path
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._arrays = {}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able identity (what a trial record stores about its data)."""
        return {"dataset_id": self.dataset_id, "source": self.source,
                "num_classes": self.num_classes, "resolution": self.resolution,
                "train_images": int(self.train_y.shape[0]), "val_images": int(self.val_y.shape[0])}


# -- subset selection ---------------------------------------------------------------------------
def spread_classes(all_classes: list[str], n: int) -> list[str]:
    """n classes evenly spaced over the sorted list (all of them if n == len)."""
    k = len(all_classes)
    return [all_classes[(i * k) // n] for i in range(n)]


def _list_images(d: str) -> list[str]:
    return images.list_images(d, "data source")


def _check_root(root: str) -> None:
    images.check_layout(root, ("train", "val"), "data source")


def _select_imagefolder(root: str, fid: Fidelity) -> tuple[list[str], dict[str, list[str]]]:
    """Chosen classes and, per split, relative file paths in label order. Validates counts."""
    train_classes = images.class_dirs(os.path.join(root, "train"), "data source")
    if len(train_classes) < fid.classes:
        raise UsageError(f"data source {root}: train/ has {len(train_classes)} class folders, "
                         f"fidelity.classes={fid.classes} needs at least that many")
    classes = spread_classes(train_classes, fid.classes)
    chosen: dict[str, list[str]] = {"train": [], "val": []}
    for split, n in (("train", fid.images_per_class), ("val", fid.val_per_class)):
        for c in classes:
            d = os.path.join(root, split, c)
            if not os.path.isdir(d):
                raise UsageError(f"data source {root}: missing {split}/{c}/ (val/ must have the "
                                 "same class folders as train/)")
            files = _list_images(d)
            if len(files) < n:
                raise UsageError(f"data source {d}: {len(files)} images, fidelity needs {n} per "
                                 "class")
            chosen[split] += [f"{split}/{c}/{f}" for f in files[:n]]
    return classes, chosen


# -- decoding -------------------------------------------------------------------------------------
def _decode(args: tuple[str, int]) -> np.ndarray:
    """Decode one image (search.proxy.images: a broken one is refused, naming the file)."""
    path, res = args
    return images.decode_square(path, res)


def _decode_many(paths: list[str], res: int, workers: int, out: np.ndarray | None = None) -> np.ndarray:
    """Decode ``paths`` into ``out`` (a new array if None; the cache file's memmap when
    building a cache, so a large subset never sits in the builder's memory), ``workers``
    processes in parallel."""
    if out is None:
        out = np.empty((len(paths), res, res, 3), dtype=np.uint8)
    jobs = [(p, res) for p in paths]
    if workers <= 1 or len(paths) < 256:
        for i, j in enumerate(jobs):
            out[i] = _decode(j)
    else:
        with ProcessPoolExecutor(workers) as ex:
            for i, a in enumerate(ex.map(_decode, jobs, chunksize=64)):
                out[i] = a
    return out


def _resize_array(x: np.ndarray, res: int) -> np.ndarray:
    """Resize a uint8 NHWC array (the embedded set) to res, bicubic, as _decode would."""
    if x.shape[1] == res and x.shape[2] == res:
        return np.ascontiguousarray(x)
    return np.stack([np.asarray(Image.fromarray(a).resize((res, res), Image.BICUBIC)) for a in x])


# -- the cache ------------------------------------------------------------------------------------
def _write_cache(final: str, arrays: dict[str, np.ndarray], meta: dict[str, Any],
                 decode: dict[str, tuple[list[str], int, int]] | None = None) -> None:
    """Write the arrays and meta.json under a temporary name, then rename into place.

    ``decode`` maps array names to (image paths, resolution, workers): those are decoded in
    parallel straight into their .npy files (opened as memmaps; the same bytes np.save writes).
    Temporaries of builders that died (a killed run) are removed first: a decoded ImageNet
    subset is gigabytes.
    """
    remove_stale_temporaries(os.path.dirname(final))
    with atomic_directory(final) as tmp:
        for name, a in arrays.items():
            np.save(os.path.join(tmp, f"{name}.npy"), a)
        for name, (paths, res, workers) in (decode or {}).items():
            out = np.lib.format.open_memmap(os.path.join(tmp, f"{name}.npy"), mode="w+",
                                            dtype=np.uint8, shape=(len(paths), res, res, 3))
            _decode_many(paths, res, workers, out)
            out.flush()
            del out
        with open(os.path.join(tmp, "meta.json"), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=1, sort_keys=True)


def _hash(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:16]


_EMBEDDED_DIGEST: str | None = None


def _embedded_digest() -> str:
    global _EMBEDDED_DIGEST
    if _EMBEDDED_DIGEST is None:
        h = hashlib.sha256()
        with open(EMBEDDED_PATH, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _EMBEDDED_DIGEST = h.hexdigest()
    return _EMBEDDED_DIGEST


def prepare_data(source: str | None, fidelity: Fidelity, cache_dir: str = "runs/cache",
                 workers: int | None = None) -> ProxyData:
    """Build (or find) the cached subset for ``fidelity`` and return a picklable handle.

    source None -> the embedded CIFAR-10 subset shipped with the package; else an ImageFolder
    root with train/<class>/ and val/<class>/. Call it in the driver, before Ray starts.
    """
    subset = fidelity.subset_dict()
    if source is None:
        if not os.path.isfile(EMBEDDED_PATH):
            raise NotFoundError(f"embedded dataset {EMBEDDED_PATH}: missing (rebuild it with "
                                    "search/proxy/embedded/build_embedded.py)")
        identity = {"embedded": _embedded_digest()}
        src_name = "embedded:cifar10"
        chosen = None
    else:
        root = os.path.abspath(os.path.expanduser(source))
        _check_root(root)
        classes, chosen = _select_imagefolder(root, fidelity)
        # Identity = the chosen relative paths and their sizes, not the absolute root: the same
        # dataset copied to another machine keeps its id (and so its results stay comparable).
        sizes = [os.path.getsize(os.path.join(root, p)) for s in ("train", "val") for p in chosen[s]]
        identity = {"files": hashlib.sha256(
            json.dumps([chosen, sizes], separators=(",", ":")).encode()).hexdigest()}
        src_name = source
    dataset_id = _hash({"v": CACHE_VERSION, "source": identity, "subset": subset})
    final = os.path.join(os.path.abspath(cache_dir), dataset_id)

    if not os.path.isfile(os.path.join(final, "meta.json")):
        res = fidelity.resolution
        if source is None:
            with np.load(EMBEDDED_PATH) as z:
                all_classes = [str(c) for c in z["classes"]]
                if fidelity.classes > len(all_classes):
                    raise UsageError(f"fidelity.classes={fidelity.classes}: the embedded set has "
                                     f"{len(all_classes)} classes")
                classes = spread_classes(all_classes, fidelity.classes)
                arrays: dict[str, np.ndarray] = {}
                for split, n in (("train", fidelity.images_per_class), ("val", fidelity.val_per_class)):
                    x, y = z[f"{split}_x"], z[f"{split}_y"]
                    idx = []
                    for label, c in enumerate(classes):
                        ci = np.flatnonzero(y == all_classes.index(c))  # stored in sorted-name order
                        if len(ci) < n:
                            raise UsageError(f"fidelity.{'images' if split == 'train' else 'val'}"
                                             f"_per_class={n}: the embedded set has {len(ci)} "
                                             f"{split} images per class")
                        idx.append(ci[:n])
                    sel = np.concatenate(idx)
                    arrays[f"{split}_x"] = _resize_array(x[sel], res)
                    arrays[f"{split}_y"] = np.repeat(np.arange(len(classes), dtype=np.int64), n)
                files, decode = None, None
        else:
            workers = workers if workers is not None else (os.cpu_count() or 1)
            arrays, decode = {}, {}
            for split, n in (("train", fidelity.images_per_class), ("val", fidelity.val_per_class)):
                decode[f"{split}_x"] = ([os.path.join(root, p) for p in chosen[split]], res, workers)
                arrays[f"{split}_y"] = np.repeat(np.arange(len(classes), dtype=np.int64), n)
            files = chosen
        meta = {"dataset_id": dataset_id, "source": src_name, "classes": classes,
                "subset": subset, "cache_version": CACHE_VERSION, "files": files}
        _write_cache(final, arrays, meta, decode)

    with open(os.path.join(final, "meta.json"), encoding="utf-8") as f:
        meta = json.load(f)
    return ProxyData(path=final, dataset_id=dataset_id, num_classes=len(meta["classes"]),
                     class_names=tuple(meta["classes"]), resolution=subset["resolution"],
                     source=src_name)
