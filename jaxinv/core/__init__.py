"""The kernel protocol and the drivers that run it (in-process and remote)."""

from jaxinv.core.chains import Carry, RunResult, accept
from jaxinv.core.driver import enable_compilation_cache, make_mesh, run_chains
from jaxinv.core.protocol import (
    Attack,
    BlackBox,
    OracleEnv,
    Queries,
    as_attack,
    budget_rule,
    check_budget,
    check_state,
    factory,
    healthy,
    jsonable,
    tree_where,
)
from jaxinv.core.remote import run_remote

__all__ = ["Attack", "BlackBox", "Carry", "OracleEnv", "Queries", "RunResult", "accept",
           "as_attack", "budget_rule", "check_budget", "check_state", "enable_compilation_cache",
           "factory", "healthy", "jsonable", "make_mesh", "run_chains", "run_remote", "tree_where"]
