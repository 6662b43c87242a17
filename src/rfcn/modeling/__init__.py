"""The R-FCN detector: backbone, RPN, position-sensitive head, losses, post-processing."""
