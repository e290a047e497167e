"""Export a training run for other runtimes, one module per job:

- ``run``: a run's checkpoint to ONNX (fp32 or int8), labels and preprocessing in its metadata.
- ``check``: proof on real images that the exported file classifies as PyTorch does (int8: keeps fp32's top-1).
- ``jetson``: the ONNX file jetson-inference's imagenet loads, fed jetson's own preprocessing.
"""
