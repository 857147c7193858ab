"""The run folder's settings: one object for the CLI's options, the record and --resume."""
import warnings

import h5py
import numpy as np
import pytest

from minitl import runs
from minitl.cli import build_parser


def finetune_args(*argv):
    return build_parser().parse_args(["finetune", "--data", ".", *argv])


def test_every_setting_with_a_help_text_is_a_finetune_option_with_its_default():
    args = finetune_args()
    for name, option in runs.Settings.options():
        assert getattr(args, name) == option["default"], name
    settings = runs.Settings.from_options(args)
    assert settings == runs.Settings(image_size=(224, 224))  # the option's default size; epochs 10
    assert settings.epochs == 10 and settings.hidden == (1024, 512)


def test_options_become_settings_and_the_record_entries():
    s = runs.Settings.from_options(finetune_args("--epochs", "3", "--optimizer", "adam", "--hidden", "16",
                                                 "--image-size", "40x48", "--augment", "--seed", "7"))
    assert (s.epochs, s.optimizer, s.hidden, s.image_size, s.seed) == (3, "adam", (16,), (40, 48), 7)
    assert s.augment == "light"  # --augment alone
    training = s.training()
    assert list(training) == list(runs.Settings.TRAINING) and training["lr"] == 0.003  # Adam's default rate
    assert s.model_config(4, s.image_size) == {"arch": "vgg16", "input_shape": [40, 48, 3], "width": 1.0,
                                               "num_classes": 4, "hidden": [16], "dropout": 0.0,
                                               "pooling": "flatten"}


def test_resume_takes_the_recorded_settings_and_never_fewer_epochs_than_done():
    s = runs.Settings(epochs=6, lr=0.05, unfreeze_blocks=2, hidden=(8,), width=0.25, seed=3)
    record = runs.new_record(["a", "b"], (32, 32), s.model_config(2, (32, 32)), s.seed, training=s.training())
    record["epoch"] = 4
    again = runs.Settings.from_record(record)
    assert again == runs.Settings(**{**vars(s), "image_size": (32, 32)})
    assert runs.Settings.from_record(record, epochs=9).epochs == 9
    assert runs.Settings.from_record(record, epochs=2).epochs == 2  # epoch 4 is in the frozen phase of 10
    record["epoch"] = 13
    assert runs.Settings.from_record(record, epochs=2).epochs == 3  # the epochs done stay done: 10 + 3


def test_an_unknown_optimizer_has_no_default_rate():
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        runs.Settings(optimizer="rmsprop").training()


def test_the_feature_cache_is_used_only_as_written(tmp_path):
    from minitl.runs import read_features, write_features
    path = tmp_path / "features.h5"
    x, y = np.arange(96, dtype=np.float32).reshape(3, 32), np.array([0, 1, 2])
    write_features(path, "k", {"train": (x, y)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = read_features(path, "k", ["train"])
        assert read_features(path, "other key", ["train"]) is None  # another base or data: no warning
    np.testing.assert_array_equal(got["train"][0], x)
    np.testing.assert_array_equal(got["train"][1], y)
    with h5py.File(path, "r") as f:
        offset = f["train/labels"].id.get_offset()
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(b"\x07")
    with pytest.warns(UserWarning, match="train: its arrays differ from their sha256"):
        assert read_features(path, "k", ["train"]) is None
    path.write_bytes(b"\0" * 4096)
    with pytest.warns(UserWarning, match="features.h5 is not the feature cache that was written"):
        assert read_features(path, "k", ["train"]) is None
