"""The training package: make_step, fit_many (vmap over seeds and data masks), resume."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxinv import data
from jaxinv.models import create
from jaxinv.training import fit_many, init_state, make_step, unstack

X, Y = data.load("digits", "train")
X, Y = X[:320], Y[:320]
MODULE = create("softmax", 10)
MASKS = np.random.default_rng(0).random((8, len(X))) < 0.5


def test_make_step_ignores_zero_weight_examples():
    def loss(params, rest, batch, key):
        x, y = batch
        return (x @ params["w"] - y) ** 2, ({}, rest)

    tx = optax.sgd(0.1)
    step = jax.jit(make_step(loss, tx))
    s = init_state({"params": {"w": jnp.zeros(3)}}, tx)
    x, y = jnp.eye(3), jnp.array([1.0, 2.0, 3.0])
    masked, _ = step(s, (x, y.at[2].set(100.0)), jnp.array([1.0, 1.0, 0.0]), jax.random.key(0))
    subset, _ = step(s, (x[:2], y[:2]), jnp.ones(2), jax.random.key(0))
    np.testing.assert_allclose(masked.params["w"][:2], subset.params["w"][:2])
    assert float(masked.params["w"][2]) == 0.0


def test_fit_many_equals_models_trained_one_by_one():
    seeds = list(range(8))
    many = fit_many(MODULE, X, Y, seeds=seeds, masks=MASKS, epochs=2, batch_size=32,
                    progress=False)
    for m in range(8):
        one = fit_many(MODULE, X, Y, seeds=[m], masks=MASKS[m:m + 1], epochs=2, batch_size=32,
                       progress=False)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5),
                     unstack(many.variables, m), unstack(one.variables, 0))
    assert many.history.shape == (2, 8, 2)


def test_fit_many_only_sees_its_mask():
    """Corrupting every example outside model 0's mask changes nothing for model 0."""
    y_bad = np.where(MASKS[0], Y, (Y + 1) % 10)
    a = fit_many(MODULE, X, Y, seeds=[0, 1], masks=MASKS[:2], epochs=1, batch_size=32,
                 progress=False)
    b = fit_many(MODULE, X, y_bad, seeds=[0, 1], masks=MASKS[:2], epochs=1, batch_size=32,
                 progress=False)
    jax.tree.map(np.testing.assert_array_equal, unstack(a.variables, 0),
                 unstack(b.variables, 0))
    assert not np.allclose(unstack(a.variables, 1)["params"]["Dense_0"]["kernel"],
                           unstack(b.variables, 1)["params"]["Dense_0"]["kernel"])


def test_fit_many_learns_and_resumes(tmp_path):
    kw = dict(seeds=[3, 4], masks=MASKS[:2], batch_size=32, lr=0.05, progress=False)
    straight = fit_many(MODULE, X, Y, epochs=3, **kw)
    fit_many(MODULE, X, Y, epochs=1, workdir=tmp_path, **kw)
    resumed = fit_many(MODULE, X, Y, epochs=3, workdir=tmp_path, **kw)
    jax.tree.map(np.testing.assert_array_equal, straight.variables, resumed.variables)
    assert straight.history[-1, :, 1].min() > 0.8  # training accuracy of both models
    with pytest.raises(ValueError, match="other settings"):
        fit_many(MODULE, X, Y, epochs=3, workdir=tmp_path, **{**kw, "seeds": [3, 5]})


@pytest.mark.parametrize("kw, msg", [
    (dict(masks=np.ones((2, 5), bool)), "masks must be"),
    (dict(seeds=[]), "seeds"),
    (dict(masks=np.zeros((1, 320), bool), seeds=[0]), "at least one example")])
def test_fit_many_bad_arguments(kw, msg):
    args = dict(seeds=[0, 1], epochs=1, progress=False)
    args.update(kw)
    with pytest.raises(ValueError, match=msg):
        fit_many(MODULE, X, Y, **args)
