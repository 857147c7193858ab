"""The three small Keras models of tests/data/backbones (see make_backbone_fixtures.py there),
built from minitl.nn layers with Keras' layer names and arguments.

Each model registers its layers in the order of Keras' ``model.layers`` (the order of the
legacy files' layer_names and of the native file's ``<class>_k`` numbering), which for a
branching model is Keras' topological order, not the order the layers were created in.
``forward`` follows the graph; ``taps`` (when a dict) receives every layer's output by name.
"""
import numpy as np

from minitl import Tensor, nn, no_grad

ENTRIES = ("resnetmini_top_32", "mobilenetv2mini_32", "inceptionmini_32")


class Mini(nn.Module):
    """A model from an ordered list of layers; the subclass's forward uses ``self.run(name, x)``."""

    def __init__(self, layers, name):
        super().__init__(name)
        self.by_name = {}
        for layer in layers:
            setattr(self, f"layer_{layer.name}", layer)
            self.by_name[layer.name] = layer
        self.taps = None

    def run(self, name, x):
        y = self.by_name[name](x)
        if self.taps is not None:
            self.taps[name] = y
        return y


# ---------------------------------------------------------------- ResNet50's stem and bottleneck blocks

def _resnet_block_layers(filters, stride, conv_shortcut, name):
    bn = {"axis": 3, "epsilon": 1.001e-5}
    layers = [nn.Conv2D(filters, 1, strides=stride, name=f"{name}_1_conv"),
              nn.BatchNormalization(**bn, name=f"{name}_1_bn"), nn.ReLU(name=f"{name}_1_relu"),
              nn.Conv2D(filters, 3, padding="same", name=f"{name}_2_conv"),
              nn.BatchNormalization(**bn, name=f"{name}_2_bn"), nn.ReLU(name=f"{name}_2_relu")]
    if conv_shortcut:   # Keras lists the shortcut's conv and BN between the main path's
        layers += [nn.Conv2D(4 * filters, 1, strides=stride, name=f"{name}_0_conv"),
                   nn.Conv2D(4 * filters, 1, name=f"{name}_3_conv"),
                   nn.BatchNormalization(**bn, name=f"{name}_0_bn"),
                   nn.BatchNormalization(**bn, name=f"{name}_3_bn")]
    else:
        layers += [nn.Conv2D(4 * filters, 1, name=f"{name}_3_conv"), nn.BatchNormalization(**bn, name=f"{name}_3_bn")]
    return layers + [nn.Add(name=f"{name}_add"), nn.ReLU(name=f"{name}_out")]


class ResNetMini(Mini):
    BLOCKS = (("conv2_block1", True), ("conv2_block2", False), ("conv3_block1", True))

    def __init__(self):
        layers = [nn.ZeroPadding2D(3, name="conv1_pad"), nn.Conv2D(8, 7, strides=2, name="conv1_conv"),
                  nn.BatchNormalization(axis=3, epsilon=1.001e-5, name="conv1_bn"), nn.ReLU(name="conv1_relu"),
                  nn.ZeroPadding2D(1, name="pool1_pad"), nn.MaxPool2D(3, strides=2, name="pool1_pool")]
        layers += _resnet_block_layers(4, 1, True, "conv2_block1")
        layers += _resnet_block_layers(4, 1, False, "conv2_block2")
        layers += _resnet_block_layers(8, 2, True, "conv3_block1")
        layers += [nn.GlobalAvgPool2D(name="avg_pool"), nn.Dense(5, activation="softmax", name="predictions")]
        super().__init__(layers, "resnetmini")

    def block(self, x, name, conv_shortcut):
        r = self.run
        shortcut = r(f"{name}_0_bn", r(f"{name}_0_conv", x)) if conv_shortcut else x
        y = r(f"{name}_1_relu", r(f"{name}_1_bn", r(f"{name}_1_conv", x)))
        y = r(f"{name}_2_relu", r(f"{name}_2_bn", r(f"{name}_2_conv", y)))
        y = r(f"{name}_3_bn", r(f"{name}_3_conv", y))
        return r(f"{name}_out", r(f"{name}_add", [shortcut, y]))

    def forward(self, x):
        r = self.run
        x = r("conv1_relu", r("conv1_bn", r("conv1_conv", r("conv1_pad", x))))
        x = r("pool1_pool", r("pool1_pad", x))
        for name, conv_shortcut in self.BLOCKS:
            x = self.block(x, name, conv_shortcut)
        return r("predictions", r("avg_pool", x))


# ---------------------------------------------------------------- MobileNetV2's inverted residual blocks

def _bn(name):
    return nn.BatchNormalization(axis=-1, epsilon=1e-3, momentum=0.999, name=name)


def _inverted_res_layers(in_channels, expansion, stride, filters, block_id):
    prefix = f"block_{block_id}_" if block_id else "expanded_conv_"
    layers = []
    if block_id:
        layers += [nn.Conv2D(expansion * in_channels, 1, padding="same", use_bias=False, name=f"{prefix}expand"),
                   _bn(f"{prefix}expand_BN"), nn.ReLU(6.0, name=f"{prefix}expand_relu")]
    if stride == 2:   # correct_pad of a 16x16 map
        layers.append(nn.ZeroPadding2D(((0, 1), (0, 1)), name=f"{prefix}pad"))
    layers += [nn.DepthwiseConv2D(3, strides=stride, use_bias=False, padding="same" if stride == 1 else "valid",
                                  name=f"{prefix}depthwise"),
               _bn(f"{prefix}depthwise_BN"), nn.ReLU(6.0, name=f"{prefix}depthwise_relu"),
               nn.Conv2D(filters, 1, padding="same", use_bias=False, name=f"{prefix}project"),
               _bn(f"{prefix}project_BN")]
    if in_channels == filters and stride == 1:
        layers.append(nn.Add(name=f"{prefix}add"))
    return layers


class MobileNetV2Mini(Mini):
    BLOCKS = ((8, 1, 1, 4, 0), (4, 3, 2, 8, 1), (8, 3, 1, 8, 2))   # in_channels, expansion, stride, filters, id

    def __init__(self):
        layers = [nn.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="Conv1"), _bn("bn_Conv1"),
                  nn.ReLU(6.0, name="Conv1_relu")]
        for block in self.BLOCKS:
            layers += _inverted_res_layers(*block)
        layers += [nn.Conv2D(16, 1, use_bias=False, name="Conv_1"), _bn("Conv_1_bn"), nn.ReLU(6.0, name="out_relu"),
                   nn.GlobalAvgPool2D(name="global_average_pooling2d"),
                   nn.Dense(5, activation="softmax", name="predictions")]
        super().__init__(layers, "mobilenetv2mini")

    def block(self, x, in_channels, expansion, stride, filters, block_id):
        r = self.run
        prefix = f"block_{block_id}_" if block_id else "expanded_conv_"
        inputs = x
        if block_id:
            x = r(f"{prefix}expand_relu", r(f"{prefix}expand_BN", r(f"{prefix}expand", x)))
        if stride == 2:
            x = r(f"{prefix}pad", x)
        x = r(f"{prefix}depthwise_relu", r(f"{prefix}depthwise_BN", r(f"{prefix}depthwise", x)))
        x = r(f"{prefix}project_BN", r(f"{prefix}project", x))
        if in_channels == filters and stride == 1:
            return r(f"{prefix}add", [inputs, x])
        return x

    def forward(self, x):
        r = self.run
        x = r("Conv1_relu", r("bn_Conv1", r("Conv1", x)))
        for block in self.BLOCKS:
            x = self.block(x, *block)
        x = r("out_relu", r("Conv_1_bn", r("Conv_1", x)))
        return r("predictions", r("global_average_pooling2d", x))


# ---------------------------------------------------------------- InceptionV3's branch-and-concatenate

# conv2d_bn k: (filters, rows, cols, strides, padding), numbered in the order Keras creates them
INCEPTION_CONVS = {0: (8, 3, 3, 2, "valid"), 1: (8, 3, 3, 1, "same"), 2: (4, 1, 1, 1, "same"),
                   3: (3, 1, 1, 1, "same"), 4: (4, 5, 5, 1, "same"), 5: (2, 1, 1, 1, "same"),
                   6: (8, 3, 3, 2, "valid"), 7: (4, 1, 1, 1, "same"), 8: (6, 3, 3, 2, "valid"),
                   9: (4, 1, 1, 1, "same"), 10: (4, 1, 7, 1, "same"), 11: (6, 7, 1, 1, "same"),
                   12: (4, 1, 1, 1, "same"), 13: (4, 1, 3, 1, "same"), 14: (4, 3, 1, 1, "same"),
                   15: (2, 1, 1, 1, "same")}
# Keras' model.layers order of inceptionmini (topological, by depth)
INCEPTION_ORDER = (
    "conv 0", "bn 0", "relu 0", "conv 1", "bn 1", "relu 1", "conv 3", "bn 3", "relu 3", "average_pooling2d",
    "conv 2", "conv 4", "conv 5", "bn 2", "bn 4", "bn 5", "relu 2", "relu 4", "relu 5", "mixed0",
    "conv 7", "bn 7", "relu 7", "conv 6", "conv 8", "bn 6", "bn 8", "relu 6", "relu 8", "max_pooling2d", "mixed1",
    "conv 9", "bn 9", "relu 9", "conv 12", "conv 10", "bn 12", "bn 10", "relu 12", "relu 10", "conv 13", "conv 14",
    "average_pooling2d_1", "conv 11", "bn 13", "bn 14", "conv 15", "bn 11", "relu 13", "relu 14", "bn 15",
    "relu 11", "mixed2_0", "relu 15", "mixed2")


def _suffix(k):
    return f"_{k}" if k else ""


def _inception_layer(key):
    kind, _, k = key.partition(" ")
    if kind == "conv":
        filters, rows, cols, stride, padding = INCEPTION_CONVS[int(k)]
        return nn.Conv2D(filters, (rows, cols), strides=stride, padding=padding, use_bias=False,
                         name=f"conv2d{_suffix(int(k))}")
    if kind == "bn":
        return nn.BatchNormalization(axis=3, scale=False, name=f"batch_normalization{_suffix(int(k))}")
    if kind == "relu":
        return nn.ReLU(name=f"activation{_suffix(int(k))}")
    if kind.startswith("average_pooling2d"):
        return nn.AvgPool2D(3, strides=1, padding="same", name=kind)
    if kind == "max_pooling2d":
        return nn.MaxPool2D(3, strides=2, name=kind)
    return nn.Concatenate(axis=3, name=kind)


class InceptionMini(Mini):
    def __init__(self):
        super().__init__([_inception_layer(key) for key in INCEPTION_ORDER], "inceptionmini")

    def conv2d_bn(self, x, k):
        """Conv (no bias), BatchNormalization(scale=False), ReLU: InceptionV3's conv2d_bn."""
        s = _suffix(k)
        return self.run(f"activation{s}", self.run(f"batch_normalization{s}", self.run(f"conv2d{s}", x)))

    def forward(self, x):
        c, r = self.conv2d_bn, self.run
        x = c(c(x, 0), 1)
        branch1x1 = c(x, 2)
        branch5x5 = c(c(x, 3), 4)
        branch_pool = c(r("average_pooling2d", x), 5)
        x = r("mixed0", [branch1x1, branch5x5, branch_pool])
        branch3x3 = c(x, 6)
        branch3x3dbl = c(c(x, 7), 8)
        branch_pool = r("max_pooling2d", x)
        x = r("mixed1", [branch3x3, branch3x3dbl, branch_pool])
        branch7x7 = c(c(c(x, 9), 10), 11)
        branch3x3 = c(x, 12)
        branch3x3 = r("mixed2_0", [c(branch3x3, 13), c(branch3x3, 14)])
        branch_pool = c(r("average_pooling2d_1", x), 15)
        return r("mixed2", [branch7x7, branch3x3, branch_pool])


MODELS = {"resnetmini_top_32": ResNetMini, "mobilenetv2mini_32": MobileNetV2Mini, "inceptionmini_32": InceptionMini}


def build(fixture, input_shape=(32, 32, 3)):
    """The minitl model of a fixture, built for ``input_shape`` (random weights until loaded)."""
    model = MODELS[fixture]()
    with no_grad():
        model.eval()(Tensor(np.zeros((1, *input_shape), np.float32)))
    return model.train()
