"""Evaluation on frozen features (pure PyTorch, no Ray): kNN, linear probe, baselines, hierarchy metrics."""

from hexray.eval.baselines import EvalSettings, evaluate_features, random_init_copy, raw_pixel_features
from hexray.eval.features import extract_features
from hexray.eval.hierarchy import (
    cosine_similarity_histogram,
    effective_rank,
    hierarchy_set_statistics,
    local_global_rank,
    negative_mass_shares,
)
from hexray.eval.knn import (
    knn_accuracies,
    knn_accuracy,
    knn_predict,
    knn_predict_multi,
    superclass_knn_accuracies,
)
from hexray.eval.linear_probe import ProbeResult, balanced_subset, train_linear_probe

__all__ = [
    "EvalSettings",
    "ProbeResult",
    "balanced_subset",
    "cosine_similarity_histogram",
    "effective_rank",
    "evaluate_features",
    "extract_features",
    "hierarchy_set_statistics",
    "knn_accuracies",
    "knn_accuracy",
    "knn_predict",
    "knn_predict_multi",
    "local_global_rank",
    "negative_mass_shares",
    "random_init_copy",
    "raw_pixel_features",
    "superclass_knn_accuracies",
    "train_linear_probe",
]
