"""The offline demo: its pretrained base loads like the published notop file, and a short run writes results."""
import json

import numpy as np

from minitl import demo, io
from minitl.applications import VGG16


def test_shipped_base_loads_through_the_keras_loader():
    path = demo.demo_weights_path()
    assert path.is_file(), "weights/demo_vgg16_animals_notop.h5 is part of the project"
    entries = io.read_keras_weights(path)
    assert [e.name for e in entries][:2] == ["block1_conv1", "block1_conv2"] and len(entries) == 13
    base = VGG16(include_top=False, input_shape=(32, 32, 3), width=1 / 8)
    report = io.load_weights(base, path)
    assert len(report.loaded) == 13 and not report.untouched


def test_images_become_caffe_preprocessed_32x32_rgb():
    x = demo.to_vgg_input(np.full((2, 28, 28), 255, np.uint8))
    assert x.shape == (2, 32, 32, 3) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, 0, 0], -np.float32([103.939, 116.779, 123.68]), rtol=1e-6)
    np.testing.assert_allclose(x[0, 16, 16], 255 - np.float32([103.939, 116.779, 123.68]), rtol=1e-6)


def test_short_demo_run_writes_results_and_samples(tmp_path):
    lines = []
    results = demo.run(out=tmp_path / "demo", train_per_class=3, epochs=1, finetune_epochs=1, progress=False,
                       log=lines.append)
    saved = json.loads((tmp_path / "demo" / "results.json").read_text())
    for name in ("scratch", "frozen", "finetuned"):
        assert 0 <= saved[name]["accuracy"] <= 1 and 0 <= saved[name]["macro_f1"] <= 1
        assert saved[name] == results[name]
        assert (tmp_path / "demo" / name / "checkpoint.h5").is_file()
    samples = sorted((tmp_path / "demo" / "samples").glob("*/*.png"))
    assert len(samples) == 20
    text = "\n".join(lines)
    assert "minitl predict" in text and "minitl finetune --data" in text and "scratch" in text
