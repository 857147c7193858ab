"""Task 10: freezing: which parameters get gradients, and a learning rate per group.

docs/math.md §9 (transfer learning: fine-tuning with a lowered learning rate); the engine's
pieces are ``minitl.nn.Module.freeze``, ``minitl.nn.Module.unfreeze`` and the parameter
groups of ``minitl.optim.SGD``. A transfer model is Sequential([base, head]): a pretrained
base and a new head of random weights. The recipe trains the head alone on the frozen
base, then unfreezes the base's last layers and trains them with the head at a lowered
rate:

    frozen parameter  requires_grad = False: no gradient, the optimizer skips it
    unfrozen base     W ← W − η_base ∇L,   η_base = η / 10
    head              W ← W − η ∇L

Freezing a module also sets its ``trainable`` to False, so a frozen BatchNormalization
normalises with its moving statistics and leaves them alone (docs/math.md §11).

What you write
    freeze_all_but(base, names)          freeze every layer of base but those named (unfrozen)
    param_groups(model, lr, base_lr)     SGD's groups: [{"params": [...], "lr": ...}, ...],
                                         the head's parameters at lr, the base's trainable ones at
                                         base_lr, no frozen parameter (a group may be left out
                                         when it would be empty)

Hints
    - base.freeze() freezes it all; base.get_layer(name).unfreeze() gives one layer back.
    - model[0] is the base, model[1] the head; p.requires_grad says whether p is trainable.
    - minitl.optim.SGD(groups, lr=...) takes the list of dicts as it is.

Run the checks: python -m pytest exercises -k task10
"""


def freeze_all_but(base, names):
    """Freeze every layer of ``base`` except the layers named in ``names``, which stay trainable."""
    raise NotImplementedError("task 10: write freeze_all_but")


def param_groups(model, lr, base_lr):
    """[{"params": head parameters, "lr": lr}, {"params": trainable base parameters, "lr": base_lr}]."""
    raise NotImplementedError("task 10: write param_groups")
