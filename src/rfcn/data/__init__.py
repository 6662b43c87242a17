"""Datasets (PASCAL VOC, COCO, synthetic), image loading, augmentation, samplers."""
