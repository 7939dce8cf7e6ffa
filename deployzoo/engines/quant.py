"""The int8 accuracy budget and the search for layers to keep in float, shared by every backend.

An int8 build measures the quantised model against the float model on held-out probe images (``measure``). On a
labelled probe (CRNN word sets) the budget bounds the word accuracy lost, judged on a **paired** comparison: the
same words read by both models, with a confidence interval on the drop that is the wider, at each end, of
McNemar's exact interval (conditional on the discordant words: only words that one model reads and the other does
not carry information) and Tango's unconditional score interval (which also counts the uncertainty in how many
words are discordant; see ``paired_drop``). A layer is kept in float only when its harm is measured beyond noise
(the interval's lower end above zero), so a 512-word probe cannot keep a layer float because two words flipped;
and the build says when the probe is too small to resolve the budget it enforces, and how many words it would
need. On an unlabelled probe the budget bounds the fraction of images whose decoded output differs from the float
model's (a direct count, no sampling question about the change itself).

``choose_float_nodes(candidates, make, ...)`` is backend-agnostic: ``make(quantized_nodes) -> run`` builds a
runnable model with exactly those nodes quantised (ONNX Runtime QDQ, NNCF, ...).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from deployzoo.engines.calib import Batch

#: default accuracy budgets. Labelled probe (CRNN word sets): the int8 engine may lose at most this fraction of
#: word accuracy against the float engine on the held-out words (0.005 = 0.5 points, the engines issue's budget).
#: Unlabelled probe (image folders): the fraction of held-out images whose decoded output (top-1 class, pixel
#: class) may differ from the float model's.
MAX_ACCURACY_DROP = 0.005
MAX_DISAGREEMENT = 0.01
#: two-sided confidence of the paired interval on the accuracy drop
CONFIDENCE = 0.95
#: at most this many separately measured units: larger candidate lists are split into contiguous groups
MAX_UNITS = 32


# ------------------------------------------------------------------------------------------ paired statistics

def _binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space (n up to a few thousand)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    lp, lq = math.log(p), math.log1p(-p)
    terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq
             for i in range(k + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def _solve_decreasing(f: Callable[[float], float], target: float, lo: float, hi: float, steps: int = 80) -> float:
    """The x in [lo, hi] where the decreasing function f crosses ``target``, by bisection."""
    for _ in range(steps):
        mid = (lo + hi) / 2
        if f(mid) > target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def clopper_pearson(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Exact two-sided interval for a binomial proportion (k successes in n), by bisection on the CDF."""
    if n == 0:
        return 0.0, 1.0
    a = (1 - confidence) / 2
    lower = 0.0 if k == 0 else _solve_decreasing(lambda p: _binom_cdf(k - 1, n, p), 1 - a, 0.0, 1.0)  # P(X >= k) = a
    upper = 1.0 if k == n else _solve_decreasing(lambda p: _binom_cdf(k, n, p), a, 0.0, 1.0)  # P(X <= k) = a
    return lower, upper


def paired_drop(float_right: Sequence[bool], quant_right: Sequence[bool],
                confidence: float = CONFIDENCE) -> dict:
    """Accuracy drop (float minus quantised, a fraction) on the same items, with a paired interval.

    Only discordant items inform the difference: ``lost`` (float right, quantised wrong) and ``gained`` (the
    reverse). The interval is the wider, at each end, of two intervals at ``confidence``:

    - McNemar's exact interval, conditional on the m = lost + gained discordant items: lost ~ Binomial(m, p) and
      drop = m (2p - 1) / n, so the Clopper-Pearson interval of p maps onto the drop. It is conservative about
      *harm* (4 lost, none gained on 100 words does not exclude zero), but, holding m fixed, it cannot see that the
      discordance rate itself is uncertain: with 1 discordant word in 508 it would bound the drop by 0.2 points,
      tighter than with none at all.
    - Tango's unconditional score interval (Tango 1998, ``tango_interval``), which treats the discordance rate as
      unknown too: 508 identical answers bound the drop by 0.75 points, not 0.
    """
    f = np.asarray(float_right, bool)
    q = np.asarray(quant_right, bool)
    n = int(f.size)
    lost, gained = int((f & ~q).sum()), int((q & ~f).sum())
    m = lost + gained
    if n == 0:
        return {"drop": 0.0, "interval": [0.0, 0.0], "lost": 0, "gained": 0, "n": 0}
    lo, hi = tango_interval(lost, gained, n, confidence)
    if m:
        p_lo, p_hi = clopper_pearson(lost, m, confidence)
        lo, hi = min(lo, m * (2 * p_lo - 1) / n), max(hi, m * (2 * p_hi - 1) / n)
    return {"drop": (lost - gained) / n, "interval": [lo, hi],
            "lost": lost, "gained": gained, "n": n, "confidence": confidence}


def tango_interval(lost: int, gained: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Tango's asymptotic score interval for a paired difference of proportions, (lost - gained) / n.

    The set of differences d at which the score statistic T(d) = (lost - gained - n d) / sqrt(n (2 q + d (1 - d)))
    lies within +-z, where q is the maximum-likelihood rate of ``gained`` items under the difference d (the root of
    2 n q^2 + W q - gained d (1 - d) = 0, W = d (2 n - lost + gained) - lost - gained). T falls as d rises, so each
    end is found by bisection. Tango, Statistics in Medicine 17 (1998) 891-908; recommended for paired proportions
    by Fagerland, Lydersen and Laake, Statistics in Medicine 33 (2014)."""
    z = _z(confidence)
    b, c = lost, gained

    def t(d: float) -> float:
        w = d * (2 * n - b + c) - b - c
        qd = (math.sqrt(max(w * w + 8 * n * c * d * (1 - d), 0.0)) - w) / (4 * n)
        var = n * (2 * qd + d * (1 - d))
        num = b - c - n * d
        if var <= 0:
            return 0.0 if num == 0 else math.copysign(math.inf, num)
        return num / math.sqrt(var)

    return _solve_decreasing(t, z, -1.0, 1.0), _solve_decreasing(t, -z, -1.0, 1.0)


def probe_needed(discordant_rate: float, budget: float, confidence: float = CONFIDENCE) -> int:
    """Probe size at which the paired interval's half-width falls to the budget, for a model whose outputs
    disagree with the float model's right/wrong on ``discordant_rate`` of the items (normal approximation:
    the per-item difference has variance about that rate when the drop is small), and at least the size at
    which a probe without any discordant item bounds the drop by the budget."""
    z = _z(confidence)
    floor = z * z * (1 - budget) / budget  # n at which zero discordant items bound the drop by the budget (Tango)
    return int(math.ceil(max(z * z * max(discordant_rate, 1e-6) / (budget * budget), floor)))


def _z(confidence: float) -> float:
    """Two-sided standard-normal quantile, by bisection on erf (no scipy at runtime)."""
    return _solve_decreasing(lambda x: -math.erf(x / math.sqrt(2)), -confidence, 0.0, 10.0)


# ----------------------------------------------------------------------------------------------- the budget

@dataclass
class QuantBudget:
    """Accuracy budget of an int8 build, measured against the float model on held-out images.

    On a labelled probe (``measure`` returns ``accuracy_drop``) the criterion is the accuracy the int8 model
    loses against the float model on the same images, at most ``max_accuracy_drop`` (a fraction: 0.005 = 0.5
    points); outputs that change but stay right (or wrong) cost nothing. The point estimate decides whether the
    budget is met; the paired interval decides whether a layer's harm is real (``harmful``) and whether the
    probe can resolve the budget at all (``verdict``). On an unlabelled probe the criterion is the fraction of
    images whose decoded output differs from the float model's, at most ``max_disagreement``. Either can be set
    to None to switch it off; ``max_rel_l2`` optionally bounds ||q - f|| / ||f|| of the raw outputs as well.
    """

    max_disagreement: float | None = MAX_DISAGREEMENT  # decoded text / top-1 / pixel class differs from float
    max_rel_l2: float | None = None
    max_accuracy_drop: float | None = MAX_ACCURACY_DROP

    def criterion(self, m: dict) -> str:
        if self.max_accuracy_drop is not None and m.get("accuracy_drop") is not None:
            return "accuracy_drop"
        return "disagreement" if self.max_disagreement is not None else "none"

    def met(self, m: dict) -> bool:
        c = self.criterion(m)
        ok = {"accuracy_drop": lambda: m["accuracy_drop"] <= self.max_accuracy_drop + 1e-12,
              "disagreement": lambda: m["disagreement"] <= self.max_disagreement + 1e-12,
              "none": lambda: True}[c]()
        return ok and (self.max_rel_l2 is None or m["rel_l2"] <= self.max_rel_l2)

    def accuracy_over(self, m: dict) -> bool:
        """Whether the labelled accuracy drop (point estimate) is what exceeds the budget."""
        return self.criterion(m) == "accuracy_drop" and m["accuracy_drop"] > self.max_accuracy_drop + 1e-12

    def harmful(self, m: dict) -> bool:
        """Whether quantising a unit measurably hurts: relative L2 over its bound (when one is set); labelled, an
        accuracy drop above zero beyond noise (the paired interval's lower end > 0); unlabelled, any
        disagreement."""
        if self.max_rel_l2 is not None and m["rel_l2"] > self.max_rel_l2:
            return True
        if self.criterion(m) == "accuracy_drop":
            return m["drop_interval"][0] > 1e-12
        return self.criterion(m) == "disagreement" and m["disagreement"] > 0

    def verdict(self, m: dict) -> str:
        """certified (the whole interval within budget), met (point estimate within budget, the probe too small
        to certify it), missed within noise (over budget, not beyond noise), missed."""
        if self.criterion(m) != "accuracy_drop":
            return "met" if self.met(m) else "missed"
        lo, hi = m["drop_interval"]
        if hi <= self.max_accuracy_drop + 1e-12 and self.met(m):
            return "certified"
        if self.met(m):
            return "met"
        return "missed within noise" if lo <= self.max_accuracy_drop + 1e-12 else "missed"

    def describe(self, m: dict) -> str:
        """The measured number the budget looks at, its interval and bound, for logs."""
        if self.criterion(m) == "accuracy_drop":
            lo, hi = m["drop_interval"]
            return (f"accuracy {m['accuracy']:.2%} vs float {m['reference_accuracy']:.2%} "
                    f"(drop {m['accuracy_drop'] * 100:+.2f} points, {CONFIDENCE:.0%} paired interval "
                    f"[{lo * 100:+.2f}, {hi * 100:+.2f}], {m['lost']} words lost / {m['gained']} gained; "
                    f"budget {self.max_accuracy_drop * 100:.2f})")
        bound = "" if self.max_disagreement is None else f", budget {self.max_disagreement:.2%}"
        return f"disagreement {m['disagreement']:.2%}{bound}, rel L2 {m['rel_l2']:.4f}"

    def error_key(self, m: dict) -> tuple:
        """Sort key, smallest error first, led by what the budget bounds: for choosing between calibration
        methods or presets, and (reversed) for ranking layers by sensitivity."""
        c = self.criterion(m)
        if c == "accuracy_drop":
            return (m["accuracy_drop"], m["disagreement"], m["rel_l2"])
        if c == "none":  # only the relative L2 bound (if any) is in force
            return (m["rel_l2"], m["disagreement"])
        return (m["disagreement"], m["rel_l2"])

    def probe_report(self, m: dict) -> dict | None:
        """Whether the labelled probe can resolve this budget: its interval half-width now, and the probe size at
        which the half-width falls to the budget (for the model measured in ``m``, usually all-int8)."""
        if self.criterion(m) != "accuracy_drop":
            return None
        n = m["labelled"]
        rate = max((m["lost"] + m["gained"]) / max(n, 1), 1 / max(n, 1))
        need = probe_needed(rate, self.max_accuracy_drop)
        half = (m["drop_interval"][1] - m["drop_interval"][0]) / 2
        fits = m["drop_interval"][1] <= self.max_accuracy_drop + 1e-12
        return {"probe_words": n, "discordant_rate": rate, "half_width": half, "words_needed": need,
                "enough": n >= need or fits}

    def as_dict(self) -> dict:
        return {"max_accuracy_drop": self.max_accuracy_drop, "max_disagreement": self.max_disagreement,
                "max_rel_l2": self.max_rel_l2, "confidence": CONFIDENCE}


# ----------------------------------------------------------------------------------------------- measuring

def decoded(model: str, out: np.ndarray, widths: np.ndarray | None, n: int) -> list:
    """Comparable decoded outputs of the first ``n`` items: CRNN greedy text, top-1 class, or pixel classes."""
    from deployzoo.specs import is_text

    if is_text(model):
        from deployzoo.process.crnn import output_length

        best = out.argmax(-1)  # (T, B)
        res = []
        for b in range(n):
            T = out.shape[0] if widths is None else min(output_length(int(widths[b])), out.shape[0])
            seq = best[:T, b]
            keep = np.ones(T, bool)
            keep[1:] = seq[1:] != seq[:-1]
            res.append(tuple(int(k) for k in seq[keep] if k != 0))
        return res
    if out.ndim == 2:
        return list(out[:n].argmax(-1))
    return list(out[:n].argmax(1))  # (n, H', W') class maps


def measure(model: str, run: Callable[[np.ndarray], np.ndarray], probe: list[Batch],
            reference: list[np.ndarray]) -> dict:
    """Error of ``run`` against the float reference outputs on the probe batches (labelled: with the paired
    accuracy drop and its interval)."""
    n = differ = 0
    num = den = 0.0
    max_abs = 0.0
    labelled = bool(probe) and all(b.labels is not None for b in probe)
    right_q: list[bool] = []
    right_f: list[bool] = []
    for b, ref in zip(probe, reference):
        out = run(b.x)
        d = (out - ref).astype(np.float64)
        num += float((d**2).sum())
        den += float((ref.astype(np.float64) ** 2).sum())
        max_abs = max(max_abs, float(np.abs(d).max()))
        q, f = decoded(model, out, b.widths, b.n), decoded(model, ref, b.widths, b.n)
        for a, r in zip(q, f):
            if isinstance(a, np.ndarray):  # segmentation: count pixels
                n += a.size
                differ += int((a != r).sum())
            else:
                n += 1
                differ += a != r
        if labelled:
            for a, r, y in zip(q, f, b.labels):
                if not y:  # a label the protocol empties is dropped, as word evaluation drops it
                    continue
                right_q.append(a == y)
                right_f.append(r == y)
    res = {"disagreement": differ / max(n, 1), "rel_l2": (num / max(den, 1e-30)) ** 0.5, "max_abs_diff": max_abs,
           "count": n}
    if labelled:
        n_lab = len(right_q)
        acc, ref_acc = sum(right_q) / max(n_lab, 1), sum(right_f) / max(n_lab, 1)
        pd = paired_drop(right_f, right_q)
        res.update(accuracy=acc, reference_accuracy=ref_acc, accuracy_drop=ref_acc - acc, labelled=n_lab,
                   drop_interval=pd["interval"], lost=pd["lost"], gained=pd["gained"])
    return res


def _float_itself(m: dict) -> dict:
    """The numbers of the float model against itself (every layer kept float)."""
    out = {**m, "disagreement": 0.0, "rel_l2": 0.0, "max_abs_diff": 0.0}
    if "accuracy_drop" in m:
        out.update(accuracy=m["reference_accuracy"], accuracy_drop=0.0, drop_interval=[0.0, 0.0], lost=0, gained=0)
    return out


def _units(cands: list[str], max_units: int) -> dict[str, list[str]]:
    """Candidates as measured units: one each, or (more than ``max_units``) that many contiguous groups in graph
    order, so a 171-layer VOLO-D2 costs 32 quantise + evaluate runs, not 171."""
    if len(cands) <= max_units:
        return {c: [c] for c in cands}
    groups = [list(g) for g in np.array_split(np.array(cands, dtype=object), max_units)]
    return {f"{g[0]} .. {g[-1]} ({len(g)} layers)": g for g in groups}


def choose_float_nodes(candidates: Sequence[str], make: Callable[[set[str]], Callable], model: str,
                       probe: list[Batch], reference: list[np.ndarray], budget: QuantBudget,
                       log: Callable[[str], None] = lambda s: None, measure_each: bool | None = None,
                       max_units: int = MAX_UNITS) -> dict:
    """Pick the layers to keep in float by measured sensitivity.

    1. quantise every candidate and measure the error on the probe set;
    2. for each unit (a candidate, or with more than ``max_units`` candidates a contiguous group of them), quantise
       it alone (all others float) and measure (its sensitivity);
    3. while the budget is not met, keep the most sensitive remaining unit in float and measure again; only units
       whose harm is measured beyond noise (``QuantBudget.harmful``) are candidates for float, so the search
       stops, with the verdict "missed within noise", when what remains is noise.

    ``measure_each``: step 2 even when everything int8 already meets the budget (for the record); default: when
    every unit is a single candidate (CRNN has 9).
    Returns the float nodes, the per-unit numbers, every step, the verdict and the probe-size check, for the
    manifest.
    """
    cands = list(candidates)
    units = _units(cands, max_units)
    t0 = time.perf_counter()
    full = measure(model, make(set(cands)), probe, reference)
    log(f"all {len(cands)} layers int8: {budget.describe(full)}")
    report = budget.probe_report(full)
    if report and not report["enough"]:
        log(f"note: the {report['probe_words']}-word probe resolves the drop to +-{report['half_width'] * 100:.2f} "
            f"points; certifying a {budget.max_accuracy_drop * 100:.2f}-point budget needs about "
            f"{report['words_needed']} labelled words ({report['words_needed'] - report['probe_words']} more: "
            "--probe-count, and a larger --calib-data set)")
    sens: dict[str, dict] = {}
    if measure_each is None:
        measure_each = len(units) == len(cands)
    if measure_each or not budget.met(full):
        for i, (u, nodes) in enumerate(units.items()):
            sens[u] = measure(model, make(set(nodes)), probe, reference)
            log(f"  [{i + 1}/{len(units)}] {u} alone int8: {budget.describe(sens[u])}"
                + ("" if budget.harmful(sens[u]) else " - no harm beyond noise"))
    ranked = sorted(units, key=lambda u: budget.error_key(sens[u]), reverse=True) if sens else []
    float_units: list[str] = []
    floats: list[str] = []
    steps = [{"float_nodes": [], **full}]
    cur = full
    while not budget.met(cur):
        pool = [u for u in ranked if u not in float_units]
        if budget.accuracy_over(cur):  # the drop fails: only harm beyond noise may keep a layer float
            pool = [u for u in pool if budget.harmful(sens[u])]
        if not pool:
            break
        float_units.append(pool[0])
        floats += units[float_units[-1]]
        q = set(cands) - set(floats)
        cur = measure(model, make(q), probe, reference) if q else _float_itself(full)
        steps.append({"float_nodes": list(floats), **cur})
        log(f"  keep {float_units[-1]} float -> {budget.describe(cur)}")
    verdict = budget.verdict(cur)
    if verdict == "missed within noise":
        log("  no remaining layer harms beyond noise: the rest stays int8 (budget missed within the probe's noise)")
    return {"candidates": cands, "float_nodes": floats, "quantized_nodes": [c for c in cands if c not in floats],
            "units": None if len(units) == len(cands) else units, "float_units": float_units,
            "float_effects": {u: {k: sens[u].get(k) for k in ("accuracy_drop", "drop_interval", "lost", "gained",
                                                                "disagreement", "rel_l2")} for u in float_units},
            "budget": {**budget.as_dict(), "criterion": budget.criterion(full)},
            "budget_met": budget.met(cur), "verdict": verdict, "probe_check": report, "all_int8": full,
            "final": cur, "sensitivity_alone_int8": sens, "steps": steps, "probe_images": sum(b.n for b in probe),
            "seconds": round(time.perf_counter() - t0, 2)}


def summary_lines(choice: dict, budget: QuantBudget | None = None) -> list[str]:
    """Build-summary lines from a search result (or a manifest's ``quantization``): each layer kept in float with
    its measured effect and interval, the verdict, and the probe-size check."""
    if budget is None:
        b = choice.get("budget") or {}
        budget = QuantBudget(b.get("max_disagreement"), b.get("max_rel_l2"), b.get("max_accuracy_drop"))
    lines = []
    for u, e in (choice.get("float_effects") or {}).items():
        if e.get("drop_interval") is not None:
            lo, hi = e["drop_interval"]
            lines.append(f"float: {u}: alone int8 it loses {e['accuracy_drop'] * 100:+.2f} points "
                         f"[{lo * 100:+.2f}, {hi * 100:+.2f}] ({e['lost']} lost / {e['gained']} gained)")
        else:
            lines.append(f"float: {u}: alone int8 disagreement {e['disagreement']:.2%}, rel L2 {e['rel_l2']:.4f}")
    if "verdict" in choice:
        lines.append(f"budget {choice['verdict']}: {budget.describe(choice['final'])}")
    lstm = choice.get("lstm") or {}
    if lstm.get("probe"):
        lines.append(f"LSTM: {lstm['scheme']}: {'kept' if lstm.get('kept') else 'not kept'}: "
                     f"{budget.describe(lstm['probe'])}"
                     + ("" if lstm.get("batch_invariant", True) else "; not batch-invariant"))
    check = choice.get("probe_check")
    if check and not check["enough"]:
        lines.append(f"probe: {check['probe_words']} labelled words resolve the drop to "
                     f"+-{check['half_width'] * 100:.2f} points; about {check['words_needed']} are needed to "
                     f"certify the budget")
    return lines
