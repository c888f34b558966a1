"""Choosing where torch runs: one function for every model the project loads (encoders, VAE, vocoder, the DiT)."""

from __future__ import annotations

from pathlib import Path


def pick_device(device: str = "auto") -> str:
    """"auto" is the GPU when torch sees one, else the CPU; any other name ("cpu", "cuda:1") is kept."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def cpu_supports_bf16() -> bool:
    """True on CPUs with native bf16 arithmetic (AVX-512 BF16 or AMX), where bf16 autocast is fast and accurate."""
    import torch

    capability = torch.backends.cpu.get_cpu_capability().lower()
    flags = ""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        pass
    return "avx512" in capability and ("avx512_bf16" in flags or "amx_bf16" in flags)
