"""Attacks: one module per family, each a factory returning a kernel, and the registry.

White-box attacks return an :class:`~jaxinv.core.protocol.Attack`; most are
configurations of :func:`gradient_inversion`. Black-box attacks return an ask/tell
:class:`~jaxinv.core.protocol.BlackBox` that runs in-process (``as_attack(bb, oracle)``)
or against an HTTP API (:func:`jaxinv.core.remote.run_remote`). ``REGISTRY`` maps the
command-line names to factories; a new attack is one file plus one :func:`register` line.
"""

from jaxinv.attacks import priors, stops
from jaxinv.attacks.brep import BREPInfo, BREPState, brep_mi
from jaxinv.attacks.gradient_inversion import (
    GIInfo,
    GIState,
    gradient_inversion,
    normal,
    uniform,
    zeros,
)
from jaxinv.attacks.mi_face import class_cost, mi_face
from jaxinv.attacks.registry import REGISTRY, Entry, get, options, register
from jaxinv.attacks.zo_inversion import ZOInfo, ZOState, zo_inversion

register("mi-face", mi_face, "white-box", "MI-Face (Fredrikson et al. 2015), white-box",
         convert={"process": priors.get_process})
register("zo", zo_inversion, "score", "score-based zeroth-order inversion, black-box",
         skip=("z_shape",))
register("label-only", brep_mi, "label", "label-only boundary repulsion (BREP-MI style)",
         skip=("z_shape",))

__all__ = ["REGISTRY", "BREPInfo", "BREPState", "Entry", "GIInfo", "GIState", "ZOInfo",
           "ZOState", "brep_mi", "class_cost", "get", "gradient_inversion", "mi_face",
           "normal", "options", "priors", "register", "stops", "uniform", "zeros",
           "zo_inversion"]
