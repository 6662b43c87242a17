"""Speed measurements: timing cases, R-FCN against its Faster R-CNN C4 counterpart, reports."""
