"""Pieces every hf-ext capability shares, written once: models, architecture map, text data, perplexity,
layer-by-layer calibration, quantizer plumbing and Hub helpers."""
