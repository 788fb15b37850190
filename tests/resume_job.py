"""Checkpointed MI-Face run for the SIGKILL/resume test: ``python resume_job.py WORKDIR OUT``."""

import sys

import numpy as np

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from toy import linear_apply, linear_env

from jaxinv.attacks import mi_face
from jaxinv.core.driver import run_chains

attack = mi_face(linear_apply, (8, 8, 1), loss="neg_log_p", init="random", lr=0.5, beta=1000)
res = run_chains(attack, np.arange(10), linear_env(), chains=16, steps=600, segment=10, chunk=4,
                 workdir=sys.argv[1], progress=False)
np.savez(sys.argv[2], best_x=res.best_x, best_loss=res.best_loss, x=res.state.x,
         info_loss=res.info.loss, steps=res.steps_run)
