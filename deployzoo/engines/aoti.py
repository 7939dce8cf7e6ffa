"""PyTorch AOTInductor backend, for NVIDIA GPUs: ``torch.export`` -> ``aoti_compile_and_package`` -> ``model.pt2``.

- The float32 module is wrapped so the package takes float32 input and returns float32 output; the cast to
  fp16/bf16 and back is compiled into the graph, so callers feed the same arrays as for every other engine.
- Dynamic batch (unless the batch is fixed) and, for CRNN, dynamic width. The width is declared ``4 * w4``:
  with a free width, ``torch.export`` specialises the BiLSTM's sequence length ``W // 4 + 1`` to the example's
  (floor-division guard, torch 2.13). Inference widths are multiples of 4 in practice (fixed 100, or keep-ratio
  widths padded to a bucket of 16); any other width is padded on the right by edge replication to the next
  multiple of 4 and the output cut back to ``W // 4 + 1`` frames (only the last frame or two see the padding).
- force_float32 engines run with TF32 off (``torch.backends.cudnn/cuda.matmul.allow_tf32 = False``) so fp32 means
  fp32; fp16/bf16 run the whole graph in that dtype, BatchNorm and LSTM included.
- GPU engines need CUDA at load time (``verify_engine`` refuses them elsewhere). On a machine without CUDA an fp32
  CPU package can be built (``device='cpu'``; about 30 s for CRNN): it exercises the same export/package/load path
  and runs on the CPU that built it (the package holds native code compiled for that CPU).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deployzoo.errors import EngineError
from deployzoo.specs import get_spec

ENTRY = "model.pt2"
WIDTH_MULTIPLE = 4  # CRNN
MAX_BATCH = 1024


def _dtype(precision: str):
    import torch

    return {"force_float32": torch.float32, "force_float16": torch.float16, "force_bfloat16": torch.bfloat16}[precision]


def _wrapper(module, dtype):
    import torch
    from torch import nn

    class CastIO(nn.Module):
        """float32 in -> module in ``dtype`` -> float32 out."""

        def __init__(self) -> None:
            super().__init__()
            self.m = module.to(dtype)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.m(x.to(dtype)).float()

    return CastIO().eval()


def dynamic_shapes(model: str, spec: dict) -> tuple:
    from torch.export import Dim

    dims = {}
    if spec["fixed_batch"] is None:
        dims[0] = Dim("batch", min=1, max=MAX_BATCH)
    if get_spec(model).dynamic_width:
        dims[3] = WIDTH_MULTIPLE * Dim("w4", min=4, max=1024)  # widths 16 .. 4096, multiples of 4
    return (dims,)


def _set_tf32(enabled: bool) -> None:
    import torch

    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


class AotiRunner:
    """(B, C, H, W) float32 numpy -> float32 numpy, through an AOTInductor package on ``device``."""

    name = "aoti"

    def __init__(self, path: str | Path, device: str, model: str, precision: str, threads: int | None = None) -> None:
        import torch

        if device.startswith("cuda"):
            if not torch.cuda.is_available():
                raise EngineError(f"engine {Path(path).parent}: needs CUDA, and torch.cuda.is_available() is False")
            if precision == "force_float32":
                _set_tf32(False)
        elif threads:
            torch.set_num_threads(int(threads))
        index = int(device.split(":")[1]) if ":" in device else (0 if device.startswith("cuda") else -1)
        self.fn = torch._inductor.aoti_load_package(str(path), device_index=index)
        self.device = torch.device(device)
        self.model = model
        self._torch = torch

    def __call__(self, x: np.ndarray) -> np.ndarray:
        torch = self._torch
        x = np.ascontiguousarray(x, dtype=np.float32)
        w = x.shape[-1]
        pad = (-w) % WIDTH_MULTIPLE if get_spec(self.model).dynamic_width else 0
        if pad:
            x = np.concatenate([x, np.repeat(x[..., -1:], pad, axis=-1)], axis=-1)
        t = torch.from_numpy(x)
        if self.device.type == "cuda":
            t = t.pin_memory().to(self.device, non_blocking=True)
        with torch.inference_mode():
            y = self.fn(t)
        if isinstance(y, (list, tuple)):
            y = y[0]
        out = y.float().cpu().numpy()  # .cpu() waits for the GPU
        if pad:
            out = out[: w // WIDTH_MULTIPLE + 1]
        return out


def load(path: Path, manifest: dict, threads: int | None = None) -> AotiRunner:
    device = manifest.get("device", "cuda")
    try:
        return AotiRunner(path / manifest["entry"], device, manifest["model"], manifest["precision"], threads)
    except EngineError:
        raise
    except Exception as e:  # noqa: BLE001 - the loader raises RuntimeError with C++ messages
        raise EngineError(f"engine {path}: cannot load {manifest['entry']} on {device} "
                          f"({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}); "
                          "an AOTInductor package runs only with the torch version and device kind that built it")


def build(ctx) -> dict:
    import time
    import warnings

    import torch

    device = ctx.options.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EngineError("aoti: device cuda requested but torch.cuda.is_available() is False here")
    if device == "cpu" and ctx.precision != "force_float32":
        raise EngineError(f"aoti {ctx.short} needs an NVIDIA GPU (torch.cuda.is_available() is False here); on this CPU "
                          f"use --backend openvino --precision {ctx.short}, or build aoti fp32 for a CPU smoke test")
    dtype = _dtype(ctx.precision)
    if device.startswith("cuda") and ctx.precision == "force_float32":
        _set_tf32(False)
    import copy

    wrapped = _wrapper(copy.deepcopy(ctx.module), dtype).to(device)
    ex = torch.from_numpy(np.stack([ctx.parity()[0][0][1][0]] * (ctx.spec["fixed_batch"] or 2))).to(device)
    if get_spec(ctx.model).dynamic_width and ex.shape[-1] % WIDTH_MULTIPLE:
        raise EngineError("aoti: the CRNN example width must be a multiple of 4")
    t0 = time.perf_counter()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LSTM flat-weights and pytree deprecation notices from torch.export
        ep = torch.export.export(wrapped, (ex,), dynamic_shapes=dynamic_shapes(ctx.model, ctx.spec))
    t_export = time.perf_counter() - t0
    ctx.log(f"torch.export done in {t_export:.1f} s; compiling with AOTInductor on {device} (minutes on a CPU)")
    t0 = time.perf_counter()
    configs = dict(ctx.options.get("inductor_configs", {}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch._inductor.aoti_compile_and_package(ep, package_path=str(ctx.dir / ENTRY), inductor_configs=configs)
    t_compile = time.perf_counter() - t0
    ctx.log(f"aoti_compile_and_package done in {t_compile:.1f} s")
    run = AotiRunner(ctx.dir / ENTRY, device, ctx.model, ctx.precision, ctx.threads)
    fp32 = ctx.precision == "force_float32"
    tol = {"force_float32": (1e-4, 1e-5) if device == "cpu" else (1e-3, 1e-4), "force_float16": (5e-2, 1e-2),
           "force_bfloat16": (2e-1, 5e-2)}[ctx.precision]
    parity = ctx.parity_check(run, f"aoti {ctx.short} engine ({device})", *tol, raise_on_fail=fp32)
    return {
        "entry": ENTRY,
        "device": device,
        "computes": f"{dtype} end to end on {device} (inputs cast inside the graph)"
                    + ("; TF32 disabled" if fp32 and device != "cpu" else ""),
        "parity": parity,
        "input_width_multiple": WIDTH_MULTIPLE if get_spec(ctx.model).dynamic_width else None,
        "backend_options": {"device": device, "dtype": str(dtype), "max_batch": MAX_BATCH,
                            "inductor_configs": configs, "export_seconds": round(t_export, 2),
                            "compile_seconds": round(t_compile, 2),
                            "gpu": torch.cuda.get_device_name() if device.startswith("cuda") else None,
                            "cuda": torch.version.cuda},
    }
