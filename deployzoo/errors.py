"""Error types. Every message names the thing (file, sample, engine) and the reason."""

from __future__ import annotations


class DeployzooError(Exception):
    """Base class: the CLI prints these as one clear line instead of a traceback."""


class ImageError(DeployzooError):
    """An image could not be read or is unusable (empty, truncated, 0 pixels, a directory...)."""


class DatasetError(DeployzooError):
    """A data set (LMDB, gt.txt folder, ImageNet or Cityscapes layout) is missing or malformed."""


class CheckpointError(DeployzooError):
    """A checkpoint is missing, truncated, or belongs to another model."""


class EngineError(DeployzooError):
    """An engine directory is missing files, was altered, or was built for something else."""
