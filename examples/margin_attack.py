"""A new attack in one file: logit-margin inversion, registered with one line.

    python examples/margin_attack.py        # trains digits models, runs it from the CLI
"""

import jax
import jax.numpy as jnp
import optax

from jaxinv import factory, gradient_inversion, register
from jaxinv.attacks import priors, stops, uniform


@factory
def margin_attack(apply_fn, input_shape, *, lr: float = 0.05, tv: float = 0.05,
                  max_steps: int = 300):
    """Logit-margin inversion: raise the class logit above every other one (Adam)."""

    def loss(x, y, env):
        z = apply_fn(env, x[None])[0]
        others = jnp.max(jnp.where(jnp.arange(z.shape[0]) == y, -jnp.inf, z))
        return others - z[y], {"confidence": jax.nn.softmax(z)[y]}

    return gradient_inversion(loss, optax.adam(lr), has_aux=True,
                              init=uniform(input_shape, 0.0, 0.25), prior=priors.make(tv=tv),
                              project=lambda x: jnp.clip(x, 0.0, 1.0),
                              stop=stops.max_steps(max_steps))


register("margin", margin_attack, "white-box")  # the one registry line

if __name__ == "__main__":
    from jaxinv.cli import main

    main(["train", "--dataset", "digits", "--arch", "cnn", "--workdir", "runs/ex/target"])
    main(["train", "--dataset", "digits", "--arch", "mlp", "--workdir", "runs/ex/evaluator"])
    main(["attack", "margin", "--target", "runs/ex/target", "--eval-model", "runs/ex/evaluator",
          "--chains", "8", "--steps", "100", "--lr", "0.1", "--out", "runs/ex/margin"])
