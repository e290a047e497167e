"""imgclass's ONNX contract, shared by what writes models (export) and what reads them (the runtime):
tensor names (jetson's) and the metadata keys."""

INPUT_NAME, OUTPUT_NAME = "input_0", "output_0"
META_LABELS, META_SYNSETS = "imgclass.labels", "imgclass.synsets"
META_PREPROCESS, META_NETWORK = "imgclass.preprocess", "imgclass.network"
META_DATASET = "imgclass.dataset"  # a trained model's dataset folder: its images calibrate int8
