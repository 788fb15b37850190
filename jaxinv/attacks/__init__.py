"""Attack kernels: one module per family, each a factory returning an ``Attack``."""

from jaxinv.attacks.mi_face import MIFaceInfo, MIFaceState, mi_face

ATTACKS = {"mi-face": mi_face}

__all__ = ["ATTACKS", "MIFaceInfo", "MIFaceState", "mi_face"]
