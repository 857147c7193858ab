"""Check minitl's full backbones against real Keras, both ways; the record of what was run
(see "Checked with Keras" in README.md). Not a test: it needs Keras, and writes full-size
weight files into a scratch folder, never into the repository.

Each step runs in its own interpreter (WORK is a scratch folder shared by the steps):

    KERAS_BACKEND=torch /work/kvenv/bin/python check_with_keras.py keras3 WORK
    /work/tfvenv/bin/python check_with_keras.py keras2 WORK
    PYTHONPATH=<minitl checkout> python3 check_with_keras.py minitl WORK
    KERAS_BACKEND=torch /work/kvenv/bin/python check_with_keras.py keras3-read WORK
    /work/tfvenv/bin/python check_with_keras.py keras2-read WORK
    KERAS_BACKEND=torch /work/kvenv/bin/python check_with_keras.py keras3-f64 WORK
    PYTHONPATH=<minitl checkout> python3 check_with_keras.py minitl-f64 WORK
    KERAS_BACKEND=torch /work/kvenv/bin/python check_with_keras.py keras3-f64-written WORK
    python3 check_with_keras.py report WORK

A third argument limits a step to some of CONFIGS (comma-separated names).

The fine-tuned transfer models, through `minitl finetune` and `minitl export` (steps 7 to 9;
a third argument limits them to some of EXPORTS):

    KERAS_BACKEND=torch /work/kvenv/bin/python check_with_keras.py export-base WORK
    PYTHONPATH=<minitl checkout> python3 check_with_keras.py export-minitl WORK
    KERAS_BACKEND=torch /work/kvenv/bin/python check_with_keras.py export-keras WORK
    TF_USE_LEGACY_KERAS=1 /work/tfvenv/bin/python check_with_keras.py export-keras WORK
    python3 check_with_keras.py export-report WORK

1. keras3: each model of CONFIGS, built by keras.applications with weights=None and seeded
   random weights (BatchNorm gamma, beta and moving statistics non-trivial, set from the
   batch statistics of the input so that the deep models stay in range), is written as
   Keras 3's legacy .h5 and native .weights.h5; its outputs on a seeded input in inference
   mode and training mode (training=True), and the moving statistics after that call, go
   into an npz.
2. keras2: tf_keras builds the same model, takes the legacy file's arrays layer by layer and
   writes Keras 2's layout with its own save_weights.
3. minitl: each of the three files is loaded into minitl's model by name and by order and
   compared with Keras' outputs (eval(), then train()) and moving statistics. Then a minitl
   model with seeded random weights is written with minitl.io.save_weights, with its arrays
   and outputs in an npz.
4. keras3-read / keras2-read: Keras loads minitl's file into the same architecture
   (model.load_weights: by order; and the legacy reader by name), its arrays are compared
   with minitl's bit for bit and its outputs with minitl's.
5. keras3-f64, minitl-f64, keras3-f64-written: Keras 3 in float64 on the same weights and
   input, against which Keras 3's and minitl's float32 outputs are measured.
6. report: the tables, as markdown.
7. export-base: a tiny image folder per input size (3 classes of 6 seeded noisy colour
   images, at the model's input size so that no resizing happens), and for each arch of
   EXPORTS the Keras 3 backbone without top, initialised as in step 1 on those images,
   written as Keras 3's legacy .h5: the pretrained base of the run.
8. export-minitl: `minitl finetune` from that base (two epochs of Adam at 1e-4, the last block unfrozen, so
   that its weights and BatchNorm statistics change), `minitl export`, and `minitl predict
   --best`; minitl's forward on the images (probabilities and logits) goes into an npz.
9. export-keras: the generated FILE_keras.py, in Keras 3 or tf_keras (as its
   TF_USE_LEGACY_KERAS switch says): build_model() loads the file; its arrays against the
   file's, layer by layer in order; its probabilities and logits on minitl's inputs against
   minitl's; its own load_images against minitl's inputs; and the script run on the image
   files against `minitl predict`.

Differences are max |Δ| / max |reference| over the whole tensor.
"""
import json
import sys
from pathlib import Path

import numpy as np

MODE, WORK = sys.argv[1], Path(sys.argv[2])
WORK.mkdir(parents=True, exist_ok=True)
SEED, BATCH = 12, 4

# name: (class, extra arguments, input size, preprocess_input family)
CONFIGS = {}
for top in (False, True):
    t = "top" if top else "notop"
    CONFIGS[f"vgg19_{t}"] = ("VGG19", {"include_top": top}, 32, "vgg19")
    CONFIGS[f"resnet50_{t}"] = ("ResNet50", {"include_top": top}, 32, "resnet50")
    CONFIGS[f"inception_v3_{t}"] = ("InceptionV3", {"include_top": top}, 75, "inception_v3")
    for alpha in (1.0, 0.35):
        CONFIGS[f"mobilenet_v2_{alpha}_{t}"] = ("MobileNetV2", {"include_top": top, "alpha": alpha}, 32,
                                                "mobilenet_v2")
ONLY = sys.argv[3].split(",") if len(sys.argv) > 3 else list(CONFIGS)


def rel(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))


def save_json(name, obj):
    (WORK / name).write_text(json.dumps(obj, indent=1))


def keras_kwargs(cfg, keras_module):
    cls, extra, size, _ = CONFIGS[cfg]
    build = getattr(keras_module.applications, cls)
    return build, dict(weights=None, input_shape=(size, size, 3), classifier_activation=None, **extra)


def seeded_input(cfg, keras_module):
    _, _, size, family = CONFIGS[cfg]
    rng = np.random.default_rng([SEED, 1])
    x_raw = rng.integers(0, 256, (BATCH, size, size, 3)).astype("float32")
    return np.ascontiguousarray(getattr(keras_module.applications, family).preprocess_input(x_raw), np.float32)


def bn_layers(model):
    return [layer for layer in model.layers if layer.__class__.__name__ == "BatchNormalization"]


# ------------------------------------------------ 1. Keras 3 writes

def init_keras3(keras, model, rng, x):
    """He-normal kernels (Dense scaled down), N(0, 0.1) biases; each BatchNorm, in model order,
    gets gamma U(0.5, 1.5), beta N(0, 0.3), moving mean = batch mean + 0.3 std N(0, 1) and
    moving variance = batch variance x U(0.5, 2) + a quarter of the mean batch variance over
    the channels, of its input in inference mode. The floor keeps a nearly constant channel
    (a 1x1 feature map of a small input) from amplifying round-off by 1 / its tiny std."""
    import torch
    for layer in model.layers:
        cls = layer.__class__.__name__
        if cls in ("Conv2D", "DepthwiseConv2D", "Dense"):
            for w in layer.weights:
                shape = tuple(w.shape)
                if len(shape) == 1:
                    w.assign(rng.normal(0, 0.1, shape).astype("float32"))
                else:
                    fan_in = np.prod(shape[:2]) if cls == "DepthwiseConv2D" else np.prod(shape[:-1])
                    scale = np.sqrt(2 / fan_in) * (0.3 if cls == "Dense" else 1.0)
                    w.assign((rng.normal(0, 1, shape) * scale).astype("float32"))
        elif cls == "BatchNormalization":
            probe = keras.Model(model.input, layer.input)
            with torch.no_grad():
                a = probe(x, training=False).detach().cpu().numpy().astype(np.float64)
            mean, std = a.mean(axis=(0, 1, 2)), a.std(axis=(0, 1, 2))
            c = mean.shape[0]
            values = {"gamma": rng.uniform(0.5, 1.5, c), "beta": rng.normal(0, 0.3, c),
                      "moving_mean": mean + 0.3 * std * rng.normal(0, 1, c),
                      "moving_variance": std ** 2 * rng.uniform(0.5, 2.0, c) + 0.25 * (std ** 2).mean()}
            for w in layer.weights:
                w.assign(values[w.name].astype("float32"))


def step_keras3():
    import h5py
    import keras
    import torch
    from keras.src.legacy.saving import legacy_h5_format
    for cfg in ONLY:
        keras.backend.clear_session()
        keras.utils.set_random_seed(SEED)
        build, kw = keras_kwargs(cfg, keras)
        model = build(**kw)
        x = seeded_input(cfg, keras)
        init_keras3(keras, model, np.random.default_rng(SEED), x)
        with h5py.File(WORK / f"{cfg}.keras3_legacy.h5", "w") as f:
            legacy_h5_format.save_weights_to_hdf5_group(f, model)
        model.save_weights(WORK / f"{cfg}.weights.h5")
        with torch.no_grad():
            out = {"x": x, "inference": model(x, training=False).cpu().numpy(),
                   "training": model(x, training=True).cpu().numpy()}
        for layer in bn_layers(model):
            out[f"moving_mean.{layer.name}"] = layer.moving_mean.numpy()
            out[f"moving_variance.{layer.name}"] = layer.moving_variance.numpy()
        np.savez(WORK / f"{cfg}.keras.npz", **out)
        print(cfg, model.count_params(), "params; output", out["inference"].shape, flush=True)
    save_json("keras3_versions.json", {"keras": keras.__version__, "backend": keras.backend.backend(),
                                      "torch": torch.__version__, "h5py": h5py.__version__,
                                      "numpy": np.__version__})


# ------------------------------------------------ 2. Keras 2 (tf_keras) writes

def read_legacy(path):
    """{layer name: [arrays]} from a legacy .h5, in weight_names order."""
    import h5py
    out = {}
    with h5py.File(path, "r") as f:
        for n in f.attrs["layer_names"]:
            n = n.decode() if isinstance(n, bytes) else n
            names = [w.decode() if isinstance(w, bytes) else w for w in f[n].attrs["weight_names"]]
            out[n] = [np.asarray(f[n][w]) for w in names]
    return out


def step_keras2():
    import h5py
    import tensorflow as tf
    import tf_keras as keras
    result = {}
    for cfg in ONLY:
        keras.backend.clear_session()
        build, kw = keras_kwargs(cfg, keras)
        model = build(**kw)
        arrays = read_legacy(WORK / f"{cfg}.keras3_legacy.h5")
        for layer in model.layers:
            if layer.weights:
                layer.set_weights(arrays[layer.name])
        data = np.load(WORK / f"{cfg}.keras.npz")
        y = np.asarray(model(data["x"], training=False))
        model.save_weights(str(WORK / f"{cfg}.keras2.h5"))
        y_train = np.asarray(model(data["x"], training=True))
        stats = [rel(np.asarray(getattr(layer, s)), data[f"{s}.{layer.name}"])
                 for layer in bn_layers(model) for s in ("moving_mean", "moving_variance")]
        result[cfg] = {"inference": rel(y, data["inference"]), "training": rel(y_train, data["training"]),
                       "moving_stats": max(stats, default=None)}
        print(cfg, "tf_keras vs Keras 3:", result[cfg], flush=True)
    save_json("keras2_vs_keras3.json", {"versions": {"tf_keras": keras.__version__, "tensorflow": tf.__version__,
                                                     "h5py": h5py.__version__, "numpy": np.__version__},
                                        "rel": result})


# ------------------------------------------------ 3. minitl reads, then writes

LAYOUTS = ("keras3_legacy.h5", "weights.h5", "keras2.h5")


def minitl_model(cfg):
    import minitl.applications as apps
    cls, extra, size, _ = CONFIGS[cfg]
    return getattr(apps, cls)(input_shape=(size, size, 3), classifier_activation=None, **extra)


def minitl_bns(model):
    from minitl.nn import BatchNormalization
    return [m for m in model.layers() if isinstance(m, BatchNormalization)]


def minitl_run(model, x):
    """Inference output, training output, then the moving statistics after the training call."""
    from minitl import Tensor
    from minitl.tensor import no_grad
    with no_grad():
        model.eval()
        inference = np.array(model(Tensor(x)).data)
        model.train()
        training = np.array(model(Tensor(x)).data)
        model.eval()
    stats = {f"{s}.{m.name}": np.array(getattr(m, s).data) for m in minitl_bns(model)
             for s in ("moving_mean", "moving_variance")}
    return inference, training, stats


def step_minitl():
    import minitl
    from minitl.io import load_weights, save_weights
    table = json.loads((WORK / "minitl_reads.json").read_text()) if (WORK / "minitl_reads.json").exists() else {}
    for cfg in ONLY:
        data = np.load(WORK / f"{cfg}.keras.npz")
        rows = {}
        for layout in LAYOUTS:
            for by_name in (True, False):
                model = minitl_model(cfg)
                report = load_weights(model, WORK / f"{cfg}.{layout}", by_name=by_name)
                assert report.untouched == [] and not report.skipped
                inference, training, stats = minitl_run(model, data["x"])
                bn_rel = max([rel(v, data[k]) for k, v in stats.items()], default=None)
                rows[f"{layout} by_{'name' if by_name else 'order'}"] = {
                    "inference": rel(inference, data["inference"]), "training": rel(training, data["training"]),
                    "moving_stats": bn_rel, "bn_layers": len(stats) // 2}
                print(cfg, layout, "by_name" if by_name else "by_order", rows[f"{layout} by_"
                      f"{'name' if by_name else 'order'}"], flush=True)
        table[cfg] = rows

        # minitl writes: seeded random weights, BatchNorm ones non-trivial
        rng = np.random.default_rng([SEED, 2])
        model = minitl_model(cfg)
        for layer in model.layers():
            for i, p in enumerate(layer.weights):
                name = getattr(p, "name", "") or ""
                shape = p.data.shape
                if name == "moving_variance" or name == "gamma":
                    v = rng.uniform(0.5, 1.5, shape)
                elif len(shape) == 1:
                    v = rng.normal(0, 0.1, shape)
                else:
                    v = rng.normal(0, 1, shape) * np.sqrt(1 / np.prod(shape[:-1] if len(shape) != 4 or
                                                          name != "depthwise_kernel" else shape[:2]))
                p.data = v.astype(np.float32)
        path = WORK / f"{cfg}.minitl.h5"
        save_weights(model, path)
        arrays = {f"{layer.name}/{i}": np.array(p.data) for layer in model.layers()
                  for i, p in enumerate(layer.weights)}
        inference, training, stats = minitl_run(model, data["x"])
        np.savez(WORK / f"{cfg}.minitl.npz", x=data["x"], inference=inference, training=training,
                 **{f"w:{k}": v for k, v in arrays.items()}, **{f"stat:{k}": v for k, v in stats.items()})
        save_json("minitl_reads.json", table)
    save_json("minitl_versions.json", {"minitl": getattr(minitl, "__version__", "?"), "numpy": np.__version__})


# ------------------------------------------------ 4. Keras reads minitl's file

def compare_keras_model(model, data, training_call):
    """Bit-identical arrays (count of layers that differ) and output differences."""
    differing = []
    for layer in model.layers:
        for i, w in enumerate(layer.get_weights()):
            if not np.array_equal(np.asarray(w), data[f"w:{layer.name}/{i}"]):
                differing.append(f"{layer.name}/{i}")
    n_arrays = sum(1 for k in data.files if k.startswith("w:"))
    n_keras = sum(len(layer.get_weights()) for layer in model.layers)
    inference, training, stats = training_call(model, data["x"])
    bns = [layer for layer in model.layers if layer.__class__.__name__ == "BatchNormalization"]
    stat_rel = max([rel(stats[f"{s}.{layer.name}"], data[f"stat:{s}.{layer.name}"])
                    for layer in bns for s in ("moving_mean", "moving_variance")], default=None)
    return {"arrays": n_keras, "arrays_in_file": n_arrays, "arrays_not_bit_identical": differing,
            "inference": rel(inference, data["inference"]), "training": rel(training, data["training"]),
            "moving_stats": stat_rel}


def step_keras3_read():
    import h5py
    import keras
    import torch
    from keras.src.legacy.saving import legacy_h5_format

    def call(model, x):
        with torch.no_grad():
            inference = model(x, training=False).cpu().numpy()
            training = model(x, training=True).cpu().numpy()
        stats = {f"{s}.{layer.name}": getattr(layer, s).numpy() for layer in bn_layers(model)
                 for s in ("moving_mean", "moving_variance")}
        return inference, training, stats

    result = {}
    for cfg in ONLY:
        data = np.load(WORK / f"{cfg}.minitl.npz")
        result[cfg] = {}
        for how in ("load_weights (by order)", "legacy reader by name"):
            keras.backend.clear_session()
            build, kw = keras_kwargs(cfg, keras)
            model = build(**kw)
            if how.startswith("load_weights"):
                model.load_weights(WORK / f"{cfg}.minitl.h5")
            else:
                with h5py.File(WORK / f"{cfg}.minitl.h5", "r") as f:
                    legacy_h5_format.load_weights_from_hdf5_group_by_name(f, model)
            result[cfg][how] = compare_keras_model(model, data, call)
            print(cfg, how, result[cfg][how], flush=True)
    save_json("keras3_reads.json", result)


def step_keras2_read():
    import tf_keras as keras

    def call(model, x):
        inference = np.asarray(model(x, training=False))
        training = np.asarray(model(x, training=True))
        stats = {f"{s}.{layer.name}": np.asarray(getattr(layer, s)) for layer in bn_layers(model)
                 for s in ("moving_mean", "moving_variance")}
        return inference, training, stats

    result = {}
    for cfg in ONLY:
        data = np.load(WORK / f"{cfg}.minitl.npz")
        result[cfg] = {}
        for by_name in (False, True):
            keras.backend.clear_session()
            build, kw = keras_kwargs(cfg, keras)
            model = build(**kw)
            model.load_weights(str(WORK / f"{cfg}.minitl.h5"), by_name=by_name)
            how = f"load_weights(by_name={by_name})"
            result[cfg][how] = compare_keras_model(model, data, call)
            print(cfg, how, result[cfg][how], flush=True)
    save_json("keras2_reads.json", result)


# ------------------------------------------------ 5. float64 reference

def step_keras3_f64():
    """Keras 3 in float64 (floatx) on the same weights and input: the reference that tells
    float32 round-off, amplified by the deep random networks, from a real mismatch."""
    import keras
    import torch
    keras.config.set_floatx("float64")
    for cfg in ONLY:
        keras.backend.clear_session()
        build, kw = keras_kwargs(cfg, keras)
        model = build(**kw)
        model.load_weights(WORK / f"{cfg}.weights.h5")
        x = np.load(WORK / f"{cfg}.keras.npz")["x"].astype(np.float64)
        with torch.no_grad():
            out = {"inference": model(x, training=False).cpu().numpy(),
                   "training": model(x, training=True).cpu().numpy()}
        np.savez(WORK / f"{cfg}.keras_f64.npz", **out)
        print(cfg, "float64 done", flush=True)


def step_keras3_f64_written():
    """The same for minitl's files: Keras 3 in float32 and in float64 reads {cfg}.minitl.h5;
    Keras 3 float32 and minitl float32 (the npz) against Keras 3 float64."""
    import keras
    import torch
    table = {}
    for cfg in ONLY:
        data = np.load(WORK / f"{cfg}.minitl.npz")
        out = {}
        for floatx in ("float32", "float64"):
            keras.config.set_floatx(floatx)
            keras.backend.clear_session()
            build, kw = keras_kwargs(cfg, keras)
            model = build(**kw)
            model.load_weights(WORK / f"{cfg}.minitl.h5")
            x = data["x"].astype(floatx)
            with torch.no_grad():
                out[floatx] = {"inference": model(x, training=False).cpu().numpy(),
                               "training": model(x, training=True).cpu().numpy()}
        ref = out["float64"]
        table[cfg] = {"keras3_float32": {m: rel(out["float32"][m], ref[m]) for m in ref},
                      "minitl_float32": {m: rel(data[m], ref[m]) for m in ref}}
        print(cfg, table[cfg], flush=True)
    save_json("float64_reference_minitl_written.json", table)


def step_minitl_f64():
    """minitl (float32, loaded from the native file) and Keras 3 (float32) against Keras 3 in float64."""
    from minitl.io import load_weights
    table = {}
    for cfg in ONLY:
        ref = np.load(WORK / f"{cfg}.keras_f64.npz")
        k32 = np.load(WORK / f"{cfg}.keras.npz")
        model = minitl_model(cfg)
        load_weights(model, WORK / f"{cfg}.weights.h5")
        inference, training, _ = minitl_run(model, k32["x"])
        table[cfg] = {"keras3_float32": {m: rel(k32[m], ref[m]) for m in ("inference", "training")},
                      "minitl_float32": {"inference": rel(inference, ref["inference"]),
                                         "training": rel(training, ref["training"])}}
        print(cfg, table[cfg], flush=True)
    save_json("float64_reference.json", table)


# ------------------------------------------------ 6. tables

def step_report():
    """Markdown tables. The six loads of a model (three layouts, by name and by order) are one
    row when they gave identical figures, as do the readers of minitl's file; else one row each."""
    def f(v):
        return "-" if v is None else f"{v:.1e}"

    def load(name):
        return json.loads((WORK / name).read_text()) if (WORK / name).exists() else {}

    reads, k2 = load("minitl_reads.json"), load("keras2_vs_keras3.json").get("rel", {})
    print("| model | loads | minitl inference | minitl training | minitl moving stats "
          "| tf_keras inference | tf_keras training | tf_keras moving stats |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for cfg, rows in reads.items():
        figures = {json.dumps(r, sort_keys=True) for r in rows.values()}
        groups = [("all 6", next(iter(rows.values())))] if len(figures) == 1 else list(rows.items())
        t = k2.get(cfg, {})
        for label, r in groups:
            print(f"| {cfg} | {label} | {f(r['inference'])} | {f(r['training'])} | {f(r['moving_stats'])} "
                  f"| {f(t.get('inference'))} | {f(t.get('training'))} | {f(t.get('moving_stats'))} |")
    print()
    for name, what in (("float64_reference.json", "Keras' files"),
                       ("float64_reference_minitl_written.json", "minitl's files")):
        table = load(name)
        if not table:
            continue
        print(f"Against Keras 3 in float64 ({what}):")
        print()
        print("| model | Keras 3 float32, inference | minitl, inference | Keras 3 float32, training "
              "| minitl, training |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for cfg, r in table.items():
            k, m = r["keras3_float32"], r["minitl_float32"]
            print(f"| {cfg} | {f(k['inference'])} | {f(m['inference'])} | {f(k['training'])} | {f(m['training'])} |")
        print()
    print("| model | reader | arrays bit-identical | inference | training | moving stats |")
    print("| --- | --- | --- | ---: | ---: | ---: |")
    for name, reader in (("keras3_reads.json", "Keras 3"), ("keras2_reads.json", "tf_keras")):
        for cfg, rows in load(name).items():
            figures = {json.dumps(r, sort_keys=True) for r in rows.values()}
            groups = [(" / ".join(rows), next(iter(rows.values())))] if len(figures) == 1 else list(rows.items())
            for how, r in groups:
                same = (
                    f"{r['arrays'] - len(r['arrays_not_bit_identical'])} of {r['arrays']} (file {r['arrays_in_file']})"
                )
                print(
                    f"| {cfg} | {reader}: {how} | {same} | {f(r['inference'])} | {f(r['training'])} "
                    f"| {f(r['moving_stats'])} |"
                )


# ------------------------------------------------ 7-9. fine-tune, export, Keras reads

# arch: (keras.applications class, input size, minitl finetune options)
EXPORTS = {
    "vgg16": ("VGG16", 32, ["--pooling", "flatten"]),
    "vgg19": ("VGG19", 32, ["--pooling", "avg"]),
    "resnet50": ("ResNet50", 32, ["--pooling", "flatten"]),
    "inception_v3": ("InceptionV3", 75, ["--pooling", "avg"]),
    "mobilenet_v2": ("MobileNetV2", 32, ["--width", "0.35", "--pooling", "avg"]),
}
EXPORT_ONLY = sys.argv[3].split(",") if len(sys.argv) > 3 else list(EXPORTS)
CLASSES = {"red": (200, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 200)}


def image_folder(size):
    """WORK/images_<size>/<class>/<i>.png: six noisy images of each class's colour."""
    from PIL import Image
    root = WORK / f"images_{size}"
    rng = np.random.default_rng([SEED, size])
    for name, colour in CLASSES.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(6):
            pixels = np.clip(rng.normal(colour, 60, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def image_paths(size):
    return sorted(str(p) for p in (WORK / f"images_{size}").glob("*/*.png"))


def step_export_base():
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format
    from PIL import Image
    for arch in EXPORT_ONLY:
        cls, size, options = EXPORTS[arch]
        image_folder(size)
        keras.backend.clear_session()
        keras.utils.set_random_seed(SEED)
        extra = {"alpha": float(options[options.index("--width") + 1])} if "--width" in options else {}
        model = getattr(keras.applications, cls)(include_top=False, weights=None, input_shape=(size, size, 3),
                                                 **extra)
        raw = np.stack([np.asarray(Image.open(p), np.float32) for p in image_paths(size)])
        x = np.ascontiguousarray(getattr(keras.applications, arch).preprocess_input(raw), np.float32)
        init_keras3(keras, model, np.random.default_rng(SEED), x)
        with h5py.File(WORK / f"{arch}_base.h5", "w") as f:
            legacy_h5_format.save_weights_to_hdf5_group(f, model)
        print(arch, model.count_params(), "params in the base", flush=True)


def minitl_cli(*args):
    import subprocess
    r = subprocess.run([sys.executable, "-m", "minitl", *args], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"minitl {' '.join(args)} failed:\n{r.stderr}")
    return r.stdout


def predict_lines(text):
    """{image: {class: probability}} from the output of minitl predict or of a FILE_keras.py."""
    out, path = {}, None
    for line in text.splitlines():
        if not line.startswith(" "):
            path = line.strip()
            out[path] = {}
        else:
            name, p = line.split()
            out[path][name] = float(p)
    return out


def step_export_minitl():
    from minitl import functional as F
    from minitl.data import load_image
    from minitl.transfer import load_run
    for arch in EXPORT_ONLY:
        _, size, options = EXPORTS[arch]
        run = WORK / f"run_{arch}"
        minitl_cli("finetune", "--arch", arch, "--data", str(WORK / f"images_{size}"), "--weights",
                   str(WORK / f"{arch}_base.h5"), "--out", str(run), "--image-size", str(size), *options,
                   "--hidden", "16", "--dropout", "0.25", "--epochs", "2", "--batch-size", "4",
                   "--unfreeze-blocks", "1", "--optimizer", "adam", "--lr", "1e-4", "--seed", "0", "--quiet")
        print(minitl_cli("export", str(run), "--out", str(WORK / f"{arch}.h5"), "--best").strip(), flush=True)
        paths = image_paths(size)
        predicted = minitl_cli("predict", str(run), *paths, "--best", "--top", str(len(CLASSES)))
        model, record = load_run(run, "best.h5")
        x = np.stack([load_image(p, (size, size), record["preprocessing"]) for p in paths])
        logits = model(x).numpy()
        np.savez(WORK / f"{arch}.minitl_export.npz", x=x, logits=logits, probabilities=F.softmax(logits).numpy())
        (WORK / f"{arch}.minitl_predict.txt").write_text(predicted)


def step_export_keras():
    import importlib.util
    import subprocess
    table = json.loads((WORK / "export_keras.json").read_text()) if (WORK / "export_keras.json").exists() else {}
    for arch in EXPORT_ONLY:
        _, size, _ = EXPORTS[arch]
        script = WORK / f"{arch}_keras.py"
        spec = importlib.util.spec_from_file_location(f"{arch}_keras", script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        keras = module.keras
        keras.backend.clear_session()
        model = module.build_model()
        data = np.load(WORK / f"{arch}.minitl_export.npz")
        file_layers = [(n, a) for n, a in read_legacy(WORK / f"{arch}.h5").items() if a]
        keras_layers = [layer for layer in model.layers if layer.get_weights()]
        differing = [k.name for k, (n, arrays) in zip(keras_layers, file_layers)
                     if len(k.get_weights()) != len(arrays)
                     or not all(np.array_equal(np.asarray(w), a) for w, a in zip(k.get_weights(), arrays))]
        renamed = [f"{k.name} (file {n})" for k, (n, _) in zip(keras_layers, file_layers) if k.name != n]
        probabilities = np.asarray(model.predict(data["x"], verbose=0))
        last = model.get_layer("head_predictions")
        features = keras.Model(model.input, last.input)
        kernel, bias = (np.asarray(w, np.float64) for w in last.get_weights())
        logits = np.asarray(features.predict(data["x"], verbose=0), np.float64) @ kernel + bias
        paths = image_paths(size)
        own_x = np.asarray(module.load_images(paths))
        run = subprocess.run([sys.executable, str(script), *paths], capture_output=True, text=True, check=True)
        theirs, ours = predict_lines(run.stdout), predict_lines((WORK / f"{arch}.minitl_predict.txt").read_text())
        printed = max(abs(theirs[p][c] - ours[p][c]) for p in ours for c in ours[p])
        row = {"keras": keras.__version__, "layers_with_weights": len(keras_layers),
               "file_layers_with_weights": len(file_layers), "arrays_not_bit_identical": differing,
               "names_differing": renamed,
               "probabilities_max_abs": float(np.abs(probabilities - data["probabilities"]).max()),
               "logits_rel": rel(logits, data["logits"]),
               "load_images_max_abs": float(np.abs(own_x - data["x"]).max()),
               "printed_max_abs": printed, "printed_top_same": all(
                   list(theirs[p]) == list(ours[p]) for p in ours), "images": len(paths)}
        key = "keras2" if keras.__version__.startswith("2.") else "keras3"
        table.setdefault(arch, {})[key] = row
        print(arch, key, row, flush=True)
        save_json("export_keras.json", table)


def step_export_report():
    table = json.loads((WORK / "export_keras.json").read_text())
    print("| arch | Keras | layers with weights (file) | arrays bit-identical | probabilities max abs diff "
          "| logits rel diff | load_images max abs diff | script vs minitl predict (printed) |")
    print("| --- | --- | --- | --- | ---: | ---: | ---: | --- |")
    for arch, rows in table.items():
        for key, r in sorted(rows.items()):
            n = r["layers_with_weights"]
            same = "same top-3 order" if r["printed_top_same"] else "top-3 order differs"
            print(f"| {arch} | {r['keras']} | {n} ({r['file_layers_with_weights']}) "
                  f"| {n - len(r['arrays_not_bit_identical'])} of {n} layers | {r['probabilities_max_abs']:.1e} "
                  f"| {r['logits_rel']:.1e} | {r['load_images_max_abs']:.1e} "
                  f"| {r['printed_max_abs']:.4f}, {same} |")


{
    "keras3": step_keras3,
    "keras2": step_keras2,
    "minitl": step_minitl,
    "keras3-read": step_keras3_read,
    "keras2-read": step_keras2_read,
    "keras3-f64": step_keras3_f64,
    "keras3-f64-written": step_keras3_f64_written,
    "minitl-f64": step_minitl_f64,
    "report": step_report,
    "export-base": step_export_base,
    "export-minitl": step_export_minitl,
    "export-keras": step_export_keras,
    "export-report": step_export_report,
}[MODE]()
