"""Data set readers and writers: word images (LMDB, gt.txt folders, synthetic), ImageNet, Cityscapes."""
