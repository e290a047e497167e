"""Export a training run: ONNX with labels and preprocessing in its metadata (``run``), reduced
precision, and the file jetson-inference loads (``jetson``)."""
