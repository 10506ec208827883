"""Inference in one import: the network a user names, its fastest native CPU path, and predictions.

    import senet.inference as inference

    model = inference.resolve_model("runs/demo")             # a checkpoint, run directory, name or module
    fast = inference.prepare_for_inference(model, batch_size=8)  # BN folded, channels_last, Inductor by a rule
    preds = inference.predict_paths("runs/demo", ["photos/"])    # what `senet predict` prints

The functions live in :mod:`senet.deploy` (docs/deploy.md); this module gathers them.
"""

from .deploy.fast import FastInference, InferenceReport, prepare_for_inference, serving_model
from .deploy.inference import card_or_default, resolve_model
from .deploy.predict import Prediction, predict_paths, write_predictions

__all__ = ["FastInference", "InferenceReport", "Prediction", "card_or_default", "predict_paths",
           "prepare_for_inference", "resolve_model", "serving_model", "write_predictions"]
