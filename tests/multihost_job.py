"""One process of a 2-process CPU job: ``python multihost_job.py PORT PID OUT [WORKDIR]``."""

import sys

import jax

jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(f"127.0.0.1:{sys.argv[1]}", num_processes=2,
                           process_id=int(sys.argv[2]))
# The first collective forms gloo's context, whose key exchange gives up after 30 s: do it
# while both processes are in step (initialize returns in both together), not at the first
# checkpoint, which a loaded machine can delay in one process by more than that.
from jax.experimental import multihost_utils  # noqa: E402

multihost_utils.sync_global_devices("jaxinv multihost_job start")

import numpy as np  # noqa: E402

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from toy import linear_apply, linear_env  # noqa: E402

from jaxinv.attacks import mi_face  # noqa: E402
from jaxinv.core.driver import run_chains  # noqa: E402

attack = mi_face(linear_apply, (8, 8, 1), loss="neg_log_p", init="random", lr=0.5, beta=1000)
res = run_chains(attack, np.arange(10), linear_env(), chains=8, steps=30, segment=10, chunk=2,
                 progress=False, workdir=sys.argv[4] if len(sys.argv) > 4 else None)
np.savez(sys.argv[3], best_x=res.best_x, info_loss=res.info.loss, devices=jax.device_count())
