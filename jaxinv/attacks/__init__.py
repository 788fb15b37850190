"""Attacks: one module per family, each a factory returning a kernel, and the registry.

White-box attacks return an :class:`~jaxinv.core.protocol.Attack`; most are
configurations of :func:`gradient_inversion`. Black-box attacks return an ask/tell
:class:`~jaxinv.core.protocol.BlackBox` that runs in-process (``as_attack(bb, oracle)``)
or against an HTTP API (:func:`jaxinv.core.remote.run_remote`). ``REGISTRY`` maps the
command-line names to factories; a new attack is one file plus one :func:`register` line.
"""

from jaxinv.attacks import priors, stops
from jaxinv.attacks.brep import BREPInfo, BREPState, brep_mi
from jaxinv.attacks.gmi import GMIEnv, gmi, gmi_env
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
register("gmi", gmi, "white-box", "GMI (Zhang et al. 2020), white-box in a GAN's latent space",
         skip=("generator", "critic", "z_dim"), generator="required")
register("zo", zo_inversion, "score", "score-based zeroth-order inversion, black-box",
         skip=("z_shape",), generator="optional",
         latent={"init_range": (-1.0, 1.0), "box": (-1.0, 1.0), "smoothing": 0.1})
register("label-only", brep_mi, "label", "label-only boundary repulsion (BREP-MI style)",
         skip=("z_shape",), generator="optional",  # BREP-MI's latent settings
         latent={"start": "normal", "box": (-1.5, 1.5), "radius": 2.0, "normalize": False})

__all__ = ["REGISTRY", "BREPInfo", "BREPState", "Entry", "GIInfo", "GIState", "GMIEnv",
           "ZOInfo", "ZOState", "brep_mi", "class_cost", "get", "gmi", "gmi_env",
           "gradient_inversion", "mi_face",
           "normal", "options", "priors", "register", "stops", "uniform", "zeros",
           "zo_inversion"]
