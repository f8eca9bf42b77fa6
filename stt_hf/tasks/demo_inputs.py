"""What the demo reads: uploads (checked before they are decoded) and the example images, written to a
private folder that nobody else can plant files or links in."""

from __future__ import annotations

import atexit
import os
import shutil
import stat
import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..data.classification import (
    DEFAULT_FASHION_MNIST_DIR,
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR_ENV,
    FASHION_MNIST_FILES,
    read_idx,
)
from ..reporting.visualize import SKIMAGE_PHOTOS

MAX_PIXELS = 40_000_000  # larger uploads are refused before they are decoded
EXAMPLE_SUFFIXES = (".png", ".jpg", ".jpeg")


class DemoError(ValueError):
    """A problem with the demo's input (model, image) that the user can fix; shown as a message."""


def open_upload(path: str | os.PathLike | None, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """The uploaded file as a decoded image; DemoError naming the problem for anything else."""
    if path is None:
        raise DemoError("Upload an image first, or pick one of the examples.")
    name = Path(path).name
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                pixels = img.size[0] * img.size[1]  # from the header: nothing decoded yet
                if pixels > max_pixels:
                    raise DemoError(f"{name} is {img.size[0]}x{img.size[1]} pixels ({pixels / 1e6:.0f} MP); "
                                    f"this demo takes images up to {max_pixels / 1e6:.0f} MP. Resize it.")
                img.load()
                return img.copy()
    except DemoError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise DemoError(f"{name} has too many pixels ({err}). Resize it.") from err
    except (OSError, SyntaxError, ValueError) as err:  # PIL: UnidentifiedImageError, truncated data
        detail = "unknown file format" if isinstance(err, UnidentifiedImageError) else str(err)
        raise DemoError(f"{name} is not an image that can be read ({detail}). "
                        f"Upload a PNG, JPEG, WebP, BMP or GIF file.") from err


# ---------------------------------------------------------------------------------------------------
# The example images
# ---------------------------------------------------------------------------------------------------

def private_folder(prefix: str) -> Path:
    """A new folder only this user can read or write (`tempfile.mkdtemp`: mode 0700, a fresh random name),
    removed when the process exits. A fixed name under the shared temp directory could be made in
    advance by another user, with links to files of their choosing."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def check_private(folder: Path) -> Path:
    """`folder`, made (mode 0700) if missing; DemoError unless it is a real folder (not a link) of this
    user that no one else may write to, since the page serves the files it finds there."""
    try:
        folder.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        pass
    info = folder.lstat()
    if stat.S_ISLNK(info.st_mode):
        problem = "is a symbolic link"
    elif not stat.S_ISDIR(info.st_mode):
        problem = "is not a folder"
    elif info.st_uid != os.getuid():
        problem = f"belongs to user id {info.st_uid}, not to this user ({os.getuid()})"
    elif info.st_mode & 0o022:
        problem = "may be written by other users"
    else:
        return folder
    raise DemoError(f"the examples folder {folder} {problem}; give a folder of your own that only you can "
                    "write to (chmod go-w), or none for a private temporary one")


def write_example(path: Path, image: np.ndarray) -> Path:
    """`path` holding `image` as a PNG. A regular file already there (an earlier run's) is kept; anything
    else (a link, a folder) is replaced, never followed: the PNG is written under a temporary name and
    renamed over it."""
    try:
        if stat.S_ISREG(path.lstat().st_mode):
            return path
    except FileNotFoundError:
        pass
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".png")
    try:
        with os.fdopen(fd, "wb") as f:
            Image.fromarray(image).save(f, format="PNG")
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)  # replaces a link itself, not the file it points to
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def example_images(folder: str | os.PathLike | None = None, fashion_items: int = 4,
                   extra: str | os.PathLike | None = None) -> list[str]:
    """Example files for the page: scikit-image's photos, Fashion-MNIST test items, images in `extra`.

    They are written to `folder` (checked with `check_private`), or with None to a new private folder.
    """
    folder = private_folder("stt-hf-demo-examples-") if folder is None else check_private(Path(folder))
    paths = []
    try:
        import skimage.data

        for name in SKIMAGE_PHOTOS:
            paths.append(write_example(folder / f"{name}.png", getattr(skimage.data, name)()))
    except ImportError:
        pass
    paths += _fashion_mnist_examples(folder, fashion_items)
    if extra is not None and Path(extra).is_dir():
        seen = {p.name for p in paths}
        paths += sorted(p for p in Path(extra).iterdir()  # the files themselves, not links to elsewhere
                        if p.suffix.lower() in EXAMPLE_SUFFIXES and p.name not in seen and not p.is_symlink()
                        and p.is_file())
    return [str(p) for p in paths]


def _fashion_mnist_examples(folder: Path, count: int) -> list[Path]:
    """The first test item of `count` different classes, when the Debian dataset is installed."""
    root = Path(os.environ.get(FASHION_MNIST_DIR_ENV) or DEFAULT_FASHION_MNIST_DIR)
    images, labels = (root / name for name in FASHION_MNIST_FILES["test"])
    if count <= 0 or not images.is_file() or not labels.is_file():
        return []
    x, y = read_idx(images), read_idx(labels)
    paths = []
    for label in range(min(count, len(FASHION_MNIST_CLASSES))):
        index = int(np.flatnonzero(y == label)[0])
        name = FASHION_MNIST_CLASSES[label].replace("/", "-").replace(" ", "_").lower()
        paths.append(write_example(folder / f"fashion_mnist-{name}.png", x[index]))
    return paths
