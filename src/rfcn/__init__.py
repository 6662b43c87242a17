"""rfcn: R-FCN (Dai et al., NIPS 2016) object detection in PyTorch."""

__version__ = "0.2.0"
