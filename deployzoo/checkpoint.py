"""Reading checkpoint files strictly, with errors that say what is wrong.

Model-specific key filters live beside each model; this module only knows about files and wrappers.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from deployzoo.errors import CheckpointError

#: Keys under which training scripts commonly wrap the state dict (timm, mmcv, DeiT/VOLO, our trainer). The plain
#: weights come first: a timm checkpoint holding both is evaluated as timm's validate.py does without --use-ema.
WRAPPER_KEYS = ("state_dict", "model", "state_dict_ema", "net")


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint file with ``weights_only=True`` and return the raw object (a dict)."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint {p}: file not found")
    if p.is_dir():
        raise CheckpointError(f"checkpoint {p}: is a directory, expected a .pth/.pt file")
    if p.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {p}: file is empty")
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "unsupported global" in str(e).lower() or "can only build" in str(e).lower():
            what = _unsafe_global(str(e))
            raise CheckpointError(
                f"checkpoint {p}: holds Python objects that safe loading refuses ({what}); deployzoo loads only "
                "tensors and plain containers. Re-save the state dict alone: "
                "torch.save(torch.load(f, weights_only=False)['state_dict'], 'clean.pth') for a file you trust"
            ) from e
        raise CheckpointError(f"checkpoint {p}: cannot be read, the file is truncated or corrupt "
                              f"(not a PyTorch checkpoint: {_pickle_reason(e)})") from e
    except (EOFError, RuntimeError, zipfile.BadZipFile, ValueError, OSError) as e:
        raise CheckpointError(f"checkpoint {p}: cannot be read, the file is truncated or corrupt ({_first_line(e)})") from e
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"checkpoint {p}: expected a dict of tensors, found {type(obj).__name__}")
    return dict(obj)


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _pickle_reason(e: BaseException) -> str:
    m = re.search(r"WeightsUnpickler error: \s*(.+)", str(e))
    return m.group(1).strip() if m else _first_line(e)


def _unsafe_global(msg: str) -> str:
    m = (re.search(r"GLOBAL ([\w.]+)", msg) or re.search(r"Unsupported global: ([\w. ]+)", msg)
         or re.search(r"but got <class '([\w.]+)'>", msg))
    return m.group(1).strip() if m else "an unsupported global"


def _safe_globals() -> list:
    """Harmless objects that training scripts store beside weights (argparse args, numpy scalars in meta)."""
    import argparse

    import numpy as np

    out: list = [argparse.Namespace, np.dtype, np.ndarray]
    for name in ("numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar",
                 "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct"):
        mod, _, attr = name.rpartition(".")
        try:
            out.append(getattr(__import__(mod, fromlist=[attr]), attr))
        except (ImportError, AttributeError):
            pass
    out += [type(np.dtype(t)) for t in ("float64", "float32", "float16", "int64", "int32", "int16", "int8",
                                        "uint64", "uint32", "uint16", "uint8", "bool")]
    return out


def unwrap_state_dict(obj: Mapping, wrappers: Iterable[str] = WRAPPER_KEYS) -> dict[str, torch.Tensor]:
    """Find the state dict inside common wrappers and strip a DataParallel ``module.`` prefix."""
    sd = obj
    for key in wrappers:
        if key in sd and isinstance(sd[key], Mapping):
            sd = sd[key]
            break
    out = {}
    for k, v in sd.items():
        if isinstance(v, torch.Tensor):
            out[k.removeprefix("module.")] = v
    return out


def load_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str, model_name: str) -> None:
    """``load_state_dict(strict=True)`` with an error that names the file, the model and the key mismatch.

    ``num_batches_tracked`` buffers may be absent (checkpoints saved before PyTorch 0.4.1): they are filled with 0.
    """
    own = model.state_dict()
    sd = dict(state_dict)
    for k, v in own.items():
        if k.endswith("num_batches_tracked") and k not in sd:
            sd[k] = torch.zeros_like(v)
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected:
        overlap = len(own) - len(missing)
        hint = "it is not a checkpoint of this model" if overlap < len(own) // 2 else "keys differ"
        raise CheckpointError(
            f"checkpoint {source}: does not fit model '{model_name}' ({hint}): "
            f"{len(missing)} missing keys {_preview(missing)}, {len(unexpected)} unexpected keys {_preview(unexpected)}"
        )
    bad = [f"{k} {tuple(sd[k].shape)} != {tuple(v.shape)}" for k, v in own.items() if sd[k].shape != v.shape]
    if bad:
        raise CheckpointError(f"checkpoint {source}: shapes do not fit model '{model_name}': {_preview(bad)}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in sd.items()}, strict=True)


def _preview(items: list[str], n: int = 3) -> str:
    if not items:
        return ""
    more = f", ... (+{len(items) - n})" if len(items) > n else ""
    return "[" + ", ".join(items[:n]) + more + "]"


def atomic_save(obj: object, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then rename: never a half-written checkpoint."""
    from deployzoo.atomic import atomic_path

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)
