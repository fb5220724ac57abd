"""Dataset adapters: BEAT2 (:mod:`.beat2`), windows/Dataset (:mod:`.windows`), synthetic
corpus (:mod:`.synthetic`), HumanML3D/KTubeUM (:mod:`.humanml3d`, :mod:`.ktubeum`,
:mod:`.smplx_model`), SeG (:mod:`.bvh`, :mod:`.seg`), TextGrid (:mod:`.textgrid`)."""

import importlib

# re-exported lazily: importing one adapter must not import the others (openpyxl, smplx, ...)
_EXPORTS = {
    "retarget_seg_to_smplx": ".seg",
    "read_sg_code_inventory": ".seg",
    "read_seg_inventory": ".seg",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
