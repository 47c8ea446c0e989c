"""The images of an ImageFolder: the one place that lists, checks and decodes them.

The rule for a broken image (issue 18) is the same in every command that reads ``--data``:
``search``, ``fidelity`` and ``ladder`` (the proxy cache decodes every image of its subset,
:func:`decode_square`) and ``retrain`` / ``evaluate`` (every image of the split is checked up
front, before any process starts, :func:`check_images`). An image that cannot be decoded -- not
an image at all (text bytes), 0 bytes, cut short, unreadable for this user, over Pillow's
decompression-bomb limit -- is *refused*: one line naming the file and why, exit 2, nothing
written. It is never skipped. A skipped file would silently change what is trained on: the
proxy subset is "the first N files by name per class", so dropping one shifts the subset, the
dataset id (results stop being comparable across machines) and the class balance; in a
retraining the sampler may simply never draw it, so nobody notices. A broken file almost always
means a broken copy or download, which the user wants to hear about before hours of training.

Checking decodes at reduced scale (libjpeg's draft mode, 1/8): every compressed byte is still
read, so truncation and corrupt data are found, at about a third of a full decode's cost.
Listing and layout checks (class directories, train/ and val/) live here too, so ``search``,
``retrain`` and the proxy cache agree on what an ImageFolder is. No torch: Pillow only.
"""
from __future__ import annotations

import os
import re
import struct
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np

from search_space.errors import NotFoundError, UsageError
from search_space.lazy import lazy_import

Image = lazy_import("PIL.Image")

# Extensions the proxy cache reads (torchvision's ImageFolder, used by retrain / evaluate, has
# its own list; those commands check the files it will load).
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")
LAYOUT = "an ImageFolder root with train/<class>/*.jpg and val/<class>/*.jpg"
CHECK_SIZE = 32  # draft-decode target of a check: libjpeg's smallest scale for ImageNet sizes
PARALLEL_FROM = 256  # fewer images are checked in this process (no pool start-up)
SHOWN = 3  # broken files named in the one error line (the count says how many in all)


class UnreadableImageError(UsageError):
    """An image of ``--data`` that cannot be decoded (the message names the file and why)."""


def _decode_errors() -> tuple[type[BaseException], ...]:
    """What decoding a broken or hostile file raises in Pillow (its plugins raise more than
    OSError: SyntaxError for a broken PNG chunk, struct.error / IndexError / EOFError from
    header parsers, DecompressionBombError over the pixel limit)."""
    return (OSError, ValueError, SyntaxError, EOFError, IndexError, KeyError, TypeError,
            struct.error, Image.DecompressionBombError)


def _reason(path: str, exc: BaseException) -> str:
    """Why ``path`` cannot be decoded, in a few words."""
    try:
        if os.path.getsize(path) == 0:
            return "empty file (0 bytes)"
    except OSError:
        pass
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, Image.UnidentifiedImageError):
        return "not an image Pillow can decode"
    if isinstance(exc, Image.DecompressionBombError):
        return "too many pixels (Pillow's decompression-bomb limit)"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    text = text.replace(f" '{path}'", "").replace(str(path), "").strip(" :")
    # "image file is truncated (9 bytes not processed)" -> "..., 9 bytes not processed": the
    # reason is shown in parentheses itself
    return re.sub(r"\s*\((.*)\)$", r", \1", text) or type(exc).__name__


def image_problem(path: str) -> str | None:
    """None when ``path`` decodes completely (at reduced scale), else why it does not."""
    try:
        with Image.open(path) as im:
            im.draft("RGB", (CHECK_SIZE, CHECK_SIZE))
            im.load()
    except _decode_errors() as e:
        return _reason(path, e)
    return None


def decode_square(path: str, res: int) -> np.ndarray:
    """Decode one image, resize the shorter side to ``res`` and centre-crop res x res (the
    proxy cache's recipe); an image that cannot be decoded is an UnreadableImageError."""
    try:
        with Image.open(path) as im:
            # draft(): libjpeg decodes at 1/2, 1/4 or 1/8 scale, ~5x faster for ImageNet JPEGs.
            im.draft("RGB", (res, res))
            im = im.convert("RGB")
            w, h = im.size
            s = res / min(w, h)
            nw, nh = max(res, round(w * s)), max(res, round(h * s))
            if (nw, nh) != (w, h):
                im = im.resize((nw, nh), Image.BICUBIC, reducing_gap=None)
            left, top = (nw - res) // 2, (nh - res) // 2
            im = im.crop((left, top, left + res, top + res))
            return np.asarray(im, dtype=np.uint8)
    except _decode_errors() as e:
        raise UnreadableImageError(f"image {path}: {_reason(path, e)}; repair or remove it "
                                   "(broken images are refused, never skipped)") from None


def _problems(paths: Sequence[str]) -> list[tuple[str, str]]:
    return [(p, why) for p in paths if (why := image_problem(p)) is not None]


def check_images(paths: Sequence[str], *, root: str, what: str = "--data",
                 workers: int | None = None, shard: tuple[int, int] = (0, 1)) -> int:
    """Decode-check every file (this process's ``shard`` = (index, count) of them, so ranks
    started together split the work); one UsageError naming the broken ones. Returns how many
    files were checked."""
    mine = list(paths)[shard[0]::shard[1]]
    workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
    if workers == 1 or len(mine) < PARALLEL_FROM:
        bad = _problems(mine)
    else:
        chunks = [mine[i::workers * 4] for i in range(workers * 4)]
        with ProcessPoolExecutor(workers) as ex:
            bad = sorted(b for part in ex.map(_problems, chunks) for b in part)
    if bad:
        shown = ", ".join(f"{os.path.relpath(p, root)} ({why})" for p, why in bad[:SHOWN])
        more = f" and {len(bad) - SHOWN} more" if len(bad) > SHOWN else ""
        raise UnreadableImageError(
            f"{what} {root}: {len(bad)} unreadable image(s): {shown}{more}; repair or remove "
            "them (broken images are refused, never skipped)")
    return len(mine)


# -- listing and layout -----------------------------------------------------------------------
def _scan(d: str | Path, what: str) -> list[os.DirEntry]:
    try:
        with os.scandir(d) as it:
            return list(it)
    except OSError as e:
        raise UsageError(f"{what} {d}: cannot be listed ({e.strerror})") from None


def list_images(d: str | Path, what: str = "--data") -> list[str]:
    """Image file names in directory ``d`` (by extension), sorted."""
    return sorted(e.name for e in _scan(d, what)
                  if e.name.lower().endswith(IMAGE_EXTS) and e.is_file())


def class_dirs(path: str | os.PathLike, what: str = "--data") -> list[str]:
    """The class sub-directories of an ImageFolder split, sorted (ImageFolder's label order)."""
    return sorted(e.name for e in _scan(path, what) if e.is_dir() and not e.name.startswith("."))


def check_directory(root: str, what: str = "--data", need: str = LAYOUT) -> Path:
    """``root`` is an existing directory; one line saying what it is instead."""
    p = Path(root)
    if os.path.lexists(p) and not p.exists():
        raise NotFoundError(f"{what} {root}: a broken symbolic link or a symlink loop ({need})")
    if p.exists() and not p.is_dir():
        raise UsageError(f"{what} {root}: a file, not a directory ({need})")
    if not p.is_dir():
        raise NotFoundError(f"{what} {root}: no such directory ({need})")
    return p


def check_layout(root: str, splits: tuple[str, ...] = ("train", "val"),
                 what: str = "--data") -> dict[str, list[str]]:
    """Each split is a directory with at least one class sub-directory; returns the classes."""
    need = f"need {'/, '.join(splits)}/ with one sub-directory per class"
    base = check_directory(root, what, need)
    found: dict[str, list[str]] = {}
    for s in splits:
        d = base / s
        if not d.is_dir():
            raise NotFoundError(f"{what} {root}: missing {s}/ ({need})")
        classes = class_dirs(d, what)
        if not classes:
            raise NotFoundError(f"{what} {root}: {s}/ has no class sub-directories")
        found[s] = classes
    return found


def check_imagefolder(root: str, splits: tuple[str, ...],
                      what: str = "--data") -> dict[str, list[str]]:
    """:func:`check_layout`, and train/ and val/ (when both are asked for) have the same
    classes (a model trained on one label order is evaluated on the other)."""
    found = check_layout(root, splits, what)
    if "train" in found and "val" in found and found["train"] != found["val"]:
        raise UsageError(f"{what} {root}: train/ has {len(found['train'])} classes and val/ "
                         f"{len(found['val'])}, or their names differ; they must match")
    return found
