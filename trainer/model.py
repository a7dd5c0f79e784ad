"""The N-CORE model: an audio foundation model, two MLP heads and a gradient reversal layer.

Paper sections 3.2 and 3.5, docs/design.md section 5. The backbone is any Hugging Face audio
encoder with a ``last_hidden_state`` (HuBERT, Wav2Vec2, WavLM, ...). All ``1 + N`` views of
a batch go through it as ONE batch of ``B * (1 + N)`` waveforms. The embedding of a clip
is the mean of the last hidden state over its valid frames only.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.manifest import SAMPLE_RATE
from trainer.errors import TrainerError

log = logging.getLogger(__name__)

TINY = "tiny"
TINY_GROUP = "tiny-group"  # the tiny model with a group-norm feature encoder and no mask
TINY_PRESETS = (TINY, TINY_GROUP)


@dataclass(frozen=True)
class InputSpec:
    """How the backbone expects its input, from its feature extractor.

    ``do_normalize``: zero mean / unit variance per clip over its valid samples.
    ``return_attention_mask``: the backbone was trained with padding masks (wav2vec2
    "layer" models); the others (HuBERT base, wav2vec2-base) expect none, only zero padding.
    """

    do_normalize: bool = True
    return_attention_mask: bool = False
    sampling_rate: int = SAMPLE_RATE


def tiny_backbone_config(norm: str = "layer"):
    """A small HuBERT: 2 layers, 96 wide, 4 conv layers with stride product 320 (20 ms).

    ``norm="layer"`` (the ``tiny`` preset): layer-normalised conv features, so that it
    takes an attention mask. ``norm="group"`` (``tiny-group``): a group-norm first conv
    layer and no attention mask, as hubert-base and wav2vec2-base, whose embeddings depend
    on the zero padding of a batch. No layer drop or SpecAugment so that CPU runs are quick
    and deterministic. Random initialisation: it only learns at a high lr (~1e-3).
    """
    from transformers import HubertConfig

    return HubertConfig(
        hidden_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=192,
        conv_dim=(32, 48, 64, 96),
        conv_stride=(5, 4, 4, 4),
        conv_kernel=(10, 8, 4, 4),
        feat_extract_norm=norm,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        layerdrop=0.0,
        apply_spec_augment=False,
        mask_time_prob=0.0,
        mask_feature_prob=0.0,
    )


def load_backbone(name: str, seed: int = 0) -> tuple[nn.Module, InputSpec]:
    """The backbone and its input spec from a hub id, a local folder, ``"tiny"`` or
    ``"tiny-group"``.

    The tiny presets are built from :func:`tiny_backbone_config` with weights initialised
    from ``seed`` (so the same seed gives the same starting weights). Anything else goes through
    ``AutoModel.from_pretrained`` (the local cache first, so that no network is needed once
    a model has been downloaded; never ``trust_remote_code``).
    """
    if name in TINY_PRESETS:
        from transformers import HubertModel

        masked = name == TINY
        # Weight initialisation draws from torch's global generator: fork it so that the
        # caller's random state is untouched, and seed it so the tiny weights are fixed.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            backbone = HubertModel(tiny_backbone_config("layer" if masked else "group"))
        return backbone, InputSpec(do_normalize=True, return_attention_mask=masked)

    from transformers import AutoConfig, AutoModel

    local = Path(name).expanduser()
    looks_like_path = local.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1
    if looks_like_path and not local.is_dir():
        raise TrainerError(
            f"backbone {name!r} is not a folder: pass --backbone PATH to a folder written by "
            "save_pretrained, a Hugging Face id, or --backbone tiny"
        )
    source = str(local) if local.is_dir() else name
    backbone = None
    errors = []
    # The local cache first; the hub only when it answers at all (huggingface_hub would
    # otherwise retry for about half a minute, printing each retry, before giving up).
    online = os.environ.get("HF_HUB_OFFLINE", "0") not in ("1", "true", "True") and _hub_reachable()
    attempts = [True, False] if online else [True]
    for local_only in attempts:
        try:
            # Never run code shipped with a model (``auto_map``): explicitly False, so that
            # transformers refuses instead of asking on a terminal.
            config = AutoConfig.from_pretrained(
                source, local_files_only=local_only, trust_remote_code=False
            )
            backbone = AutoModel.from_pretrained(
                source, config=config, local_files_only=local_only, trust_remote_code=False
            )
            break
        except (OSError, ValueError) as error:  # not cached / no network / not a model
            if "trust_remote_code" in str(error):
                raise TrainerError(
                    f"backbone {name!r} asks to run its own Python code (auto_map in its "
                    "config.json); ncore-train never runs code from a model folder: use a "
                    "model that transformers supports natively"
                ) from None
            errors.append(str(error).splitlines()[0] if str(error) else type(error).__name__)
        except Exception as error:  # e.g. a pickled pytorch_model.bin refused by torch.load
            first = str(error).strip().splitlines()[0].split(". ")[0] if str(error).strip() else ""
            raise TrainerError(
                f"cannot load backbone {name!r}: its files cannot be loaded safely "
                f"({type(error).__name__}{': ' + first[:160] if first else ''}); use a folder "
                "written by save_pretrained (safetensors weights)"
            ) from None
    if backbone is None:
        log.debug("backbone %s: %s", name, " | ".join(errors))
        raise TrainerError(
            f"cannot load backbone {name!r} (not a local model folder and not downloadable "
            "now): download it once with network access, or pass --backbone PATH to a "
            "folder written by save_pretrained, or --backbone tiny"
        )
    return backbone, read_input_spec(source, backbone)


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the Hugging Face endpoint accepts a TCP connection within ``timeout_s``."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout_s):
            return True
    except OSError:
        return False


def read_input_spec(source: str, backbone: nn.Module) -> InputSpec:
    """Normalisation and masking from the model's feature extractor, if it has one.

    Without a preprocessor config, follow the wav2vec2 convention: models with
    layer-normalised conv features take an attention mask, group-normalised ones do not.
    """
    from transformers import AutoFeatureExtractor

    norm = getattr(backbone.config, "feat_extract_norm", "group")
    fallback = InputSpec(do_normalize=True, return_attention_mask=norm == "layer")
    try:
        extractor = AutoFeatureExtractor.from_pretrained(
            source, local_files_only=True, trust_remote_code=False
        )
    except (OSError, ValueError):
        log.warning("backbone %s has no feature extractor config; assuming %s", source, fallback)
        return fallback
    return InputSpec(
        do_normalize=bool(getattr(extractor, "do_normalize", fallback.do_normalize)),
        return_attention_mask=bool(
            getattr(extractor, "return_attention_mask", fallback.return_attention_mask)
        ),
        sampling_rate=int(getattr(extractor, "sampling_rate", SAMPLE_RATE)),
    )


def save_backbone(backbone: nn.Module, spec: InputSpec, folder: str | Path) -> None:
    """Write the backbone with ``save_pretrained`` plus a matching feature extractor, so
    ``AutoModel.from_pretrained(folder)`` and ``AutoFeatureExtractor`` both load it."""
    from transformers import Wav2Vec2FeatureExtractor
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one bar per save would flood the epoch log
    backbone.save_pretrained(str(folder), safe_serialization=True)
    Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=spec.sampling_rate,
        padding_value=0.0,
        do_normalize=spec.do_normalize,
        return_attention_mask=spec.return_attention_mask,
    ).save_pretrained(str(folder))


class GradientReversal(torch.autograd.Function):
    """Identity forward; the incoming gradient times ``-alpha`` backward (Ganin & Lempitsky)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: float) -> torch.Tensor:
        ctx.alpha = alpha
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        return -ctx.alpha * grad_output, None


def gradient_reversal(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """Apply the gradient reversal layer with strength ``alpha``."""
    return GradientReversal.apply(x, alpha)


def classification_head(dim: int, classes: int, dropout: float) -> nn.Sequential:
    """Linear(D, D), ReLU, Dropout, Linear(D, K) (paper section 3.5)."""
    return nn.Sequential(
        nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(dim, classes)
    )


@dataclass
class ModelOutput:
    """``embeddings`` (B, V, D); ``task_logits`` (B, K+) and ``adv_logits`` (B, K-) from view 0;
    ``adv_logits`` is None without an adversary."""

    embeddings: torch.Tensor
    task_logits: torch.Tensor
    adv_logits: torch.Tensor | None


class NCoreModel(nn.Module):
    """Backbone + masked mean pooling + task head h+ + (GRL -> adversarial head h-).

    ``adv_input`` and ``adv_condition`` shape what h- reads (``trainer/adversary.py``):
    ``raw`` / ``none`` is the paper's head on the pooled embedding; ``standardize`` or
    ``whiten`` put an :class:`~trainer.adversary.InputNorm` (running statistics, no
    parameters) before it; ``task-label`` appends the one-hot y+ to its input;
    ``reweight`` holds the (K+, K-) loss weights of :func:`~trainer.adversary.pair_weights`.
    """

    def __init__(
        self,
        backbone: nn.Module,
        spec: InputSpec,
        num_task_classes: int,
        num_adv_classes: int | None,
        dropout: float = 0.1,
        grl_alpha: float = 1.0,
        adv_input: str = "raw",
        adv_condition: str = "none",
    ) -> None:
        from trainer.adversary import InputNorm

        super().__init__()
        self.backbone = backbone
        self.spec = spec
        self.grl_alpha = grl_alpha
        self.task_classes = num_task_classes
        self.adv_condition = adv_condition if num_adv_classes else "none"
        dim = int(backbone.config.hidden_size)
        self.task_head = classification_head(dim, num_task_classes, dropout)
        self.adv_head = None
        self.adv_norm = None
        if num_adv_classes:
            extra = num_task_classes if self.adv_condition == "task-label" else 0
            self.adv_head = classification_head(dim + extra, num_adv_classes, dropout)
            # Built after the heads, so the paper's heads draw the same initial weights.
            if adv_input != "raw":
                self.adv_norm = InputNorm(dim, adv_input)
            if self.adv_condition == "reweight":
                ones = torch.ones(num_task_classes, num_adv_classes)
                self.register_buffer("adv_pair_weights", ones)

    def adversary_input(self, x: torch.Tensor) -> torch.Tensor:
        """What h- reads of embeddings ``x`` (B, D): standardised or whitened with the running
        statistics (no gradient into them), or ``x`` itself (``raw``)."""
        return x if self.adv_norm is None else self.adv_norm(x)

    def adversary_logits(self, x: torch.Tensor, y_task: torch.Tensor | None) -> torch.Tensor:
        """h-'s logits (B, K-) of embeddings ``x`` (B, D) (already through the GRL, or
        detached); ``y_task`` (B,) is needed by a ``task-label`` adversary (a label outside
        0..K+-1 gives it no label)."""
        x = self.adversary_input(x)
        if self.adv_condition == "task-label":
            if y_task is None:
                raise TrainerError("the task-label adversary needs the task labels")
            # A label outside the run's vocabulary (another manifest's) is an all-zero row.
            known = ((y_task >= 0) & (y_task < self.task_classes)).to(x.dtype)[:, None]
            one_hot = F.one_hot(y_task.clamp(0, self.task_classes - 1), self.task_classes)
            x = torch.cat([x, one_hot.to(x.dtype) * known], dim=1)
        return self.adv_head(x)

    def adversary_weights(
        self, y_task: torch.Tensor | None, y_adv: torch.Tensor
    ) -> torch.Tensor | None:
        """Per-clip loss weights (B,) of a ``reweight`` adversary; None otherwise."""
        if self.adv_condition != "reweight" or y_task is None:
            return None
        return self.adv_pair_weights[y_task, y_adv]

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Valid output frames for ``lengths`` valid samples, by the conv stack's formula."""
        formula = getattr(self.backbone, "_get_feat_extract_output_lengths", None)
        if formula is None:
            raise TrainerError(
                f"backbone {type(self.backbone).__name__} has no conv output-length formula"
            )
        return formula(lengths).to(torch.long)

    def embed(self, audio: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Embeddings of every view, shape (B, V, D).

        ``audio``: float (B, V, T) raw waveform in [-1, 1], zero after each clip's length
        (also accepted: (B, T) for one view). ``lengths``: int (B,) valid samples per clip,
        the same for all its views. The B*V waveforms go through the backbone as one batch.
        """
        if audio.dim() == 2:
            audio = audio[:, None, :]
        batch, views, samples = audio.shape
        flat = audio.reshape(batch * views, samples)
        flat_lengths = lengths.to(flat.device).repeat_interleave(views)
        valid = torch.arange(samples, device=flat.device)[None, :] < flat_lengths[:, None]
        if self.spec.do_normalize:
            flat = normalise_waveforms(flat, valid)
        flat = flat * valid  # padding stays exactly zero whatever the normalisation did
        attention_mask = valid.to(torch.long) if self.spec.return_attention_mask else None
        hidden = self.backbone(flat, attention_mask=attention_mask).last_hidden_state
        frames = self.frame_lengths(flat_lengths).clamp(min=1, max=hidden.shape[1])
        pooled = masked_mean(hidden, frames)
        return pooled.reshape(batch, views, -1)

    def forward(
        self, audio: torch.Tensor, lengths: torch.Tensor, y_task: torch.Tensor | None = None
    ) -> ModelOutput:
        """Embed all views; classify view 0 with h+ and, through the GRL, with h- (which a
        ``task-label`` adversary also gives ``y_task``)."""
        embeddings = self.embed(audio, lengths)
        x0 = embeddings[:, 0]
        task_logits = self.task_head(x0)
        adv_logits = None
        if self.adv_head is not None:
            adv_logits = self.adversary_logits(gradient_reversal(x0, self.grl_alpha), y_task)
        return ModelOutput(embeddings, task_logits, adv_logits)

    def infer(
        self, audio: torch.Tensor, lengths: torch.Tensor, y_task: torch.Tensor | None = None
    ) -> ModelOutput:
        """:meth:`forward` for evaluation, probes and ``embed``: a clip's outputs do not
        depend on the batch it is in (docs/evaluation.md).

        A backbone that takes an attention mask masks its padding: one padded forward. One
        that takes none (a group-norm feature encoder: hubert-base, wav2vec2-base) would
        normalise each clip's first conv layer over its zero padding too, so its clips go
        through in groups of equal length, each group cut to that length: no padding
        reaches the backbone. Training keeps padded batches, as those backbones' own
        fine-tuning recipes do. Shapes as :meth:`forward`.
        """
        if self.spec.return_attention_mask:
            return self(audio, lengths, y_task)
        if audio.dim() == 2:
            audio = audio[:, None, :]
        parts: list[tuple[torch.Tensor, ModelOutput]] = []
        for length in torch.unique(lengths).tolist():
            rows = torch.nonzero(lengths == length).flatten()
            labels = None if y_task is None else y_task[rows.to(y_task.device)]
            parts.append((rows, self(audio[rows, :, :length], lengths[rows], labels)))

        def gather(name: str) -> torch.Tensor | None:
            first = getattr(parts[0][1], name)
            if first is None:
                return None
            out = first.new_empty((audio.shape[0], *first.shape[1:]))
            for rows, part in parts:
                out[rows.to(out.device)] = getattr(part, name)
            return out

        return ModelOutput(gather("embeddings"), gather("task_logits"), gather("adv_logits"))


def normalise_waveforms(audio: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance per row over its valid samples (as Wav2Vec2FeatureExtractor:
    ``(x - mean) / sqrt(var + 1e-7)``). ``audio`` and ``valid``: (B, T)."""
    mask = valid.to(audio.dtype)
    count = mask.sum(dim=1, keepdim=True).clamp(min=1)
    mean = (audio * mask).sum(dim=1, keepdim=True) / count
    var = (((audio - mean) * mask) ** 2).sum(dim=1, keepdim=True) / count
    return (audio - mean) / torch.sqrt(var + 1e-7)


def masked_mean(hidden: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` (B, F, D) over the first ``frames[b]`` frames of each row -> (B, D)."""
    mask = torch.arange(hidden.shape[1], device=hidden.device)[None, :] < frames[:, None]
    mask = mask.to(hidden.dtype)[:, :, None]
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1)
