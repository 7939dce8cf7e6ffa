"""A new model is one module plus one SPECS entry: nothing else in the package branches on a model's name."""

import dataclasses
import re
from pathlib import Path

import numpy as np
import torch

from deployzoo import specs
from deployzoo.cli import main

PACKAGE = Path(specs.__file__).parent


class TinyClassifier(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=4)
        self.fc = torch.nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def _load(model: torch.nn.Module, path: Path) -> dict:
    model.load_state_dict(torch.load(path, weights_only=True))
    return {}


def test_no_model_name_branches_outside_the_registry_and_the_models():
    pattern = re.compile(r"""(==|!=)\s*["'](crnn|volo_d2|ocrnet_hr18)["']|["'](volo_d2|ocrnet_hr18)["']\s*:""")
    hits = [f"{p.relative_to(PACKAGE)}:{i}" for p in PACKAGE.rglob("*.py") if p.name != "specs.py"
            and p.parent.name != "models" for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []


def test_a_fourth_model_needs_only_its_spec(tmp_path, monkeypatch, capsys):
    spec = dataclasses.replace(specs.SPECS["volo_d2"], name="tiny", summary="test classifier", build=TinyClassifier,
                               load_checkpoint=_load, parity_batch=3,
                               preprocess_params=lambda size: {"function": "deployzoo.process.vision.volo_preprocess"})
    monkeypatch.setitem(specs.SPECS, "tiny", spec)
    torch.manual_seed(0)
    ck = tmp_path / "tiny.pt"
    torch.save(TinyClassifier().state_dict(), ck)
    assert main(["models"]) == 0 and "tiny" in capsys.readouterr().out
    assert main(["build", "tiny", "--precision", "fp32", "--checkpoint", str(ck), "--out", str(tmp_path / "eng")]) == 0
    from deployzoo.engines import open_engine

    eng = open_engine(tmp_path / "eng", expect_model="tiny")
    assert eng.preprocess["function"] == "deployzoo.process.vision.volo_preprocess"
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 224, 224)).astype(np.float32)
    net = TinyClassifier()
    net.load_state_dict(torch.load(ck, weights_only=True))
    with torch.inference_mode():
        ref = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(eng(x), ref, atol=1e-4)
