"""Flax classifiers. ``__call__(x, train=False) -> (logits, features)``.

Inputs are NHWC float32 in [0, 1]; ``features`` are the penultimate activations
(what evaluation metrics compare).
"""

import dataclasses
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxinv.core.compiler import init_once
from jaxinv.models.layers import Conv, PatchConv, max_pool_2x2

ACTIVATIONS = {"relu": nn.relu, "sigmoid": nn.sigmoid, "tanh": jnp.tanh, "gelu": nn.gelu}


class SoftmaxRegression(nn.Module):
    """Multinomial logistic regression; features = the flattened input.

    Example:
        >>> logits, f = create("softmax", 40).init_with_output(key, jnp.zeros((1, 112, 92, 1)))[0]
    """

    num_classes: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        f = x.reshape(x.shape[0], -1)
        return nn.Dense(self.num_classes)(f), f


class MLP(nn.Module):
    """Fully connected net; the MI-Face paper's MLP is one layer of 3000 sigmoid units.

    Example:
        >>> model = create("mlp", 10, hidden=(500, 500), activation="relu")
    """

    num_classes: int
    hidden: Sequence[int] = (3000,)
    activation: str = "sigmoid"

    @nn.compact
    def __call__(self, x, train: bool = False):
        act = ACTIVATIONS[self.activation]
        f = x.reshape(x.shape[0], -1)
        for width in self.hidden:
            f = act(nn.Dense(width)(f))
        return nn.Dense(self.num_classes)(f), f


class LeNet(nn.Module):
    """LeNet-style CNN: [conv 5x5 -> relu -> 2x2 max-pool] x len(channels) -> dense -> logits.

    Example:
        >>> model = create("cnn", 10, channels=(32, 64), dense=128)  # jaxinv's MNIST target
    """

    num_classes: int
    channels: Sequence[int] = (32, 64)
    dense: int = 128

    @nn.compact
    def __call__(self, x, train: bool = False):
        for ch in self.channels:
            x = nn.relu(Conv(ch, (5, 5))(x))
            if min(x.shape[1:3]) >= 2:
                x = max_pool_2x2(x)
        f = nn.relu(nn.Dense(self.dense)(x.reshape(x.shape[0], -1)))
        return nn.Dense(self.num_classes)(f), f


class DLGLeNet(nn.Module):
    """The victim of DLG/iDLG (Zhu et al. 2019): three 5x5 convs (12 channels, strides
    2, 2, 1, zero padding 2 as in DLG's PyTorch code) with sigmoid activations, one dense
    layer; weights and biases drawn from ``U(-init_scale, init_scale)`` (0.5 in the papers'
    code), a twice-differentiable
    network whose gradients determine a single input.

    Example:
        >>> model = create("dlg-lenet", 10)
        >>> v = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
        >>> p = v["params"]
        >>> p["Dense_0"]["kernel"].shape, float(p["Conv_0"]["bias"].max()) <= 0.5
        ((588, 10), True)
    """

    num_classes: int
    channels: int = 12
    init_scale: float = 0.5

    @nn.compact
    def __call__(self, x, train: bool = False):
        init = lambda key, shape, dtype=jnp.float32: jax.random.uniform(
            key, shape, dtype, -self.init_scale, self.init_scale)
        s2d = jax.default_backend() == "cpu"  # space-to-depth patches: measured on CPU only
        for i, stride in enumerate((2, 2, 1)):  # im2col convs: fast per-example gradients
            x = nn.sigmoid(PatchConv(self.channels, (5, 5), stride, space_to_depth=s2d,
                                     kernel_init=init, bias_init=init, name=f"Conv_{i}")(x))
        f = x.reshape(x.shape[0], -1)
        return nn.Dense(self.num_classes, kernel_init=init, bias_init=init)(f), f


def _conv(ch: int, size: int, stride: int, patches: bool) -> nn.Module:
    if patches:
        return PatchConv(ch, (size, size), stride, use_bias=False)
    if stride == 1 and size > 1:
        return Conv(ch, (size, size), use_bias=False)
    return nn.Conv(ch, (size, size), stride, use_bias=False)


class _Block(nn.Module):
    channels: int
    stride: int
    patches: bool = False

    @nn.compact
    def __call__(self, x, train: bool):
        bn = lambda: nn.BatchNorm(use_running_average=not train, momentum=0.9)
        y = nn.relu(bn()(_conv(self.channels, 3, self.stride, self.patches)(x)))
        y = bn()(_conv(self.channels, 3, 1, self.patches)(y))
        if x.shape != y.shape:
            x = bn()(_conv(self.channels, 1, self.stride, self.patches)(x))
        return nn.relu(x + y)


class ResNet(nn.Module):
    """A small ResNet: 3x3 stem, one basic block per stage, global average pool.

    The stem max-pools large inputs (e.g. 112x92 faces) until the smaller side is
    at most ``stem_max_side``; later stages halve the size while it is >= 4. ``patches``
    computes every convolution by im2col (:class:`~jaxinv.models.layers.PatchConv`):
    much faster per-example weight gradients, for gradient-leakage victims.

    Example:
        >>> model = create("resnet", 10, stages=(32, 64, 128))
    """

    num_classes: int
    stages: Sequence[int] = (32, 64, 128)
    stem_max_side: int = 16
    patches: bool = False

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(
            _conv(self.stages[0], 3, 1, self.patches)(x)))
        while min(x.shape[1:3]) > self.stem_max_side:
            x = max_pool_2x2(x)
        for i, ch in enumerate(self.stages):
            stride = 2 if i and min(x.shape[1:3]) >= 4 else 1
            x = _Block(ch, stride, self.patches)(x, train)
        f = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes)(f), f


class VGG(nn.Module):
    """VGG-style: blocks of 3x3 convs (BatchNorm, relu) + 2x2 max-pool, then dense.

    Example:
        >>> model = create("vgg", 10, blocks=((32, 32), (64, 64), (128,)))
    """

    num_classes: int
    blocks: Sequence[Sequence[int]] = ((32, 32), (64, 64), (128,))
    dense: int = 256

    @nn.compact
    def __call__(self, x, train: bool = False):
        for block in self.blocks:
            for ch in block:
                x = Conv(ch, (3, 3), use_bias=False)(x)
                x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(x))
            if min(x.shape[1:3]) >= 2:
                x = max_pool_2x2(x)
        f = nn.relu(nn.Dense(self.dense)(jnp.mean(x, axis=(1, 2))))
        return nn.Dense(self.num_classes)(f), f


class VIB(nn.Module):
    """MID's variational information bottleneck (Wang et al., AAAI 2021) on a ``base`` arch.

    The base's penultimate features go through ``Dense(2k)`` to a mean and
    ``std = softplus(s - 5)``; ``z = mean + std * eps`` in training (rng stream ``"vib"``)
    and ``z = mean`` in evaluation; logits ``= Dense(num_classes)(z)``, features ``= z``.
    Training sows ``mean`` and ``std`` into ``"intermediates"`` (the loss's KL term:
    :mod:`jaxinv.training.defenses`). The base's own output layer is built but unused.
    ``base_kwargs``: the base's options (a dict, or pairs).

    Example:
        >>> model = create("vib", 10, base="mlp", base_kwargs={"hidden": [32]}, k=8)
        >>> v = model.init(key, jnp.zeros((1, 8, 8, 1)))
        >>> [a.shape for a in model.apply(v, jnp.zeros((3, 8, 8, 1)))]
        [(3, 10), (3, 8)]
    """

    num_classes: int
    base: str = "cnn"
    base_kwargs: Any = ()
    k: int = 256

    @nn.compact
    def __call__(self, x, train: bool = False):
        base = ARCHS[self.base](num_classes=self.num_classes, name="base",
                                **dict(self.base_kwargs))
        s = nn.Dense(2 * self.k)(base(x, train)[1])
        mean, std = s[:, :self.k], nn.softplus(s[:, self.k:] - 5.0)
        if not train:
            return nn.Dense(self.num_classes)(mean), mean
        self.sow("intermediates", "mean", mean)
        self.sow("intermediates", "std", std)
        z = mean + std * jax.random.normal(self.make_rng("vib"), mean.shape, mean.dtype)
        return nn.Dense(self.num_classes)(z), z


ARCHS = {"softmax": SoftmaxRegression, "mlp": MLP, "cnn": LeNet, "resnet": ResNet, "vgg": VGG,
         "dlg-lenet": DLGLeNet}
WRAPPERS = {"vib": VIB}  # archs around another arch (``base``); not in ARCHS


def _frozen(v: Any) -> Any:
    """Lists (e.g. from JSON) -> tuples and dicts -> sorted pairs, so modules stay hashable
    (jit static arguments)."""
    if isinstance(v, dict):
        return tuple(sorted((k, _frozen(e)) for k, e in v.items()))
    return tuple(_frozen(e) for e in v) if isinstance(v, list | tuple) else v


def create(arch: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """Build a classifier by name: ``softmax``, ``mlp``, ``cnn``, ``resnet``, ``vgg``,
    ``dlg-lenet``, or ``vib`` (:class:`VIB` around a ``base`` arch).

    ``kwargs`` are the architecture's fields (e.g. ``hidden=(500,)`` for ``mlp``);
    lists are turned into tuples.

    Example:
        >>> model = create("cnn", 10)
        >>> variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
        >>> logits, features = jax.jit(model.apply)(variables, jnp.zeros((5, 8, 8, 1)))
        >>> logits.shape, features.shape
        ((5, 10), (5, 128))
    """
    if arch not in ARCHS and arch not in WRAPPERS:
        raise ValueError(f"unknown arch {arch!r}; valid archs: {', '.join([*ARCHS, *WRAPPERS])}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer) \
            or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    cls = ARCHS.get(arch) or WRAPPERS[arch]
    fields = [f.name for f in dataclasses.fields(cls) if f.name not in
              ("num_classes", "parent", "name")]
    bad = sorted(set(kwargs) - set(fields))
    if bad:
        raise ValueError(f"unknown option(s) {bad} for arch {arch!r}; valid options: {fields}")
    if kwargs.get("activation", "relu") not in ACTIVATIONS:
        raise ValueError(f"unknown activation {kwargs['activation']!r}; valid: "
                         f"{', '.join(ACTIVATIONS)}")
    if arch in WRAPPERS:  # check the wrapped arch now, not at the first apply
        if kwargs.get("base", "cnn") not in ARCHS:
            raise ValueError(f"arch {arch!r}: base must be one of {', '.join(ARCHS)}, got "
                             f"{kwargs.get('base')!r}")
        create(kwargs.get("base", "cnn"), num_classes, **dict(kwargs.get("base_kwargs") or {}))
    return cls(num_classes=int(num_classes), **{k: _frozen(v) for k, v in kwargs.items()})


def init_variables(model: nn.Module, input_shape: Sequence[int], seed: int = 0) -> dict:
    """Initialise ``{'params', ...}`` for images of ``input_shape`` ``(H, W, C)``.

    Example:
        >>> variables = init_variables(create("mlp", 10), (8, 8, 1))
        >>> variables["params"]["Dense_0"]["kernel"].shape
        (64, 3000)
    """
    return init_once(model.init, jax.random.key(seed), jnp.zeros((1, *input_shape), jnp.float32))
