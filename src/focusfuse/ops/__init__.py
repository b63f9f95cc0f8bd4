"""Tensor operations shared by the pipeline: colour and dtype conversions, image filters."""
