"""Attack kernels: one module per family, each a factory returning an ``Attack``.

``ATTACKS`` take the target's pure ``apply_logits`` (white-box) and return an ``Attack``;
``BLACKBOX`` return an ask/tell :class:`jaxinv.base.BlackBox` that runs in-process
(``as_attack(bb, oracle)``) or against an HTTP API (:func:`jaxinv.remote.run_remote`).
"""

from jaxinv.attacks.brep import BREPInfo, BREPState, brep_mi
from jaxinv.attacks.mi_face import MIFaceInfo, MIFaceState, mi_face
from jaxinv.attacks.zo_inversion import ZOInfo, ZOState, zo_inversion

ATTACKS = {"mi-face": mi_face}
BLACKBOX = {"zo": zo_inversion, "label-only": brep_mi}

__all__ = [
           "ATTACKS",
           "BLACKBOX",
           "BREPInfo",
           "BREPState",
           "MIFaceInfo",
           "MIFaceState",
           "ZOInfo",
           "ZOState",
           "brep_mi",
           "mi_face",
           "zo_inversion",
]
