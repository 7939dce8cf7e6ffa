"""What this process may use of the machine it runs on (shared by engines, decoding, the server and benches)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        return os.cpu_count() or 1


def host_info() -> dict:
    """CPU model, core counts and the ISA flags that decide what int8/fp16/bf16 really do on this machine."""
    cpu = platform.processor() or platform.machine()
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu in ("", platform.machine(), "x86_64"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    usable = usable_cores()
    physical = None
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except ImportError:
        pass
    interesting = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8",
                   "amx_fp16", "asimd", "fphp", "asimdhp")
    return {"cpu": cpu, "machine": platform.machine(), "logical_cores": os.cpu_count(), "usable_cores": usable,
            "physical_cores": physical, "cpu_flags": sorted(f for f in interesting if f in flags),
            "os": f"{platform.system()} {platform.release()}"}
