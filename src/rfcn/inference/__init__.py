"""What runs a trained model: the PyTorch :class:`~rfcn.inference.predictor.Predictor`, the
torch-free ONNX predictor, the fast inference path and the ONNX export."""
