"""Optional VAE latents (docs/design.md, "Features"): AudioLDM's diffusers `AutoencoderKL` over the log-mel.

The VAE sees a log-mel as an image `[B, 1, T, 64]` (time as height, mel bands as width) and maps each 4x4 patch
to 8 channels: posterior `[B, 8, T/4, 16]`. We store it per latent frame as 8*16 = 128 channels at 25 fps,
**channel-major**: frame feature index `c * 16 + f` (VAE channel c, latent frequency bin f). A shard's
`K.latent.npy` is float16 `[T/4, 256]` = concat(mean[128], logvar[128]); the trainer samples
`mean + exp(logvar / 2) * eps`.

Mel normalisation: AudioLDM's VAE takes the natural-log mel exactly as `stages.audio.LogMel` makes it, with no
extra scaling or standardisation; none is applied here. The stored latents are the raw posterior, *not*
multiplied by the VAE's `scaling_factor` (recorded in `latent_contract` for the trainer to apply if it wants).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Optional

import numpy as np

from stages.base import Reject, Row, Stage
from stages.device import pick_device
from stages.format import rates
from stages.model_dir import ModelDirError, check_model_dir, read_model_config, resolve_model_dir

FREQ_DOWNSAMPLE = 4
LATENT_CHANNELS = 8
RANDOM_INIT_KEY = "_vssflow_random_init"  # set in config.json by make_tiny_vae; a leading "_" keeps diffusers quiet
LAYOUT = "channel-major: feature[c * 16 + f] = posterior[c, t, f]; stored row = concat(mean[128], logvar[128])"
_WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
_VALID_DIR_HINT = (
    "a valid VAE directory is a diffusers AutoencoderKL in save_pretrained layout: config.json plus "
    "diffusion_pytorch_model.safetensors (or .bin), e.g. the `vae/` folder of an AudioLDM checkpoint"
)


@dataclass(frozen=True, kw_only=True)
class LatentConfig:
    vae_dir: Optional[str] = None   # a diffusers AutoencoderKL directory; None = no latents
    batch_size: int = 8

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


def _check_vae_dir(model_dir: Path) -> tuple[dict[str, Any], Path]:
    """Config and weight file of a VAE directory, or a ModelDirError naming the path."""
    nested = model_dir / "vae" / "config.json"
    hint = f" (found {nested}: pass {model_dir / 'vae'})" if nested.is_file() else ""
    check_model_dir(model_dir, "VAE", _WEIGHT_FILES, hint=f"; {_VALID_DIR_HINT}{hint}")
    config = read_model_config(model_dir, "VAE")
    _check_interface(config, model_dir / "config.json")
    return config, next(model_dir / name for name in _WEIGHT_FILES if (model_dir / name).is_file())


def _check_interface(config: dict[str, Any], config_path: Path) -> None:
    """The latent contract (1 mel channel in, 8 latent channels, 4x down) that the trainer relies on."""
    problems = []
    if config.get("_class_name", "AutoencoderKL") != "AutoencoderKL":
        problems.append(f"_class_name {config.get('_class_name')!r} (need AutoencoderKL)")
    if config.get("in_channels") != 1 or config.get("out_channels") != 1:
        problems.append(f"in/out channels {config.get('in_channels')}/{config.get('out_channels')} (need 1/1)")
    if config.get("latent_channels") != LATENT_CHANNELS:
        problems.append(f"latent_channels {config.get('latent_channels')} (need {LATENT_CHANNELS})")
    blocks = config.get("block_out_channels") or []
    if 2 ** (len(blocks) - 1) != rates.MEL_PER_AUDIO_FRAME:
        problems.append(f"{len(blocks)} encoder blocks = {2 ** max(len(blocks) - 1, 0)}x down (need 3 blocks = 4x)")
    if problems:
        raise ModelDirError(f"VAE config {config_path} does not fit the mel-VAE contract: {'; '.join(problems)}")


def load_vae(model_dir: str | Path):
    """The diffusers `AutoencoderKL` in `model_dir`, in eval mode on CPU. No network: local files only."""
    from diffusers import AutoencoderKL

    model_dir = resolve_model_dir(model_dir, "VAE")
    _check_vae_dir(model_dir)
    try:
        vae = AutoencoderKL.from_pretrained(model_dir, local_files_only=True, low_cpu_mem_usage=False,
                                            use_safetensors=True)
    except (OSError, ValueError, RuntimeError) as e:
        raise ModelDirError(f"could not load the VAE from {model_dir}: {e}; {_VALID_DIR_HINT}") from e
    return vae.eval().requires_grad_(False)


def make_tiny_vae(out_dir: str | Path, seed: int = 0) -> Path:
    """Save a tiny randomly initialised AudioLDM-shaped VAE to `out_dir`. For tests and the demo ONLY.

    Same interface as the real one (1 channel in and out, 8 latent channels, three blocks = 4x down) with tiny
    widths; its config carries `_vssflow_random_init: true`, which `latent_contract` reports.
    """
    import torch
    from diffusers import AutoencoderKL

    out_dir = Path(out_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKL(
            in_channels=1,
            out_channels=1,
            latent_channels=LATENT_CHANNELS,
            down_block_types=("DownEncoderBlock2D",) * 3,
            up_block_types=("UpDecoderBlock2D",) * 3,
            block_out_channels=(8, 16, 16),
            layers_per_block=1,
            norm_num_groups=4,
            sample_size=256,
        )
    vae.register_to_config(**{RANDOM_INIT_KEY: True})
    vae.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def latent_contract(vae_dir: str | Path, *, mel_frames_per_second: float = rates.MEL_FPS,
                    n_mels: int = rates.MEL_BANDS) -> dict[str, Any]:
    """What `K.latent.npy` means, for `dataset.json`: rates, dims, layout, which VAE (path, weights hash, random?)."""
    vae_dir = resolve_model_dir(vae_dir, "VAE")
    config, weights = _check_vae_dir(vae_dir)
    digest = hashlib.sha256()
    with weights.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    freq_bins = n_mels // FREQ_DOWNSAMPLE
    channels = LATENT_CHANNELS * freq_bins
    return {
        "fps": mel_frames_per_second / rates.MEL_PER_AUDIO_FRAME,
        "channels": channels,
        "stored_channels": 2 * channels,
        "dtype": "float16",
        "layout": LAYOUT,
        "latent_channels": LATENT_CHANNELS,
        "freq_bins": freq_bins,
        "time_downsample": rates.MEL_PER_AUDIO_FRAME,
        "mel_input": "natural-log mel as made by stages.audio.LogMel, unscaled",
        "scaling_factor": config.get("scaling_factor"),
        "scaled": False,
        "vae_dir": str(vae_dir.resolve()),
        "weights_sha256": digest.hexdigest(),
        "random_init": bool(config.get(RANDOM_INIT_KEY, False)),
    }


# ----------------------------------------------------------------------------------------------------------------------
# Encode / decode


def latent_to_frames(z):
    """`[B, 8, T_l, 16]` -> `[B, T_l, 128]`, channel-major (c * 16 + f)."""
    b, c, t, f = z.shape
    return z.permute(0, 2, 1, 3).reshape(b, t, c * f)  # [B, T_l, C*F]


def frames_to_latent(frames, latent_channels: int = LATENT_CHANNELS):
    """`[B, T_l, 128]` -> `[B, 8, T_l, 16]`, inverse of `latent_to_frames`."""
    b, t, cf = frames.shape
    return frames.reshape(b, t, latent_channels, cf // latent_channels).permute(0, 2, 1, 3)  # [B, C, T_l, F]


def encode_mel(vae, mel):
    """Log-mel `[B, T, 64]` (torch, T a multiple of 4) -> (mean, logvar), each float32 `[B, T/4, 128]`."""
    import torch

    if mel.shape[1] % rates.MEL_PER_AUDIO_FRAME:
        raise ValueError(f"mel length {mel.shape[1]} is not a multiple of {rates.MEL_PER_AUDIO_FRAME}")
    param = next(vae.parameters())
    with torch.inference_mode():
        x = mel.to(device=param.device, dtype=param.dtype)[:, None]  # [B, 1, T, 64]
        posterior = vae.encode(x).latent_dist
        return latent_to_frames(posterior.mean).float(), latent_to_frames(posterior.logvar).float()


def decode_latent(vae, mean):
    """Latent frames `[T_l, 128]` (or `[B, T_l, 128]`) -> log-mel `[4*T_l, 64]` (or `[B, 4*T_l, 64]`).

    Takes the latent as stored (unscaled). numpy in, numpy float32 out; torch in, torch float32 out on vae's device.
    """
    import torch

    as_numpy = isinstance(mean, np.ndarray)
    frames = torch.from_numpy(np.asarray(mean, dtype=np.float32)) if as_numpy else mean
    single = frames.ndim == 2
    if single:
        frames = frames[None]
    param = next(vae.parameters())
    with torch.inference_mode():
        z = frames_to_latent(frames.to(device=param.device, dtype=param.dtype))  # [B, 8, T_l, 16]
        mel = vae.decode(z).sample[:, 0].float()  # [B, 4*T_l, 64]
    if single:
        mel = mel[0]
    return mel.cpu().numpy() if as_numpy else mel


# ----------------------------------------------------------------------------------------------------------------------
# The stage


class LatentStage(Stage):
    """row["mel"] `[T, 64]` -> row["latent"] float16 `[floor(T/4), 256]` = concat(mean, logvar), channel-major.

    T is cropped down to a multiple of 4 (the last T mod 4 mel frames, under 40 ms, have no latent frame).
    Rows are grouped by cropped length and each group encoded in chunks of `batch_size`, with no padding: a
    convolution's border and GroupNorm's statistics would otherwise see other rows' lengths, so grouping keeps
    a row's latent independent of what it was batched with.
    Rejects: too_short (fewer than 4 mel frames), bad_mel (NaN or Inf in the mel).
    A failure of the model itself (e.g. out of memory) is not a property of a sample and propagates to the
    executor, which retries the batch.
    """

    name: ClassVar[str] = "latent"

    def __init__(self, *, vae_dir: str, batch_size: int = 8, device: str = "auto"):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.vae_dir = str(vae_dir)
        self.batch_size = batch_size
        self.device = device
        self._vae = None

    def setup(self) -> None:

        self._vae = load_vae(self.vae_dir).to(pick_device(self.device))

    def _check_row(self, row: Row) -> None:
        mel = np.asarray(row["mel"])
        if mel.ndim != 2 or mel.shape[1] % FREQ_DOWNSAMPLE:
            raise ValueError(f"expected mel [T, n_mels] with n_mels a multiple of 4, got shape {mel.shape}")
        if mel.shape[0] < rates.MEL_PER_AUDIO_FRAME:
            raise Reject("too_short", f"{mel.shape[0]} mel frames; a latent frame needs {rates.MEL_PER_AUDIO_FRAME}")
        if not np.isfinite(mel).all():
            raise Reject("bad_mel", "mel holds NaN or Inf")

    def process_batch(self, rows: list[Row]) -> None:
        import torch

        if self._vae is None:
            self.setup()
        for row in rows:
            self.guarded(row, self._check_row, row)
        groups: dict[tuple[int, int], list[Row]] = {}
        for row in rows:
            if row.get("reject_reason") is None:
                t, n_mels = np.shape(row["mel"])
                groups.setdefault((rates.audio_frames(t) * rates.MEL_PER_AUDIO_FRAME, n_mels), []).append(row)
        for (t, _), group in groups.items():
            for start in range(0, len(group), self.batch_size):
                chunk = group[start : start + self.batch_size]
                mel = torch.from_numpy(np.stack([np.asarray(r["mel"], dtype=np.float32)[:t] for r in chunk]))
                mean, logvar = encode_mel(self._vae, mel)  # [B, t/4, 128] each
                stored = torch.cat([mean, logvar], dim=-1).cpu().numpy().astype(np.float16)  # [B, t/4, 256]
                for row, latent in zip(chunk, stored):
                    row["latent"] = latent
