"""stages/latent.py with the tiny random AudioLDM-shaped VAE: save/load, shapes, layout, batch independence."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from stages.audio import LogMel
from stages.latent import (
    LatentStage,
    decode_latent,
    encode_mel,
    frames_to_latent,
    latent_contract,
    latent_to_frames,
    load_vae,
    make_tiny_vae,
)
from stages.model_dir import ModelDirError


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    return make_tiny_vae(tmp_path_factory.mktemp("vae") / "tiny_vae", seed=0)


@pytest.fixture(scope="module")
def vae(vae_dir):
    return load_vae(vae_dir)


def mel_of_noise(seconds: float, seed: int) -> np.ndarray:
    """A real log-mel (of noise), float16 [T, 64] as the audio stage stores it."""
    wave = np.random.default_rng(seed).standard_normal(int(seconds * 16000)).astype(np.float32) * 0.1
    return LogMel()(wave).astype(np.float16)


def test_tiny_vae_saves_loads_and_is_marked_test_only(vae_dir, vae, tmp_path):
    config = json.loads((vae_dir / "config.json").read_text())
    assert config["_vssflow_random_init"] is True
    assert config["in_channels"] == 1 and config["latent_channels"] == 8 and len(config["block_out_channels"]) == 3
    assert (vae_dir / "diffusion_pytorch_model.safetensors").is_file()
    assert not vae.training
    same = make_tiny_vae(tmp_path / "again", seed=0)
    other = make_tiny_vae(tmp_path / "other", seed=1)
    assert latent_contract(same)["weights_sha256"] == latent_contract(vae_dir)["weights_sha256"]
    assert latent_contract(other)["weights_sha256"] != latent_contract(vae_dir)["weights_sha256"]
    mel = torch.from_numpy(mel_of_noise(0.4, 0).astype(np.float32))[None]  # [1, 40, 64]
    mean_a, _ = encode_mel(vae, mel)
    mean_b, _ = encode_mel(load_vae(same), mel)
    torch.testing.assert_close(mean_a, mean_b, rtol=0, atol=0)


def test_latent_contract(vae_dir):
    contract = latent_contract(vae_dir)
    assert contract["fps"] == 25 and contract["channels"] == 128 and contract["stored_channels"] == 256
    assert contract["random_init"] is True
    assert contract["vae_dir"] == str(vae_dir.resolve())
    assert "channel-major" in contract["layout"] and contract["scaled"] is False
    json.dumps(contract)  # goes into dataset.json as is


def test_layout_is_channel_major():
    z = torch.arange(2 * 8 * 5 * 16, dtype=torch.float32).reshape(2, 8, 5, 16)  # [B, C, T_l, F]
    frames = latent_to_frames(z)
    assert frames.shape == (2, 5, 128)
    for c, t, f in [(0, 0, 0), (3, 2, 7), (7, 4, 15)]:
        assert frames[1, t, c * 16 + f] == z[1, c, t, f]
    torch.testing.assert_close(frames_to_latent(frames), z, rtol=0, atol=0)


def test_latent_stage_shapes_and_values(vae_dir, vae):
    mels = {"a": mel_of_noise(1.0, 1), "b": mel_of_noise(1.03, 2), "c": mel_of_noise(0.05, 3)}  # T = 100, 103, 5
    rows = [{"clip_id": k, "mel": m} for k, m in mels.items()]
    LatentStage(vae_dir=str(vae_dir), batch_size=2, device="cpu")(rows)
    out = {r["clip_id"]: r for r in rows}
    for key, t_latent in [("a", 25), ("b", 25), ("c", 1)]:
        latent = out[key]["latent"]
        assert out[key].get("reject_reason") is None
        assert latent.dtype == np.float16 and latent.shape == (t_latent, 256)
        assert np.isfinite(latent).all()
    # stored = concat(mean, logvar) of the posterior, channel-major, from the floor-cropped mel
    mel_b = torch.from_numpy(mels["b"][:100].astype(np.float32))[None, None]  # [1, 1, 100, 64]
    with torch.inference_mode():
        posterior = vae.encode(mel_b).latent_dist
    stored = out["b"]["latent"].astype(np.float32)
    for c, t, f in [(0, 0, 0), (5, 10, 3), (7, 24, 15)]:
        assert stored[t, c * 16 + f] == pytest.approx(float(posterior.mean[0, c, t, f]), abs=2e-3)
        assert stored[t, 128 + c * 16 + f] == pytest.approx(float(posterior.logvar[0, c, t, f]), abs=2e-3)


def test_latent_is_independent_of_batch_composition(vae_dir, vae):
    target = mel_of_noise(0.8, 10)  # T = 80
    others = [mel_of_noise(0.8, 11), mel_of_noise(0.8, 12), mel_of_noise(1.2, 13)]
    # float32, straight from the encoder
    alone, _ = encode_mel(vae, torch.from_numpy(target.astype(np.float32))[None])
    batch = torch.from_numpy(np.stack([target, others[0], others[1]]).astype(np.float32))
    together, _ = encode_mel(vae, batch)
    torch.testing.assert_close(together[0], alone[0], rtol=0, atol=1e-4)
    # through the stage (float16 storage: allow one fp16 ulp on top)
    solo = [{"mel": target}]
    mixed = [{"mel": others[2]}, {"mel": others[0]}, {"mel": target}, {"mel": others[1]}]
    LatentStage(vae_dir=str(vae_dir), batch_size=1, device="cpu")(solo)
    LatentStage(vae_dir=str(vae_dir), batch_size=8, device="cpu")(mixed)
    np.testing.assert_allclose(
        mixed[2]["latent"].astype(np.float32), solo[0]["latent"].astype(np.float32), atol=1e-4, rtol=2**-10
    )


def test_latent_stage_rejects(vae_dir):
    bad = mel_of_noise(0.2, 4)
    bad[3, 5] = np.nan
    rows = [{"mel": mel_of_noise(0.03, 5)}, {"mel": bad}, {"mel": mel_of_noise(0.2, 6)}]  # T = 3, 20 with NaN, 20
    LatentStage(vae_dir=str(vae_dir), device="cpu")(rows)
    assert rows[0]["reject_reason"] == "too_short" and "latent" not in rows[0]
    assert rows[1]["reject_reason"] == "bad_mel" and "latent" not in rows[1]
    assert rows[2].get("reject_reason") is None and rows[2]["latent"].shape == (5, 256)


def test_encode_needs_a_multiple_of_four(vae):
    with pytest.raises(ValueError, match="multiple of 4"):
        encode_mel(vae, torch.zeros(1, 10, 64))


def test_decode_latent_shapes(vae):
    mean = np.random.default_rng(0).standard_normal((6, 128)).astype(np.float16)
    mel = decode_latent(vae, mean)
    assert isinstance(mel, np.ndarray) and mel.dtype == np.float32 and mel.shape == (24, 64)
    batch = decode_latent(vae, torch.from_numpy(mean.astype(np.float32))[None].repeat(2, 1, 1))
    assert isinstance(batch, torch.Tensor) and batch.shape == (2, 24, 64)
    torch.testing.assert_close(batch[1], torch.from_numpy(mel), rtol=0, atol=1e-5)


def test_missing_or_invalid_vae_dir_errors_name_the_path(vae_dir, tmp_path):
    missing = tmp_path / "no_such_vae"
    with pytest.raises(FileNotFoundError, match="config.json") as err:
        load_vae(missing)
    assert str(missing) in str(err.value) and "does not exist" in str(err.value)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json") as err:
        load_vae(empty)
    assert str(empty) in str(err.value)

    pipeline_root = tmp_path / "audioldm"
    shutil.copytree(vae_dir, pipeline_root / "vae")
    with pytest.raises(FileNotFoundError, match="pass .*vae"):
        load_vae(pipeline_root)

    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    shutil.copy(vae_dir / "config.json", no_weights / "config.json")
    with pytest.raises(FileNotFoundError, match="no weights"):
        load_vae(no_weights)

    corrupt = tmp_path / "corrupt"
    shutil.copytree(vae_dir, corrupt)
    (corrupt / "config.json").write_text("{not json")
    with pytest.raises(ModelDirError, match="unreadable"):
        load_vae(corrupt)

    wrong = tmp_path / "wrong"
    shutil.copytree(vae_dir, wrong)
    config = json.loads((wrong / "config.json").read_text())
    (wrong / "config.json").write_text(json.dumps(config | {"in_channels": 3, "latent_channels": 4}))
    with pytest.raises(ModelDirError, match="mel-VAE contract"):
        load_vae(wrong)

    truncated = tmp_path / "truncated"
    shutil.copytree(vae_dir, truncated)
    (truncated / "diffusion_pytorch_model.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(ModelDirError, match=str(truncated)):
        load_vae(truncated)
