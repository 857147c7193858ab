"""The recipe of the article on your own pieces (task 12): ``python exercises/recipe.py``.

The demo's transfer task (``minitl demo``), short: the VGG16 of width 1/8 that minitl
pretrained on five animals gets a new head for five other animals; the head is trained on
the frozen base, then the base's last block is unfrozen and trained with the head at a
tenth of the learning rate; the test set gives accuracy and macro F1. The run uses your
freezing and groups (task 10) and your metrics (task 11), once with the engine's
convolution and pooling and once with yours (tasks 6-8 as the ops of task 12).
"""
import contextlib

import numpy as np
from task10_freezing import freeze_all_but, param_groups
from task11_metrics import accuracy, confusion_matrix, precision_recall_f1
from task12_plug_in import Conv2D, MaxPool2D

from minitl import demo, io
from minitl import functional as F
from minitl.conv import resolve_padding
from minitl.data import DataLoader
from minitl.datasets import load_animal_shapes
from minitl.nn import manual_seed
from minitl.optim import SGD
from minitl.tensor import Tensor, as_tensor
from minitl.train import EpochLog, fit, predict


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def conv2d(x, w, b=None, stride=1, padding="valid", activation=None):
    """``minitl.functional.conv2d``'s arguments, computed by your Conv2D op."""
    x, w, stride = as_tensor(x), as_tensor(w), _pair(stride)
    op = Conv2D(stride, resolve_padding(padding, x.shape[1:3], w.shape[:2], stride))
    y = op(x, w) if b is None else op(x, w, b)
    return F.relu(y) if activation == "relu" else y


def max_pool2d(x, pool=2, stride=None, padding="valid"):
    """``minitl.functional.max_pool2d``'s arguments (windows without padding), computed by your MaxPool2D op."""
    if padding != "valid":
        raise ValueError("the exercises' max-pooling has no padding")
    pool = _pair(pool)
    return MaxPool2D(pool, pool if stride is None else _pair(stride))(as_tensor(x))


@contextlib.contextmanager
def own_kernels():
    """Inside the block, every Conv2D and MaxPool2D layer (they call minitl.functional's
    conv2d and max_pool2d) runs your ops."""
    saved = F.conv2d, F.max_pool2d
    F.conv2d, F.max_pool2d = conv2d, max_pool2d
    try:
        yield
    finally:
        F.conv2d, F.max_pool2d = saved


def run(per_class=20, epochs=3, finetune_epochs=1, lr=0.001, batch_size=20, seed=0, log=print):
    """The recipe; returns its table: test loss, accuracy and macro F1, the confusion matrix
    and the training history."""
    images, labels, names = load_animal_shapes()
    data = demo.split_target(images, labels, names, per_class, per_class // 2, 20, seed)
    train = DataLoader(data["train"], batch_size, shuffle=True, seed=seed)
    val, test = DataLoader(data["val"], 50), DataLoader(data["test"], 50)
    manual_seed(seed)
    model = demo.build_demo_model(demo.config(demo.demo_base("vgg16"), len(demo.TARGET)))
    base = model[0]
    io.load_weights(base, demo.demo_weights_path())            # the pretrained base, as a notop file
    freeze_all_but(base, [])                                    # 1. the new head on the frozen base
    history = fit(model, SGD(param_groups(model, lr, lr / 10), lr=lr, momentum=0.9), train, val, epochs,
                  [EpochLog(log)]).record["history"]
    freeze_all_but(base, [layer.name for layer in base.layers() if layer.name.startswith("block5")])
    history += fit(model, SGD(param_groups(model, lr / 10, lr / 10), lr=lr / 10, momentum=0.9), train, val,
                   finetune_epochs, [EpochLog(log)]).record["history"]   # 2. and the last block, at lr / 10
    logits, truth = predict(model, test)
    c = confusion_matrix(truth, logits.argmax(axis=1), len(demo.TARGET))
    return {"loss": F.softmax_cross_entropy(Tensor(logits), truth).item(), "accuracy": accuracy(c),
            "macro_f1": float(np.mean(precision_recall_f1(c)[2])), "confusion_matrix": np.asarray(c).tolist(),
            "history": history}


if __name__ == "__main__":
    engine = run(log=lambda line: None)
    with own_kernels():
        yours = run(log=lambda line: None)
    print(f"{'kernels':<8}  {'loss':>8}  {'accuracy':>8}  {'macro F1':>8}")
    for name, table in (("engine", engine), ("yours", yours)):
        print(f"{name:<8}  {table['loss']:8.5f}  {table['accuracy']:8.3f}  {table['macro_f1']:8.3f}")
