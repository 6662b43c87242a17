"""Box and RoI operations: IoU, box coding, position-sensitive RoI pooling (paper Eq. 1)."""
