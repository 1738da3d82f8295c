"""The masked speech task (masked acoustic modelling, Mockingjay/TERA pre-training): the audio
data of the speech recognition task (every dataset, option, batching and augmentation of it; the
transcripts are read but not used), and the L1 loss of the masked log-mel frames."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from tasks.base import Batch, Task, iterate, register_task, unwrap
from tasks.masked_speech.model import masked_frame_loss
from tasks.speech.audio import read_audio
from tasks.speech.task import SpeechRecognitionTask


@register_task
class MaskedSpeechTask(SpeechRecognitionTask):
    """Masked acoustic model pre-training of ``MaskedSpeechModel`` models on speech datasets.

    ``recipe.data`` and ``augment`` (``speed_perturb``, ``noise_snr``) are read as for speech
    recognition. The mask ratio and span lengths are the model's
    (``model.overrides.mask_ratio``, ``mask_span``). Training masks come from the global RNG
    (saved by checkpoints); evaluation masks from ``train.seed`` and the batch's position, so
    validation losses compare across checkpoints.
    """

    name: ClassVar[str] = "masked_speech"
    metric: ClassVar[str] = "loss"
    metric_mode: ClassVar[str] = "min"
    metrics: ClassVar[tuple[str, ...]] = ("loss",)

    def prepare(self) -> dict[str, Any]:
        """The speech task's splits and vocabulary (kept with the model, unused); no model
        setting follows from the data: a masked acoustic model has no vocabulary."""
        settings = super().prepare()
        del settings["vocab_size"]
        return settings

    def _check_model(self, model: nn.Module) -> None:
        self._check_speaker_norm(model.cfg)  # the recogniser's vocabulary checks do not apply

    def loss(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        """L1 error of the masked frames, fresh masks every step (speed perturbation and
        noise first, as the speech task does)."""
        if not self._checked:
            self._check_model(unwrap(model))
            self._checked = True
        batch = self._augment(model, batch)
        lengths = batch["audio_lengths"]
        out = model(batch["audio"], lengths, None, batch.get("feat_stats"))  # for DDP
        loss, count = masked_frame_loss(out)
        return loss, {"loss": loss.item(), "masked": count.item() / len(lengths)}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        """``loss``: the L1 error over every masked frame of the loader, on masks fixed by the
        seed (batch i: ``train.seed + i``)."""
        was_training = model.training
        model.eval()
        inner = unwrap(model)
        device = next(model.parameters()).device
        total, frames = 0.0, 0.0
        for i, batch in enumerate(iterate(loader, device)):
            audio, lengths = batch["audio"], batch["audio_lengths"]
            generator = torch.Generator().manual_seed(self.seed + i)
            mask = inner.draw_mask(audio, lengths, generator)
            loss, count = masked_frame_loss(model(audio, lengths, mask, batch.get("feat_stats")))
            total += loss.item() * count.item()
            frames += count.item()
        model.train(was_training)
        if frames == 0:
            raise ValueError("cannot evaluate on an empty loader (or one without masked frames)")
        return {"loss": total / frames}

    def write_report(self, directory: Path, split: str) -> list[str]:
        return []  # no transcripts are decoded

    def ensemble(
        self, model: nn.Module, others: list[tuple[Path, nn.Module, dict[str, Any]]]
    ) -> nn.Module:
        return Task.ensemble(self, model, others)  # not supported

    @torch.no_grad()
    def predict(self, model: nn.Module, inputs: Sequence[str], seed: int = 0,
                **options: Any) -> list[str]:
        """``"path: masked-frame L1 error E (M of N frames masked)"`` for each audio file,
        file i masked from ``seed + i``."""
        model = unwrap(model).eval()
        if model.cfg.feature_norm == "speaker":
            raise ValueError("predict of a masked speech model with feature_norm=speaker is not "
                             "supported: it has no speaker statistics for single files")
        device = next(model.parameters()).device
        lines = []
        for i, path in enumerate(inputs):
            wave = read_audio(path, model.cfg.sample_rate)
            if int(model.output_lengths(torch.tensor([len(wave)]))[0]) < 1:
                raise ValueError(f"audio file {path} is too short ({len(wave)} samples)")
            if (too_long := self._too_long(model, path, len(wave))) is not None:
                raise ValueError(too_long)
            audio = wave[None].to(device)
            mask = model.draw_mask(audio, None, torch.Generator().manual_seed(seed + i))
            loss, count = masked_frame_loss(model(audio, None, mask))
            lines.append(f"{path}: masked-frame L1 error {loss.item():.4f} ({int(count)} of "
                         f"{mask.shape[1]} frames masked)")
        return lines
