"""ImageFolder data for retraining and evaluation: checks, transforms, loaders.

The transforms are the official ``util/datasets.py`` ones through timm (``create_transform``);
the training sampler is DeiT's repeated augmentation (timm ``RepeatAugSampler``) or a plain
``DistributedSampler``; evaluation shards the val set by stride so counts sum exactly.
"""
from __future__ import annotations

import os

from timm.data import create_transform
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.data.distributed_sampler import RepeatAugSampler
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset
from torchvision import transforms
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

from search.proxy.images import check_directory, check_images, check_imagefolder, class_dirs
from search_space.errors import NotFoundError, UsageError

from .config import RetrainConfig
from ..distributed import DistContext

__all__ = ["check_imagefolder", "class_dirs", "check_split_images", "split_root",
           "ClassDirsImageFolder"]

LAYOUT = "one sub-directory per class"


class ClassDirsImageFolder(ImageFolder):
    """torchvision's ImageFolder whose classes are search.proxy.images.class_dirs' (hidden
    directories such as ``.ipynb_checkpoints`` skipped), the list the layout check, the image
    check and the proxy cache use. torchvision's own ``find_classes`` counts every directory,
    so a hidden one would become class 0 and shift every label (or fail for having no image)."""

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        classes = class_dirs(directory)
        if not classes:
            raise NotFoundError(f"--data {directory}: no class sub-directories")
        return classes, {c: i for i, c in enumerate(classes)}


def image_files(split_dir: str) -> list[str]:
    """The files torchvision's ImageFolder loads from ``split_dir`` (its own listing rules:
    extensions, sub-directories, symlinks); a class without an image is a NotFoundError."""
    classes = class_dirs(split_dir)
    try:
        samples = make_dataset(split_dir, {c: i for i, c in enumerate(classes)},
                               extensions=IMG_EXTENSIONS)
    except FileNotFoundError as e:  # "Found no valid file for the classes ..."
        raise NotFoundError(f"--data {split_dir}: {str(e).splitlines()[0]}") from None
    return [path for path, _ in samples]


def check_split_images(data: str, split_dirs: list[str], shard: tuple[int, int] = (0, 1)) -> int:
    """Decode-check every image ImageFolder would load from ``split_dirs`` (before training or
    evaluating: a broken file is refused up front, whether or not a sampler would draw it)."""
    files = [f for d in split_dirs for f in image_files(d)]
    return check_images(files, root=data, what="--data", shard=shard)


def split_root(data: str, split: str) -> str:
    """``data/split``, or ``data`` itself when it already is a split (class directories)."""
    check_directory(data, "--data", f"need {split}/ with {LAYOUT}, or a split directory itself")
    root = os.path.join(data, split)
    if not os.path.isdir(root):
        if os.path.isdir(data) and class_dirs(data):
            root = data  # --data points at the val directory itself
        else:
            raise NotFoundError(f"--data {data}: missing {split}/ ({LAYOUT})")
    if not class_dirs(root):
        raise NotFoundError(f"--data {root}: no class sub-directories")
    return root


def train_transform(cfg: RetrainConfig, resolution: int, aa: str):
    """timm's ImageNet training transform (official build_transform, is_train=True)."""
    tf = create_transform(input_size=resolution, is_training=True, color_jitter=cfg.color_jitter,
                          auto_augment=aa or None, interpolation=cfg.train_interpolation,
                          re_prob=cfg.reprob, re_mode=cfg.remode, re_count=1)
    if resolution <= 32:
        # Official code: CIFAR-sized inputs get RandomCrop(padding=4) instead of RandomResizedCrop.
        tf.transforms[0] = transforms.RandomCrop(resolution, padding=4)
    return tf


def eval_transform(resolution: int, crop_pct: float = 0.875, interpolation: str = "bicubic"):
    """Resize to resolution/crop_pct, centre crop, normalise (official; no resize at <= 32 px)."""
    if resolution <= 32:
        return transforms.Compose([transforms.ToTensor(),
                                   transforms.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)])
    return create_transform(input_size=resolution, is_training=False, crop_pct=crop_pct,
                            interpolation=interpolation)


def retrain_datasets(data: str, cfg: RetrainConfig, resolution: int,
                     aa: str) -> tuple[ImageFolder, ImageFolder]:
    """train/ with the training transform, val/ with the evaluation one."""
    train_ds = ClassDirsImageFolder(os.path.join(data, "train"),
                                    transform=train_transform(cfg, resolution, aa))
    val_ds = ClassDirsImageFolder(os.path.join(data, "val"), transform=eval_transform(resolution))
    return train_ds, val_ds


def train_loader(dataset: Dataset, ctx: DistContext, cfg: RetrainConfig, workers: int,
                 data: str) -> tuple[Sampler, DataLoader]:
    """This rank's share of every epoch, in full batches (the sampler is re-seeded per epoch)."""
    if cfg.repeated_aug:
        sampler = RepeatAugSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank,
                                   shuffle=True)
    else:
        sampler = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank,
                                     shuffle=True, seed=cfg.seed)
    loader = DataLoader(dataset, sampler=sampler, batch_size=cfg.batch_size, num_workers=workers,
                        pin_memory=ctx.device.type == "cuda", drop_last=True,
                        persistent_workers=False)
    if len(loader) == 0:
        raise UsageError(f"--data {data}: {len(dataset)} training images give no full batch "
                         f"of {cfg.batch_size} per process on {ctx.world_size} process(es)")
    return sampler, loader


def eval_loader(dataset: Dataset, ctx: DistContext, batch_size: int, workers: int) -> DataLoader:
    """Each rank evaluates a disjoint stride of the val set; counts are summed (exact, no padding)."""
    shard = Subset(dataset, list(range(ctx.rank, len(dataset), ctx.world_size)))
    return DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=workers,
                      pin_memory=ctx.device.type == "cuda", drop_last=False)
