"""Deployment: folding, export, quantization, inference and prediction; reads models and weights, never senet.train."""
