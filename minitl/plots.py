"""Training curves and confusion matrices as PNG files.

They need matplotlib (``pip install 'minitl[plot]'``); without it each function raises
ImportError, which the training and evaluation code catch to skip the pictures.
"""


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path):
    """Write the figure as PNG atomically (no half-written picture on Ctrl-C), then close it."""
    from minitl.files import atomic_write
    try:
        with atomic_write(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    finally:
        _pyplot().close(fig)


def plot_history(history, path, phase_start=None):
    """Loss and accuracy per epoch, training and validation; a dotted line after epoch
    ``phase_start``, where a two-phase run unfroze its blocks."""
    plt = _pyplot()
    epochs = [row["epoch"] for row in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    for key, ax in (("loss", ax1), ("accuracy", ax2)):
        ax.plot(epochs, [row[key] for row in history], "o-", label="training")
        if history and f"val_{key}" in history[0]:
            ax.plot(epochs, [row[f"val_{key}"] for row in history], "s-", label="validation")
        if phase_start:
            ax.axvline(phase_start + 0.5, color="gray", linestyle=":", label="blocks unfrozen")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    _save(fig, path)


def plot_confusion(report, path):
    """The confusion matrix of a classification report, counts written in the cells."""
    plt = _pyplot()
    names, c = report["classes"], report["confusion_matrix"]
    k = len(names)
    fig, ax = plt.subplots(figsize=(1 + 0.6 * k, 1 + 0.6 * k))
    ax.imshow(c, cmap="Blues")
    ax.set_xticks(range(k), names, rotation=45, ha="right")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = max(max(row) for row in c) or 1
    for i in range(k):
        for j in range(k):
            ax.text(j, i, c[i][j], ha="center", va="center", color="white" if c[i][j] > top / 2 else "black")
    ax.set_title(f"accuracy {report['accuracy']:.3f}")
    fig.tight_layout()
    _save(fig, path)


def plot_lr_find(result, path):
    """The smoothed loss against the learning rate (log axis), the suggested rates marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.plot(result["lrs"], result["losses"])
    ax.set_xscale("log")
    for name, marker in (("valley", "o"), ("minimum", "s")):
        lr = result.get(name)
        if lr is not None:
            i = min(range(len(result["lrs"])), key=lambda j: abs(result["lrs"][j] - lr))
            ax.plot(lr, result["losses"][i], marker, label=f"{name}: {lr:.2g}")
    ax.set_xlabel("learning rate (head)")
    ax.set_ylabel("smoothed training loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    _save(fig, path)


def plot_top_losses(images, titles, path, columns=3):
    """A grid of images (uint8 RGB arrays), each with its title (fastai's ``plot_top_losses``)."""
    plt = _pyplot()
    rows = max(1, -(-len(images) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.4 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, title in zip(axes.ravel(), images, titles):
        ax.imshow(image)
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def plot_compare(points, path, what="test accuracy"):
    """Accuracy against milliseconds per image: ``points`` (name, ms, accuracy, spread), one per
    backbone with its spread over seeds as an error bar; the Pareto front (no other point is
    both faster and more accurate) circled and joined by a line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, ms, accuracy, spread in points:
        ax.errorbar(ms, accuracy, yerr=spread, fmt="o", capsize=3)
        ax.annotate(name, (ms, accuracy), textcoords="offset points", xytext=(5, 5))
    front, best = [], -1.0
    for point in sorted(points, key=lambda p: (p[1], -p[2])):
        if point[2] > best:
            front.append(point)
            best = point[2]
    if front:
        ax.plot([p[1] for p in front], [p[2] for p in front], "--o", color="gray", markersize=12,
                markerfacecolor="none", label="Pareto front")
        ax.legend()
    ax.set_xlabel("ms per image (batch 1)")
    ax.set_ylabel(f"{what} (mean ± sd over seeds)")
    _save(fig, path)
