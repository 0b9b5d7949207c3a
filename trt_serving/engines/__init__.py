"""Hasher engines, one module per backend behind :mod:`trt_serving.engines.factory`."""
