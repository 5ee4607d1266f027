"""Exporting models to ONNX for use outside cvtool, with checks (see :mod:`cvtool.export.onnx`)."""
