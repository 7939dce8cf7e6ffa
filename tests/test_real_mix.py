"""Real words in training (issue 11): mixed batches keep the requested share and the label protocol; the held-out
split of a real set shares no source photo with its training part; a keep-ratio model goes through export, an
int8 engine and ``recognize`` with the text PyTorch reads."""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import word_image
from deployzoo.cli import main
from deployzoo.data.words import open_word_set, source_groups, split_word_set
from deployzoo.errors import DeployzooError
from deployzoo.process.crnn import CrnnPreprocess
from deployzoo.train import StepSampler, TrainConfig, Trainer

REAL = ["Café!", "EXIT", "it's", "Hotel", "2024", "NORTH", "bank", "open", "ZOO", "taxi", "Main-St", "pizza"]
SYNTH = ["cat", "dog", "sun", "moon", "star", "road", "car", "bus"]


def _folder(d: Path, words, names=None, meta: list[str] | None = None) -> Path:
    (d / "images").mkdir(parents=True)
    lines = []
    for i, w in enumerate(words):
        name = names[i] if names else f"{i}.png"
        word_image(w).save(d / "images" / name)
        lines.append(f"images/{name} {w}")
    (d / "gt.txt").write_text("\n".join(lines) + "\n")
    if meta:
        rows = ["crop\tlabel\tsource_image\tbox"] + [f"images/{names[i] if names else f'{i}.png'}\t{w}\t{meta[i]}\t0,0,1,1"
                                                   for i, w in enumerate(words)]
        (d / "crops_meta.tsv").write_text("\n".join(rows) + "\n")
    return d


def _cfg(tmp_path, **kw):
    base = dict(out=str(tmp_path / "run"), batch_size=8, augment=0.5, workers=0, val_synth=0, val_every=0,
                log_every=1, ckpt_every=10 ** 9, progress=False, keep_ratio=True, lr=1e-3, amp="none", steps=6,
                real_holdout=False, width_groups=1)
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("ratio, per_batch", [(0.5, 4), (0.25, 2), (1.0, 8)])
def test_every_batch_holds_the_requested_share_of_real_words(tmp_path, ratio, per_batch):
    real = _folder(tmp_path / "real", REAL)
    synth = [(np.asarray(word_image(w)), w) for w in SYNTH]
    tr = Trainer(_cfg(tmp_path, real=[str(real)], real_ratio=ratio), train_set=synth)
    assert tr.n_real == len(REAL)
    idx = [i for i, _ in StepSampler(len(tr.base), 8, 6, 0, 0, mix=tr.mix())]
    for s in range(6):
        batch = idx[8 * s:8 * s + 8]
        assert sum(i < tr.n_real for i in batch) == per_batch, batch
    # every real word comes round once per real epoch, whatever the synthetic share
    real_seen = Counter(i for i in idx if i < tr.n_real)
    assert max(real_seen.values()) - min(real_seen.values()) <= 1
    assert set(real_seen) == set(range(len(REAL))) or len(real_seen) == 6 * per_batch


def test_mixed_batches_go_through_the_label_protocol(tmp_path):
    real = _folder(tmp_path / "real", REAL)
    synth = [(np.asarray(word_image(w)), w) for w in SYNTH]
    tr = Trainer(_cfg(tmp_path, real=[str(real)], real_ratio=0.5), train_set=synth)
    labels = []
    for x, targets, _, tgt_lens in (b for b in tr.loader()):
        assert x.shape[0] == 8
        from deployzoo.process.text import ALPHABET

        flat = targets.tolist()
        pos = 0
        for n in tgt_lens.tolist():
            labels.append("".join(ALPHABET[k - 1] for k in flat[pos:pos + n]))
            pos += n
    assert "cafe" not in labels and "caf" in labels  # lower-cased, [0-9a-z] only: "Café!" -> "caf"
    assert "mainst" in labels and "its" in labels and "exit" in labels
    assert set(labels) <= {"caf", "exit", "its", "hotel", "2024", "north", "bank", "open", "zoo", "taxi", "mainst",
                           "pizza", *SYNTH}
    assert tr.fit()["step"] == 6


def test_real_ratio_out_of_range_and_empty_sets_are_refused(tmp_path):
    real = _folder(tmp_path / "real", REAL)
    with pytest.raises(DeployzooError, match="real-ratio"):
        Trainer(_cfg(tmp_path, real=[str(real)], real_ratio=0.0), train_set=[(np.zeros((32, 32), np.uint8), "a")])


def test_heldout_split_shares_no_source_photo_with_training(tmp_path):
    # 60 photos with 1-4 crops each, named as crops_meta.tsv says
    rng = np.random.default_rng(0)
    photos = [f"photo_{p}.jpg" for p in range(60) for _ in range(int(rng.integers(1, 5)))]
    words = [f"w{i}" for i in range(len(photos))]
    d = _folder(tmp_path / "ic03_like", words, meta=photos)
    ds = open_word_set(d)
    groups, how = source_groups(ds)
    assert how.startswith("crops_meta") and groups == photos
    tr, held = open_word_set(f"{d}:train"), open_word_set(f"{d}:heldout")
    assert len(tr) + len(held) == len(ds) and 0 < len(held) < len(ds) / 3
    photo = dict(zip((ds[i].key for i in range(len(ds))), photos))
    train_photos = {photo[tr[i].key] for i in range(len(tr))}
    held_photos = {photo[held[i].key] for i in range(len(held))}
    assert held_photos and not train_photos & held_photos
    # stable: the same split every time, whatever the process
    assert [held[i].key for i in range(len(held))] == [split_word_set(ds, "heldout")[i].key for i in range(len(held))]


def test_iiit5k_names_and_plain_folders_are_grouped(tmp_path):
    names = [f"{p}_{k}.png" for p in range(100, 130) for k in (1, 2, 3)]
    d = _folder(tmp_path / "iiit", [f"w{i}" for i in range(len(names))], names=names)
    groups, how = source_groups(open_word_set(d))
    assert how == "file name <photo>_<n>" and len(set(groups)) == 30
    held = open_word_set(f"{d}:heldout")
    held_photos = {Path(held[i].key).stem.split("_")[0] for i in range(len(held))}
    tr = open_word_set(f"{d}:train")
    assert not held_photos & {Path(tr[i].key).stem.split("_")[0] for i in range(len(tr))}
    plain = _folder(tmp_path / "plain", [f"w{i}" for i in range(40)], names=[f"word_{i}.png" for i in range(40)])
    g, how = source_groups(open_word_set(plain))
    assert how.startswith("blocks") and len(set(g)) == 3  # word_N: one 'photo' prefix -> consecutive blocks


def test_trainer_validates_the_heldout_part_and_trains_on_the_rest(tmp_path):
    names = [f"{p}_{k}.png" for p in range(40) for k in (1, 2)]
    real = _folder(tmp_path / "real", [REAL[i % len(REAL)] for i in range(len(names))], names=names)
    synth = [(np.asarray(word_image(w)), w) for w in SYNTH]
    tr = Trainer(_cfg(tmp_path, real=[str(real)], real_holdout=True, steps=2, val_every=2), train_set=synth)
    held = open_word_set(f"{real}:heldout")
    assert tr.n_real == len(names) - len(held) and len(held) > 0
    assert tr.val_sets() == [f"{real}:heldout"]
    tr.fit()
    row = (tmp_path / "run" / "val.csv").read_text().splitlines()
    assert row[0] == "step,real:heldout,heldout" and row[1].startswith("2,")


# ---------------------------------------------------------------------- keep-ratio model through the engine path

WORDS = ["hello", "street", "coffee", "museum", "garden", "north", "pizza", "international", "restaurant", "exit"]


@pytest.fixture(scope="module")
def keep_ratio_ckpt(tmp_path_factory) -> Path:
    """The shipped weights declared keep-ratio (height 32, width by aspect ratio up to 256)."""
    from deployzoo.checkpoint import read_checkpoint
    from deployzoo.specs import get_spec

    obj = read_checkpoint(get_spec("crnn").resolve_checkpoint(None))
    obj["deployzoo"]["preprocess"] = CrnnPreprocess(keep_ratio=True, max_width=256).to_dict()
    p = tmp_path_factory.mktemp("kr") / "crnn_keep_ratio.pt"
    torch.save(obj, p)
    return p


@pytest.fixture(scope="module")
def word_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("words")
    lines = []
    (d / "img").mkdir()
    for i, w in enumerate(WORDS * 3):
        word_image(w if i % 2 else w.upper(), size=24 + (i % 3) * 4).save(d / "img" / f"{i}.png")
        lines.append(f"img/{i}.png {w}")
    (d / "gt.txt").write_text("\n".join(lines) + "\n")
    return d


@pytest.mark.usefixtures("one_torch_thread")
def test_keep_ratio_model_through_export_int8_engine_and_recognize(keep_ratio_ckpt, word_dir, tmp_path, capsys):
    import deployzoo

    eng = tmp_path / "int8"
    assert main(["build", "crnn", "--precision", "int8", "--checkpoint", str(keep_ratio_ckpt), "--calib-data",
                 str(word_dir), "--calib-count", "18", "--probe-count", "12", "--threads", "1", "--out", str(eng)]) == 0
    manifest = json.loads((eng / "manifest.json").read_text())
    assert manifest["preprocess"]["keep_ratio"] is True and manifest["preprocess"]["max_width"] == 256
    imgs = [str(word_dir / "img" / f"{i}.png") for i in range(len(WORDS))]
    capsys.readouterr()
    assert main(["recognize", *imgs, "--engine", str(eng), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    ref = deployzoo.load("crnn", checkpoint=keep_ratio_ckpt)
    assert ref.cfg.keep_ratio
    torch_texts = [r.text for r in ref(imgs)]
    assert sum(t == w for t, w in zip(torch_texts, WORDS)) >= 8, torch_texts  # the weights read these words
    assert [r["text"] for r in rows] == torch_texts
    assert any(r["text"] == w for r, w in zip(rows, WORDS) if len(w) >= 10), rows  # long words, unsqueezed
