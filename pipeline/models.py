"""`pipeline models check DIR`: what a model folder (or a cached Hugging Face repo id) is, and which of the
project's model options it fits, each role checked by the code that will load it:

| role | option | checked by |
|---|---|---|
| visual | `--visual-model` (extract, generate) | `stages.visual.describe_clip_dir` (a CLIP vision config) |
| vae | `--vae` (extract, synth-mix, generate) | `stages.latent.latent_contract` (AutoencoderKL: 1 mel channel, 4x) |
| vocoder | `--vocoder` (generate) | `model.vocoder.vocoder_problems` (SpeechT5HifiGan for 64 mels, 16 kHz, hop 160) |
| asr | `--asr-model` (evaluate) | `pipeline.evaluate.models.asr_problem` (a ...ForCTC or speech-to-text model) |
| embedding | `--embedding-model` (evaluate) | `pipeline.evaluate.models.embedding_problem` (an audio encoder) |
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from manifests.errors import PipelineError
from stages.model_dir import check_model_dir, read_model_config, resolve_model_dir

RANDOM_INIT = "vssflow_random_init"   # what make-test-models writes into a tiny model's config
WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "diffusion_pytorch_model.safetensors",
           "pytorch_model.bin", "diffusion_pytorch_model.bin")


def _visual(path: Path) -> str:
    from stages.visual import describe_clip_dir

    info = describe_clip_dir(path)
    return f"{info['dim']}-d CLIP vision features, {info['image_size']} px, {info['layers']} layers"


def _vae(path: Path) -> str:
    from stages.latent import latent_contract

    info = latent_contract(path)
    return f"mel VAE: {info['channels']} latent channels at {info['fps']:g} fps"


def _vocoder(path: Path) -> str:
    from model.vocoder import vocoder_problems
    from stages.audio import MelConfig

    check_model_dir(path, "vocoder", ("model.safetensors", "pytorch_model.bin"))
    problems = vocoder_problems(read_model_config(path, "vocoder"), MelConfig())
    if problems:
        raise PipelineError("; ".join(problems))
    return "HiFi-GAN vocoder for the extract mel (64 bands, 16 kHz, hop 160)"


def _config_role(problem: Callable[[dict], Any], what: str) -> Callable[[Path], str]:
    def check(path: Path) -> str:
        check_model_dir(path, what)
        why = problem(read_model_config(path, what))
        if why:
            raise PipelineError(why)
        return what
    return check


def roles() -> dict[str, tuple[str, Callable[[Path], str]]]:
    from pipeline.evaluate.models import asr_problem, embedding_problem

    return {"visual": ("--visual-model (extract, generate)", _visual),
            "vae": ("--vae (extract, synth-mix, generate)", _vae),
            "vocoder": ("--vocoder (generate)", _vocoder),
            "asr": ("--asr-model (evaluate)", _config_role(asr_problem, "speech recogniser")),
            "embedding": ("--embedding-model (evaluate)", _config_role(embedding_problem, "audio encoder"))}


def describe_model(value: str) -> dict[str, Any]:
    """{path, cached (a repo id resolved from the cache), kind, weights, random_init, fits {role: what},
    misfits {role: why}}; a ModelDirError when there is no such folder."""
    path = resolve_model_dir(value, "model")
    config = read_model_config(check_model_dir(path, "model", WEIGHTS), "model")
    kind = config.get("_class_name") or ", ".join(config.get("architectures") or []) or config.get("model_type")
    fits, misfits = {}, {}
    for role, (option, check) in roles().items():
        try:
            fits[role] = f"{option}: {check(path)}"
        except (PipelineError, ValueError, OSError) as e:
            misfits[role] = f"{option}: {e}"
    random_init = bool(config.get(RANDOM_INIT) or (config.get("vision_config") or {}).get(RANDOM_INIT))
    return {"given": value, "path": str(path), "cached": str(path) != str(Path(value).expanduser()),
            "kind": kind, "weights": [w for w in WEIGHTS if (path / w).is_file()], "random_init": random_init,
            "fits": fits, "misfits": misfits}
