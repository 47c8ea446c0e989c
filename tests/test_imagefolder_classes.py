"""One definition of "the classes of an ImageFolder root": search.proxy.images.class_dirs
(sub-directories, hidden ones such as ``.ipynb_checkpoints`` skipped, sorted). The layout check,
the proxy cache and retrain / evaluate (torchvision's ImageFolder) all list the same classes in
the same label order; a hidden directory, even one holding an image, is never a class."""
from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest
from torchvision.datasets import ImageFolder

from search.proxy.data import prepare_data
from search.proxy.fidelity import Fidelity
from search.proxy.images import check_layout, class_dirs
from search.retrain.config import RetrainConfig
from search.retrain.data import ClassDirsImageFolder, image_files, retrain_datasets
from tiny import make_imagefolder

ROOT = Path(__file__).resolve().parents[1]
WANT = ["class0", "class1", "class2"]

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def root(tmp_path) -> Path:
    """3 classes, and in train/ and val/ a hidden directory holding an image (a notebook's
    checkpoint copy): torchvision's own listing would make it class 0 and shift every label."""
    r = make_imagefolder(tmp_path / "data", classes=3, train=4, val=2)
    for split in ("train", "val"):
        hidden = r / split / ".ipynb_checkpoints"
        hidden.mkdir()
        shutil.copy(r / split / "class1" / "000.jpg", hidden / "000-checkpoint.jpg")
    return r


def test_hidden_directory_is_no_class_in_check_cache_or_retrain(root, tmp_path):
    assert ImageFolder(str(root / "train")).classes[0] == ".ipynb_checkpoints"  # why it matters
    assert class_dirs(root / "train") == WANT
    assert check_layout(str(root)) == {"train": WANT, "val": WANT}
    fid = Fidelity(classes=3, images_per_class=4, val_per_class=2, resolution=32)
    data = prepare_data(str(root), fid, cache_dir=str(tmp_path / "cache"))
    assert list(data.class_names) == WANT
    train_ds, val_ds = retrain_datasets(str(root), RetrainConfig(), 32, "")
    for ds, n in ((train_ds, 4), (val_ds, 2)):
        assert ds.classes == WANT and ds.class_to_idx == {c: i for i, c in enumerate(WANT)}
        assert sorted(ds.targets) == [i for i in range(3) for _ in range(n)]
        assert [p for p, _ in ds.samples] == image_files(ds.root)  # what the image check saw


def test_a_split_of_hidden_directories_only_has_no_classes(tmp_path):
    split = tmp_path / "val"
    (split / ".hidden").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"--data .*val: no class sub-directories"):
        ClassDirsImageFolder(str(split))


def test_no_package_builds_torchvision_imagefolder_directly():
    """retrain and evaluate build ClassDirsImageFolder; a plain ImageFolder(...) anywhere in the
    packages would list classes by torchvision's rule again."""
    calls = []
    for pkg in ("search", "results", "latency_models", "search_space"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                        and node.func.id == "ImageFolder"):
                    calls.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert calls == []
