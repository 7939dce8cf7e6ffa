"""``deployzoo export-triton ENGINE_DIR --out REPO``: an NVIDIA Triton model repository from an ONNX Runtime engine.

Scale-out goes through an existing serving engine, not our own cluster code. The repository holds:

- ``<model>_onnx``: the engine's ONNX file (platform ``onnxruntime_onnx``, ``max_batch_size``, ``dynamic_batching``
  with the queue delay, ``instance_group`` KIND_CPU, ORT thread parameters). Triton batches along the first axis,
  so CRNN's (T, B, C) logits get a Transpose to (B, T, C) appended to the graph (nothing else changes);
- CRNN only: ``crnn_decode`` (Python backend) running deployzoo's own CTC decoder, and the ensemble ``crnn``
  (input tensor -> text + confidence);
- VOLO-D2 / OCRNet: the ONNX model alone, named after the model.

Every ``config.pbtxt`` parses with ``tritonclient.grpc.model_config_pb2`` through ``google.protobuf.text_format``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from deployzoo.atomic import atomic_path
from deployzoo.errors import EngineError
from deployzoo.specs import is_text

DECODE_MODEL = '''"""Triton Python backend: CTC decoding with deployzoo's own decoder (written by deployzoo export-triton)."""
import json

import numpy as np
import triton_python_backend_utils as pb_utils

from deployzoo.process.ctc import make_decoder


class TritonPythonModel:
    def initialize(self, args):
        cfg = json.loads(args["model_config"])
        params = cfg["parameters"]
        decode = params["decode"]["string_value"] if "decode" in params else "words"
        self.decoder = make_decoder(decode, alphabet=params["alphabet"]["string_value"])

    def execute(self, requests):
        responses = []
        for request in requests:
            logits = pb_utils.get_input_tensor_by_name(request, "logits").as_numpy()  # (B, T, C)
            decoded = self.decoder.decode_batch(np.ascontiguousarray(logits.transpose(1, 0, 2)))
            text = np.array([d.text.encode() for d in decoded], dtype=object).reshape(-1, 1)
            conf = np.array([d.confidence for d in decoded], dtype=np.float32).reshape(-1, 1)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("text", text),
                                                         pb_utils.Tensor("confidence", conf)]))
        return responses
'''


def _dims(shape) -> str:
    return "[ " + ", ".join(str(d if isinstance(d, int) else -1) for d in shape) + " ]"


def _onnx_config(name: str, max_batch: int, in_name: str, in_dims, out_name: str, out_dims, delay_us: int,
                 instances: int, threads: int) -> str:
    return f"""name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: {max_batch}
input [
  {{
    name: "{in_name}"
    data_type: TYPE_FP32
    dims: {_dims(in_dims)}
  }}
]
output [
  {{
    name: "{out_name}"
    data_type: TYPE_FP32
    dims: {_dims(out_dims)}
  }}
]
dynamic_batching {{
  max_queue_delay_microseconds: {delay_us}
}}
instance_group [
  {{
    count: {instances}
    kind: KIND_CPU
  }}
]
parameters {{
  key: "intra_op_thread_count"
  value: {{ string_value: "{threads}" }}
}}
parameters {{
  key: "inter_op_thread_count"
  value: {{ string_value: "1" }}
}}
"""


def _decode_config(max_batch: int, classes: int, alphabet: str, instances: int, decode: str) -> str:
    return f"""name: "crnn_decode"
backend: "python"
max_batch_size: {max_batch}
input [
  {{
    name: "logits"
    data_type: TYPE_FP32
    dims: [ -1, {classes} ]
  }}
]
output [
  {{
    name: "text"
    data_type: TYPE_STRING
    dims: [ 1 ]
  }},
  {{
    name: "confidence"
    data_type: TYPE_FP32
    dims: [ 1 ]
  }}
]
instance_group [
  {{
    count: {instances}
    kind: KIND_CPU
  }}
]
parameters {{
  key: "alphabet"
  value: {{ string_value: "{alphabet}" }}
}}
parameters {{
  key: "decode"
  value: {{ string_value: "{decode}" }}
}}
"""


def _ensemble_config(max_batch: int, in_name: str, in_dims, onnx_name: str, out_name: str) -> str:
    return f"""name: "crnn"
platform: "ensemble"
max_batch_size: {max_batch}
input [
  {{
    name: "{in_name}"
    data_type: TYPE_FP32
    dims: {_dims(in_dims)}
  }}
]
output [
  {{
    name: "text"
    data_type: TYPE_STRING
    dims: [ 1 ]
  }},
  {{
    name: "confidence"
    data_type: TYPE_FP32
    dims: [ 1 ]
  }}
]
ensemble_scheduling {{
  step [
    {{
      model_name: "{onnx_name}"
      model_version: -1
      input_map {{ key: "{in_name}" value: "{in_name}" }}
      output_map {{ key: "{out_name}" value: "logits" }}
    }},
    {{
      model_name: "crnn_decode"
      model_version: -1
      input_map {{ key: "logits" value: "logits" }}
      output_map {{ key: "text" value: "text" }}
      output_map {{ key: "confidence" value: "confidence" }}
    }}
  ]
}}
"""


def _batch_first_onnx(src: Path, dst: Path, out_name: str, new_name: str) -> None:
    """Append Transpose(1, 0, 2) to CRNN's (T, B, C) output so that Triton can batch on the first axis."""
    import onnx
    from onnx import helper

    m = onnx.load(str(src))
    outs = [o for o in m.graph.output if o.name == out_name]
    if not outs:
        raise EngineError(f"{src}: has no output {out_name!r} (outputs: {[o.name for o in m.graph.output]})")
    m.graph.node.append(helper.make_node("Transpose", [out_name], [new_name], perm=[1, 0, 2],
                                         name="deployzoo_batch_first"))
    m.graph.output.remove(outs[0])
    m.graph.output.append(helper.make_tensor_value_info(new_name, onnx.TensorProto.FLOAT, ["batch", "T", "classes"]))
    onnx.checker.check_model(m)
    onnx.save(m, str(dst))


def export_triton(engine: str | os.PathLike, out: str | os.PathLike, max_batch_size: int = 64,
                  max_queue_delay_ms: float = 4.0, instances: int = 1, threads: int = 2,
                  decode: str = "words") -> list[Path]:
    """Write a Triton model repository for an ONNX Runtime engine; returns the ``config.pbtxt`` paths.
    ``decode``: the CRNN decode step's decoding (``words`` or ``greedy``, as ``deployzoo recognize --decode``)."""
    from deployzoo.process.ctc import DECODERS

    from deployzoo.engines.manifest import verify_engine
    from deployzoo.process.text import ALPHABET

    if decode not in DECODERS:
        raise EngineError(f"unknown decoding {decode!r}; use one of {', '.join(DECODERS)}")
    manifest = verify_engine(engine)
    engine = Path(engine)
    if manifest["backend"] != "onnxruntime":
        raise EngineError(f"engine {engine}: backend {manifest['backend']!r}; export-triton takes ONNX Runtime "
                          "engines (deployzoo build ... --backend onnxruntime)")
    onnx_files = sorted(engine.glob("*.onnx"))
    if len(onnx_files) != 1:
        raise EngineError(f"engine {engine}: expected one .onnx file, found {[p.name for p in onnx_files]}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise EngineError(f"Triton repository {out}: exists and is not empty; choose a new folder")
    spec = manifest["input"]
    if spec.get("fixed_batch"):
        raise EngineError(f"engine {engine}: built with a fixed batch of {spec['fixed_batch']}; Triton's dynamic "
                          "batching needs a dynamic-batch engine (build without --batch-size)")
    model = manifest["model"]
    delay_us = int(round(max_queue_delay_ms * 1000))
    with atomic_path(out) as tmp:
        in_dims = spec["shape"][1:]
        out_name = spec["output"]["name"]
        if is_text(model):
            onnx_name = "crnn_onnx"
            (tmp / onnx_name / "1").mkdir(parents=True)
            _batch_first_onnx(onnx_files[0], tmp / onnx_name / "1" / "model.onnx", out_name, "logits_btc")
            classes = len(manifest.get("alphabet") or ALPHABET) + 1
            configs = {
                onnx_name: _onnx_config(onnx_name, max_batch_size, spec["name"], in_dims, "logits_btc", [-1, classes],
                                        delay_us, instances, threads),
                "crnn_decode": _decode_config(max_batch_size, classes, manifest.get("alphabet") or ALPHABET, instances,
                                              decode),
                "crnn": _ensemble_config(max_batch_size, spec["name"], in_dims, onnx_name, "logits_btc"),
            }
            (tmp / "crnn_decode" / "1").mkdir(parents=True)
            (tmp / "crnn_decode" / "1" / "model.py").write_text(DECODE_MODEL)
            (tmp / "crnn" / "1").mkdir(parents=True)
        else:
            (tmp / model / "1").mkdir(parents=True)
            shutil.copy2(onnx_files[0], tmp / model / "1" / "model.onnx")
            out_dims = spec["output"]["shape"][1:]
            configs = {model: _onnx_config(model, max_batch_size, spec["name"], in_dims, out_name, out_dims, delay_us,
                                           instances, threads)}
        for name, text in configs.items():
            (tmp / name / "config.pbtxt").write_text(text)
    return [out / name / "config.pbtxt" for name in configs]
