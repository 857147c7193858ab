"""Image datasets and batching for transfer learning. Everything here returns NumPy arrays.

One image from a file goes through:

    decode (Pillow) -> EXIF rotation -> RGB uint8 -> resize, keeping the aspect ratio
    -> center or random crop to image_size -> random horizontal flip -> float32
    -> transform(image, rng) -> preprocess ('caffe': RGB->BGR minus the ImageNet mean)

Images are (H, W, 3), channels last; batches are (B, H, W, 3) float32 and (B,) int64.
Randomness (crop, flip, transform) comes from numpy.random.default_rng([seed, epoch, index]),
so an image gets the same augmentation for a given epoch however the batches are read.
"""

import math
import os
import queue
import stat
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image, ImageOps

from minitl.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
TRAIN_NAMES = ("train", "training")
VAL_NAMES = ("val", "valid", "validation")

_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")


# ---------------------------------------------------------------- decoding

def to_rgb(img):
    """A Pillow image of any mode -> RGB uint8 Pillow image.

    Transparent images (RGBA, LA, PA, or a palette/gray/RGB image with a transparent
    colour) are composited on white. 16-bit grayscale (modes I;16* and I, read as
    0..65535) is scaled to 0..255 by x / 257, rounded. CMYK and the rest use Pillow's convert.
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in _SIXTEEN_BIT:
        gray = np.asarray(img).astype(np.float32)
        gray = np.rint(np.clip(gray, 0, 65535) / 257.0).astype(np.uint8)
        return Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2))
    if "A" in mode or "a" in mode or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def _file_kind(mode):
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def _open_regular_file(path):
    """A binary file object for `path` if it is a regular file, else DataError saying what it is.

    The kind is checked before opening and again on the open descriptor, which is opened
    non-blocking, so a FIFO or a device never blocks the reader.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError as exc:
        raise DataError(f"image file {path} does not exist") from exc
    except OSError as exc:  # a symlink loop, no permission, a name too long
        raise DataError(f"cannot open image {path}: {exc}") from exc
    if not stat.S_ISREG(mode):
        raise DataError(f"image file {path} is {_file_kind(mode)}")
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise DataError(f"cannot open image {path}: {exc}") from exc
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):  # replaced since the stat above
        os.close(fd)
        raise DataError(f"image file {path} is {_file_kind(mode)}")
    return os.fdopen(fd, "rb")


def open_image(path, min_size=None):
    """Decode an image file -> RGB uint8 Pillow image, EXIF orientation applied.

    min_size: lets the JPEG decoder shrink by 2, 4 or 8 while both sides stay
    >= min_size (much faster on large photos). None decodes at full size.
    Only regular files are opened. Raises DataError if the file is missing, is not a
    regular file (a folder, FIFO, device or socket) or cannot be decoded.
    """
    with _open_regular_file(path) as fh:
        try:
            with Image.open(fh) as img:
                if min_size:
                    img.draft(None, (min_size, min_size))
                img = ImageOps.exif_transpose(img)   # a loaded copy; the file can close
            return to_rgb(img)
        except _DECODE_ERRORS as exc:
            raise DataError(f"cannot decode image {path}: {exc}") from exc


def _check_image(path):
    """None if the file decodes, else the reason. Decodes at 1/8 scale for JPEG."""
    try:
        open_image(path, min_size=1)
    except DataError as exc:
        return str(exc.__cause__ or exc)
    return None


# ---------------------------------------------------------------- transforms
# Plain functions on arrays (H, W, C); each returns a new array.

def _size2(size):
    """int or (H, W) -> (H, W)."""
    if isinstance(size, int):
        size = (size, size)
    h, w = (int(s) for s in size)
    if h <= 0 or w <= 0:
        raise ValueError(f"image size must be positive, got {size}")
    return h, w


def _keep_aspect_size(h, w, shorter_side):
    if h <= w:
        return shorter_side, max(1, int(w * shorter_side / h + 0.5))
    return max(1, int(h * shorter_side / w + 0.5)), shorter_side


def _cover_size(h, w, size):
    th, tw = size
    scale = max(th / h, tw / w)
    return max(th, int(h * scale + 0.5)), max(tw, int(w * scale + 0.5))


def random_resized_box(h, w, rng, scale=(0.35, 1.0), ratio=(3 / 4, 4 / 3)):
    """(top, left, height, width) of a random box of an (h, w) image: area a·h·w with a ~ U(scale),
    aspect ratio width/height r with log r ~ U(log ratio), clipped to the image, placed uniformly
    (torchvision's RandomResizedCrop, without its retries)."""
    area = h * w * rng.uniform(*scale)
    r = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
    bh, bw = min(h, max(1, round(math.sqrt(area / r)))), min(w, max(1, round(math.sqrt(area * r))))
    return int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1)), bh, bw


def jitter(x, rng, rotate=10.0, brightness=0.2, contrast=0.2):
    """RGB (H, W, 3) float 0..255: rotated by an angle ~ U(−rotate, rotate) degrees about its
    centre (bilinear, the corners filled with its mean colour), then x ← (x − m)·c + m·b with
    contrast c ~ U(1 ± contrast), brightness b ~ U(1 ± brightness), m the mean; clipped to 0..255."""
    angle = rng.uniform(-rotate, rotate)
    mean = x.mean(axis=(0, 1))
    img = Image.fromarray(np.clip(x, 0, 255).astype(np.uint8))
    x = np.asarray(img.rotate(angle, Image.BILINEAR, fillcolor=tuple(int(v) for v in mean)), dtype=np.float32)
    c, b = rng.uniform(1 - contrast, 1 + contrast), rng.uniform(1 - brightness, 1 + brightness)
    return np.clip((x - mean) * c + mean * b, 0, 255).astype(np.float32)


# what --augment light and standard do to a training image; written into the run's record
AUGMENTATIONS = {
    "none": {},
    "light": {"crop": "random", "flip": True},
    "standard": {"crop": "random-resized", "scale": [0.35, 1.0], "ratio": [0.75, 1.3333], "flip": True,
                 "rotate": 10.0, "brightness": 0.2, "contrast": 0.2},
}


def resize_and_crop(img, image_size, crop="center", resize=None, rng=None):
    """Pillow image (H, W) -> uint8 array (h, w, C): resize keeping the aspect ratio, then crop.

    The resize makes the shorter side `resize` (None: just enough to cover image_size,
    and never less than that); the crop is the central (h, w) window, or with
    crop='random' a uniformly placed one (top, then left, drawn from rng); crop='random-resized'
    takes a `random_resized_box` of the image instead and resizes it to image_size. Only the
    crop is computed, from the source pixels under it (Pillow's resize with a box:
    the same bilinear filter, the same result as resizing the whole image and cropping
    up to rounding), so an extreme aspect ratio (1 x 2,000,000) costs no more than the output.
    """
    th, tw = image_size
    h, w = img.height, img.width
    if crop == "random-resized":
        top, left, bh, bw = random_resized_box(h, w, rng)
        return np.asarray(img.resize((tw, th), Image.BILINEAR, box=(left, top, left + bw, top + bh)))
    if resize is None:
        rh, rw = _cover_size(h, w, image_size)
    else:
        rh, rw = _keep_aspect_size(h, w, resize)
        if rh < th or rw < tw:
            rh, rw = _cover_size(rh, rw, image_size)
    if crop == "random":
        top = int(rng.integers(0, rh - th + 1))
        left = int(rng.integers(0, rw - tw + 1))
    else:
        top, left = (rh - th) // 2, (rw - tw) // 2
    if (rh, rw) == (h, w):
        return np.asarray(img.crop((left, top, left + tw, top + th)))
    sy, sx = h / rh, w / rw
    box = (left * sx, top * sy, (left + tw) * sx, (top + th) * sy)
    return np.asarray(img.resize((tw, th), Image.BILINEAR, box=box))


def random_flip(img, rng):
    """Mirror (H, W, C) left-right with probability 1/2."""
    img = np.asarray(img)
    return img[:, ::-1].copy() if rng.random() < 0.5 else img.copy()


def get_preprocess(preprocess):
    """'caffe' (VGG, ResNet50) or 'tf' (InceptionV3, MobileNetV2) -> Keras' preprocess_input of
    that mode (minitl.applications.imagenet_utils); None -> None; a function -> itself."""
    if preprocess is None or callable(preprocess):
        return preprocess
    from minitl.applications.imagenet_utils import PREPROCESSING
    if preprocess in PREPROCESSING:
        return PREPROCESSING[preprocess]
    raise ValueError(f"preprocess must be 'caffe', 'tf', None or a function, got {preprocess!r}")


def _prepare(img, image_size, crop, resize, flip, transform, preprocess, rng, jittered=False):
    """Pillow RGB image -> float32 (H, W, 3): resize, crop, flip, jitter, transform, preprocess."""
    x = resize_and_crop(img, image_size, crop, resize, rng)
    if flip:
        x = random_flip(x, rng)
    x = x.astype(np.float32)
    if jittered:
        x = jitter(x, rng)
    if transform is not None:
        x = np.asarray(transform(x, rng), dtype=np.float32)
    if preprocess is not None:
        x = np.asarray(preprocess(x), dtype=np.float32)
    return x


def load_image(path, image_size=(224, 224), preprocess="caffe", resize=None):
    """One image file -> float32 (H, W, 3), prepared like a validation image (center crop).

    resize: shorter side before the crop (e.g. 256 for a 224 crop); None resizes just
    enough to cover image_size. preprocess='caffe' gives VGG16's input; None gives RGB 0..255.
    """
    image_size = _size2(image_size)
    preprocess = get_preprocess(preprocess)
    img = open_image(path, min_size=max(resize or 0, *image_size))
    return _prepare(img, image_size, "center", resize, False, None, preprocess, None)


# ---------------------------------------------------------------- folders

def list_images(folder):
    """Sorted paths of the image files under folder (recursive; hidden files and folders skipped)."""
    paths = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                paths.append(os.path.join(dirpath, name))
    return paths


def image_files(paths):
    """(files, problems) for paths given on a command line: a folder stands for the images
    under it (list_images), any other path for itself, so that reading it says what is wrong
    with it (missing, a FIFO, not an image). A folder without images (even one named
    'photos.jpg') is a problem, one line naming it, and the other paths are still listed.
    """
    files, problems = [], []
    for path in paths:
        if os.path.isdir(path):
            found = list_images(path)
            if not found:
                problems.append(f"no images ({' '.join(IMAGE_EXTENSIONS)}) found in {path}")
            files += found
        else:
            files.append(os.fspath(path))
    return files, problems


def find_splits(root):
    """(train_dir, val_dir) if root holds a train and a val folder, else None.

    Recognised names: train/training and val/valid/validation (any case).
    """
    if not os.path.isdir(root):
        return None
    found = {}
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.is_dir():
            key = entry.name.lower()
            if key in TRAIN_NAMES:
                found.setdefault("train", entry.path)
            elif key in VAL_NAMES:
                found.setdefault("val", entry.path)
    if "train" in found and "val" in found:
        return found["train"], found["val"]
    return None


def stratified_split(labels, validation_split, seed=0):
    """Split indices per class -> (train_idx, val_idx), both sorted int64 arrays.

    Each class is shuffled with one numpy.random.default_rng(seed) (classes in
    increasing label order) and round(n * validation_split) of its n items go to
    validation; every class keeps at least one item for training.
    """
    if not 0.0 < validation_split < 1.0:
        raise ValueError(f"validation_split must be in (0, 1), got {validation_split}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        members = members[rng.permutation(len(members))]
        n_val = min(int(len(members) * validation_split + 0.5), len(members) - 1)
        val.append(members[:n_val])
        train.append(members[n_val:])
    train = np.concatenate(train) if train else np.empty(0)
    val = np.concatenate(val) if val else np.empty(0)
    return np.sort(train).astype(np.int64), np.sort(val).astype(np.int64)


class ImageFolder:
    """Images in root/<class name>/..., one sub-folder per class, read lazily.

    Classes are the sorted sub-folder names (or `classes`, in that order) and labels
    their indices. Files with the extensions in IMAGE_EXTENSIONS are taken from each
    class folder and its sub-folders; hidden files are ignored.

    validation_split, subset ('training' or 'validation'): a stratified split by seed
    (see stratified_split). Both subsets built with the same root, split and seed are
    disjoint and together hold every file (the split is made before unreadable files
    are dropped, so it does not depend on them). For a root/train + root/val layout use
    train_val_folders (or an ImageFolder per folder, the second with classes=first.classes).

    verify: decode every file of this dataset now (threads; JPEG at 1/8 scale), skip
    those that fail and report them in one warning. With verify=False a bad file
    raises DataError when it is read.

    ds[i] -> (float32 (H, W, 3), int label); see the module docstring for the steps.
    crop: 'center', 'random' or 'random-resized'; flip: random left-right flips; jittered:
    random rotation, brightness and contrast (`jitter`); resize: shorter side before the crop
    (None: just enough to cover image_size); transform(image, rng): runs after them, before
    preprocess; preprocess: 'caffe', None (RGB 0..255) or a function.
    """

    def __init__(self, root, image_size=(224, 224), classes=None, transform=None,
                 validation_split=None, subset=None, seed=0, crop="center", flip=False,
                 preprocess="caffe", resize=None, verify=True, jittered=False):
        if crop not in ("center", "random", "random-resized"):
            raise ValueError(f"crop must be 'center', 'random' or 'random-resized', got {crop!r}")
        if subset not in (None, "training", "validation"):
            raise ValueError(f"subset must be 'training', 'validation' or None, got {subset!r}")
        if (subset is None) != (validation_split is None):
            raise ValueError("validation_split and subset must be given together")
        self.root = os.fspath(root)
        self.image_size = _size2(image_size)
        self.transform = transform
        self.subset = subset
        self.seed = int(seed)
        self.crop = crop
        self.flip = bool(flip)
        self.jittered = bool(jittered)
        self.resize = None if resize is None else int(resize)
        self.preprocess = get_preprocess(preprocess)
        self.epoch = 0

        self.classes, files = self._scan(classes)
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        samples = [(path, label) for label, paths in enumerate(files) for path in paths]
        if subset is not None:
            train_idx, val_idx = stratified_split([label for _, label in samples],
                                                  validation_split, self.seed)
            keep = train_idx if subset == "training" else val_idx
            samples = [samples[i] for i in keep]
            if not samples:
                raise DataError(f"the {subset} subset of {self.root} is empty; "
                                f"use more images or a larger validation_split")
        if verify:
            samples = self._drop_unreadable(samples)
        self.samples = samples
        self.labels = np.array([label for _, label in samples], dtype=np.int64)

    def _scan(self, classes):
        root = self.root
        if not os.path.isdir(root):
            raise DataError(f"dataset folder not found: {root}")
        names = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
        if classes is None:
            if not names:
                raise DataError(f"{root} has no class folders; expected {root}/<class name>/<images>")
            if find_splits(root) is not None and all(n.lower() in TRAIN_NAMES + VAL_NAMES + ("test",)
                                                     for n in names):
                raise DataError(f"{root} holds train/val folders, not class folders; use "
                                f"train_val_folders({root!r}) or ImageFolder on each folder")
            classes = names
        else:
            classes = [str(c) for c in classes]
            missing = [os.path.join(root, c) for c in classes if c not in names]
            splits = find_splits(root) if missing else None
            if splits is not None:
                raise DataError(f"{root} holds train/val folders, not the class folders "
                                f"{', '.join(classes)}; give one of them, e.g. {splits[1]}")
            if missing:
                raise DataError(f"class folder(s) not found: {', '.join(missing)}")
        files = [list_images(os.path.join(root, c)) for c in classes]
        if not any(files):
            raise DataError(f"no images ({' '.join(IMAGE_EXTENSIONS)}) found in {root}")
        empty = [os.path.join(root, c) for c, paths in zip(classes, files) if not paths]
        unreadable = [path for path in empty if not os.access(path, os.R_OK | os.X_OK)]
        if unreadable:
            raise DataError(f"class folder(s) that this user may not read: {', '.join(unreadable)}")
        if empty:
            raise DataError(f"class folder(s) with no images: {', '.join(empty)}")
        return classes, files

    def _drop_unreadable(self, samples):
        paths = [path for path, _ in samples]
        workers = min(8, os.cpu_count() or 1, max(1, len(paths)))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            reasons = list(pool.map(_check_image, paths))
        bad = [(path, why) for path, why in zip(paths, reasons) if why is not None]
        if bad:
            listing = "\n".join(f"  {path}: {why}" for path, why in bad)
            warnings.warn(f"skipped {len(bad)} image(s) that cannot be decoded:\n{listing}",
                          stacklevel=3)
        good = [s for s, why in zip(samples, reasons) if why is None]
        if not good:
            raise DataError(f"no readable images in {self.root}")
        if self.subset != "validation":
            present = {label for _, label in good}
            lost = [os.path.join(self.root, c) for i, c in enumerate(self.classes) if i not in present]
            if lost:
                raise DataError(f"class folder(s) with no readable images: {', '.join(lost)}")
        return good

    def set_epoch(self, epoch):
        """Choose the epoch that seeds crop, flip and transform."""
        self.epoch = int(epoch)

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        path, label = self.samples[index]
        rng = None
        if self.random:
            rng = np.random.default_rng([self.seed, self.epoch, index % len(self.samples)])
        img = open_image(path, min_size=max(self.resize or 0, *self.image_size))
        x = _prepare(img, self.image_size, self.crop, self.resize, self.flip,
                     self.transform, self.preprocess, rng, self.jittered)
        return x, label

    @property
    def random(self):
        """Whether an item changes from epoch to epoch (random crops, flips, jitter or a transform)."""
        return self.crop != "center" or self.flip or self.jittered or self.transform is not None

    def plain(self):
        """The same images prepared as for validation: centre crops, no flip, jitter or transform
        (what a frozen phase caches the features of)."""
        copy = object.__new__(ImageFolder)
        copy.__dict__.update(self.__dict__, crop="center", flip=False, jittered=False, transform=None)
        return copy

    def __repr__(self):
        subset = f", subset={self.subset!r}" if self.subset else ""
        return (f"ImageFolder({self.root!r}, {len(self)} images, "
                f"{len(self.classes)} classes{subset})")


def train_val_folders(root, image_size=(224, 224), validation_split=0.2, seed=0,
                      augment="light", **options):
    """(training, validation) ImageFolders for root.

    If root holds train and val folders (see find_splits) they are used, and the
    validation set takes the training set's classes. Otherwise root's class folders
    are split with validation_split and seed. augment (`AUGMENTATIONS`): 'light' gives the
    training set random crops and flips, 'standard' random resized crops, flips, rotations,
    brightness and contrast, 'none' (or False) nothing; validation always uses a center
    crop and no flip. options (classes, preprocess, resize, transform, verify) go to both.
    """
    level = {True: "light", False: "none", None: "none"}.get(augment, augment)
    steps = AUGMENTATIONS[level]
    extra = {"crop": steps["crop"], "flip": True, "jittered": "rotate" in steps} if steps else {}
    splits = find_splits(root)
    if splits is not None:
        train = ImageFolder(splits[0], image_size, seed=seed, **extra, **options)
        options = dict(options, classes=train.classes)
        val = ImageFolder(splits[1], image_size, seed=seed, **options)
        return train, val
    train = ImageFolder(root, image_size, validation_split=validation_split,
                        subset="training", seed=seed, **extra, **options)
    val = ImageFolder(root, image_size, validation_split=validation_split,
                      subset="validation", seed=seed, **options)
    return train, val


def dataset_labels(dataset):
    """The class index of every item of an ArrayDataset or ImageFolder, without reading images."""
    if hasattr(dataset, "samples"):
        return np.array([label for _, label in dataset.samples], dtype=np.int64)
    return np.asarray(dataset.labels, dtype=np.int64)


class ArrayDataset:
    """In-memory images and labels: ds[i] -> (float32 images[i], int labels[i]).

    transform(image, rng), if given, runs on each item with
    rng = numpy.random.default_rng([seed, epoch, i]).
    """

    def __init__(self, images, labels, transform=None, seed=0):
        if len(images) != len(labels):
            raise DataError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.transform = transform
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        x = np.asarray(self.images[index], dtype=np.float32)
        if self.transform is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index % len(self.labels)])
            x = np.asarray(self.transform(x, rng), dtype=np.float32)
        return x, int(self.labels[index])


# ---------------------------------------------------------------- batches

class DataLoader:
    """Batches (x float32 (B, ...), y int64 (B,)) from a dataset, decoded one batch at a time.

    shuffle: the order of epoch e is numpy.random.default_rng(seed + e).permutation(N);
    balanced: classes drawn evenly instead (see ``order``).
    Each pass over the loader uses the next epoch (0, 1, 2, ...); set_epoch(e) picks
    the next one, e.g. to resume a run. batches(epoch, start) reads one epoch from
    batch `start` on. The dataset's set_epoch, if any, is called with the epoch so
    its augmentation changes too. prefetch=1 prepares the next batch in a background thread;
    the batches are the same as without it.
    """

    def __init__(self, dataset, batch_size=32, shuffle=False, seed=0, drop_last=False, prefetch=0, balanced=False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.balanced = bool(balanced)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.prefetch = int(prefetch)
        self.epoch = 0

    def __len__(self):
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def order(self, epoch):
        """Dataset indices in the order epoch `epoch` reads them. balanced=True: N draws, each
        of a class chosen uniformly, then of one of its items uniformly (with replacement),
        from numpy.random.default_rng([seed, epoch]), so every class is seen about N/K times."""
        n = len(self.dataset)
        if self.balanced:
            labels = dataset_labels(self.dataset)
            members = [np.flatnonzero(labels == c) for c in np.unique(labels)]
            rng = np.random.default_rng([self.seed, epoch])
            chosen = rng.integers(len(members), size=n)
            return np.array([members[c][rng.integers(len(members[c]))] for c in chosen], dtype=np.int64)
        if self.shuffle:
            return np.random.default_rng(self.seed + epoch).permutation(n)
        return np.arange(n)

    def __iter__(self):
        epoch = self.epoch
        self.epoch += 1
        return self.batches(epoch)

    def batches(self, epoch=None, start=0):
        """Iterate the batches of one epoch (default: self.epoch), from batch number `start`."""
        epoch = self.epoch if epoch is None else int(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        order = self.order(epoch)
        chunks = [order[i * self.batch_size:(i + 1) * self.batch_size]
                  for i in range(start, len(self))]
        if self.prefetch > 0:
            return self._prefetched(chunks)
        return (self._collate(idx) for idx in chunks)

    def _collate(self, indices):
        items = [self.dataset[int(i)] for i in indices]
        x = np.stack([item[0] for item in items]).astype(np.float32, copy=False)
        y = np.array([item[1] for item in items], dtype=np.int64)
        return x, y

    def _prefetched(self, chunks):
        ready = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def produce():
            for idx in chunks:
                try:
                    item = (self._collate(idx), None)
                except Exception as exc:       # handed to the reader, raised there
                    item = (None, exc)
                while not stop.is_set():
                    try:
                        ready.put(item, timeout=0.05)
                        break
                    except queue.Full:
                        pass
                if stop.is_set() or item[1] is not None:
                    return

        worker = threading.Thread(target=produce, daemon=True)
        worker.start()
        try:
            for _ in chunks:
                batch, exc = ready.get()
                if exc is not None:
                    raise exc
                yield batch
        finally:
            stop.set()
            worker.join()
