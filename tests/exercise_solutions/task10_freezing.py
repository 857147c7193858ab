"""Task 10's solution: what ``minitl.transfer`` does with ``Module.freeze`` and SGD's parameter groups."""


def freeze_all_but(base, names):
    base.freeze()
    for name in names:
        base.get_layer(name).unfreeze()


def param_groups(model, lr, base_lr):
    base, head = model[0], model[1]
    groups = [{"params": head.trainable_parameters(), "lr": lr}]
    trainable = base.trainable_parameters()
    return groups + [{"params": trainable, "lr": base_lr}] if trainable else groups
