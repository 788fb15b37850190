"""Flat draws reshaped (jaxinv.core.rng) equal jax.random's shaped draws bit for bit."""

import jax
import numpy as np
import pytest

from jaxinv.core import rng


@pytest.mark.parametrize("name, kw", [("normal", {}), ("uniform", {"minval": -2.0, "maxval": 3.0}),
                                      ("rademacher", {})])
def test_flat_draws_equal_shaped_draws_under_vmap(name, kw):
    keys = jax.random.split(jax.random.key(3), 4)
    shape = (3, 5, 5, 2, 2)  # rank 5, 6 under vmap: the shapes that compile slowly
    ours = jax.jit(jax.vmap(lambda k: getattr(rng, name)(k, shape, **kw)))(keys)
    ref = jax.jit(jax.vmap(lambda k: getattr(jax.random, name)(k, shape, **kw)))(keys)
    assert ours.shape == (4, *shape) and ours.dtype == ref.dtype
    np.testing.assert_array_equal(ours, ref)


def test_scalar_and_empty_shapes():
    k = jax.random.key(0)
    np.testing.assert_array_equal(rng.normal(k, ()), jax.random.normal(k, ()))
    assert rng.uniform(k, (0, 3)).shape == (0, 3)
