"""Proxy data cache: deterministic subset, identical rebuilds, atomic concurrent builds,
bad-path errors, cheap pickling that re-opens the memmap."""
from __future__ import annotations

import os
import pickle
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
from PIL import Image

from search.proxy.data import EMBEDDED_PATH, ProxyData, _decode, prepare_data, spread_classes
from search.proxy.fidelity import DEFAULT_FIDELITY, Fidelity

CLASS_COLORS = [(220, 30, 30), (30, 200, 30), (30, 30, 220), (220, 220, 30), (200, 30, 200)]


def make_imagefolder(root, n_classes=4, n_train=6, n_val=3, size=(40, 48), seed=0) -> str:
    """A tiny ImageFolder of JPEGs: each class a noisy colour blob (learnable), odd sizes."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        for c in range(n_classes):
            d = os.path.join(root, split, f"class_{c:02d}")
            os.makedirs(d, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 90, (size[1], size[0], 3)).astype(np.int16)
                y0, x0 = rng.integers(0, size[1] // 2), rng.integers(0, size[0] // 2)
                img[y0:y0 + size[1] // 2, x0:x0 + size[0] // 2] += np.array(CLASS_COLORS[c % 5]) // 2
                Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(
                    os.path.join(d, f"{i:04d}.jpg"), quality=90)
    return str(root)


def prepared_imagefolder(root, fidelity, **sizes) -> ProxyData:
    """``make_imagefolder(root/src, **sizes)`` prepared for ``fidelity`` (cache in root/cache):
    the toy data of the proxy and supernet tests."""
    src = make_imagefolder(os.path.join(root, "src"), **sizes)
    return prepare_data(src, fidelity, cache_dir=os.path.join(root, "cache"))


def small(**kw) -> Fidelity:
    base = dict(classes=4, images_per_class=4, val_per_class=2, resolution=32)
    base.update(kw)
    return Fidelity(**base)


def test_subset_is_first_sorted_files_and_labels(tmp_path):
    src = make_imagefolder(tmp_path / "src")
    d = prepare_data(src, small(), cache_dir=str(tmp_path / "cache"))
    assert d.num_classes == 4 and d.class_names == tuple(f"class_{c:02d}" for c in range(4))
    assert d.train_x.shape == (16, 32, 32, 3) and d.train_x.dtype == np.uint8
    assert d.val_x.shape == (8, 32, 32, 3)
    assert d.train_y.dtype == np.int64 and d.train_y.tolist() == [c for c in range(4) for _ in range(4)]
    assert isinstance(d.train_x, np.memmap)
    # Image 5 = class 1, file 0001.jpg; the last val image = class 3, file 0001.jpg.
    np.testing.assert_array_equal(d.train_x[5], _decode((os.path.join(src, "train/class_01/0001.jpg"), 32)))
    np.testing.assert_array_equal(d.val_x[7], _decode((os.path.join(src, "val/class_03/0001.jpg"), 32)))
    assert not np.array_equal(d.train_x[0], d.train_x[1])


def test_class_spread_and_resolution(tmp_path):
    src = make_imagefolder(tmp_path / "src", n_classes=5)
    d = prepare_data(src, small(classes=2, resolution=64), cache_dir=str(tmp_path / "cache"))
    assert d.class_names == ("class_00", "class_02") and d.train_x.shape == (8, 64, 64, 3)
    assert spread_classes(list("abcdefghij"), 3) == ["a", "d", "g"]


def test_rebuild_is_identical_and_cache_is_reused(tmp_path):
    src = make_imagefolder(tmp_path / "src")
    a = prepare_data(src, small(), cache_dir=str(tmp_path / "c1"))
    b = prepare_data(src, small(), cache_dir=str(tmp_path / "c2"))
    assert a.dataset_id == b.dataset_id and a.path != b.path
    for fa, fb in zip(a.files, b.files):
        assert open(fa, "rb").read() == open(fb, "rb").read()
    mtime = os.path.getmtime(a.files[0])
    again = prepare_data(src, small(), cache_dir=str(tmp_path / "c1"))
    assert again.path == a.path and os.path.getmtime(a.files[0]) == mtime
    # A different subset or different source content is a different dataset.
    assert prepare_data(src, small(images_per_class=3), str(tmp_path / "c1")).dataset_id != a.dataset_id
    Image.new("RGB", (50, 50), (1, 2, 3)).save(os.path.join(src, "train/class_00/0000.jpg"))
    assert prepare_data(src, small(), str(tmp_path / "c1")).dataset_id != a.dataset_id


def _build(args):
    src, cache = args
    d = prepare_data(src, small(images_per_class=6, val_per_class=3), cache_dir=cache)
    return d.path, float(d.train_x.astype(np.float64).sum())


def test_concurrent_builders_agree(tmp_path):
    src = make_imagefolder(tmp_path / "src")
    cache = str(tmp_path / "cache")
    with ProcessPoolExecutor(3) as ex:
        results = list(ex.map(_build, [(src, cache)] * 3))
    assert len(set(results)) == 1
    # Exactly one finished cache directory, no temporaries left behind.
    assert os.listdir(cache) == [os.path.basename(results[0][0])]


def test_bad_sources(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        prepare_data(str(tmp_path / "nope"), small(), str(tmp_path / "c"))
    os.makedirs(tmp_path / "only_train" / "train" / "a")
    with pytest.raises(ValueError, match=r"only_train: missing val/"):
        prepare_data(str(tmp_path / "only_train"), small(), str(tmp_path / "c"))
    src = make_imagefolder(tmp_path / "src", n_train=3)
    with pytest.raises(ValueError, match=r"3 images, fidelity needs 4"):
        prepare_data(src, small(), str(tmp_path / "c"))
    with pytest.raises(ValueError, match="class folders"):
        prepare_data(src, small(classes=9), str(tmp_path / "c"))
    with pytest.raises(ValueError, match="embedded set has 500"):
        prepare_data(None, small(classes=2, images_per_class=501), str(tmp_path / "c"))


def test_pickle_is_small_and_reopens_memmap(tmp_path):
    src = make_imagefolder(tmp_path / "src")
    d = prepare_data(src, small(), cache_dir=str(tmp_path / "cache"))
    _ = d.train_x  # opened: the pixels must still not travel
    blob = pickle.dumps(d)
    assert len(blob) < 2000
    e = pickle.loads(blob)
    assert isinstance(e, ProxyData) and e.dataset_id == d.dataset_id
    assert isinstance(e.val_x, np.memmap)
    np.testing.assert_array_equal(e.train_x, d.train_x)


def test_embedded_default(tmp_path):
    f = DEFAULT_FIDELITY.replace(images_per_class=20, val_per_class=5)
    d = prepare_data(None, f, cache_dir=str(tmp_path / "cache"))
    assert d.num_classes == 10 and d.class_names[0] == "airplane" and d.class_names[-1] == "truck"
    assert d.train_x.shape == (200, 32, 32, 3) and np.bincount(d.train_y).tolist() == [20] * 10
    assert np.bincount(d.val_y).tolist() == [5] * 10
    assert d.train_x.std() > 20  # real images, not blank
    assert os.path.getsize(EMBEDDED_PATH) <= 20e6


# The shipped subset, pinned: its sha256 (documented in search/proxy/embedded/README.md) and
# the file list inside it (first 500 train / 100 val files per class by sorted name).
EMBEDDED_SHA256 = "2d80ec374683cd44170d29a4053f3d2d7a154efde860e74e1cd047f2e323aec3"
# Where the CIFAR-10 ImageFolder JPEGs it was built from live, when a machine has them.
SOURCE_ENV = "SFN_CIFAR10_JPEGS"


def test_embedded_is_the_documented_subset():
    import hashlib

    assert hashlib.sha256(open(EMBEDDED_PATH, "rb").read()).hexdigest() == EMBEDDED_SHA256
    readme = os.path.join(os.path.dirname(EMBEDDED_PATH), "README.md")
    assert EMBEDDED_SHA256 in open(readme, encoding="utf-8").read()
    with np.load(EMBEDDED_PATH) as z:
        classes = [str(c) for c in z["classes"]]
        assert classes == sorted(classes) and len(classes) == 10
        assert [str(f) for f in z["train_files"]] == [
            f"train/{c}/{i:04d}.jpg" for c in classes for i in range(500)]
        assert [str(f) for f in z["val_files"]] == [
            f"val/{c}/{i:04d}.jpg" for c in classes for i in range(100)]


@pytest.mark.skipif(not os.environ.get(SOURCE_ENV), reason=f"set {SOURCE_ENV} to the CIFAR-10 "
                    "ImageFolder JPEGs the embedded subset was built from")
def test_embedded_matches_its_source():
    src = os.environ[SOURCE_ENV]
    with np.load(EMBEDDED_PATH) as z:
        for split, i in (("train", 501), ("train", 4999), ("val", 0), ("val", 999)):
            name = str(z[f"{split}_files"][i])
            ref = np.asarray(Image.open(os.path.join(src, name)).convert("RGB"))
            np.testing.assert_array_equal(z[f"{split}_x"][i], ref, err_msg=name)
