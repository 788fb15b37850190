"""Attack kernels: one module per family, each a factory returning an ``Attack``.

``ATTACKS`` take the target's pure ``apply_logits`` (white-box); ``BLACKBOX`` take an
:class:`jaxinv.oracles.Oracle`.
"""

from jaxinv.attacks.mi_face import MIFaceInfo, MIFaceState, mi_face
from jaxinv.attacks.zo_inversion import ZOInfo, ZOState, zo_inversion

ATTACKS = {"mi-face": mi_face}
BLACKBOX = {"zo": zo_inversion}

__all__ = ["ATTACKS", "BLACKBOX", "MIFaceInfo", "MIFaceState", "ZOInfo", "ZOState", "mi_face",
           "zo_inversion"]
