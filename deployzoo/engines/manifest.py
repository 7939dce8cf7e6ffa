"""The engine directory format: optimised model file(s) plus ``manifest.json``, written atomically and verified on open.

```
engine_dir/
  manifest.json      what was built, from what, how, with which libraries; sha256 of every file
  model.onnx         (onnxruntime)   or  model.xml + model.bin (openvino)  or  model.pt2 (aoti)
  ...                backend extras (an ORT-optimised copy, a calibration report)
```

A build writes everything into a hidden temporary folder beside the target and renames it into place at the end,
so an interrupted build never leaves a half-written engine under the target name. ``verify_engine`` checks a
directory before any backend touches its files; every failure is an ``EngineError`` naming the directory, the
file and the reason.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import shutil
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path

from deployzoo.errors import EngineError
from deployzoo.host import host_info

MANIFEST_NAME = "manifest.json"
#: Bump when the manifest layout changes in a way older readers cannot follow.
MANIFEST_VERSION = 1
FORMAT = "deployzoo-engine"

#: backend name -> (Python module that must be importable, pip hint when it is not)
BACKEND_REQUIREMENTS = {
    "onnxruntime": ("onnxruntime", "pip install onnxruntime"),
    "openvino": ("openvino", "pip install deployzoo[openvino]"),
    "aoti": ("torch", "pip install torch"),
}

_REQUIRED_KEYS = ("model", "precision", "backend", "files", "entry", "input")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _manifest_digest(manifest: dict) -> str:
    """sha256 of the manifest itself (canonical JSON without the ``manifest_sha256`` key): detects hand edits."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def library_versions() -> dict[str, str]:
    """Versions of the libraries an engine depends on (only those installed)."""
    out = {"python": platform.python_version()}
    for dist in ("deployzoo", "numpy", "torch", "onnx", "onnxruntime", "openvino", "nncf", "opencv-python-headless"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def precision_advice(precision: str, backend: str, flags: "set[str] | None" = None) -> str | None:
    """Why a precision will not pay on this CPU (None when it should): what the CPU computes natively decides
    (AMX, avx512_bf16, VNNI, avx512_fp16), not what the runtime accepts. Figures are measured ones (README)."""
    f = set(host_info()["cpu_flags"] if flags is None else flags)
    if backend not in ("onnxruntime", "openvino"):
        return None
    if precision == "force_bfloat16" and "amx_bf16" not in f:
        if "avx512_bf16" in f:
            return ("bf16 pays less than int8 on this CPU: no AMX (amx_bf16), only avx512_bf16 (measured on an AMD "
                    "EPYC with avx512_bf16 and no AMX: OpenVINO bf16 646, int8 935, f32 343 images/s; with AMX bf16 "
                    "ran 1341); build int8 for speed")
        return ("bf16 will not pay on this CPU: no AMX (amx_bf16) and no avx512_bf16, so bf16 is emulated; "
                "build int8")
    if precision == "force_float16" and "amx_fp16" not in f:
        return ("fp16 will not pay on this CPU: no AMX-FP16 (measured: OpenVINO f16 0.63x f32 even with "
                "avx512_fp16); build int8, or bf16 where the CPU has AMX")
    if precision == "qint8_mixed_float16" and not f & {"avx512_vnni", "avx_vnni", "amx_int8", "asimd"}:
        return ("int8 pays less on this CPU: no VNNI / AMX-INT8 int8 dot products (u8 x s8 runs through 16-bit "
                "adds); expect well under the 2.4-4.6x measured on VNNI CPUs")
    return None


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


class EngineWriter:
    """Build an engine directory atomically::

        with EngineWriter(out) as w:
            onnx.save(model, w.dir / "model.onnx")
            path = w.commit(manifest)          # checksums every file, writes manifest.json, renames into place

    ``out`` may not exist, be empty, or be a previous engine directory (it is replaced); anything else is refused
    so a typo never deletes a user's folder.
    """

    def __init__(self, out: str | os.PathLike) -> None:
        self.out = Path(out)
        if self.out.exists() and not _replaceable(self.out):
            raise EngineError(f"engine {self.out}: exists and is not an engine directory (no {MANIFEST_NAME}); "
                              "choose a new --out or remove it first")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.dir = self.out.with_name(f".{self.out.name}.{os.getpid()}.building")
        self.committed = False

    def __enter__(self) -> "EngineWriter":
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        return self

    def __exit__(self, *exc) -> None:
        if not self.committed:
            shutil.rmtree(self.dir, ignore_errors=True)

    def commit(self, manifest: dict) -> Path:
        files = {}
        for p in sorted(self.dir.rglob("*")):
            if p.is_file() and p.name != MANIFEST_NAME:
                rel = p.relative_to(self.dir).as_posix()
                files[rel] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        if manifest["entry"] not in files:
            raise EngineError(f"engine {self.out}: the build did not write its entry file {manifest['entry']}")
        manifest = {"format": FORMAT, "manifest_version": MANIFEST_VERSION, **manifest, "files": files}
        manifest["manifest_sha256"] = _manifest_digest(manifest)
        tmp = self.dir / (MANIFEST_NAME + ".tmp")
        with open(tmp, "w") as f:
            json.dump(manifest, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.dir / MANIFEST_NAME)
        old = None
        if self.out.exists():
            old = self.out.with_name(f".{self.out.name}.{os.getpid()}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(self.out, old)
        os.replace(self.dir, self.out)
        self.committed = True
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.out


def _replaceable(p: Path) -> bool:
    return p.is_dir() and ((p / MANIFEST_NAME).is_file() or not any(p.iterdir()))


def read_manifest(path: str | os.PathLike) -> dict:
    """Parse ``manifest.json`` of an engine directory (no file checks; see ``verify_engine``)."""
    d = Path(path)
    if not d.exists():
        raise EngineError(f"engine {d}: not found")
    if not d.is_dir():
        raise EngineError(f"engine {d}: is a file; an engine is a directory made by `deployzoo build`")
    mf = d / MANIFEST_NAME
    if not mf.is_file():
        raise EngineError(f"engine {d}: {MANIFEST_NAME} is missing (not an engine directory, or its build was "
                          "interrupted); rebuild it with `deployzoo build`")
    try:
        manifest = json.loads(mf.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EngineError(f"engine {d}: {MANIFEST_NAME} cannot be parsed ({e}); rebuild the engine") from None
    if not isinstance(manifest, dict):
        raise EngineError(f"engine {d}: {MANIFEST_NAME} is not a JSON object; rebuild the engine")
    return manifest


def verify_engine(path: str | os.PathLike, expect_model: str | None = None, check_files: bool = True) -> dict:
    """Check an engine directory and return its manifest.

    Raises ``EngineError`` when: the manifest is missing or unparseable; it was written by a newer manifest
    version; it was edited after the build; the model is unknown or not ``expect_model``; the backend is unknown
    or not installed; the engine needs CUDA and this machine has none; a listed file is missing or altered.
    """
    from deployzoo.specs import SPECS

    d = Path(path)
    m = read_manifest(d)
    version = m.get("manifest_version")
    if not isinstance(version, int):
        raise EngineError(f"engine {d}: {MANIFEST_NAME} has no integer manifest_version; rebuild the engine")
    if version > MANIFEST_VERSION:
        raise EngineError(f"engine {d}: {MANIFEST_NAME} version {version} was written by a newer deployzoo (this one "
                          f"reads up to version {MANIFEST_VERSION}); upgrade deployzoo or rebuild the engine")
    missing = [k for k in _REQUIRED_KEYS if k not in m]
    if m.get("format") != FORMAT or missing:
        raise EngineError(f"engine {d}: {MANIFEST_NAME} is not a deployzoo engine manifest"
                          + (f" (missing {', '.join(missing)})" if missing else ""))
    if m.get("manifest_sha256") != _manifest_digest(m):
        raise EngineError(f"engine {d}: {MANIFEST_NAME} was edited after the build (its self-checksum does not "
                          "match); rebuild the engine instead of editing it")
    model = m["model"]
    if model not in SPECS:
        raise EngineError(f"engine {d}: built for unknown model '{model}'; known models: {', '.join(sorted(SPECS))}")
    if expect_model is not None and model != expect_model:
        raise EngineError(f"engine {d}: built for model '{model}', not '{expect_model}'")
    backend = m["backend"]
    if backend not in BACKEND_REQUIREMENTS:
        raise EngineError(f"engine {d}: unknown backend '{backend}' in {MANIFEST_NAME}; known backends: "
                          f"{', '.join(BACKEND_REQUIREMENTS)}")
    module, hint = BACKEND_REQUIREMENTS[backend]
    if find_spec(module) is None:
        raise EngineError(f"engine {d}: needs the {backend} backend, which is not installed here: {hint}")
    if m.get("device", "cpu").startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise EngineError(f"engine {d}: is a GPU engine ({backend}, device {m['device']}) but this machine has no "
                              "CUDA device (torch.cuda.is_available() is False); build a CPU engine "
                              "(--backend onnxruntime or openvino) here")
    if check_files:
        for rel, info in m["files"].items():
            f = d / rel
            if not f.is_file():
                raise EngineError(f"engine {d}: file {rel} listed in {MANIFEST_NAME} is missing")
            if f.stat().st_size != info.get("bytes", f.stat().st_size):
                raise EngineError(f"engine {d}: file {rel} was altered (size {f.stat().st_size} bytes, manifest says "
                                  f"{info['bytes']}); rebuild the engine")
            digest = sha256_file(f)
            if digest != info.get("sha256"):
                raise EngineError(f"engine {d}: file {rel} was altered (checksum mismatch: sha256 {digest[:12]}..., "
                                  f"manifest says {str(info.get('sha256'))[:12]}...); rebuild the engine")
    return m
