"""Detection metrics: PASCAL VOC AP (11-point and area), COCO AP via pycocotools."""
