"""Layers formulated for speed on every backend (same math, same results everywhere).

White-box attacks differentiate the classifier w.r.t. its *input* for thousands of
chains, so the backward passes below matter as much as the forward ones. Timings
on the project's 2-core CPU, batch 1024 (see ``tests/test_models.py`` for the
equivalence checks and ``benchmarks/`` for the end-to-end figures):

- ``max_pool_2x2``: max over the four strided 2x2 phases. Its backward is a few fused
  selects and pads, where ``nn.max_pool`` lowers to XLA's select-and-scatter and a
  reshape + ``max`` reduction to a tie-counting mask: forward+backward of a
  [1024, 28, 28, 32] input takes 60 ms here vs 147 ms (reshape-max) and 354 ms
  (``nn.max_pool``).
- ``conv2d_same`` (stride 1, SAME) picks a formulation from the static shapes:
  on small maps (H*W <= 2*kh*kw, e.g. a 5x5 kernel on the 4x4 maps of a CNN on
  8x8 digits) one matmul with the conv's [H*W*Cin, H*W*Cout] matrix (forward +
  input gradient 7.5 ms vs 270 ms for ``lax.conv`` at 4x4x32 -> 64). Otherwise
  ``lax.conv`` with a custom JVP that routes the input gradient through a cheaper
  transpose: one matmul + shifted adds for thin inputs (<= 4 channels, the first
  layer: 117 ms vs 191 ms at 28x28x1 -> 32), else a standard-layout forward conv
  with the flipped kernel (XLA:CPU's own transposed conv runs 2x slower inside
  ``scan``/``while`` loops, which is where attack drivers run it). All support
  forward and reverse mode at any order. 3x3 kernels with many channels on small maps
  can run by Winograd F(2x2, 3x3) instead (:func:`winograd`; by default in the steps
  ``run_chains`` compiles on CPU: GMI's generator convolution at 7x7x128 -> 256 there
  1.3-1.6x faster).
  Known XLA:CPU limit: *weight* gradients
  of convolutions run ~50x slower inside loops than outside, so ``jaxinv.training.classifier``
  dispatches its steps from Python.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_derivatives import SymbolicZero

_DN = ("NHWC", "HWIO", "NHWC")
THIN = 4  # input channels up to which the custom input-gradient is used
DENSE_MAX = 1 << 24  # entries of the largest conv-as-matmul matrix
WINOGRAD_MIN = 32  # channels (in and out) from which 3x3 convs run by Winograd on CPU...
WINOGRAD_MAX_HW = 256  # ...on maps up to 16x16 (slower than XLA's at 28x28x32 -> 64 there)


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 max pooling with stride 2 on ``[..., H, W, C]`` (VALID: odd edges cropped).

    Forward equals ``nn.max_pool(x, (2, 2), (2, 2))``; gradients are equal where the
    window maximum is unique and split evenly between tied maxima otherwise.

    Example:
        >>> max_pool_2x2(jnp.arange(16.0).reshape(1, 4, 4, 1))[0, ..., 0]
        Array([[ 5.,  7.],
               [13., 15.]], dtype=float32)
    """
    h2, w2 = x.shape[-3] // 2, x.shape[-2] // 2
    x = x[..., : 2 * h2, : 2 * w2, :]
    top = jnp.maximum(x[..., 0::2, 0::2, :], x[..., 0::2, 1::2, :])
    bottom = jnp.maximum(x[..., 1::2, 0::2, :], x[..., 1::2, 1::2, :])
    return jnp.maximum(top, bottom)


def _pads(kh: int, kw: int) -> tuple[tuple[int, int], tuple[int, int]]:
    return ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2)  # XLA's SAME, stride 1


def _conv_xla(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=_DN)


def _conv_im2col(x: jax.Array, kernel: jax.Array) -> jax.Array:
    kh, kw, ci, co = kernel.shape
    h, w = x.shape[1:3]
    (t, b), (left, r) = _pads(kh, kw)
    xp = jnp.pad(x, ((0, 0), (t, b), (left, r), (0, 0)))
    cols = jnp.concatenate([xp[:, i:i + h, j:j + w] for i in range(kh) for j in range(kw)], -1)
    return cols @ kernel.reshape(kh * kw * ci, co)


def _conv_dense(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """The convolution as one matmul with its ``[H*W*Cin, H*W*Cout]`` (Toeplitz) matrix:
    cheaper than any sliding formulation when the kernel covers the image."""
    kh, kw, ci, co = kernel.shape
    n, h, w, _ = x.shape
    (t, _b), (left, _r) = _pads(kh, kw)
    ih = np.arange(h)[:, None] - np.arange(h)[None, :] + t  # [h_in, h_out] -> kernel row
    jw = np.arange(w)[:, None] - np.arange(w)[None, :] + left
    mask = ((ih >= 0) & (ih < kh))[:, :, None, None] & ((jw >= 0) & (jw < kw))[None, None]
    m = kernel[np.clip(ih, 0, kh - 1)][:, :, np.clip(jw, 0, kw - 1)]  # [h, h', w, w', ci, co]
    m = jnp.where(mask[..., None, None], m, 0).transpose(0, 2, 4, 1, 3, 5)
    return (x.reshape(n, h * w * ci) @ m.reshape(h * w * ci, h * w * co)).reshape(n, h, w, co)


def _conv_lin(t: jax.Array, kernel: jax.Array) -> jax.Array:
    """``lax.conv`` with the kernel given as ``[kh, kw, Cout, Cin]``: same values, but its
    transpose (the input gradient) gets a standard-layout kernel, which XLA:CPU runs
    2x faster inside loops (``scan``/``while``) than its own transposed conv."""
    return lax.conv_general_dilated(t, kernel.swapaxes(2, 3), (1, 1), "SAME",
                                    dimension_numbers=("NHWC", "HWOI", "NHWC"))


# Winograd F(2x2, 3x3) (Lavin & Gray 2016): y = A^T [(G k G^T) * (B^T d B)] A per 4x4 tile d
_WB = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float32)  # B^T
_WG = np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], np.float32)
_WA = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float32)  # A^T
_WGG = np.kron(_WG, _WG)  # [16, 9]: G k G^T for all 16 (a, b) as one matmul


def _lincomb(coefs: np.ndarray, terms: list) -> jax.Array:
    """sum_i coefs[i] * terms[i], skipping zeros (XLA fuses it into one loop)."""
    out = [t if c == 1 else -t if c == -1 else float(c) * t
           for c, t in zip(coefs, terms, strict=True) if c]
    return sum(out[1:], out[0])


def _conv_winograd(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """3x3 stride-1 SAME convolution by Winograd F(2x2, 3x3): 16 batched matmuls over 2x2
    output tiles, 2.25x fewer multiplies than direct (1.7x on 7x7 maps, tiles padded to 8x8)."""
    n, h, w, ci = x.shape
    th, tw = -(-h // 2), -(-w // 2)
    xp = jnp.pad(x, ((0, 0), (1, 2 * th + 1 - h), (1, 2 * tw + 1 - w), (0, 0)))
    rows = [_lincomb(b, [xp[:, i:i + 2 * th - 1:2] for i in range(4)]) for b in _WB]
    v = jnp.stack([_lincomb(b, [r[:, :, j:j + 2 * tw - 1:2] for j in range(4)])
                   for r in rows for b in _WB]).reshape(16, n * th * tw, ci)
    u = (_WGG @ kernel.reshape(9, -1)).reshape(16, ci, -1)  # an einsum here ran 40x slower
    m = jnp.einsum("tpi,tio->tpo", v, u).reshape(4, 4, n, th, tw, -1)
    cols = [_lincomb(a, list(m)) for a in _WA]  # [2][4, n, th, tw, co]
    y = jnp.stack([jnp.stack([_lincomb(a, list(c)) for a in _WA]) for c in cols])
    y = y.transpose(2, 3, 0, 4, 1, 5).reshape(n, 2 * th, 2 * tw, -1)
    return y[:, :h, :w]


def _winograd_lin(t: jax.Array, kernel: jax.Array) -> jax.Array:
    """The convolution's values, written as the transpose of Winograd with the flipped
    kernel, so its transpose (the input gradient) is a Winograd convolution too."""
    flipped = kernel[::-1, ::-1].swapaxes(2, 3)
    ct = jax.ShapeDtypeStruct((*t.shape[:3], kernel.shape[3]), t.dtype)
    return jax.linear_transpose(lambda c: _conv_winograd(c, flipped), ct)(t)[0]


def _fast_conv(lin_k: Callable, fwd: Callable = _conv_xla,
               lin_x: Callable | None = None) -> Callable:
    """``fwd`` (``lax.conv``) with a custom JVP: the tangent in x goes through a form whose
    transpose (the input gradient) is fast (``lin_x``; default im2col for thin inputs: one
    matmul + shifted adds; else :func:`_conv_lin`), the tangent in the kernel through
    ``lin_k``."""

    @jax.custom_jvp
    def conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
        return fwd(x, kernel)

    def jvp(primals, tangents):
        (x, kernel), (tx, tk) = primals, tangents
        lx = lin_x or (_conv_im2col if x.shape[-1] <= THIN else _conv_lin)
        y = conv(x, kernel)
        ty = [f(a, b) for f, a, b, t in ((lx, tx, kernel, tx), (lin_k, x, tk, tk))
              if not isinstance(t, SymbolicZero)]
        return y, sum(ty[1:], ty[0]) if ty else jnp.zeros_like(y)

    conv.defjvp(jvp, symbolic_zeros=True)
    return conv


_conv_fast = _fast_conv(_conv_xla)  # weight gradient: XLA's (fastest for a batch gradient)
_conv_fast_pe = _fast_conv(_conv_im2col)  # weight gradient: a matmul (per-example, in loops)
_conv_wino = _fast_conv(_conv_xla, _conv_winograd, _winograd_lin)  # input gradient: Winograd
_conv_wino_pe = _fast_conv(_conv_im2col, _conv_winograd, _winograd_lin)
_PATCH_WEIGHT_GRADS = contextvars.ContextVar("jaxinv_patch_weight_grads", default=False)
_WINOGRAD = contextvars.ContextVar("jaxinv_winograd", default=None)  # None: unset


@contextlib.contextmanager
def _scoped(var: contextvars.ContextVar, value: object) -> Iterator[None]:
    token = var.set(value)
    try:
        yield
    finally:
        var.reset(token)


@contextlib.contextmanager
def patch_weight_grads(on: bool = True) -> Iterator[None]:
    """Within (at trace time), :class:`Conv` computes its *weight* gradient as im2col +
    matmul instead of XLA's weight-gradient convolution. Same values; under ``vmap`` over
    examples (per-example gradients, DP-SGD) it stays a batched matmul where XLA's becomes
    a grouped convolution, and inside ``scan`` it avoids XLA:CPU's slow looped
    weight-gradient convolution: DP-SGD on the MNIST CNN ran 10x faster with one example
    per ``scan`` step on this CPU (``benchmarks/dpsgd.py``). A plain batch gradient is
    faster without it (2080 vs 745 examples/s at batch 64).

    Example:
        >>> loss = lambda k, x: conv2d_same(x, k).sum() ** 2
        >>> k, x = jnp.ones((3, 3, 2, 4)), jnp.ones((1, 6, 6, 2))
        >>> with patch_weight_grads():
        ...     g = jax.grad(loss)(k, x)
        >>> bool(jnp.allclose(g, jax.grad(loss)(k, x), rtol=1e-6))
        True
    """
    with _scoped(_PATCH_WEIGHT_GRADS, on):
        yield


@contextlib.contextmanager
def winograd(on: bool | str = True) -> Iterator[None]:
    """Within (at trace time), :func:`conv2d_same` runs 3x3 kernels by Winograd F(2x2, 3x3)
    always (``True``), never (``False``), or by the CPU rule (``"auto"``: on CPU, both
    channel counts at least ``WINOGRAD_MIN``, maps at most ``WINOGRAD_MAX_HW`` pixels).
    Unset, it is ``"auto"`` in the steps :func:`~jaxinv.core.driver.run_chains` compiles
    and ``False`` elsewhere. Same values to float rounding; forward and input gradient take
    2.25x fewer multiplies. On this CPU, forward + input gradient of 32 examples per step of
    a loop: 1.5x XLA's speed at 14x14x32 -> 32, 1.26x at 7x7x128 -> 256 (GMI's generator;
    1.6x with 16 per step), 0.8x at 28x28x32 -> 64 (measured before the kernel transform
    became one matmul, which sped GMI's chains up 1.2-1.35x more). Outside loops, batch 64
    at 7x7x128 -> 256: forward 1.15x, input gradient 0.45x (one jitted call, as training
    runs).
    Not measured on accelerators, so off there under ``"auto"``.

    Example:
        >>> x, k = jnp.ones((1, 6, 6, 2)), jnp.ones((3, 3, 2, 4))
        >>> with winograd():
        ...     y = conv2d_same(x, k)
        >>> bool(jnp.allclose(y, conv2d_same(x, k)))
        True
    """
    if on not in (True, False, "auto"):
        raise ValueError(f"winograd: on must be True, False or 'auto', got {on!r}")
    with _scoped(_WINOGRAD, on):
        yield


def winograd_setting(unset: bool | str = "auto") -> bool | str:
    """The :func:`winograd` setting in force, or ``unset`` if none is.

    Example:
        >>> with winograd(False):
        ...     winograd_setting()
        False
        >>> winograd_setting()
        'auto'
    """
    on = _WINOGRAD.get()
    return unset if on is None else on


def conv2d_same(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Stride-1 SAME convolution of ``x [N, H, W, Cin]`` with ``kernel [kh, kw, Cin, Cout]``.

    Same result as ``lax.conv_general_dilated(x, kernel, (1, 1), "SAME")`` (up to
    float rounding); the formulation is chosen from the static shapes for speed.

    Example:
        >>> conv2d_same(jnp.ones((2, 4, 4, 32)), jnp.ones((5, 5, 32, 64))).shape
        (2, 4, 4, 64)
    """
    kh, kw, ci, _ = kernel.shape
    if x.ndim != 4 or x.shape[-1] != ci:
        raise ValueError(f"conv2d_same: x must be [N, H, W, {ci}], got {x.shape}")
    hw = x.shape[1] * x.shape[2]
    if hw <= 2 * kh * kw and hw * hw * ci * kernel.shape[3] <= DENSE_MAX:
        return _conv_dense(x, kernel)
    pe, on = _PATCH_WEIGHT_GRADS.get(), _WINOGRAD.get()
    auto = (on == "auto" and jax.default_backend() == "cpu" and hw <= WINOGRAD_MAX_HW
            and min(ci, kernel.shape[3]) >= WINOGRAD_MIN)
    if (kh, kw) == (3, 3) and (on is True or auto):
        return (_conv_wino_pe if pe else _conv_wino)(x, kernel)
    return (_conv_fast_pe if pe else _conv_fast)(x, kernel)


class Conv(nn.Module):
    """Stride-1 SAME 2-D convolution via :func:`conv2d_same`; parameters as ``nn.Conv``'s.

    Example:
        >>> y, _ = Conv(32, (5, 5)).init_with_output(jax.random.key(0), jnp.ones((1, 8, 8, 1)))
        >>> y.shape
        (1, 8, 8, 32)
    """

    features: int
    kernel_size: tuple[int, int] = (3, 3)
    use_bias: bool = True
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", self.kernel_init,
                            (*self.kernel_size, x.shape[-1], self.features), jnp.float32)
        y = conv2d_same(x, kernel.astype(x.dtype))
        if self.use_bias:
            y = y + self.param("bias", self.bias_init, (self.features,), jnp.float32)
        return y


def conv2d_patches(x: jax.Array, kernel: jax.Array, stride: int = 1,
                   padding: tuple[int, int] | str | None = None,
                   space_to_depth: bool = False, conv_patches: bool = False) -> jax.Array:
    """2-D convolution as im2col by shifted strided slices and one matmul.

    Same values as ``lax.conv_general_dilated(x, kernel, (stride,) * 2, [(p, p), (q, q)])``
    (default ``padding``: ``(kh // 2, kw // 2)``, PyTorch's ``padding=k // 2``; equal to
    XLA's SAME at stride 1 for odd kernels, not at stride 2; ``"SAME"``: XLA's at any
    stride). Its *weight*
    gradient is a matmul, so per-example (vmapped) parameter gradients and their
    derivatives, which gradient-matching attacks differentiate for every chain, stay
    batched matmuls and slices; as ``lax.conv`` they become grouped convolutions
    (``benchmarks/gradient_leakage.py --lax-conv``: iDLG on DLG's LeNet 3.5x faster on
    XLA:CPU than with ``lax.conv``, same PSNR).

    ``space_to_depth`` (strided only): the patches are taken from the input rearranged into
    ``stride x stride`` blocks (channels ``stride^2 Cin``), with the kernel zero-padded to a
    multiple of ``stride``: ``ceil(k / stride)^2`` contiguous slices instead of ``k^2``
    strided ones (5x5 at stride 2: 9 instead of 25, for 1.44x the multiplies). Same values.
    DLG's LeNet uses it on CPU (not measured on accelerators): iDLG compiled in 5.9 s against
    8.3 s and ran 1.22x faster, IG 1.36x. The WGAN-GP critic's training step ran slower with
    it (48 vs 30 ms), so it is off there.

    ``conv_patches``: the patches come from one convolution with a one-hot kernel
    (``lax.conv_general_dilated_patches``) instead of ``kh * kw`` slices, so the program has
    a few ops where it had dozens. Same values. For single-channel inputs: the WGAN-GP
    critic's first layer on CPU, where the first generator-training call compiled in 6.4-7.2
    s against 10.2-12.9 s, at the same speed. With several channels XLA:CPU runs it as a
    grouped convolution (training 6x slower); iDLG's LeNet gained nothing from it.

    Example:
        >>> x, k = jnp.ones((2, 9, 9, 3)), jnp.ones((5, 5, 3, 4))
        >>> conv2d_patches(x, k, 2).shape, float(conv2d_patches(x, k, 2)[0, 2, 2, 0])
        ((2, 5, 5, 4), 75.0)
        >>> float(conv2d_patches(x, k, 2, space_to_depth=True)[0, 2, 2, 0])
        75.0
        >>> float(conv2d_patches(x, k, 2, conv_patches=True)[0, 2, 2, 0])
        75.0
    """
    kh, kw, ci, co = kernel.shape
    if x.ndim != 4 or x.shape[-1] != ci:
        raise ValueError(f"conv2d_patches: x must be [N, H, W, {ci}], got {x.shape}")
    if padding == "SAME":
        (t, b), (left, r) = (lax.padtype_to_pads(x.shape[1:3], (kh, kw), (stride,) * 2,
                                                 "SAME"))
    else:
        ph, pw = padding if padding is not None else (kh // 2, kw // 2)
        (t, b), (left, r) = (ph, ph), (pw, pw)
    ho = (x.shape[1] + t + b - kh) // stride + 1
    wo = (x.shape[2] + left + r - kw) // stride + 1
    if space_to_depth and stride > 1:
        return _patches_s2d(x, kernel, stride, (t, left), (ho, wo))
    if conv_patches:  # columns ordered (Cin, kh, kw); exact copies on every backend
        cols = lax.conv_general_dilated_patches(x, (kh, kw), (stride, stride),
                                                ((t, b), (left, r)), dimension_numbers=_DN,
                                                precision=lax.Precision.HIGHEST)
        return cols @ kernel.transpose(2, 0, 1, 3).reshape(ci * kh * kw, co)
    xp = jnp.pad(x, ((0, 0), (t, b), (left, r), (0, 0)))
    cols = jnp.concatenate([xp[:, i:i + stride * (ho - 1) + 1:stride,
                               j:j + stride * (wo - 1) + 1:stride]
                            for i in range(kh) for j in range(kw)], -1)
    return cols @ kernel.reshape(kh * kw * ci, co)


def _patches_s2d(x: jax.Array, kernel: jax.Array, s: int, lo: tuple[int, int],
                 out: tuple[int, int]) -> jax.Array:
    """:func:`conv2d_patches` at stride ``s`` over the space-to-depth input (``lo``: top and
    left padding; ``out``: output height and width)."""
    kh, kw, ci, co = kernel.shape
    n, h, w, _ = x.shape
    (t, left), (ho, wo) = lo, out
    bh, bw = -(-kh // s), -(-kw // s)  # kernel blocks of s x s
    lh, lw = s * (ho + bh - 1), s * (wo + bw - 1)  # input rows and columns the output reads
    xp = jnp.pad(x, ((0, 0), (t, max(0, lh - h - t)), (left, max(0, lw - w - left)), (0, 0)))
    xs = xp[:, :lh, :lw].reshape(n, lh // s, s, lw // s, s, ci).transpose(0, 1, 3, 2, 4, 5)
    xs = xs.reshape(n, lh // s, lw // s, s * s * ci)
    kp = jnp.pad(kernel, ((0, bh * s - kh), (0, bw * s - kw), (0, 0), (0, 0)))
    kp = kp.reshape(bh, s, bw, s, ci, co).transpose(0, 2, 1, 3, 4, 5)
    cols = jnp.concatenate([xs[:, i:i + ho, j:j + wo] for i in range(bh) for j in range(bw)], -1)
    return cols @ kp.reshape(bh * bw * s * s * ci, co)


class PatchConv(nn.Module):
    """A strided convolution via :func:`conv2d_patches`; parameters as ``nn.Conv``'s.

    Example:
        >>> y, v = PatchConv(12, (5, 5), 2).init_with_output(jax.random.key(0),
        ...                                                   jnp.ones((1, 28, 28, 1)))
        >>> y.shape, v["params"]["kernel"].shape
        ((1, 14, 14, 12), (5, 5, 1, 12))
    """

    features: int
    kernel_size: tuple[int, int] = (3, 3)
    stride: int = 1
    padding: tuple[int, int] | str | None = None  # conv2d_patches': None is k // 2
    space_to_depth: bool = False  # conv2d_patches' options
    conv_patches: bool = False
    use_bias: bool = True
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", self.kernel_init,
                            (*self.kernel_size, x.shape[-1], self.features), jnp.float32)
        y = conv2d_patches(x, kernel.astype(x.dtype), self.stride, self.padding,
                           self.space_to_depth, self.conv_patches)
        if self.use_bias:
            y = y + self.param("bias", self.bias_init, (self.features,), jnp.float32)
        return y
