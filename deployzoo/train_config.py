"""Training configuration: every field is a ``deployzoo train`` flag. Kept apart from the trainer so that the
command line (and its help) never imports torch."""

from __future__ import annotations

from dataclasses import dataclass, field

from deployzoo.process.crnn import CrnnPreprocess


@dataclass
class TrainConfig:
    """Defaults follow seed 003 (Adam, lr 1e-4, batch 32); every field is a CLI flag."""

    out: str = "runs/crnn"
    train: list[str] = field(default_factory=list)  # LMDB / gt.txt folders; empty -> synthetic words on the fly
    real: list[str] = field(default_factory=list)  # real word sets mixed into every batch (their :train part)
    real_ratio: float = 0.5  # share of each batch drawn from --real (the rest: --train or the renderer)
    real_holdout: bool = True  # hold out 10 % of each --real set's source photos and validate on them
    val: list[str] = field(default_factory=list)  # real sets for model selection only (never trained on)
    val_synth: int = 2000  # held-out synthetic words (own seed) validated every val_every steps
    steps: int = 100_000
    batch_size: int = 32  # per process under DDP
    optimizer: str = "adam"  # adam | adamw | adadelta | sgd
    lr: float = 1e-4
    schedule: str = "constant"  # constant | cosine | onecycle
    warmup_steps: int = 0
    weight_decay: float = 0.0
    grad_clip: float = 5.0
    amp: str = "auto"  # auto (bf16 on CUDA and on CPUs with avx512_bf16 / AMX, else off) | none | bf16 | fp16
    channels_last: bool = True  # NHWC convolutions (CPU: 1.37x images/s with bf16, bench/train_throughput.py)
    threads: int = 0  # torch intra-op threads; 0 = torch's default (all cores)
    width_groups: int = 4  # keep-ratio: each batch runs as this many width-sorted groups (less padding); 0: one per
    # width bucket, padded exactly as inference pads (slower, small groups)
    keep_ratio: bool = False  # False: 100x32 as the seeds
    max_width: int = 256
    bucket: int = 16  # keep-ratio: inputs are padded to a multiple of this width (stored with the weights)
    augment: float = 1.0  # augmentation strength; 0 turns it off
    workers: int = -1  # DataLoader workers; -1 = all cores but one (at most 16)
    seed: int = 0
    synth_seed: int = 0
    synth_ablate: list[str] = field(default_factory=list)  # renderer features switched off (ablation runs)
    log_every: int = 50
    val_every: int = 2000
    ckpt_every: int = 1000
    init: str | None = None  # start from these weights (not a resume)
    resume: bool = False
    device: str = "auto"
    progress: bool = True

    def preprocess(self) -> CrnnPreprocess:
        return CrnnPreprocess(keep_ratio=self.keep_ratio, max_width=self.max_width, bucket=self.bucket)
