"""gesture-eval: co-speech gesture metrics that reproduce the reference implementations.

Every metric takes ``variant="evaltools"`` (PantoMatrix ``emage_evaltools``, 2025; default)
or ``variant="cvpr24"`` (EMAGE CVPR'24 ``metric.py``, as GestureLSM / MambaTalk / SemTalk use it).
"""

__version__ = "0.1.0"

from gesture_eval.beat import (
    BC_UPPER_BODY,
    BeatConsistency,
    BeatConsistencyResult,
    audio_onsets,
    beat_consistency,
    beat_consistency_detail,
    mean_joint_speed,
)
from gesture_eval.body import SmplxRest, face_vertices, smplx_joints
from gesture_eval.diversity import L1Diversity, l1_diversity
from gesture_eval.encoder import (
    SMPLX_PARENTS,
    FGDEncoder,
    fgd_features,
    fgd_features_batch,
    train_fgd_encoder,
)
from gesture_eval.energy import EnergyDistance, energy_distance
from gesture_eval.errors import EvalError
from gesture_eval.evaluate import evaluate
from gesture_eval.face import FaceLVD, FaceMSE, face_lvd, face_mse
from gesture_eval.fgd import FrechetDistance, frechet_distance, frechet_distance_from_stats
from gesture_eval.srgr import SRGR, srgr
from gesture_eval.sync import SyncNet, SyncResult, sync_scores
from gesture_eval.text2motion import (
    POS_CATEGORIES,
    T2MEvaluator,
    T2MMetrics,
    WordVectorizer,
    contrastive_loss,
    t2m_metrics,
)
from gesture_eval.video import (
    I3D,
    FIDInceptionV3,
    FrechetInceptionDistance,
    FrechetVideoDistance,
    HandKeypointConfidence,
    HandKeypointVariance,
    VideoPSNR,
    VideoSSIM,
    fid,
    fid_features,
    fvd,
    fvd_features,
    hand_keypoint_confidence,
    hand_keypoint_variance,
    load_i3d,
    load_inception,
    video_psnr,
    video_ssim,
)

__all__ = [
    "BC_UPPER_BODY",
    "I3D",
    "POS_CATEGORIES",
    "SMPLX_PARENTS",
    "SRGR",
    "BeatConsistency",
    "BeatConsistencyResult",
    "EnergyDistance",
    "EvalError",
    "FGDEncoder",
    "FIDInceptionV3",
    "FaceLVD",
    "FaceMSE",
    "FrechetDistance",
    "FrechetInceptionDistance",
    "FrechetVideoDistance",
    "HandKeypointConfidence",
    "HandKeypointVariance",
    "L1Diversity",
    "SmplxRest",
    "SyncNet",
    "SyncResult",
    "T2MEvaluator",
    "T2MMetrics",
    "VideoPSNR",
    "VideoSSIM",
    "WordVectorizer",
    "__version__",
    "audio_onsets",
    "beat_consistency",
    "beat_consistency_detail",
    "contrastive_loss",
    "energy_distance",
    "evaluate",
    "face_lvd",
    "face_mse",
    "face_vertices",
    "fgd_features",
    "fgd_features_batch",
    "fid",
    "fid_features",
    "frechet_distance",
    "frechet_distance_from_stats",
    "fvd",
    "fvd_features",
    "hand_keypoint_confidence",
    "hand_keypoint_variance",
    "l1_diversity",
    "load_i3d",
    "load_inception",
    "mean_joint_speed",
    "smplx_joints",
    "srgr",
    "sync_scores",
    "t2m_metrics",
    "train_fgd_encoder",
    "video_psnr",
    "video_ssim",
]
