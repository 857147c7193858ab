"""minitl.data: decoding, ImageFolder, splits, transforms, DataLoader. Images are made in tmp_path."""

import functools
import operator
import os
import threading
import tracemalloc
import warnings

import numpy as np
import pytest
from PIL import Image

from minitl.data import (
    ArrayDataset,
    DataLoader,
    ImageFolder,
    find_splits,
    image_files,
    load_image,
    open_image,
    random_flip,
    resize_and_crop,
    stratified_split,
    train_val_folders,
)
from minitl.errors import DataError

RED, BLUE = (220, 20, 20), (20, 20, 220)


def rgb_image(h=20, w=30, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def two_color(h, w):
    """Top half red, bottom half blue."""
    a = np.zeros((h, w, 3), np.uint8)
    a[: h // 2] = RED
    a[h // 2:] = BLUE
    return Image.fromarray(a)


def save_exif_rotated(path):
    """A 40x20 (W x H) JPEG, top red / bottom blue, tagged orientation 6 (rotate 90 clockwise)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    two_color(20, 40).save(path, quality=95, exif=exif.tobytes())


def save_png16(path):
    values = np.array([[0, 1000, 32896, 65535]] * 2, dtype=np.uint16)
    img = Image.fromarray(values)
    assert img.mode == "I;16"
    img.save(path)


def save_rgba(path):
    a = np.zeros((2, 3, 4), np.uint8)
    a[:, 0] = (255, 0, 0, 0)      # fully transparent red
    a[:, 1] = (0, 200, 0, 255)    # opaque green
    a[:, 2] = (0, 0, 0, 128)      # half transparent black
    Image.fromarray(a).save(path)


def save_palette(path):
    img = Image.new("P", (4, 4), 0)
    img.putpalette([0, 0, 0, 10, 200, 30] + [0] * (254 * 3))
    img.paste(1, (0, 0, 2, 4))    # left half colour 1, right half colour 0
    img.save(path, transparency=0)


def make_mixed_folder(root):
    cats, dogs = root / "cats", root / "dogs"
    cats.mkdir(parents=True)
    dogs.mkdir()
    rgb_image(seed=1).save(cats / "rgb.jpg")
    Image.new("L", (12, 9), 77).save(cats / "gray.png")
    save_rgba(cats / "rgba.png")
    save_palette(cats / "palette.gif")
    Image.new("RGB", (16, 12), (200, 30, 60)).convert("CMYK").save(cats / "cmyk.jpg", quality=95)
    rgb_image(seed=2).save(dogs / "pic.bmp")
    rgb_image(seed=3).save(dogs / "pic.webp")
    save_png16(dogs / "sixteen.png")
    save_exif_rotated(dogs / "exif.jpg")
    rgb_image(seed=4).save(dogs / "UPPER.JPG")
    (dogs / "bad.jpg").write_bytes(np.random.default_rng(5).bytes(300))
    png = dogs / "truncated.png"
    rgb_image(64, 64, seed=6).save(png)
    png.write_bytes(png.read_bytes()[:-400])
    (dogs / ".hidden.jpg").write_bytes(b"not an image")
    (dogs / "notes.txt").write_text("not an image")
    return {"good": 10, "bad": ["bad.jpg", "truncated.png"]}


def make_classes(root, counts, size=(8, 8)):
    for c, n in enumerate(counts):
        folder = root / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", size, (c * 40, i * 10 % 256, 0)).save(folder / f"{i:03d}.png")


# ---------------------------------------------------------------- decoding

def test_mixed_folder_skips_exactly_the_corrupt_files(tmp_path):
    info = make_mixed_folder(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = ImageFolder(tmp_path, image_size=(16, 16), preprocess=None)
    assert len(caught) == 1
    message = str(caught[0].message)
    for name in info["bad"]:
        assert name in message
    assert "2 image(s)" in message
    assert ds.classes == ["cats", "dogs"]
    assert ds.class_to_idx == {"cats": 0, "dogs": 1}
    assert len(ds) == info["good"]
    names = sorted(os.path.basename(p) for p, _ in ds.samples)
    assert names == sorted(["rgb.jpg", "gray.png", "rgba.png", "palette.gif", "cmyk.jpg", "pic.bmp",
                            "pic.webp", "sixteen.png", "exif.jpg", "UPPER.JPG"])
    for i in range(len(ds)):
        x, label = ds[i]
        path, expected = ds.samples[i]
        assert x.shape == (16, 16, 3) and x.dtype == np.float32
        assert type(label) is int and label == expected
        assert label == ds.class_to_idx[os.path.basename(os.path.dirname(path))]
        assert 0.0 <= x.min() and x.max() <= 255.0
    assert ds.labels.dtype == np.int64 and ds.labels.tolist() == [label for _, label in ds.samples]


def test_grayscale_cmyk_and_sixteen_bit(tmp_path):
    Image.new("L", (5, 4), 77).save(tmp_path / "g.png")
    gray = np.asarray(open_image(tmp_path / "g.png"))
    assert gray.shape == (4, 5, 3) and gray.dtype == np.uint8 and (gray == 77).all()

    Image.new("RGB", (16, 12), (200, 30, 60)).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    cmyk = open_image(tmp_path / "c.jpg")
    assert Image.open(tmp_path / "c.jpg").mode == "CMYK"
    assert np.abs(np.asarray(cmyk).astype(int) - (200, 30, 60)).max() <= 8

    save_png16(tmp_path / "s.png")
    assert Image.open(tmp_path / "s.png").mode.startswith("I")
    sixteen = np.asarray(open_image(tmp_path / "s.png"))
    # x / 257, rounded: scaled, not clipped (clipping would make 1000 -> 255)
    assert sixteen[0, :, 0].tolist() == [0, 4, 128, 255]
    assert (sixteen == sixteen[:, :, :1]).all()


def test_transparency_composited_on_white(tmp_path):
    save_rgba(tmp_path / "a.png")
    rgba = np.asarray(open_image(tmp_path / "a.png")).astype(int)
    assert rgba[0, 0].tolist() == [255, 255, 255]
    assert rgba[0, 1].tolist() == [0, 200, 0]
    assert np.abs(rgba[0, 2] - 127).max() <= 1

    save_palette(tmp_path / "p.gif")
    assert Image.open(tmp_path / "p.gif").mode == "P"
    pal = np.asarray(open_image(tmp_path / "p.gif"))
    assert pal[:, :2].reshape(-1, 3).tolist() == [[10, 200, 30]] * 8
    assert pal[:, 2:].reshape(-1, 3).tolist() == [[255, 255, 255]] * 8


def test_exif_orientation_is_applied(tmp_path):
    save_exif_rotated(tmp_path / "r.jpg")
    img = open_image(tmp_path / "r.jpg")
    assert img.size == (20, 40)                  # (W, H): turned upright
    a = np.asarray(img).astype(int)
    # rotating 90 degrees clockwise moves the red top to the right side
    assert a[:, 14:, 0].mean() > 180 and a[:, 14:, 2].mean() < 60
    assert a[:, :6, 2].mean() > 180 and a[:, :6, 0].mean() < 60

    x = load_image(tmp_path / "r.jpg", image_size=(40, 20), preprocess=None)
    assert x.shape == (40, 20, 3)
    assert x[:, 14:, 0].mean() > 180 and x[:, :6, 2].mean() > 180


def test_large_jpeg_is_decoded_reduced_but_right(tmp_path):
    Image.new("RGB", (1600, 1200), (30, 120, 210)).save(tmp_path / "big.jpg", quality=90)
    x = load_image(tmp_path / "big.jpg", image_size=32, preprocess=None)
    assert x.shape == (32, 32, 3) and x.dtype == np.float32
    assert np.abs(x.mean(axis=(0, 1)) - (30, 120, 210)).max() < 4


def test_load_image_errors(tmp_path):
    with pytest.raises(DataError, match="missing.png"):
        load_image(tmp_path / "missing.png", preprocess=None)
    (tmp_path / "junk.jpg").write_bytes(b"\x00" * 50)
    with pytest.raises(DataError, match="junk.jpg"):
        load_image(tmp_path / "junk.jpg", preprocess=None)


def test_load_image_says_missing_or_folder(tmp_path):
    with pytest.raises(DataError, match=r"missing\.png does not exist$"):
        load_image(tmp_path / "missing.png", preprocess=None)
    with pytest.raises(DataError, match="is a folder$"):
        load_image(tmp_path, preprocess=None)


def test_caffe_preprocess_path(tmp_path):
    pytest.importorskip("minitl.applications.vgg16")
    rgb_image(40, 30, seed=7).save(tmp_path / "p.png")
    rgb = load_image(tmp_path / "p.png", image_size=(24, 24), preprocess=None)
    bgr = load_image(tmp_path / "p.png", image_size=(24, 24), preprocess="caffe")
    assert bgr.dtype == np.float32 and bgr.shape == (24, 24, 3)
    expected = rgb[..., ::-1] - np.array([103.939, 116.779, 123.68], np.float32)
    np.testing.assert_allclose(bgr, expected, atol=1e-4)


def test_verify_false_raises_on_read(tmp_path):
    make_classes(tmp_path, [2])
    (tmp_path / "class0" / "zz.jpg").write_bytes(b"garbage")
    ds = ImageFolder(tmp_path, image_size=8, preprocess=None, verify=False)
    assert len(ds) == 3
    ds[0]
    with pytest.raises(DataError, match="zz.jpg"):
        ds[2]


# ---------------------------------------------------------------- errors

def test_missing_root(tmp_path):
    with pytest.raises(DataError, match="nowhere"):
        ImageFolder(tmp_path / "nowhere", preprocess=None)


def test_root_without_class_folders(tmp_path):
    rgb_image().save(tmp_path / "loose.png")
    with pytest.raises(DataError, match=str(tmp_path)):
        ImageFolder(tmp_path, preprocess=None)


def test_empty_class_folder(tmp_path):
    make_classes(tmp_path, [2])
    (tmp_path / "lonely").mkdir()
    with pytest.raises(DataError, match="lonely"):
        ImageFolder(tmp_path, preprocess=None)


def test_no_images_anywhere(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match=f"no images.*{tmp_path}"):
        ImageFolder(tmp_path, preprocess=None)


def test_class_with_only_corrupt_files(tmp_path):
    make_classes(tmp_path, [2])
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.png").write_bytes(b"nope")
    with pytest.warns(UserWarning, match="x.png"), pytest.raises(DataError, match="broken"):
        ImageFolder(tmp_path, preprocess=None)


def test_named_classes_and_missing_class(tmp_path):
    make_classes(tmp_path, [1, 1, 1])
    ds = ImageFolder(tmp_path, classes=["class2", "class0"], preprocess=None)
    assert ds.classes == ["class2", "class0"] and ds.labels.tolist() == [0, 1]
    with pytest.raises(DataError, match="class9"):
        ImageFolder(tmp_path, classes=["class0", "class9"], preprocess=None)


def test_bad_arguments(tmp_path):
    make_classes(tmp_path, [2])
    with pytest.raises(ValueError):
        ImageFolder(tmp_path, validation_split=0.2, preprocess=None)
    with pytest.raises(ValueError):
        ImageFolder(tmp_path, crop="left", preprocess=None)
    with pytest.raises(ValueError):
        ImageFolder(tmp_path, preprocess="torch")


# ---------------------------------------------------------------- splits

def test_split_is_disjoint_complete_stratified_and_deterministic(tmp_path):
    make_classes(tmp_path, [10, 7, 3])
    everything = ImageFolder(tmp_path, image_size=8, preprocess=None).samples
    train = ImageFolder(tmp_path, 8, validation_split=0.3, subset="training", seed=1, preprocess=None)
    val = ImageFolder(tmp_path, 8, validation_split=0.3, subset="validation", seed=1, preprocess=None)
    assert set(train.samples).isdisjoint(val.samples)
    assert sorted(train.samples + val.samples) == sorted(everything)
    assert np.bincount(val.labels).tolist() == [3, 2, 1]
    assert np.bincount(train.labels).tolist() == [7, 5, 2]
    again = ImageFolder(tmp_path, 8, validation_split=0.3, subset="validation", seed=1, preprocess=None)
    assert again.samples == val.samples
    other = ImageFolder(tmp_path, 8, validation_split=0.3, subset="validation", seed=2, preprocess=None)
    assert other.samples != val.samples


def test_empty_validation_subset(tmp_path):
    make_classes(tmp_path, [3, 3])
    with pytest.raises(DataError, match="validation subset"):
        ImageFolder(tmp_path, validation_split=0.1, subset="validation", preprocess=None)


def test_stratified_split_small_classes():
    labels = np.array([0] * 5 + [1] * 2 + [2])
    train, val = stratified_split(labels, 0.5, seed=0)
    assert train.dtype == np.int64 and np.intersect1d(train, val).size == 0
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(8))
    assert np.bincount(labels[val], minlength=3).tolist() == [3, 1, 0]
    assert np.bincount(labels[train], minlength=3).tolist() == [2, 1, 1]
    with pytest.raises(ValueError):
        stratified_split(labels, 1.0)


def test_train_val_layout(tmp_path):
    make_classes(tmp_path / "train", [3, 2])
    make_classes(tmp_path / "val", [1, 1])
    assert find_splits(tmp_path) == (str(tmp_path / "train"), str(tmp_path / "val"))
    assert find_splits(tmp_path / "train") is None
    train, val = train_val_folders(tmp_path, image_size=8, preprocess=None)
    assert train.classes == val.classes == ["class0", "class1"]
    assert len(train) == 5 and len(val) == 2
    assert train.crop == "random" and train.flip and val.crop == "center" and not val.flip
    with pytest.raises(DataError, match="train_val_folders"):
        ImageFolder(tmp_path, preprocess=None)
    # a run's classes asked of the root (minitl evaluate --data ROOT): point to its folders
    with pytest.raises(DataError, match=f"holds train/val folders.*e.g. {tmp_path / 'val'}$"):
        ImageFolder(tmp_path, classes=train.classes, preprocess=None)


def test_train_val_folders_splits_a_plain_root(tmp_path):
    make_classes(tmp_path, [5, 5])
    train, val = train_val_folders(tmp_path, image_size=8, validation_split=0.4, preprocess=None)
    assert len(train) == 6 and len(val) == 4
    assert set(train.samples).isdisjoint(val.samples)


def test_val_folder_missing_a_class(tmp_path):
    make_classes(tmp_path / "train", [1, 1])
    make_classes(tmp_path / "validation", [1])
    with pytest.raises(DataError, match="class1"):
        train_val_folders(tmp_path, image_size=8, preprocess=None)


# ---------------------------------------------------------------- transforms

@pytest.mark.parametrize("h, w, size, resize, whole_size", [
    (30, 50, (20, 20), None, (20, 33)),    # just covers 20 x 20
    (50, 30, (60, 10), None, (60, 36)),    # enlarged to cover
    (97, 83, (24, 16), 40, (47, 40)),      # shorter side 40
    (40, 300, (32, 32), 36, (36, 270)),
    (12, 9, (40, 40), None, (53, 40)),
    (60, 80, (32, 32), 16, (32, 42)),      # shorter side 16 does not cover 32 x 32: covered instead
])
def test_resize_and_crop_equals_resizing_the_whole_image_then_cropping(h, w, size, resize, whole_size):
    # The reference resizes the whole image with Pillow and slices the central window out of it.
    img = Image.fromarray(np.random.default_rng(h * w).integers(0, 256, (h, w, 3), dtype=np.uint8))
    rh, rw = whole_size
    whole = np.asarray(img.resize((rw, rh), Image.BILINEAR)).astype(int)
    top, left = (rh - size[0]) // 2, (rw - size[1]) // 2
    got = resize_and_crop(img, size, "center", resize)
    assert got.shape == size + (3,) and got.dtype == np.uint8
    diff = np.abs(got - whole[top:top + size[0], left:left + size[1]])
    # Equal but for exact ties (x.5) rounded the other way, at most one level in each of the two passes.
    assert diff.max() <= 2


def test_random_crop_is_a_window_and_reproducible():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)
    pil = Image.fromarray(img)
    center = resize_and_crop(pil, (10, 20), "center", resize=30)  # shorter side 30: no resize
    np.testing.assert_array_equal(center, img[10:20, 15:35])
    crop = resize_and_crop(pil, (10, 10), "random", 30, np.random.default_rng(3))
    np.testing.assert_array_equal(crop, resize_and_crop(pil, (10, 10), "random", 30, np.random.default_rng(3)))
    windows = {img[t:t + 10, l:l + 10].tobytes(): (t, l) for t in range(21) for l in range(41)}
    assert crop.tobytes() in windows
    places = {windows[resize_and_crop(pil, (10, 10), "random", 30, np.random.default_rng(s)).tobytes()]
              for s in range(20)}
    assert len(places) > 10
    flips = [random_flip(img, np.random.default_rng(s)) for s in range(8)]
    assert all((f == img).all() or (f == img[:, ::-1]).all() for f in flips)
    assert any((f == img[:, ::-1]).all() for f in flips) and any((f == img).all() for f in flips)


@pytest.mark.parametrize("size", [(1, 300_000), (300_000, 1)])  # (H, W)
def test_extreme_aspect_ratio_costs_no_more_than_the_output(tmp_path, size):
    path = tmp_path / "line.png"
    Image.new("RGB", size[::-1], (10, 200, 30)).save(path)
    assert path.stat().st_size < 20_000
    tracemalloc.start()
    try:
        x = load_image(path, image_size=(224, 224), preprocess=None)
        ds = ImageFolder(make_class_with(tmp_path, path), image_size=(64, 48), crop="random", flip=True,
                         resize=256, preprocess=None)
        y, _ = ds[0]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # Resizing the whole image first would make a 224 x 67,200,000 image (45 GB).
    assert peak < 16 * 2**20, peak
    assert x.shape == (224, 224, 3) and y.shape == (64, 48, 3)
    assert np.array_equal(np.unique(x.reshape(-1, 3), axis=0), [[10, 200, 30]])
    assert np.array_equal(np.unique(y.reshape(-1, 3), axis=0), [[10, 200, 30]])


def make_class_with(tmp_path, image):
    """root/a/<image> and root/b/<a small image>, for an ImageFolder of two classes."""
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    os.replace(image, root / "a" / image.name)
    rgb_image(8, 8).save(root / "b" / "small.png")
    return root


# ---------------------------------------------------------------- files that are not regular files

def call_with_fifo_guard(fifo, fn, *args, **kw):
    """fn(*args) in a thread; if it is still blocked on the FIFO after 20 s, release it and fail."""
    result = {}

    def run():
        try:
            result["value"] = fn(*args, **kw)
        except Exception as exc:  # handed to the test
            result["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(20)
    if worker.is_alive():
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # a writer unblocks the reader
        os.close(fd)
        worker.join(5)
        pytest.fail(f"{fn.__name__} blocked on the FIFO {fifo}")
    if "error" in result:
        raise result["error"]
    return result.get("value")


def test_fifo_named_like_an_image_is_reported_not_waited_on(tmp_path):
    make_classes(tmp_path, [2, 2])
    fifo = tmp_path / "class0" / "x.jpg"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match=r"x\.jpg is a FIFO"):
        call_with_fifo_guard(fifo, load_image, fifo, preprocess=None)
    with pytest.warns(UserWarning, match=r"skipped 1 image[\s\S]*x\.jpg[\s\S]*FIFO"):
        ds = call_with_fifo_guard(fifo, ImageFolder, tmp_path, image_size=8, preprocess=None)
    assert len(ds) == 4 and str(fifo) not in [p for p, _ in ds.samples]
    lazy = ImageFolder(tmp_path, image_size=8, preprocess=None, verify=False)
    index = [p for p, _ in lazy.samples].index(str(fifo))
    with pytest.raises(DataError, match="FIFO"):
        call_with_fifo_guard(fifo, lazy.__getitem__, index)


def test_devices_sockets_and_symlink_loops_are_reported(tmp_path):
    if os.path.exists("/dev/zero"):
        os.symlink("/dev/zero", tmp_path / "zero.png")
        with pytest.raises(DataError, match=r"zero\.png is a device"):
            load_image(tmp_path / "zero.png", preprocess=None)
    os.symlink(tmp_path / "b.jpg", tmp_path / "a.jpg")
    os.symlink(tmp_path / "a.jpg", tmp_path / "b.jpg")
    with pytest.raises(DataError, match=r"cannot open image .*a\.jpg"):
        load_image(tmp_path / "a.jpg", preprocess=None)
    socket = pytest.importorskip("socket")
    if hasattr(socket, "AF_UNIX") and len(str(tmp_path / "s.jpg")) < 100:
        with socket.socket(socket.AF_UNIX) as server:
            server.bind(str(tmp_path / "s.jpg"))
            with pytest.raises(DataError, match=r"s\.jpg is a socket"):
                load_image(tmp_path / "s.jpg", preprocess=None)


def test_image_files_reports_a_folder_named_like_an_image_and_goes_on(tmp_path):
    (tmp_path / "folder.jpg").mkdir()
    rgb_image().save(tmp_path / "cat.png")
    (tmp_path / "more").mkdir()
    rgb_image().save(tmp_path / "more" / "dog.jpg")
    files, problems = image_files([tmp_path / "folder.jpg", tmp_path / "cat.png", tmp_path / "more",
                                   tmp_path / "missing.png"])
    assert files == [str(tmp_path / "cat.png"), str(tmp_path / "more" / "dog.jpg"), str(tmp_path / "missing.png")]
    assert len(problems) == 1 and "folder.jpg" in problems[0] and "no images" in problems[0]


def test_folder_named_like_an_image_inside_a_class_is_a_sub_folder(tmp_path):
    make_classes(tmp_path, [2, 2])
    (tmp_path / "class0" / "empty.jpg").mkdir()
    (tmp_path / "class1" / "more.png").mkdir()
    rgb_image().save(tmp_path / "class1" / "more.png" / "inner.png")
    ds = ImageFolder(tmp_path, image_size=8, preprocess=None)
    assert len(ds) == 5 and str(tmp_path / "class1" / "more.png" / "inner.png") in [p for p, _ in ds.samples]


def test_augmentation_depends_on_epoch_only(tmp_path):
    (tmp_path / "a").mkdir()
    rgb_image(40, 60, seed=8).save(tmp_path / "a" / "x.png")
    ds = ImageFolder(tmp_path, image_size=16, resize=32, crop="random", flip=True, preprocess=None)
    first = ds[0][0]
    np.testing.assert_array_equal(first, ds[0][0])
    others = []
    for epoch in range(1, 5):
        ds.set_epoch(epoch)
        others.append(ds[0][0])
    assert any(not np.array_equal(first, o) for o in others)
    ds.set_epoch(0)
    np.testing.assert_array_equal(first, ds[0][0])


def test_transform_runs_before_preprocess(tmp_path):
    make_classes(tmp_path, [1])
    seen = []

    def transform(x, rng):
        seen.append((x.dtype, x.shape))
        return x * 0 + 5

    ds = ImageFolder(tmp_path, image_size=4, transform=transform, preprocess=lambda x: x + 1)
    x, _ = ds[0]
    assert seen == [(np.float32, (4, 4, 3))] and (x == 6).all()


# ---------------------------------------------------------------- loader

def index_dataset(n=10):
    """Item i is a (2, 2, 3) image filled with i, label i % 3."""
    images = np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    return ArrayDataset(images, np.arange(n) % 3)


def batch_ids(batches):
    return [x[:, 0, 0, 0].astype(int).tolist() for x, _ in batches]


def test_loader_batches_and_drop_last():
    ds = index_dataset(10)
    loader = DataLoader(ds, batch_size=4)
    assert len(loader) == 3
    batches = list(loader)
    assert batch_ids(batches) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    x, y = batches[0]
    assert x.dtype == np.float32 and x.shape == (4, 2, 2, 3)
    assert y.dtype == np.int64 and y.tolist() == [0, 1, 2, 0]
    dropped = DataLoader(ds, batch_size=4, drop_last=True)
    assert len(dropped) == 2 and batch_ids(dropped) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert len(DataLoader(ds, batch_size=5, drop_last=True)) == 2


def test_shuffle_reproducible_per_epoch():
    ds = index_dataset(20)
    a = DataLoader(ds, batch_size=6, shuffle=True, seed=3)
    b = DataLoader(ds, batch_size=6, shuffle=True, seed=3)
    first, second = batch_ids(a), batch_ids(a)          # epochs 0 and 1
    assert first == batch_ids(b)
    assert first != second
    for ids in (first, second):
        assert sorted(functools.reduce(operator.iadd, ids, [])) == list(range(20))
    assert first != [list(range(i, min(i + 6, 20))) for i in range(0, 20, 6)]
    a.set_epoch(1)
    assert batch_ids(a) == second
    assert batch_ids(a.batches(1, start=2)) == second[2:]
    assert batch_ids(DataLoader(ds, batch_size=6, shuffle=True, seed=4)) != first
    assert np.array_equal(a.order(5), np.random.default_rng(3 + 5).permutation(20))


def test_loader_sets_dataset_epoch(tmp_path):
    (tmp_path / "a").mkdir()
    for i in range(3):
        rgb_image(40, 60, seed=i).save(tmp_path / "a" / f"{i}.png")
    ds = ImageFolder(tmp_path, image_size=16, resize=32, crop="random", flip=True, preprocess=None)
    loader = DataLoader(ds, batch_size=3)
    e0, e1 = next(iter(loader))[0], next(iter(loader))[0]
    assert not np.array_equal(e0, e1)
    np.testing.assert_array_equal(next(iter(loader.batches(0)))[0], e0)


def test_prefetch_gives_same_batches_and_stops():
    ds = index_dataset(23)
    plain = DataLoader(ds, batch_size=4, shuffle=True, seed=1)
    ahead = DataLoader(ds, batch_size=4, shuffle=True, seed=1, prefetch=1)
    for _ in range(2):
        for (x0, y0), (x1, y1) in zip(plain, ahead, strict=True):
            np.testing.assert_array_equal(x0, x1)
            np.testing.assert_array_equal(y0, y1)
    before = threading.active_count()
    batches = ahead.batches(0)
    next(batches)
    batches.close()                                     # must not hang
    assert threading.active_count() == before


def test_prefetch_passes_errors_on():
    class Broken(ArrayDataset):
        def __getitem__(self, i):
            if i == 5:
                raise DataError("item 5 is broken")
            return super().__getitem__(i)

    ds = index_dataset(8)
    loader = DataLoader(Broken(ds.images, ds.labels), batch_size=2, prefetch=1)
    with pytest.raises(DataError, match="item 5"):
        list(loader)


def test_array_dataset():
    images = np.arange(12, dtype=np.uint8).reshape(3, 2, 2)
    ds = ArrayDataset(images, [2, 0, 1], transform=lambda x, rng: x + rng.integers(0, 100))
    x, y = ds[1]
    assert x.dtype == np.float32 and x.shape == (2, 2) and y == 0
    np.testing.assert_array_equal(x, ds[1][0])
    with pytest.raises(DataError):
        ArrayDataset(images, [0, 1])


def test_standard_augmentation_is_seeded_and_stays_in_range(tmp_path):
    from minitl.data import AUGMENTATIONS, jitter, random_resized_box
    rng = np.random.default_rng(0)
    for _ in range(200):  # a box inside the image, of about the drawn area
        top, left, h, w = random_resized_box(40, 60, rng)
        assert 0 <= top and top + h <= 40 and 0 <= left and left + w <= 60 and h * w >= 1
    x = np.random.default_rng(1).uniform(0, 255, (16, 16, 3)).astype(np.float32)
    a, b = jitter(x, np.random.default_rng(5)), jitter(x, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    assert a.min() >= 0 and a.max() <= 255 and not np.array_equal(a, x)
    still = jitter(x, np.random.default_rng(5), rotate=0, brightness=0, contrast=0)
    np.testing.assert_allclose(still, np.clip(x, 0, 255).astype(np.uint8), atol=1e-3)  # nothing but the uint8 trip
    folder = tmp_path / "photos"
    for name in ("a", "b"):
        (folder / name).mkdir(parents=True)
        for i in range(3):
            pixels = np.random.default_rng(i).integers(0, 255, (40, 50, 3), np.uint8)
            Image.fromarray(pixels).save(folder / name / f"{i}.png")
    train, val = train_val_folders(folder, (24, 24), 0.34, augment="standard", preprocess=None)
    assert train.crop == "random-resized" and train.flip and train.jittered and not val.random
    first, again = train[0][0], train[0][0]
    np.testing.assert_array_equal(first, again)  # the same epoch: the same draws
    train.set_epoch(1)
    assert not np.array_equal(train[0][0], first) and first.shape == (24, 24, 3)
    plain = train.plain()
    assert not plain.random and train.random and plain.samples == train.samples
    assert set(AUGMENTATIONS) == {"none", "light", "standard"}
