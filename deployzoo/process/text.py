"""Word labels: the case-insensitive alphanumeric protocol of scene-text benchmarks, and CTC label coding."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

#: CTC alphabet of CRNN: class 0 is the blank, class i is ALPHABET[i - 1].
ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
BLANK = 0
_DROP = re.compile(r"[^0-9a-z]")


def normalize_label(text: str, alphabet: str = ALPHABET) -> str:
    """Lower-case and drop every character outside the alphabet ([0-9a-z] by default)."""
    low = text.lower()
    if alphabet == ALPHABET:
        return _DROP.sub("", low)
    allowed = set(alphabet)
    return "".join(c for c in low if c in allowed)


def encode(text: str, alphabet: str = ALPHABET) -> list[int]:
    """Normalised text -> class indices (1-based; 0 is the blank)."""
    index = {c: i + 1 for i, c in enumerate(alphabet)}
    try:
        return [index[c] for c in text]
    except KeyError as e:
        raise ValueError(f"character {e.args[0]!r} of {text!r} is not in the alphabet {alphabet!r}") from None


@dataclass
class LabelStats:
    """How normalisation changed the labels of a data set: reported, never silent."""

    total: int = 0
    changed: int = 0  # characters were dropped or the case changed beyond lower-casing
    emptied: int = 0  # nothing was left: the sample is excluded from accuracy
    dropped_chars: dict[str, int] = field(default_factory=dict)

    def add(self, raw: str, norm: str) -> None:
        self.total += 1
        if norm != raw.lower():
            self.changed += 1
            for c in raw.lower():
                if c not in ALPHABET:
                    self.dropped_chars[c] = self.dropped_chars.get(c, 0) + 1
        if not norm:
            self.emptied += 1

    def summary(self) -> str:
        top = sorted(self.dropped_chars.items(), key=lambda kv: -kv[1])[:8]
        chars = " ".join(f"{c!r}x{n}" for c, n in top)
        return (f"{self.total} labels: {self.changed} had characters outside [0-9a-z] dropped"
                + (f" ({chars})" if chars else "") + f", {self.emptied} emptied and excluded")
