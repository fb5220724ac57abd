"""Dataset adapters: BEAT2, HumanML3D/KTubeUM, SeG (BVH), synthetic."""
