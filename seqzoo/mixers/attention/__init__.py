"""Softmax-attention family."""
