"""Accuracy evaluation per task: words (word accuracy), classification (top-1/top-5), segmentation (mIoU)."""
