"""Kernel-protocol helpers, priors composition, results helpers and the attack registry."""

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxinv.attacks import priors
from jaxinv.core.protocol import check_state, healthy, tree_where
from jaxinv.evaluation import results
from jaxinv.workflows.invert import build_attack


class S(NamedTuple):
    x: jnp.ndarray
    loss: jnp.ndarray
    best: jnp.ndarray


def state(x=0.0, loss=1.0, best=jnp.inf):
    return S(jnp.full((2, 2), x, jnp.float32), jnp.float32(loss), jnp.float32(best))


def test_check_state_names_the_problem():
    check_state(state())
    with pytest.raises(TypeError, match="'loss' field"):
        check_state(NamedTuple("T", [("x", int)])(1))
    with pytest.raises(TypeError, match="float32 scalar"):
        check_state(S(jnp.zeros(2), jnp.zeros(3), jnp.zeros(())))


def test_healthy_allows_inf_sentinels_but_not_nan_or_inf_iterates():
    assert bool(healthy(state()))  # best = inf is a sentinel
    assert not bool(healthy(state(x=jnp.nan)))
    assert not bool(healthy(state(loss=jnp.inf)))
    assert not bool(healthy(state(best=jnp.nan)))


def test_tree_where_selects_whole_trees():
    a, b = state(1.0, 2.0), state(3.0, 4.0)
    assert float(tree_where(jnp.bool_(True), a, b).loss) == 2.0
    np.testing.assert_array_equal(tree_where(jnp.bool_(False), a, b).x, b.x)


def test_compose_applies_left_to_right():
    x = jnp.linspace(0, 1, 64).reshape(8, 8, 1)
    np.testing.assert_array_equal(priors.compose()(x), x)
    np.testing.assert_array_equal(priors.identity(x), x)
    double, add1 = (lambda v: 2 * v), (lambda v: v + 1)
    np.testing.assert_allclose(priors.compose(double, add1)(x), 2 * x + 1)


def test_topk_accuracy():
    logits = np.array([[0.1, 0.9, 0.0], [0.5, 0.2, 0.3]])
    np.testing.assert_array_equal(results.topk_accuracy(logits, np.array([0, 0]), 1), [0, 1])
    np.testing.assert_array_equal(results.topk_accuracy(logits, np.array([0, 1]), 2), [1, 0])


def test_save_grid_layout(tmp_path):
    x = np.zeros((3, 5, 4, 6, 1), np.float32)
    x[1, 2] = 1.0  # class 1, chain 2: white
    results.save_grid(tmp_path / "g.png", x, per_class=4, scale=1)
    img = np.asarray(Image.open(tmp_path / "g.png"))
    assert img.shape == (3 * 5 + 1, 4 * 7 + 1)
    assert img[1 + 5 + 1, 1 + 2 * 7 + 1] == 255 and img[2, 2] == 0


def test_write_run_files(tmp_path):
    x = np.random.default_rng(0).random((2, 3, 8, 8, 1), np.float32)
    results.write_run(tmp_path, {"metrics": {"a": 1.0}}, {"x": x, "y": np.arange(2)})
    assert (tmp_path / "grid.png").exists()
    np.testing.assert_array_equal(np.load(tmp_path / "reconstructions.npz")["x"], x)
    assert '"a": 1.0' in (tmp_path / "results.json").read_text()


def test_build_attack_unknown_name():
    with pytest.raises(ValueError, match=r"unknown attack 'dlg'.*mi-face"):
        build_attack("dlg", None, 10, {})
