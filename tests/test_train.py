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
                log_every=1, ckpt_every=10 ** 9, progress=False, keep_ratio=True, lr=1e-3, amp="none")
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


def test_crnn_overfits_16_words(tmp_path, words32):
    """The whole pipeline (pre-processing, CTC targets, decoding) must be able to learn 16 words.

    Decoded greedy (best path), never with the English word prior, which would hide a network that has not learnt
    (it did: 'su' for 'sun' was read as 'sun'). A 128-pixel bucket pads every word to one width in training and at
    inference alike: with the default 16-pixel buckets a network that memorises words learns where the batch
    padding ends (the backward LSTM reads it) and reads a word padded otherwise one letter short. A cosine decay:
    at a constant 2e-3 or 3e-3 Adam's loss spiked in the last 50 of 300 steps and left a network that read 6 % of
    its 32 words on one thread. 400 steps: at 300 the fp32 trajectory depends on the CPU's kernels, and an AMD EPYC
    (no AMX) stopped at loss ~0.3 with 5 of 16 words one letter short (16 of 16 on a Xeon with AMX); at 400 it
    reached loss 0.02 and read all 16."""
    from deployzoo.process.ctc import Greedy, Lexicon

    words = words32[:16]
    tr = Trainer(_cfg(tmp_path, steps=400, batch_size=16, augment=0, lr=3e-3, schedule="cosine", warmup_steps=20,
                      log_every=25, width_groups=1, bucket=128, threads=1), train_set=words)
    hist = tr.fit()["history"]
    assert hist[-1]["loss"] < hist[0]["loss"] / 20, f"loss did not fall: {[h['loss'] for h in hist]}"
    assert tr.pre.bucket == 128
    images, labels = [img for img, _ in words], [w for _, w in words]
    greedy = Recognizer(EagerRunner(tr.model.eval()), tr.pre, decoder=Greedy()).recognize(images)
    misread = [(p.text, w) for p, w in zip(greedy, labels) if p.text != w]
    assert len(misread) <= 1, misread  # 16 of 16 on the EPYC at 400 steps; one letter of slack for other CPUs
    # every image's own word is the most probable of the 16 (CTC probability summed over all alignments)
    closed = Recognizer(EagerRunner(tr.model), tr.pre, decoder=Lexicon(labels)).recognize(images)
    assert [p.text for p in closed] == labels


def test_amp_auto_trains_in_bf16_only_where_the_cpu_computes_bf16_natively(tmp_path, monkeypatch, words32):
    from deployzoo import host
    from deployzoo.train import auto_amp

    assert auto_amp("cpu", {"avx2", "avx512f", "avx512_vnni"}) == ("none", "no native bf16 on this CPU "
                                                                      "(avx512_bf16 / amx_bf16), so fp32")
    assert auto_amp("cpu", {"avx512_bf16", "amx_bf16"})[0] == "bf16"
    assert auto_amp("cpu", {"avx512_bf16"}) == ("bf16", "this CPU computes bf16 natively (avx512_bf16)")
    assert auto_amp("cuda", set()) == ("bf16", "CUDA")
    for flags, dtype in ((["avx2", "avx512_vnni"], None), (["avx2", "amx_bf16"], torch.bfloat16)):
        monkeypatch.setattr(host, "host_info", lambda flags=flags: {"cpu_flags": flags})
        said: list[str] = []
        tr = Trainer(_cfg(tmp_path, steps=1, amp="auto", device="cpu"), train_set=words32, log=said.append)
        assert tr.amp_dtype is dtype
        assert said[0].startswith(f"--amp auto: {'bf16' if dtype else 'none'} (")
        tr.fit()  # the step runs under what was chosen


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
                  ckpt_every=3, progress=False, keep_ratio=True, augment=0.5, lr=1e-3, amp="none")
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


def test_width_groups_zero_pads_each_word_to_its_own_bucket(words32):
    from deployzoo.process.crnn import CrnnPreprocess, preprocess
    from deployzoo.process.text import encode
    from deployzoo.train import collate

    cfg = CrnnPreprocess(keep_ratio=True)
    items = [(preprocess(img, cfg), encode(w)) for img, w in words32]
    widths = iter(sorted(x.shape[-1] for x, _ in items))
    parts = collate(items, cfg, groups=0)
    assert len(parts) > 1 and sum(p[0].shape[0] for p in parts) == 32
    for x, _, _, _ in parts:  # inference pads a word to its own bucket; so does training with groups=0
        assert [cfg.padded_width(next(widths)) for _ in range(x.shape[0])] == [x.shape[-1]] * x.shape[0]
