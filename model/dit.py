"""The VSSFlow network: a DiT that predicts the flow-matching velocity of an audio sequence.

Conditions enter the way the paper prescribes: semantic ones through cross-attention, temporally intensive ones
concatenated per frame in self-attention.

- the **transcript** (a phoneme track already stretched to audio frames, model/batch.py) is embedded and concatenated
  per frame to the noisy audio before the input projection, so it acts through self-attention;
- the **temporal streams** the config names (mouth crops or lip features, sync features: model/streams.py), already
  resampled to the audio frames, are embedded and concatenated the same way, each with its validity mask;
- the **timestep** (Fourier features -> MLP) is a token prepended to the sequence and dropped at the output;
- the **cross-attention context** is [speaker | CLIP | null]: the speaker token (config.ref_token; masked when a
  sample has none), the 10 fps video features (-> MLP), and a learned "null" token.

Positions. Self-attention uses RoPE over audio frame indices 0..T-1; the timestep token sits at position 0 (beside the
first frame: RoPE is relative, so only its distance to each frame matters and its content tells it apart).
With `video_positions: rope` cross-attention uses RoPE too, on one shared time base: audio query i at position i and
video row j (the frame shown at j / video_fps s) at position j * audio_fps / video_fps, so a query's score for a video
key depends on their time distance; the speaker and null tokens sit at 0. With `none` (the reference's choice: timing
comes through the self-attention streams) no key or query of cross-attention is rotated. The null token is always
there, so a sample whose video is absent or dropped (all-False `video_mask`) still has one key to attend to: no NaNs,
and "no video" is a learned signal.

Padded audio frames are masked as keys in self-attention and their output velocity is set to zero.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.config import DiTConfig
from model.streams import stream_embeds, streams_width

TIME_FOURIER_DIM = 256      # sinusoidal features of the timestep, as in DiT
TIME_SCALE = 1000.0         # t in [0, 1] is scaled so its features span the usual frequency range

Rope = tuple[Tensor, Tensor]   # cos and sin of the rotation angles, [L, head_dim / 2] each


def rope_angles(positions: Tensor, head_dim: int, base: float) -> tuple[Tensor, Tensor]:
    """cos and sin, each [L, head_dim / 2], for float positions [L] (fractional positions allowed)."""
    exponents = torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim
    inv_freq = base ** -exponents                                   # [D/2]
    angles = positions.float()[:, None] * inv_freq[None, :]          # [L, D/2]
    return angles.cos(), angles.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate x [B, H, L, D] by the angles of its L positions (the two halves of D form the rotated pairs)."""
    x1, x2 = x.float().chunk(2, dim=-1)                              # [B, H, L, D/2] each
    rotated = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)  # [B, H, L, D]
    return rotated.type_as(x)


def timestep_features(t: Tensor, dim: int = TIME_FOURIER_DIM, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal Fourier features [B, dim] of timesteps t [B] in [0, 1]."""
    half = dim // 2
    steps = torch.arange(half, device=t.device, dtype=torch.float32)
    freqs = torch.exp(-math.log(max_period) * steps / half)          # [dim/2]
    args = (t.float() * TIME_SCALE)[:, None] * freqs[None, :]        # [B, dim/2]
    return torch.cat([args.cos(), args.sin()], dim=-1)               # [B, dim]


class RMSNorm(nn.RMSNorm):
    """nn.RMSNorm computed in float32 (stable, and fused under bf16 autocast), returned in the input's dtype."""

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x.float(), self.normalized_shape, self.weight.float(), self.eps).type_as(x)


class Attention(nn.Module):
    """Multi-head attention with RMS-normalised queries/keys and RoPE; self-attention when context is None."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.heads, self.head_dim, self.dropout = cfg.heads, cfg.head_dim, cfg.dropout
        self.q = nn.Linear(cfg.width, cfg.width, bias=False)
        self.kv = nn.Linear(cfg.width, 2 * cfg.width, bias=False)
        self.q_norm = RMSNorm(cfg.head_dim, eps=1e-6)
        self.k_norm = RMSNorm(cfg.head_dim, eps=1e-6)
        self.proj = nn.Linear(cfg.width, cfg.width, bias=False)

    def forward(self, x: Tensor, q_rope: Rope | None, kv_rope: Rope | None, key_mask: Tensor,
                context: Tensor | None = None) -> Tensor:
        """x [B, L, W], context [B, S, W] (x itself when None), key_mask [B, S] bool (True = attend) -> [B, L, W].
        Queries and keys are rotated by their RoPE angles, or not at all when those are None."""
        source = x if context is None else context
        B, L, W = x.shape
        S = source.shape[1]
        q = self.q(x).view(B, L, self.heads, self.head_dim).transpose(1, 2)                    # [B, H, L, D]
        k, v = self.kv(source).view(B, S, 2, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # [B, H, S, D] each
        q, k = self.q_norm(q), self.k_norm(k)
        if q_rope is not None:
            q, k = apply_rope(q, *q_rope), apply_rope(k, *kv_rope)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=key_mask[:, None, None, :],                                     # [B, 1, 1, S]
            dropout_p=self.dropout if self.training else 0.0)                                 # [B, H, L, D]
        return self.proj(out.transpose(1, 2).reshape(B, L, W))                                 # [B, L, W]


class SwiGLU(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.gate_up = nn.Linear(cfg.width, 2 * cfg.mlp_hidden, bias=False)
        self.down = nn.Linear(cfg.mlp_hidden, cfg.width, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)                  # [B, L, hidden] each
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    """Pre-norm self-attention -> pre-norm cross-attention (to the video context) -> pre-norm SwiGLU, with residuals."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.norm_self = RMSNorm(cfg.width, eps=1e-6)
        self.self_attn = Attention(cfg)
        self.norm_cross = RMSNorm(cfg.width, eps=1e-6)
        self.cross_attn = Attention(cfg)
        self.norm_ffn = RMSNorm(cfg.width, eps=1e-6)
        self.ffn = SwiGLU(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, self_rope: Rope, self_mask: Tensor,
                context: Tensor, context_rope: Rope | None, context_mask: Tensor) -> Tensor:
        x = x + self.drop(self.self_attn(self.norm_self(x), self_rope, self_rope, self_mask))
        query_rope = self_rope if context_rope is not None else None
        x = x + self.drop(self.cross_attn(self.norm_cross(x), query_rope, context_rope, context_mask, context))
        return x + self.drop(self.ffn(self.norm_ffn(x)))


class VSSFlowDiT(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.cfg = cfg
        W = cfg.width
        self.phone_embed = nn.Embedding(cfg.phone_vocab_size, cfg.phone_dim, padding_idx=0)  # id 0 -> zeros
        self.streams = stream_embeds(cfg) if cfg.streams else None   # None: old checkpoints load unchanged
        self.in_proj = nn.Linear(cfg.audio_dim + cfg.phone_dim + streams_width(cfg), W)
        self.time_mlp = nn.Sequential(nn.Linear(TIME_FOURIER_DIM, W), nn.SiLU(), nn.Linear(W, W))
        self.video_mlp = nn.Sequential(nn.Linear(cfg.video_dim, W), nn.SiLU(), nn.Linear(W, W))
        self.null_token = nn.Parameter(torch.empty(W))
        self.ref_proj = nn.Linear(cfg.ref_dim, W) if cfg.ref_token else None
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.out_norm = RMSNorm(W, eps=1e-6)
        self.out_proj = nn.Linear(W, cfg.audio_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.normal_(self.phone_embed.weight, std=0.02)
        with torch.no_grad():
            self.phone_embed.weight[0].zero_()
        nn.init.normal_(self.null_token, std=0.02)
        for layer in (self.time_mlp[0], self.time_mlp[2]):
            nn.init.normal_(layer.weight, std=0.02)
        # Zero-initialised output: the network predicts zero velocity at the start of training.
        nn.init.zeros_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)

    def _speaker(self, ref: Tensor | None, ref_mask: Tensor | None, batch: int, like: Tensor) -> tuple[Tensor, Tensor]:
        """The speaker token [B, 1, W] and its key mask [B, 1]; masked (zeros) when the batch has no reference."""
        if ref is None:
            return (torch.zeros(batch, 1, self.cfg.width, dtype=like.dtype, device=like.device),
                    torch.zeros(batch, 1, dtype=torch.bool, device=like.device))
        if ref.shape != (batch, self.cfg.ref_dim):
            raise ValueError(f"ref must be [{batch}, {self.cfg.ref_dim}], got {tuple(ref.shape)}")
        mask = torch.ones(batch, dtype=torch.bool, device=like.device) if ref_mask is None else ref_mask.bool()
        return self.ref_proj(ref.to(like.dtype))[:, None, :], mask[:, None]

    def _context(self, video: Tensor | None, video_mask: Tensor | None, batch: int, ref: Tensor | None,
                 ref_mask: Tensor | None, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Cross-attention context [speaker | CLIP | null] [B, S, W], its key mask [B, S] and key positions [S] on
        the audio time base."""
        cfg, device = self.cfg, like.device
        tokens, masks, positions = [], [], []
        if self.ref_proj is not None:
            token, mask = self._speaker(ref, ref_mask, batch, like)
            tokens.append(token)
            masks.append(mask)
            positions.append(torch.zeros(1, device=device))
        elif ref is not None:
            raise ValueError("a speaker reference was given but config.ref_token is False")
        if video is not None:
            if video_mask is None or video_mask.shape != video.shape[:2]:
                raise ValueError("video_mask [B, Tv] must come with video [B, Tv, Dv]")
            if video.shape[-1] != cfg.video_dim:
                raise ValueError(f"video has {video.shape[-1]} dims, config expects {cfg.video_dim}")
            if video.shape[1] > cfg.max_video_frames:
                raise ValueError(f"{video.shape[1]} video frames exceed max_video_frames={cfg.max_video_frames}")
            tokens.append(self.video_mlp(video.to(like.dtype)))                          # [B, Tv, W]
            masks.append(video_mask.bool())
            rows = torch.arange(video.shape[1], device=device, dtype=torch.float32)
            positions.append(rows * (cfg.audio_fps / cfg.video_fps))                        # [Tv]
        tokens.append(self.null_token.to(like.dtype).expand(batch, 1, -1))                 # [B, 1, W]
        masks.append(torch.ones(batch, 1, dtype=torch.bool, device=device))
        positions.append(torch.zeros(1, device=device))
        return torch.cat(tokens, dim=1), torch.cat(masks, dim=1), torch.cat(positions)

    def _frame_inputs(self, x_t: Tensor, phones_track: Tensor, streams: dict[str, Tensor] | None,
                      stream_masks: dict[str, Tensor] | None) -> Tensor:
        """[noisy audio | phonemes | each stream] per frame: [B, T, A + P + sum of stream dims]."""
        B, T, _ = x_t.shape
        parts = [x_t, self.phone_embed(phones_track.long()).to(x_t.dtype)]                  # [B, T, A], [B, T, P]
        if self.streams is not None:
            streams, stream_masks = streams or {}, stream_masks or {}
            unknown = sorted(set(streams) - set(self.streams))
            if unknown:
                raise ValueError(f"streams {unknown} given; this model was built for {sorted(self.streams)}")
            for name, embed in self.streams.items():
                parts.append(embed(streams.get(name), stream_masks.get(name), B, T, x_t))    # [B, T, dim]
        elif streams:
            raise ValueError(f"streams {sorted(streams)} given; this model was built without streams")
        return torch.cat(parts, dim=-1)

    def forward(self, x_t: Tensor, t: Tensor, phones_track: Tensor, video: Tensor | None, video_mask: Tensor | None,
                audio_mask: Tensor, ref: Tensor | None = None, ref_mask: Tensor | None = None,
                streams: dict[str, Tensor] | None = None, stream_masks: dict[str, Tensor] | None = None) -> Tensor:
        """Velocity [B, T, A] of the noisy audio x_t [B, T, A] at time t [B].

        phones_track [B, T] int (0 = no phone), video [B, Tv, Dv] with video_mask [B, Tv] bool (None, None: no
        video in the batch), audio_mask [B, T] bool (True = valid frame), ref [B, ref_dim] with ref_mask [B] bool,
        streams {name: [B, T, *frame shape]} at the audio frame rate with stream_masks {name: [B, T] bool}
        (a stream left out is absent for every sample).
        """
        cfg = self.cfg
        B, T, A = x_t.shape
        if A != cfg.audio_dim:
            raise ValueError(f"x_t has {A} channels, config expects audio_dim={cfg.audio_dim}")
        if phones_track.shape != (B, T) or audio_mask.shape != (B, T) or t.shape != (B,):
            raise ValueError("phones_track and audio_mask must be [B, T] and t must be [B]")
        if T > cfg.max_audio_frames:
            raise ValueError(f"{T} audio frames exceed max_audio_frames={cfg.max_audio_frames}")
        audio_mask = audio_mask.bool()

        h = self.in_proj(self._frame_inputs(x_t, phones_track, streams, stream_masks))     # [B, T, W]
        time_token = self.time_mlp(timestep_features(t))[:, None, :]                         # [B, 1, W]
        h = torch.cat([time_token.to(h.dtype), h], dim=1)                                   # [B, 1+T, W]
        self_mask = torch.cat([torch.ones_like(audio_mask[:, :1]), audio_mask], dim=1)      # [B, 1+T]
        positions = torch.arange(-1, T, device=x_t.device, dtype=torch.float32).clamp_min(0)  # [1+T]: 0, 0, 1, ...
        self_rope = rope_angles(positions, cfg.head_dim, cfg.rope_base)                      # [1+T, D/2]

        context, context_mask, context_pos = self._context(video, video_mask, B, ref, ref_mask, h)
        context_rope = (rope_angles(context_pos, cfg.head_dim, cfg.rope_base)               # [S, D/2]
                        if cfg.video_positions == "rope" else None)
        for block in self.blocks:
            h = block(h, self_rope, self_mask, context, context_rope, context_mask)

        velocity = self.out_proj(self.out_norm(h[:, 1:]))                                   # [B, T, A]
        return velocity * audio_mask[..., None].to(velocity.dtype)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (works on a model built on the "meta" device)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
