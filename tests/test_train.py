"""Trainer behaviour on CPU with tiny data: loss falls, exact resume, checkpoints usable by eval, overfitting."""

import numpy as np
import pytest
import torch
from conftest import word_image

import deployzoo
from deployzoo.engines import EagerRunner
from deployzoo.errors import DeployzooError
from deployzoo.predict import Recognizer
from deployzoo.train import TrainConfig, Trainer, slim_checkpoint

# short words keep the images narrow (keep-ratio), so overfitting costs ~2x less CPU than 100-px crops
WORDS = ["cat", "dog", "sun", "moon", "star", "road", "car", "bus", "stop", "exit", "open", "shop", "cafe", "bank",
         "park", "zoo", "art", "bar", "taxi", "one", "two", "six", "ten", "42", "2024", "a1", "pub", "ok", "go", "no",
         "map", "7up"]


@pytest.fixture(scope="module")
def words32():
    return [(np.asarray(word_image(w)), w) for w in WORDS]


def _cfg(tmp_path, **kw):
    base = dict(out=str(tmp_path / "run"), batch_size=8, augment=0.5, workers=0, val_synth=0, val_every=0,
                log_every=1, ckpt_every=10 ** 9, progress=False, keep_ratio=True, lr=1e-3)
    base.update(kw)
    return TrainConfig(**base)


def test_resume_reproduces_the_uninterrupted_run(tmp_path, words32):
    straight = Trainer(_cfg(tmp_path / "a", steps=6), train_set=words32)
    straight.fit()
    first = Trainer(_cfg(tmp_path / "b", steps=3, ckpt_every=3), train_set=words32)
    first.fit()  # "killed" after step 3: last.pt holds the state
    resumed = Trainer(_cfg(tmp_path / "b", steps=6, resume=True), train_set=words32)
    assert resumed.step == 3
    resumed.fit()
    for k, v in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[k], v, rtol=0, atol=0, msg=k)


def test_checkpoints_load_in_eval_and_slim_to_fp16(tmp_path, words32):
    tr = Trainer(_cfg(tmp_path, steps=2, ckpt_every=1), train_set=words32)
    tr.fit()
    run = tmp_path / "run"
    assert {p.name for p in run.iterdir()} >= {"best.pt", "last.pt", "log.csv", "config.json"}
    assert not list(run.glob(".*tmp")), "a temporary checkpoint was left behind"
    slim = slim_checkpoint(run / "last.pt", tmp_path / "ship.pt")
    assert slim.stat().st_size < (run / "last.pt").stat().st_size / 2.5  # fp16, no optimizer state
    rec = deployzoo.load("crnn", checkpoint=slim)
    assert rec.cfg.keep_ratio is True, "pre-processing must travel with the weights"
    img = np.asarray(word_image("cat"))
    full = Recognizer(EagerRunner(tr.model.eval()), tr.pre)(img)
    assert rec(img).text == full.text


def test_crnn_overfits_32_words(tmp_path, words32):
    """The whole pipeline (pre-processing, CTC targets, decoding) must be able to learn: 100 % on 32 words.
    One width group: four groups of 8 words give BatchNorm noisy statistics, and 300 steps then fell one letter
    short on CI ('roat' for 'road')."""
    tr = Trainer(_cfg(tmp_path, steps=300, batch_size=32, augment=0, lr=3e-3, log_every=25, width_groups=1),
                 train_set=words32)
    hist = tr.fit()["history"]
    assert hist[-1]["loss"] < hist[0]["loss"] / 10, f"loss did not fall: {[h['loss'] for h in hist]}"
    rec = Recognizer(EagerRunner(tr.model.eval()), tr.pre)
    preds = rec.recognize([img for img, _ in words32])
    acc = np.mean([p.text == w for p, (_, w) in zip(preds, words32)])
    assert acc == 1.0, [(p.text, w) for p, (_, w) in zip(preds, words32) if p.text != w]


def test_synth_ablate_switches_renderer_features_off_and_names_the_switches():
    from deployzoo.train import synthetic_words

    ds = synthetic_words(4, 0, ["blur", "natural_bg"])
    assert not ds.cfg.blur and not ds.cfg.natural_bg and ds.cfg.jpeg
    with pytest.raises(DeployzooError, match=r"no feature switch 'sharpness'.*switches: .*natural_bg"):
        synthetic_words(4, 0, ["sharpness"])


def test_ranks_split_each_step_into_disjoint_shards_of_the_single_process_batch():
    """torchrun with N ranks of batch B trains on exactly the samples one process of batch N*B would see."""
    from deployzoo.train import StepSampler

    one = list(StepSampler(50, 8, steps=3, start=1, seed=5, shuffle=True))
    ranks = [list(StepSampler(50, 4, steps=3, start=1, seed=5, rank=r, world=2, shuffle=True)) for r in range(2)]
    for s in range(2):  # per step: rank 0 takes the first half of the big batch, rank 1 the second
        assert ranks[0][4 * s:4 * s + 4] + ranks[1][4 * s:4 * s + 4] == one[8 * s:8 * s + 8]
    assert not {d for _, d in ranks[0]} & {d for _, d in ranks[1]}


DDP_SCRIPT = """
import sys
import numpy as np
import torch
sys.path.insert(0, {tests!r})
from conftest import word_image
from deployzoo.train import TrainConfig, Trainer

torch.set_num_threads(1)
data = [(np.asarray(word_image(w)), w) for w in {words!r}]
cfg = TrainConfig(out={out!r}, steps=3, batch_size=4, workers=0, val_synth=0, val_every=0, log_every=1,
                  ckpt_every=3, progress=False, keep_ratio=True, augment=0.5, lr=1e-3)
tr = Trainer(cfg, train_set=data)
init = {{k: v.detach().clone() for k, v in tr.model.named_parameters()}}
tr.fit()
torch.save({{"init": init, "params": dict(tr.model.named_parameters())}},
           f"{out}/params_rank{{tr.rank}}_of_{{tr.world}}.pt")
"""


def test_torchrun_ddp_on_cpu_keeps_replicas_identical_and_writes_checkpoints_once(tmp_path):
    """The seeds' 8-card training path, at 2 ranks on CPU (gloo): each rank sees other words, DDP averages the
    gradients, so the replicas' weights stay bit-identical; rank 0 alone writes the run folder."""
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "ddp"
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT.format(tests=str(Path(__file__).parent), words=WORDS[:16], out=str(out)))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script)], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(out / f"params_rank{r}_of_2.pt") for r in range(2))
    for k, v in r0["params"].items():
        torch.testing.assert_close(r1["params"][k], v, rtol=0, atol=0, msg=k)
    assert any(not torch.equal(v, r0["init"][k]) for k, v in r0["params"].items()), "no training happened"
    assert {p.name for p in out.iterdir()} >= {"best.pt", "last.pt", "log.csv", "config.json"}
    assert torch.load(out / "last.pt", weights_only=False)["deployzoo"]["step"] == 3
    rows = (out / "log.csv").read_text().strip().splitlines()
    assert len(rows) == 4, rows  # header + steps 1-3, written once (rank 0), not once per rank
