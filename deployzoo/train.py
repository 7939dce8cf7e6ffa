"""CRNN trainer: CTC loss, Adam 1e-4 / batch 32 by default (seed 003), AMP and channels_last on GPU, DDP under
torchrun, validation on held-out synthetic words and real sets, atomic best/last checkpoints, exact resume.

Determinism: sample ``i`` of step ``s`` is a pure function of (seed, s, i), including its augmentation, so a run
resumed from a checkpoint continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from deployzoo.checkpoint import atomic_save, read_checkpoint
from deployzoo.data.augment import augment_word
from deployzoo.data.words import open_word_set
from deployzoo.errors import DeployzooError, ImageError
from deployzoo.evaluation.common import worker_init
from deployzoo.models.crnn import crnn, output_length
from deployzoo.process.crnn import CrnnPreprocess, batches_by_width, pad_batch, preprocess
from deployzoo.process.image import load_image
from deployzoo.process.text import ALPHABET, encode, normalize_label
from deployzoo.train_config import TrainConfig


# ------------------------------------------------------------------ data


class WordImages(Dataset):
    """(gray uint8, raw text) from LMDB / gt.txt sets, concatenated; unreadable items return (None, text)."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.sets = [open_word_set(p) for p in paths]
        self.offsets = np.cumsum([0] + [len(s) for s in self.sets])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, i: int):
        k = int(np.searchsorted(self.offsets, i, side="right") - 1)
        s = self.sets[k][i - int(self.offsets[k])]
        if s.error:
            return None, s.label
        try:
            return load_image(s.data if s.data is not None else s.path, "L", name=s.key), s.label
        except ImageError:
            return None, s.label


def synthetic_words(length: int, seed: int, ablate: Sequence[str] = ()) -> Dataset:
    """Words rendered on the fly; ``ablate`` names ``SynthConfig`` feature switches to turn off."""
    from deployzoo.data.synth import SynthConfig, SynthWordDataset

    try:
        cfg = SynthConfig().ablate(*ablate)
    except ValueError as e:
        switches = sorted(k for k, v in SynthConfig().to_dict().items() if isinstance(v, bool))
        raise DeployzooError(f"--synth-ablate: {e}; switches: {', '.join(switches)}") from None
    return SynthWordDataset(length, cfg=cfg, seed=seed)


class Mixed(Dataset):
    """Real words first (indices ``0 .. len(real) - 1``), then the synthetic source."""

    def __init__(self, real: Dataset, synth: Dataset) -> None:
        self.real, self.synth = real, synth
        self.n_real = len(real)

    def __len__(self) -> int:
        return self.n_real + len(self.synth)

    def __getitem__(self, i: int):
        return self.real[i] if i < self.n_real else self.synth[i - self.n_real]


class Encoded(Dataset):
    """Wraps an (image, text) dataset: augmentation (seeded by (seed, draw)) + shared pre-processing."""

    def __init__(self, base: Dataset, cfg: CrnnPreprocess, augment: float, seed: int, alphabet: str = ALPHABET):
        self.base, self.cfg, self.augment, self.seed, self.alphabet = base, cfg, augment, seed, alphabet

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: tuple[int, int]):
        index, draw = key  # draw: global sample counter, makes augmentation differ between epochs
        gray, text = self.base[index]
        label = normalize_label(text, self.alphabet)
        if gray is None or not label:
            return None
        if self.augment > 0:
            gray = augment_word(gray, np.random.default_rng((self.seed, draw)), self.augment)
        x = preprocess(gray, self.cfg)
        if len(label) > output_length(x.shape[-1]) // 2:  # CTC needs room for repeats and blanks
            return None
        return x, encode(label, self.alphabet), label


@dataclass
class Source:
    """One part of every batch: ``n`` samples at ``offset`` in the data set, ``per_batch`` of them per step."""

    n: int
    per_batch: int
    shuffle: bool = True  # False for rendered words: every index is already a fresh random sample
    offset: int = 0


class StepSampler(Sampler):
    """Yields (index, draw) for steps ``start..steps``: batch ``s`` of rank ``r`` is fixed by (seed, s, r).

    A batch is the concatenation of its sources' shares (``mix``; by default one source of ``n`` samples).
    Each source walks its own epochs; ``draw`` is unique over the run and seeds the sample's augmentation."""

    def __init__(self, n: int, batch: int, steps: int, start: int, seed: int, rank: int = 0, world: int = 1,
                 shuffle: bool = True, mix: Sequence[Source] | None = None):
        self.sources = list(mix) if mix else [Source(n, batch, shuffle)]
        self.batch = sum(src.per_batch for src in self.sources)
        if self.batch != batch:
            raise ValueError(f"the sources' shares add up to {self.batch}, not the batch size {batch}")
        self.steps, self.start, self.seed = steps, start, seed
        self.rank, self.world = rank, world
        self._perms: dict[tuple[int, int], np.ndarray] = {}

    def _perm_for(self, k: int, epoch: int) -> np.ndarray:
        if (k, epoch) not in self._perms:
            self._perms = {key: v for key, v in self._perms.items() if key[0] != k}
            seed = (self.seed, epoch) if k == 0 else (self.seed, k, epoch)
            self._perms[(k, epoch)] = np.random.default_rng(seed).permutation(self.sources[k].n)
        return self._perms[(k, epoch)]

    def __iter__(self):
        m = len(self.sources)
        for s in range(self.start, self.steps):
            for k, src in enumerate(self.sources):
                for j in range(src.per_batch):
                    draw = (s * self.world + self.rank) * src.per_batch + j
                    epoch, pos = divmod(draw, src.n)
                    idx = int(self._perm_for(k, epoch)[pos]) if src.shuffle else pos
                    yield src.offset + idx, draw * m + k

    def __len__(self) -> int:
        return (self.steps - self.start) * self.batch


def collate(items, cfg: CrnnPreprocess, groups: int = 1):
    """Samples -> (x, targets, input_lengths, target_lengths); with ``groups`` > 1 (keep-ratio), a list of such
    tuples, the batch sorted by width and cut into that many groups, each padded to its own widest image;
    ``groups`` == 0 (keep-ratio): one group per width bucket, so each image is padded exactly as inference pads
    it (``batches_by_width(..., bucket_of=padded_width)``)."""
    items = [it for it in items if it is not None]
    if not items:
        return None
    if groups == 0 and cfg.keep_ratio:
        parts = [collate(group, cfg) for group in batches_by_width(items, lambda it: it[0].shape[-1], len(items),
                                                                   pool_batches=1, bucket_of=cfg.padded_width)]
        return parts if len(parts) > 1 else parts[0]
    if groups > 1 and cfg.keep_ratio and len(items) >= 2 * groups:
        items.sort(key=lambda it: it[0].shape[-1])
        size = -(-len(items) // groups)
        return [collate(items[i:i + size], cfg) for i in range(0, len(items), size)]
    x, widths = pad_batch([it[0] for it in items], cfg)
    targets = torch.tensor([k for it in items for k in it[1]], dtype=torch.long)
    target_lengths = torch.tensor([len(it[1]) for it in items], dtype=torch.long)
    input_lengths = torch.tensor([output_length(int(w)) for w in widths], dtype=torch.long)
    return torch.from_numpy(x), targets, input_lengths, target_lengths


# ------------------------------------------------------------------ optimisation


def make_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay or 0.01)
    if cfg.optimizer == "adadelta":
        return torch.optim.Adadelta(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
    raise DeployzooError(f"unknown optimizer {cfg.optimizer!r}: adam, adamw, adadelta or sgd")


def lr_factor(cfg: TrainConfig, step: int) -> float:
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    if cfg.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
    if cfg.schedule == "onecycle":  # linear decay to 0 after warm-up
        return max(0.0, 1.0 - t)
    raise DeployzooError(f"unknown schedule {cfg.schedule!r}: constant, cosine or onecycle")


# ------------------------------------------------------------------ the run


#: CPU flags of native bf16 arithmetic: with them bf16 autocast trains faster (bench/train_throughput.py, AMD EPYC
#: with avx512_bf16: 152 vs 98 images/s fp32, model alone, batch 64, 2 threads); without them bf16 is emulated.
NATIVE_BF16 = frozenset({"avx512_bf16", "amx_bf16"})


def auto_amp(device_type: str, cpu_flags: "set[str] | None" = None) -> tuple[str, str]:
    """``--amp auto`` -> (amp, why): bf16 on CUDA and on CPUs with native bf16 arithmetic, else none (fp32)."""
    if device_type == "cuda":
        return "bf16", "CUDA"
    if cpu_flags is None:
        from deployzoo.host import host_info

        cpu_flags = set(host_info()["cpu_flags"])
    native = sorted(NATIVE_BF16 & set(cpu_flags))
    if native:
        return "bf16", f"this CPU computes bf16 natively ({', '.join(native)})"
    return "none", "no native bf16 on this CPU (avx512_bf16 / amx_bf16), so fp32"


class Trainer:
    def __init__(self, cfg: TrainConfig, train_set: Dataset | None = None,
                 log: Callable[[str], None] = print) -> None:
        self.cfg = cfg
        self.log = log
        self.rank = int(os.environ.get("RANK", 0))
        self.world = int(os.environ.get("WORLD_SIZE", 1))
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if cfg.device == "auto":
            self.device = torch.device(f"cuda:{self.local_rank}" if torch.cuda.is_available() else "cpu")
        else:
            self.device = torch.device(cfg.device)
        if self.world > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        amp = cfg.amp
        if amp == "auto":
            amp, why = auto_amp(self.device.type)
            if self.rank == 0:
                self.log(f"--amp auto: {amp} ({why})")
        self.amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
        self.pre = cfg.preprocess()
        self.out = Path(cfg.out)
        torch.manual_seed(cfg.seed)
        self.model = crnn().to(self.device)
        if cfg.init:
            from deployzoo.models.crnn import load_crnn_checkpoint

            load_crnn_checkpoint(self.model, cfg.init)
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.opt = make_optimizer(cfg, self.model.parameters())
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.step = 0
        self.best = -1.0
        self.synthetic = train_set is None and not cfg.train
        self.base = train_set if train_set is not None else (
            WordImages(cfg.train) if cfg.train else synthetic_words(10 ** 9, cfg.synth_seed, cfg.synth_ablate))
        self.n_real = 0
        if cfg.real:
            if not 0 < cfg.real_ratio <= 1:
                raise DeployzooError(f"--real-ratio {cfg.real_ratio}: must be in (0, 1]")
            real = WordImages([f"{p}:train" if cfg.real_holdout else p for p in cfg.real])
            if not len(real):
                raise DeployzooError(f"--real {' '.join(cfg.real)}: no samples")
            self.n_real = len(real)
            self.base = Mixed(real, self.base)
        if cfg.resume and (self.out / "last.pt").exists():
            self._load_state(self.out / "last.pt")
        self.ddp = torch.nn.parallel.DistributedDataParallel(self.model) if self.world > 1 else self.model

    # -- checkpoints
    def _meta(self) -> dict:
        return {"model": "crnn", "preprocess": self.pre.to_dict(), "alphabet": ALPHABET, "step": self.step,
                "train_config": asdict(self.cfg), "best_val": self.best}

    def save(self, name: str, full: bool) -> Path:
        obj = {"state_dict": {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()},
               "deployzoo": self._meta()}
        if full:
            obj["train_state"] = {
                "optimizer": self.opt.state_dict(), "scaler": self.scaler.state_dict(), "step": self.step,
                "best": self.best, "torch_rng": torch.get_rng_state(),
            }  # data randomness is per sample, from (seed, draw): no numpy/python RNG state to carry
        return atomic_save(obj, self.out / name)

    def _load_state(self, path: Path) -> None:
        obj = read_checkpoint(path)
        self.model.load_state_dict(obj["state_dict"])
        st = obj.get("train_state")
        if not st:
            raise DeployzooError(f"checkpoint {path}: has no training state; use --init to start from its weights")
        self.opt.load_state_dict(st["optimizer"])
        self.scaler.load_state_dict(st["scaler"])
        self.step, self.best = int(st["step"]), float(st["best"])
        torch.set_rng_state(st["torch_rng"])
        self.log(f"resumed from {path} at step {self.step}")

    # -- loop
    def loader(self) -> DataLoader:
        ds = Encoded(self.base, self.pre, self.cfg.augment, self.cfg.seed)
        sampler = StepSampler(len(ds), self.cfg.batch_size, self.cfg.steps, self.step, self.cfg.seed,
                              self.rank, self.world, shuffle=not self.synthetic, mix=self.mix())
        workers = self.cfg.workers if self.cfg.workers >= 0 else min(16, max(1, (os.cpu_count() or 2) - 1))
        return DataLoader(ds, batch_size=self.cfg.batch_size, sampler=sampler, num_workers=workers,
                          collate_fn=functools.partial(collate, cfg=self.pre, groups=self.cfg.width_groups),
                          pin_memory=self.device.type == "cuda",
                          worker_init_fn=worker_init if workers else None,
                          prefetch_factor=4 if workers else None, persistent_workers=bool(workers))

    def mix(self) -> list[Source] | None:
        """Per-batch shares: round(batch * real_ratio) real words, the rest synthetic (None: one source)."""
        if not self.n_real:
            return None
        k = max(1, round(self.cfg.batch_size * self.cfg.real_ratio))
        n_synth = len(self.base) - self.n_real
        parts = [Source(self.n_real, k, True, 0)]
        if k < self.cfg.batch_size:
            parts.append(Source(n_synth, self.cfg.batch_size - k, not self.synthetic, self.n_real))
        return parts

    def val_sets(self) -> list[str]:
        """Validation sets: --val, plus the held-out part of each --real set."""
        held = [f"{p}:heldout" for p in self.cfg.real] if self.cfg.real and self.cfg.real_holdout else []
        return [*self.cfg.val, *held]

    def train_step(self, batch) -> float:
        """One optimiser step on a batch (a tuple from ``collate``, or a list of width groups: their CTC losses
        are weighted by group size, so the step equals one on the whole batch up to BatchNorm statistics)."""
        parts = batch if isinstance(batch, list) else [batch]
        n = sum(p[0].shape[0] for p in parts)
        for g in self.opt.param_groups:
            g["lr"] = self.cfg.lr * lr_factor(self.cfg, self.step)
        self.ddp.train()
        self.opt.zero_grad(set_to_none=True)
        total = 0.0
        for i, (x, targets, in_lens, tgt_lens) in enumerate(parts):
            x = x.to(self.device, non_blocking=True)
            if self.cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                                enabled=self.amp_dtype is not None):
                logits = self.ddp(x)  # (T, B, C)
            logp = F.log_softmax(logits.float(), dim=2)
            loss = F.ctc_loss(logp, targets.to(self.device), in_lens, tgt_lens, blank=0, reduction="mean",
                              zero_infinity=True) * (x.shape[0] / n)
            sync = i == len(parts) - 1 or not hasattr(self.ddp, "no_sync")
            with (contextlib.nullcontext() if sync else self.ddp.no_sync()):
                self.scaler.scale(loss).backward()
            total += float(loss.detach())
        if self.cfg.grad_clip:
            self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.step += 1
        return total

    def validate(self) -> dict[str, float]:
        from deployzoo.evaluation.words import evaluate_words
        from deployzoo.predict import Recognizer
        from deployzoo.process.ctc import Greedy

        self.model.eval()
        # greedy: model selection measures the network itself, not the word prior read on top of it
        rec = Recognizer(_DeviceRunner(self.model, self.device, self.amp_dtype), self.pre,
                         decoder=Greedy(), batch_size=256)
        res: dict[str, float] = {}
        if self.cfg.val_synth:
            res["synth"] = self._val_synth(rec)
        held = [0, 0]  # correct, total over the held-out real words
        for p in self.val_sets():
            r = evaluate_words(rec, p, batch_size=256, workers=2, progress=False)
            res[Path(p).name] = r.accuracy
            if p.endswith(":heldout"):
                held[0] += r.correct
                held[1] += r.n
        if held[1]:
            res["heldout"] = held[0] / held[1]
        self.model.train()
        return res

    def _val_synth(self, rec) -> float:
        if not hasattr(self, "_synth_val"):
            ds = synthetic_words(self.cfg.val_synth, self.cfg.synth_seed + 1_000_003)  # a seed training never uses
            self._synth_val = [(preprocess(g, self.pre), normalize_label(t)) for g, t in
                               (ds[i] for i in range(len(ds)))]
        preds = rec.infer([x for x, _ in self._synth_val])
        return float(np.mean([p.text == t for p, (_, t) in zip(preds, self._synth_val)]))

    def fit(self) -> dict:
        cfg = self.cfg
        main = self.rank == 0
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            from deployzoo.evaluation.report import write_json

            write_json(asdict(cfg), self.out / "config.json")
        log_path = self.out / "log.csv"
        fields = ["step", "loss", "lr", "img_per_s", "elapsed_s"]
        t0 = time.perf_counter()
        seen, losses, last_t = 0, [], time.perf_counter()
        history: list[dict] = []
        bar = _Bar(cfg.progress and main, cfg.steps, self.step)
        tb = _tensorboard(self.out) if main else None
        try:
            for batch in self.loader():
                if batch is None:
                    continue
                losses.append(self.train_step(batch))
                seen += sum(p[0].shape[0] for p in (batch if isinstance(batch, list) else [batch])) * self.world
                bar.update(self.step, losses[-1])
                if main and (self.step % cfg.log_every == 0 or self.step == cfg.steps):
                    now = time.perf_counter()
                    row = {"step": self.step, "loss": round(float(np.mean(losses)), 5),
                           "lr": self.opt.param_groups[0]["lr"], "img_per_s": round(seen / (now - last_t), 1),
                           "elapsed_s": round(now - t0, 1)}
                    _append_csv(log_path, row, fields)
                    if tb:
                        tb.add_scalar("train/loss", row["loss"], self.step)
                        tb.add_scalar("train/img_per_s", row["img_per_s"], self.step)
                    history.append(row)
                    losses, seen, last_t = [], 0, now
                if main and cfg.val_every and (self.step % cfg.val_every == 0 or self.step == cfg.steps):
                    val = self.validate()
                    score = selection_score(val)
                    msg = " ".join(f"{k}={v:.4f}" for k, v in val.items())
                    self.log(f"step {self.step}: val {msg}" + (" (best)" if score > self.best else ""))
                    _append_csv(self.out / "val.csv", {"step": self.step, **val}, ["step", *val])
                    if tb:
                        for k, v in val.items():
                            tb.add_scalar(f"val/{k}", v, self.step)
                    if score > self.best:
                        self.best = score
                        self.save("best.pt", full=False)
                if main and (self.step % cfg.ckpt_every == 0 or self.step == cfg.steps):
                    self.save("last.pt", full=True)
                if self.step >= cfg.steps:
                    break
        finally:
            bar.close()
            if tb:
                tb.close()
        if main and not (self.out / "best.pt").exists():
            self.save("best.pt", full=False)
        return {"step": self.step, "best": self.best, "history": history,
                "seconds": time.perf_counter() - t0}


def selection_score(val: dict[str, float]) -> float:
    """Mean accuracy of the real validation sets (--val sets and the pooled held-out words; each held-out set
    counts once, inside the pool); synthetic words only when there is nothing real."""
    real = [v for k, v in val.items() if k != "synth" and not k.endswith(":heldout")]
    return float(np.mean(real or [val.get("synth", 0.0)]))


class _DeviceRunner:
    """Runner for validation on the training device."""

    name = "pytorch"

    def __init__(self, model, device, amp_dtype) -> None:
        self.model, self.device, self.amp_dtype = model, device, amp_dtype

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                                                    enabled=self.amp_dtype is not None):
            return self.model(torch.from_numpy(x).to(self.device)).float().cpu().numpy()


def _append_csv(path: Path, row: dict, fields: list[str]) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerow(row)


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tb"))


class _Bar:
    def __init__(self, enabled: bool, total: int, start: int) -> None:
        self.p = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.p = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
                              TimeRemainingColumn())
            self.p.start()
            self.task = self.p.add_task("train", total=total, completed=start, loss="-")

    def update(self, step: int, loss: float) -> None:
        if self.p:
            self.p.update(self.task, completed=step, loss=f"{loss:.3f}")

    def close(self) -> None:
        if self.p:
            self.p.stop()


def slim_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, half: bool = True) -> Path:
    """Training checkpoint -> shippable file: fp16 state dict in meijieru layout plus deployzoo metadata."""
    from deployzoo.checkpoint import unwrap_state_dict
    from deployzoo.models.crnn import load_crnn_checkpoint

    load_crnn_checkpoint(crnn(), src)  # refuses anything that is not a CRNN checkpoint, with the reason
    obj = read_checkpoint(src)
    sd = {k: (v.half() if half and v.is_floating_point() else v) for k, v in unwrap_state_dict(obj).items()}
    meta = {k: v for k, v in (obj.get("deployzoo") or {}).items() if k != "train_config"}
    return atomic_save({"state_dict": sd, "deployzoo": meta}, dst)
