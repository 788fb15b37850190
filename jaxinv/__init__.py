"""jaxinv: model inversion in JAX.

Pure attack kernels (``Attack(init, step)``, ``BlackBox(init, ask, tell)``) run as
thousands of parallel chains by :func:`run_chains` (or against an HTTP API by
:func:`run_remote`). Packages: :mod:`jaxinv.core` (protocol, drivers),
:mod:`jaxinv.attacks`, :mod:`jaxinv.oracles` and :mod:`jaxinv.defenses`,
:mod:`jaxinv.federated` (the gradient-sharing oracle and client defenses),
:mod:`jaxinv.membership` (LiRA, LOSS, ROC metrics),
:mod:`jaxinv.models`, :mod:`jaxinv.training`, :mod:`jaxinv.metrics` and
:mod:`jaxinv.evaluation`, :mod:`jaxinv.http`, :mod:`jaxinv.workflows`, :mod:`jaxinv.cli`.
"""

from jaxinv import attacks, data, defenses, federated, membership, oracles, training
from jaxinv.attacks import gradient_inversion, register
from jaxinv.core import (
    Attack,
    BlackBox,
    OracleEnv,
    Queries,
    RunResult,
    as_attack,
    enable_compilation_cache,
    factory,
    make_mesh,
    run_chains,
    run_remote,
)

__version__ = "0.2.0"
__all__ = ["Attack", "BlackBox", "OracleEnv", "Queries", "RunResult", "__version__",
           "as_attack", "attacks", "data", "defenses", "enable_compilation_cache", "factory",
           "federated", "gradient_inversion", "make_mesh", "membership", "oracles", "register",
           "run_chains",
           "run_remote", "training"]
