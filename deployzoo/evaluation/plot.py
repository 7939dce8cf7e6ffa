"""The one-click report's picture: accuracy against images/s, one marker per engine (extra ``plot``: matplotlib)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from deployzoo.atomic import atomic_path
from deployzoo.engines import SHORT

MARKERS = {"force_float32": "o", "force_float16": "s", "force_bfloat16": "D", "qint8_mixed_float16": "^"}
COLORS = {"pytorch": "tab:gray", "onnxruntime": "tab:blue", "openvino": "tab:purple", "aoti": "tab:green"}
PLOT_HINT = "pip install 'deployzoo[plot]' (matplotlib) and run again for report.png"


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ModuleNotFoundError:
        return False
    return True


def accuracy_speed_png(rows: Sequence, path: str | os.PathLike, metric: str, title: str) -> Path | None:
    """Scatter of ``rows`` (objects with backend, precision, accuracy, images_per_s) into a PNG at ``path``;
    None (nothing written) when matplotlib is not installed or no row has both numbers."""
    if not have_matplotlib():
        return None
    pts = [r for r in rows if r.accuracy is not None and r.images_per_s]
    if not pts:
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    try:
        for i, r in enumerate(sorted(pts, key=lambda r: r.images_per_s)):
            ax.scatter(r.images_per_s, r.accuracy * 100, s=70, marker=MARKERS.get(r.precision, "x"),
                       color=COLORS.get(r.backend, "tab:orange"), edgecolors="black", linewidths=0.5, zorder=3)
            ax.annotate(f"{r.backend} {SHORT.get(r.precision, r.precision)}", (r.images_per_s, r.accuracy * 100),
                        textcoords="offset points", xytext=(6, 5 if i % 2 == 0 else -11), fontsize=8)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda x, _: f"{x:g}" if str(x)[0] in "25" else ""))
        ax.set_xlabel("images/s (log scale, higher is faster)")
        ax.set_ylabel(f"{metric} (%)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        lo = min(r.accuracy for r in pts) * 100
        hi = max(r.accuracy for r in pts) * 100
        pad = max(0.5, (hi - lo) * 0.25)
        ax.set_ylim(lo - pad, hi + pad)
        handles = [plt.Line2D([], [], marker=m, linestyle="", color="black", label=SHORT[p])
                   for p, m in MARKERS.items() if any(r.precision == p for r in pts)]
        ax.legend(handles=handles, title="precision", fontsize=8, loc="lower left")
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return Path(path)
