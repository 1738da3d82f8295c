"""Speech recognition task: audio reading, datasets, batching, loss, CTC decoding, saving and the
``zoo transcribe`` command. WAV files are written by the tests themselves with soundfile."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

import zoo
import zoo.commands_speech  # noqa: F401  (registers `zoo transcribe`)
from tasks.base import get_task
from tasks.speech.audio import AudioError, add_noise, read_audio, speed_perturb
from tasks.speech.data import connected_digits, fsdd_clips, fsdd_pools
from tasks.speech.decoding import (
    ctc_greedy,
    ctc_log_likelihood,
    ctc_prefix_beam_search,
    decode_batch,
)
from tasks.speech.model import CTCEnsemble
from tasks.speech.tones import ToneDigits, tone_pair
from tasks.speech.vocab import CharVocab, normalize_text
from zoo.checkpoint import save_pretrained
from zoo.cli import main
from zoo.config import recipe_from_dict

SR = 16000


def make_task(dataset: str = "synthetic", root: Path | str | None = None,
              sections: dict | None = None, **options):
    """The task of a recipe with these ``data.options`` and other ``sections`` (augment...)."""
    data = {"dataset": dataset, "root": str(root) if root else None, "options": options}
    recipe = recipe_from_dict({
        "task": "speech_recognition", "model": {"name": "test_asr_transformer"},
        "data": data, "train": {"max_steps": 1, "label_smoothing": 0.1}, **(sections or {}),
    })
    return get_task("speech_recognition")(recipe)


def write_wav(path: Path, seconds: float = 0.3, rate: int = SR, channels: int = 1,
              freq: float = 440.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    sf.write(str(path), np.stack([wave] * channels, 1) if channels > 1 else wave, rate)
    return path


@pytest.fixture(scope="module")
def fsdd_root(tmp_path_factory) -> Path:
    """A miniature FSDD folder: 3 speakers x 10 digits x 6 recordings, 8 kHz tone clips."""
    root = tmp_path_factory.mktemp("fsdd")
    for spk in ("ann", "bob", "cid"):
        for d in range(10):
            for i in range(6):
                write_wav(root / "recordings" / f"{d}_{spk}_{i}.wav", 0.15 + 0.01 * i, 8000,
                          freq=tone_pair(d)[0])
    return root


# -- audio reading ------------------------------------------------------------------------------
def test_read_audio_resamples_and_downmixes(tmp_path):
    mono8k = read_audio(write_wav(tmp_path / "a.wav", 0.5, 8000), SR)
    assert mono8k.shape == (8000,) and mono8k.dtype == torch.float32
    assert mono8k.abs().max() == pytest.approx(0.3, abs=0.01)  # a 440 Hz tone survives
    left = 0.4 * np.sin(2 * np.pi * 440 * np.arange(4410) / 44100)
    sf.write(str(tmp_path / "b.wav"), np.stack([left, np.zeros_like(left)], 1), 44100)
    stereo = read_audio(tmp_path / "b.wav", SR)
    assert stereo.shape == (1600,) and stereo.abs().max() == pytest.approx(0.2, abs=0.01)


@pytest.mark.parametrize("kind", ["empty", "corrupt", "missing"])
def test_bad_audio_named(tmp_path, kind):
    path = tmp_path / f"{kind}.wav"
    if kind == "empty":
        sf.write(str(path), np.zeros(0, np.float32), SR)
    elif kind == "corrupt":
        path.write_bytes(b"RIFF\x00\x00not a wave file" * 20)
    with pytest.raises(AudioError, match=re.escape(str(path))) as err:
        read_audio(path, SR)
    assert "\n" not in str(err.value)


def test_a_wav_shorter_than_its_header_says_is_read_with_a_warning(tmp_path, caplog):
    full = write_wav(tmp_path / "full.wav", 1.0)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(full.read_bytes()[: 44 + 16000])  # the header, then half of the samples
    with caplog.at_level("WARNING", logger="tasks.speech.audio"):
        wave = read_audio(cut, SR)
        read_audio(full, SR)
    assert wave.shape == (8000,)
    assert caplog.messages == [f"audio file {cut} is truncated: its header promises 1.00 s "
                               "(16000 samples), the file holds 0.50 s (8000); using the part "
                               "that exists"]


@pytest.mark.parametrize("what", ["directory", "device"])
def test_audio_that_is_a_directory_or_a_device_is_named(tmp_path, what):
    path = tmp_path if what == "directory" else Path("/dev/zero")
    with pytest.raises(AudioError, match=f"audio file {path} is a {what}, not a file"):
        read_audio(path, SR)


# -- manifests and skipping bad files ----------------------------------------------------------
def write_manifest(folder: Path, rows: list[tuple[str, str, str]], header="path\ttext\tspeaker"):
    lines = [header] + ["\t".join(r) for r in rows]
    (folder / "m.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_manifest_relative_paths_and_prompt_split(tmp_path):
    rows = []
    for i in range(20):
        write_wav(tmp_path / "wavs" / f"u{i}.wav", 0.3, [8000, SR][i % 2], channels=1 + i % 2)
        rows.append((f"wavs/u{i}.wav", f"Hello, World-{'ab'[i % 2] * (i + 1)}!", "s1"))
    write_manifest(tmp_path, rows)
    task = make_task("manifest", tmp_path / "m.tsv", test_fraction=0.2)
    overrides = task.prepare()
    splits = task.datasets()
    assert {k: len(v) for k, v in splits.items()} == {"train": 14, "val": 2, "test": 4}
    assert overrides == {"vocab_size": len(task.vocab)}
    assert set(splits["train"].texts).isdisjoint(splits["val"].texts + splits["test"].texts)
    item = splits["train"][0]
    assert item["audio"].shape == (int(0.3 * SR),) and "," not in item["text"]
    batch = next(iter(task.loader(splits["test"], 4)))  # 8 kHz mono and 16 kHz stereo files
    assert batch["audio"].shape == (4, int(0.3 * SR)) and batch["tokens"].shape[0] == 4
    assert normalize_text("Hello, World-a 3!") == "hello world a 3"
    task = make_task("manifest", tmp_path, manifests={"train": "m.tsv"})  # val held out of train
    task.prepare()
    assert {k: len(v) for k, v in task.datasets().items()} == {"train": 18, "val": 2}


def test_extra_train_utterances_join_the_train_split_only(tmp_path):
    rows = []
    for i in range(10):
        write_wav(tmp_path / "wavs" / f"u{i}.wav")
        rows.append((f"wavs/u{i}.wav", f"prompt {'ab' * (i + 1)}", "kate"))
    write_manifest(tmp_path, rows)
    extra = tmp_path / "synth"
    extra.mkdir()
    extra_rows = []
    for i in range(6):
        write_wav(extra / f"s{i}.wav", rate=22050)
        extra_rows.append((f"s{i}.wav", f"caption {'c' * (i + 1)}", "f1"))
    write_manifest(extra, extra_rows + [("s0.wav", rows[0][1], "f1")])  # a prompt of the corpus
    plain = make_task("manifest", tmp_path / "m.tsv", test_fraction=0.2)
    plain.prepare()
    base = plain.datasets()
    task = make_task("manifest", tmp_path / "m.tsv", test_fraction=0.2,
                     extra_train=str(extra / "m.tsv"))
    task.prepare()
    splits = task.datasets()
    assert splits["val"].texts == base["val"].texts and splits["test"].texts == base["test"].texts
    added = [t for t in splits["train"].texts if t not in base["train"].texts]
    held = set(base["val"].texts + base["test"].texts)
    # every caption, and the corpus prompt again only if it is a training prompt
    assert sorted(added) == sorted(r[1] for r in extra_rows)
    assert len(splits["train"]) == len(base["train"]) + 6 + (rows[0][1] not in held)
    task = make_task("manifest", tmp_path / "m.tsv", test_fraction=0.2,
                     extra_train=[str(extra / "m.tsv")], extra_train_count=3)
    task.prepare()
    assert len(task.datasets()["train"]) == len(base["train"]) + 3
    with pytest.raises(ValueError, match="extra_train_count' .*must be >= 1, got 0"):
        make_task("manifest", tmp_path / "m.tsv", extra_train=str(extra / "m.tsv"),
                  extra_train_count=0)
    with pytest.raises(FileNotFoundError, match="manifest .*nowhere.tsv does not exist"):
        make_task("manifest", tmp_path / "m.tsv", extra_train="nowhere.tsv").prepare()


def test_kathleen_columns_and_skip_bad_audio(tmp_path):
    header = "utt_id\tpath\tnum_samples\tduration_s\ttext\tsource_file"
    rows = [(f"arctic_{i}", f"wavs/{i}.wav", "0", "0", f"prompt {'ab' * (i + 1)}", "x")
            for i in range(10)]
    for i in range(9):
        write_wav(tmp_path / "wavs" / f"{i}.wav")
    (tmp_path / "wavs" / "9.wav").write_bytes(b"garbage")
    write_manifest(tmp_path, rows, header)
    (tmp_path / "m.tsv").rename(tmp_path / "transcripts.tsv")
    with pytest.raises(ValueError, match="9.wav"):
        make_task("kathleen_arctic", tmp_path).prepare()
    task = make_task("kathleen_arctic", tmp_path, skip_bad_audio=True)
    task.prepare()
    assert sum(len(d) for d in task.datasets().values()) == 9
    assert task.datasets()["train"].ids[0].startswith("arctic_")


def test_out_of_vocabulary_character_named(tmp_path):
    write_wav(tmp_path / "a.wav")
    write_wav(tmp_path / "b.wav")
    write_manifest(tmp_path, [("a.wav", "abc", ""), ("b.wav", "abd", "")])
    with pytest.raises(ValueError, match=r"'d'.*m\.tsv:3"):
        make_task("manifest", tmp_path / "m.tsv", {"tokenizer": {"characters": "abc"}}).prepare()


# -- FSDD -----------------------------------------------------------------------------------
def test_fsdd_official_split(fsdd_root):
    task = make_task("fsdd", fsdd_root)
    assert task.prepare() == {"vocab_size": 12}
    splits = task.datasets()
    assert len(splits["test"]) == 3 * 10 * 5  # recordings 0-4 of every speaker
    assert all(u.id.endswith("_5") for u in splits["train"].utterances)
    item = splits["test"][0]
    assert item["text"] in "0123456789" and len(item["text"]) == 1
    assert len(item["audio"]) == splits["test"].lengths[0]  # 8 kHz -> 16 kHz length known


def test_fsdd_connected_speaker_split(fsdd_root):
    clips = fsdd_clips(fsdd_root, SR, skip_bad=False)
    pools = fsdd_pools(clips, ["cid"], val_fraction=0.1, seed=0)
    assert {c.speaker for c in pools["test"]} == {"cid"}
    assert "cid" not in {c.speaker for c in pools["train"] + pools["val"]}
    utts = connected_digits(pools["train"], 20, seed=3, sample_rate=SR)
    assert utts == connected_digits(pools["train"], 20, seed=3, sample_rate=SR)
    for u in utts:
        assert 2 <= len(u.text) <= 7 and len(u.clips) == len(u.text)
        assert u.text == "".join(Path(p).name[0] for p in u.clips)
        assert len({Path(p).name.split("_")[1] for p in u.clips}) == 1  # one speaker

    task = make_task("fsdd_connected", fsdd_root, test_speakers=["cid"], train_utterances=30,
                     eval_utterances=8)
    task.prepare()
    splits = task.datasets()
    assert {u.speaker for u in splits["test"].utterances} == {"cid"}
    item = splits["train"][0]
    assert len(item["audio"]) == splits["train"].lengths[0]
    with pytest.raises(ValueError, match="zed"):
        make_task("fsdd_connected", fsdd_root, test_speakers=["zed"]).prepare()


# -- batching, features, lengths -----------------------------------------------------------------
def test_bucketed_batches_are_pure_and_cover_everything():
    task = make_task(train_utterances=300, eval_utterances=50)
    task.prepare()
    ds = task.datasets()["train"]
    a, b = task.batches(ds, 16, True, 7), task.batches(ds, 16, True, 7)
    assert a == b and a != task.batches(ds, 16, True, 8)
    assert sorted(i for batch in a for i in batch) == list(range(len(ds)))
    ordered = task.batches(ds, 16, False, 0)
    flat = [ds.lengths[i] for batch in ordered for i in batch]
    assert flat == sorted(flat)


def test_features_lengths_and_masks_follow_the_formula():
    task = make_task(train_utterances=8, eval_utterances=8)
    model = zoo.create_model("test_asr_transformer", **task.prepare()).eval()
    ds = task.datasets()["train"]
    batch = task.collate([ds[i] for i in range(6)])
    feats = model.adapter.frontend(batch["audio"])
    frames = (batch["audio_lengths"] - 400) // 160 + 1  # 25 ms windows, 10 ms hop, not centred
    assert feats.shape == (6, int(frames.max()), 40)
    expected = frames
    for _ in range(2):  # two stride-2 3x3 convolutions
        expected = (expected - 3) // 2 + 1
    tokens, mask = model.adapter(batch["audio"], batch["audio_lengths"])
    out_lengths = model.output_lengths(batch["audio_lengths"])
    assert torch.equal(out_lengths, expected) and tokens.shape[1] == int(expected.max())
    assert torch.equal(mask, torch.arange(tokens.shape[1])[None] >= expected[:, None])


def test_spec_augment_only_in_training():
    task = make_task(train_utterances=4, eval_utterances=4)
    model = zoo.create_model("test_asr_transformer", **task.prepare())
    batch = task.collate([task.datasets()["train"][i] for i in range(4)])
    model.eval()
    x1, _ = model.adapter(batch["audio"], batch["audio_lengths"])
    x2, _ = model.adapter(batch["audio"], batch["audio_lengths"])
    model.train()  # test_asr_transformer has dropout 0: only SpecAugment can change the output
    x3, _ = model.adapter(batch["audio"], batch["audio_lengths"])
    assert torch.equal(x1, x2) and not torch.allclose(x1, x3)


# -- CTC decoding ------------------------------------------------------------------------------
def test_ctc_greedy_hand_made():
    # frames: a a _ a b b _ _ (blank=0, a=2, b=3) plus padding frames that must be ignored
    path = [2, 2, 0, 2, 3, 3, 0, 0, 3, 3]
    lp = torch.full((1, 10, 4), -10.0)
    lp[0, torch.arange(10), torch.tensor(path)] = 0.0
    assert ctc_greedy(lp, torch.tensor([8])) == [[2, 2, 3]]
    assert ctc_greedy(lp, torch.tensor([10])) == [[2, 2, 3, 3]]


def test_prefix_beam_search_never_worse_than_greedy():
    gen = torch.Generator().manual_seed(0)
    lp = (torch.randn(6, 12, 5, generator=gen) * 1.5).log_softmax(-1)
    lengths = torch.tensor([12, 11, 9, 12, 7, 5])
    greedy = ctc_greedy(lp, lengths)
    nbest = ctc_prefix_beam_search(lp, lengths, beam_size=8)
    best = [h[0][0] for h in nbest]
    g_score = ctc_log_likelihood(lp, lengths, greedy)
    b_score = ctc_log_likelihood(lp, lengths, best)
    assert (b_score >= g_score - 1e-5).all() and (b_score > g_score + 1e-3).any()
    for hyps, s in zip(nbest, b_score.tolist()):  # reported scores are the exact likelihoods
        assert hyps[0][1] == pytest.approx(s, abs=1e-4)
        assert [x[1] for x in hyps] == sorted((x[1] for x in hyps), reverse=True)


def test_prefix_beam_search_equals_greedy_on_peaked_posteriors():
    gen = torch.Generator().manual_seed(1)
    path = torch.randint(0, 6, (4, 20), generator=gen)
    lp = F.one_hot(path, 6).float().mul(30).log_softmax(-1)
    lengths = torch.tensor([20, 18, 15, 9])
    assert [h[0][0] for h in ctc_prefix_beam_search(lp, lengths, 5)] == ctc_greedy(lp, lengths)


def test_intermediate_ctc_loss_in_training_only():
    torch.manual_seed(0)
    task = make_task(train_utterances=6, eval_utterances=6)
    meta = task.prepare()
    model = zoo.create_model("test_asr_transformer", inter_ctc_layer=1, inter_ctc_weight=0.25,
                             **meta)
    batch = task.collate([task.datasets()["train"][i] for i in range(6)])
    out = model(batch["audio"], batch["audio_lengths"])
    assert out.inter_logits is not None and out.inter_logits.shape == out.logits.shape
    loss, logs = task.loss(model, batch)
    assert set(logs) == {"loss", "ctc", "inter_ctc"} and logs["inter_ctc"] != logs["ctc"]
    assert logs["loss"] == pytest.approx(0.75 * logs["ctc"] + 0.25 * logs["inter_ctc"], rel=1e-5)
    loss.backward()  # the shared head learns from both
    assert model.head[1].weight.grad.abs().sum() > 0
    model.eval()
    assert model(batch["audio"], batch["audio_lengths"]).inter_logits is None
    # the same weights without the intermediate loss: eval outputs agree
    plain = zoo.create_model("test_asr_transformer", **meta).eval()
    plain.load_state_dict(model.state_dict())
    assert torch.allclose(plain(batch["audio"], batch["audio_lengths"]).logits,
                          model(batch["audio"], batch["audio_lengths"]).logits)
    for bad in ({"inter_ctc_layer": 2}, {"inter_ctc_layer": -1}, {"inter_ctc_weight": 1.5}):
        with pytest.raises(ValueError, match="inter_ctc_layer must be in \\[0, 1\\]"):
            zoo.create_model("test_asr_transformer", **{**meta, **bad})


def test_ctc_ensemble_averages_frame_log_probs():
    torch.manual_seed(0)
    task = make_task(train_utterances=6, eval_utterances=6)
    meta = task.prepare()
    a, b = (zoo.create_model("test_asr_transformer", **meta).eval() for _ in range(2))
    batch = task.collate([task.datasets()["val"][i] for i in range(6)])
    audio, lengths = batch["audio"], batch["audio_lengths"]
    ens = task.ensemble(a, [(Path("b"), b, task.save_extra(Path("b")))]).eval()

    def log_probs(m):
        memory, _ = m.forward_features(audio, lengths)
        return m.forward_head(memory).log_softmax(-1), m.output_lengths(lengths)

    (la, n), (lb, _) = log_probs(a), log_probs(b)
    out, mask = ens.forward_features(audio, lengths)
    out_n = ens.output_lengths(lengths)
    assert torch.equal(out_n, n) and mask.shape == out.shape[:2]
    assert torch.allclose(out, (la + lb) / 2, atol=1e-5)
    assert not torch.allclose(la, lb)  # two different models, so the mean is a third
    # with EOS left out of each member first, decoding's posteriors are the same
    eos = torch.tensor([a.cfg.eos_id])
    masked = [x.index_fill(-1, eos, float("-inf")).log_softmax(-1) for x in (la, lb)]
    mean_masked = (masked[0] + masked[1]).div(2).log_softmax(-1)
    assert torch.allclose(out.index_fill(-1, eos, float("-inf")).log_softmax(-1), mean_masked,
                          atol=1e-5)
    # decoding reads the ensemble as one model; a model averaged with itself is itself
    same = task.ensemble(a, [(Path("a"), a, task.save_extra(Path("a")))])
    (mem, m_mask), m_n = same.forward_features(audio, lengths), same.output_lengths(lengths)
    (mem_a, mask_a), n_a = a.forward_features(audio, lengths), a.output_lengths(lengths)
    for beam in (1, 4):
        assert decode_batch(same, mem, m_mask, same.forward_head(mem), m_n, beam) == \
            decode_batch(a, mem_a, mask_a, a.forward_head(mem_a), n_a, beam)
    loss, _ = task.loss(ens, batch)  # the CTC loss of the averaged posteriors
    assert torch.isfinite(loss)


def test_ctc_ensemble_refuses_members_that_do_not_line_up():
    task = make_task(train_utterances=6, eval_utterances=6)
    meta = task.prepare()
    a = zoo.create_model("test_asr_transformer", **meta)
    other = make_task(sections={"tokenizer": {"characters": "0123456789x"}}, train_utterances=6,
                      eval_utterances=6)
    other.prepare()
    with pytest.raises(ValueError, match="in /runs/x does not spell with the same characters"):
        task.ensemble(a, [(Path("/runs/x"), a, other.save_extra(Path("x")))])
    wide = zoo.create_model("test_asr_transformer", **{**meta, "vocab_size": 40})
    with pytest.raises(ValueError, match="member 1 has 40 tokens"):
        task.ensemble(a, [(Path("w"), wide, task.save_extra(Path("w")))])
    with pytest.raises(ValueError, match="at least two"):
        CTCEnsemble([a])


# -- loss, decoder, saving, CLI -----------------------------------------------------------------
def test_joint_ctc_attention_loss_and_rescoring():
    task = make_task(sections={"loss": {"ctc_weight": 0.4}}, train_utterances=6,
                     eval_utterances=6)
    model = zoo.create_model("test_asr_transformer", decoder_depth=1, **task.prepare())
    batch = task.collate([task.datasets()["train"][i] for i in range(6)])
    loss, logs = task.loss(model, batch)
    assert set(logs) == {"loss", "ctc", "att"}
    assert logs["loss"] == pytest.approx(0.4 * logs["ctc"] + 0.6 * logs["att"], rel=1e-5)
    loss.backward()
    assert model.decoder_head.weight.grad is not None
    model.eval()
    memory, mask = model.forward_features(batch["audio"], batch["audio_lengths"])
    lengths = model.output_lengths(batch["audio_lengths"])
    hyps = decode_batch(model, memory, mask, model.forward_head(memory), lengths, beam_size=3)
    assert len(hyps) == 6 and all(min(h, default=2) >= 2 for h in hyps)


def _adapter_inputs(arg: int, **augment) -> tuple[dict, list[torch.Tensor]]:
    """A batch of 4 training utterances and the adapter's input ``arg`` (0: audio, 1: lengths)
    as seen by ``task.loss`` in training mode, then in eval mode."""
    task = make_task(sections={"augment": augment}, train_utterances=4, eval_utterances=4)
    model = zoo.create_model("test_asr_transformer", **task.prepare())
    batch = task.collate([task.datasets()["train"][i] for i in range(4)])
    seen = []
    model.adapter.register_forward_pre_hook(lambda m, args: seen.append(args[arg].clone()))
    task.loss(model.train(), batch)
    task.loss(model.eval(), batch)
    return batch, seen


def test_speed_perturbation_in_training_only():
    audio, lengths = torch.randn(3, 1100), torch.tensor([1100, 770, 330])
    torch.manual_seed(0)
    out, new = speed_perturb(audio, lengths, [1.1])  # 11/10 faster: ceil(n * 10 / 11) samples
    assert new.tolist() == [1000, 700, 300] and out.shape == (3, 1000)
    batch, seen = _adapter_inputs(1, speed_perturb=[0.9, 1.1])
    assert not torch.equal(seen[0], batch["audio_lengths"])
    assert torch.equal(seen[1], batch["audio_lengths"])


def test_speed_perturbation_keeps_fp32_under_mixed_precision():
    # The training loss runs under bf16 autocast; the resampling must not follow it (bf16 keeps
    # 8 significant bits, an error near 1e-2 of the signal's amplitude).
    audio, lengths = torch.randn(2, 1600), torch.tensor([1600, 1200])
    torch.manual_seed(0)
    plain, _ = speed_perturb(audio, lengths, [0.9, 1.1])
    torch.manual_seed(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed, _ = speed_perturb(audio, lengths, [0.9, 1.1])
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, plain, rtol=0, atol=1e-6)


def test_noise_at_the_drawn_snr_in_training_only():
    t = torch.arange(4000) / 8000
    audio = torch.stack([torch.sin(2 * torch.pi * 440 * t)] * 3)  # power 0.5
    lengths = torch.tensor([4000, 3000, 1000])
    audio[1, 3000:] = 0
    audio[2, 1000:] = 0
    torch.manual_seed(0)
    out = add_noise(audio, lengths, [20.0, 20.0])
    noise = out - audio
    for row, n in zip(noise, lengths.tolist()):
        assert not row[n:].any()  # padding stays padding
        snr = 10 * torch.log10(torch.tensor(0.5) / row[:n].square().mean())
        assert abs(float(snr) - 20.0) < 0.5
    assert torch.equal(add_noise(audio, lengths, [20.0, 20.0], prob=0.0), audio)
    spread = [add_noise(audio[:1], lengths[:1], [0.0, 30.0]) - audio[:1] for _ in range(20)]
    snrs = [float(10 * torch.log10(0.5 / d.square().mean())) for d in spread]
    assert min(snrs) > -0.5 and max(snrs) < 30.5 and max(snrs) - min(snrs) > 10

    batch, seen = _adapter_inputs(0, noise_snr=[10, 10])
    assert not torch.allclose(seen[0], batch["audio"])
    assert torch.equal(seen[1], batch["audio"])
    with pytest.raises(ValueError, match="noise_snr must be \\[low, high\\]"):
        make_task(sections={"augment": {"noise_snr": [30, 10]}})


def test_vocab_round_trip():
    vocab = CharVocab.build(["ab c", "cab'"])
    assert vocab.chars == [" ", "'", "a", "b", "c"] and len(vocab) == 7
    assert vocab.decode([0, 1] + vocab.encode("cab")) == "cab"
    assert CharVocab.from_dict(json.loads(json.dumps(vocab.to_dict()))) == vocab


def _quick_train(task, model, steps: int, lr: float) -> None:
    ds = task.datasets()["train"]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.15)
    batches = [b for e in range(100) for b in task.batches(ds, 16, True, e)][:steps]
    model.train()
    for b in batches:
        loss, _ = task.loss(model, task.collate([ds[i] for i in b]))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()


def test_smoke_learns_tone_digits_then_saves_and_transcribes(tmp_path, capsys):
    torch.manual_seed(0)
    task = make_task(train_utterances=600, eval_utterances=64, digits=[1, 3])
    # SpecAugment's default masks (up to 2 x 27 bins) hide most of a 40-bin spectrogram and
    # slow the escape from CTC's all-blank plateau several-fold; tones need no augmentation.
    model = zoo.create_model("test_asr_transformer", spec_augment=False, **task.prepare())
    loader = task.loader(task.datasets()["val"], 32)
    before = task.evaluate(model, loader)
    _quick_train(task, model, steps=120, lr=3e-3)
    after = task.evaluate(model, loader)
    assert set(after) == {"cer", "wer", "accuracy", "loss"}
    assert after["cer"] < 0.2 < before["cer"] and after["loss"] < before["loss"]
    # the report lists every evaluated utterance: its id, reference and hypothesis
    report = task.write_report(tmp_path / "report", "val")
    rows = (tmp_path / "report" / "transcripts_val.tsv").read_text("utf-8").splitlines()
    assert rows[0] == "id\treference\thypothesis" and len(rows) == 1 + 64
    table = [row.split("\t") for row in rows[1:]]
    utterances = [loader.dataset[i] for i in range(len(loader.dataset))]
    assert sorted((r[0], r[1]) for r in table) == sorted((u["id"], u["text"]) for u in utterances)
    wrong = sum(r[1] != r[2] for r in table)
    assert wrong == round((1 - after["accuracy"]) * 64)
    path = tmp_path / "report" / "transcripts_val.tsv"
    assert report == [f"transcripts ({wrong} of 64 wrong): {path}"]

    # saved as the engine saves, then `zoo transcribe` on a stereo 8 kHz file of 2-3 digits
    save_pretrained(model, tmp_path / "run" / "best",
                    extra={"task": task.name, "task_meta": task.save_extra(tmp_path)})
    ds = ToneDigits(40, seed=5, sample_rate=8000)
    i = next(k for k, t in enumerate(ds.texts) if 2 <= len(t) <= 3)
    sf.write(str(tmp_path / "x.wav"), np.stack([ds[i]["audio"].numpy()] * 2, 1), 8000)
    assert main(["transcribe", str(tmp_path / "run"), str(tmp_path / "x.wav"),
                 "--device", "cpu", "--beam-size", "4"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line == f"{tmp_path / 'x.wav'}: {ds.texts[i]}"
    # the model averaged with itself: the same line; a model of another task is named
    assert main(["transcribe", str(tmp_path / "run"), str(tmp_path / "x.wav"), "--device",
                 "cpu", "--beam-size", "4", "--ensemble", str(tmp_path / "run")]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == line
    vit = zoo.create_model("test_vit", num_classes=3)
    save_pretrained(vit, tmp_path / "vit", extra={"task": "classification"})
    assert main(["transcribe", str(tmp_path / "run"), str(tmp_path / "x.wav"),
                 "--ensemble", str(tmp_path / "vit")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'vit'} holds a classification model" in err and "ensemble" in err
    assert main(["transcribe", str(tmp_path / "run"), str(tmp_path / "nope.wav")]) == 2
    assert "nope.wav" in capsys.readouterr().err


def test_eval_of_an_ensemble_reports_apart(tmp_path, capsys):
    recipe = Path(__file__).resolve().parents[2] / "configs" / "demo" / "speech.yaml"
    run = tmp_path / "run"
    assert main(["train", str(recipe), "--out", str(run), "train.max_steps=2",
                 "schedule.warmup_steps=1", "data.options.train_utterances=64",
                 "data.options.eval_utterances=16"]) == 0
    capsys.readouterr()
    assert main(["eval", str(run), "--device", "cpu"]) == 0
    alone = capsys.readouterr().out
    assert main(["eval", str(run), "--device", "cpu", "--ensemble", str(run / "best")]) == 0
    out = capsys.readouterr().out
    assert f"{run / 'best'} (ensemble with {run / 'best'}) on val:" in out
    # the model averaged with itself scores as itself; its report does not replace the run's
    scores = [line for line in alone.splitlines() if "cer:" in line or "loss:" in line]
    assert len(scores) == 2 and scores == [
        line for line in out.splitlines() if "cer:" in line or "loss:" in line]
    assert (run / "transcripts_val.tsv").is_file() and (run / "transcripts_val_ensemble.tsv") \
        .read_text("utf-8") == (run / "transcripts_val.tsv").read_text("utf-8")


def test_recipes_load():
    from zoo.config import load_recipe

    root = Path(__file__).resolve().parents[2] / "configs"
    names = ["demo/speech.yaml"] + [f"speech/asr_conformer_ctc_{n}.yaml" for n in
                                    ("fsdd_digits", "fsdd_single", "kathleen_arctic")]
    for name in names:
        recipe = load_recipe(root / name)
        get_task(recipe.task)(recipe)  # data options are checked here
        zoo.get_config(recipe.model.name, **recipe.model.overrides)


def test_unknown_option_named():
    with pytest.raises(ValueError, match="test_speaker"):
        make_task(test_speaker=["theo"])


# -- recordings longer than the model's positions ----------------------------------------------
def test_a_recording_longer_than_the_positions_is_named_and_the_others_transcribed(
    tmp_path, capsys
):
    vocab = CharVocab("0123456789 ")
    model = zoo.create_model("test_asr_transformer", vocab_size=len(vocab))
    meta = {"vocab": vocab.to_dict(), "sample_rate": SR}
    save_pretrained(model, tmp_path / "model", extra={"task": "speech_recognition",
                                                      "task_meta": meta})
    # 170 s at 1 kHz: the model reads at most 163.9 s of 16 kHz audio (4,096 positions)
    long = write_wav(tmp_path / "long.wav", 170.0, 1000, freq=100.0)
    short = write_wav(tmp_path / "short.wav", 0.5)
    assert main(["transcribe", str(tmp_path / "model"), str(long), str(short)]) == 2
    out, err = capsys.readouterr()
    assert err.strip().splitlines() == [
        f"error: audio file {long} lasts 170.0 s, longer than the 163.9 s this model can read "
        "at once (its positions); cut it into shorter parts"
    ]
    assert [line.split(":")[0] for line in out.strip().splitlines()] == [str(short)]
    task, model = zoo.commands.load_for_prediction(tmp_path / "model", "speech_recognition")
    with pytest.raises(ValueError, match=f"^audio file {long} lasts 170.0 s"):
        task.predict(model, [str(short), str(long)])
