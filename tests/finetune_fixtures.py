"""Tiny generated image folders and a tiny pretrained base, shared by the transfer-learning,
training and CLI tests."""
import warnings

import numpy as np
import pytest
from PIL import Image

import minitl.train as T
from minitl import io
from minitl.applications import VGG16
from minitl.data import ImageFolder
from minitl.nn import manual_seed

SMALL = {  # one phase, the base frozen, plain SGD: the run folder's rules on the cheapest run
    "unfreeze_blocks": 0,
    "freeze_epochs": 0,
    "optimizer": "sgd",
    "schedule": "none",
    "width": 1 / 16,
    "hidden": (16, 8),
    "batch_size": 4,
    "lr": 0.01,
    "seed": 0,
    "progress": False,
    "log": lambda *a: None,
}


def make_folder(root, per_class=6, size=40):
    """Three classes told apart by colour, in mixed formats, with grayscale, RGBA and one corrupt file."""
    rng = np.random.default_rng(0)
    colours = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}
    formats = ["png", "jpg", "bmp", "gif", "webp", "png"]
    for name, colour in colours.items():
        d = root / name
        d.mkdir(parents=True)
        for i in range(per_class):
            a = np.clip(np.array(colour) + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
            img = Image.fromarray(a)
            if name == "green" and i == 0:
                img = img.convert("L")
            if name == "blue" and i == 0:
                img = img.convert("RGBA")
                img.save(d / f"{i}.png")
                continue
            img.save(d / f"{i}.{formats[i % len(formats)]}")
    (root / "red" / "broken.jpg").write_bytes(b"not an image at all")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("images") / "photos")


@pytest.fixture(scope="module")
def notop(tmp_path_factory):
    manual_seed(1)
    path = tmp_path_factory.mktemp("weights") / "notop.h5"
    io.save_weights(VGG16(include_top=False, input_shape=(32, 32, 3), width=1 / 16), path)
    return path


def datasets(folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train = ImageFolder(folder, (32, 32), validation_split=0.34, subset="training", seed=0)
        val = ImageFolder(folder, (32, 32), validation_split=0.34, subset="validation", seed=0)
    return train, val


def params(model):
    return {k: v.copy() for k, v in model.state_dict().items()}


def interrupt_at(monkeypatch, at_epoch):
    """Make training raise KeyboardInterrupt (Ctrl-C) when epoch ``at_epoch`` (0-based) starts."""
    real = T.train_epoch

    def interrupted(loop):
        if loop.epoch == at_epoch:
            raise KeyboardInterrupt
        return real(loop)

    monkeypatch.setattr(T, "train_epoch", interrupted)
    return lambda: monkeypatch.setattr(T, "train_epoch", real)


def one_error_line(capsys, command, *parts):
    """The error output of ``minitl COMMAND``: that one line (no warning, no traceback), naming ``parts``."""
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"minitl {command}: error: ")
    for part in parts:
        assert part in err, err
