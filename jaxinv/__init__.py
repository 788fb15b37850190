"""jaxinv: model inversion in JAX.

Pure attack kernels (``Attack(init, step)``) run as thousands of parallel chains by
:func:`jaxinv.run.run_chains`; see ``README.md`` for the command line.
"""

from jaxinv.base import Attack
from jaxinv.run import RunResult, make_mesh, run_chains

__version__ = "0.1.0"
__all__ = ["Attack", "RunResult", "__version__", "make_mesh", "run_chains"]
