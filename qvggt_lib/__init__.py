"""QuantVGGT Lab: post-training quantization of VGGT, step by step."""

__version__ = "0.1.0"
