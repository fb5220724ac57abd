"""Dataset adapters: BEAT2 (:mod:`.beat2`), windows/Dataset (:mod:`.windows`), synthetic
corpus (:mod:`.synthetic`), HumanML3D/KTubeUM (:mod:`.humanml3d`, :mod:`.ktubeum`,
:mod:`.smplx_model`), SeG (:mod:`.bvh`, :mod:`.seg`), TextGrid (:mod:`.textgrid`)."""
