"""Scoring fusions: the six fusion metrics, evaluation of fused folders, synthetic stacks with ground truth."""
