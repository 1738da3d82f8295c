"""benchmarks/mlm_transfer.py moves the masked LM's token embeddings to the translation
vocabulary's ids piece by piece: the MLM's vocabulary holds [MASK] right after unk, so every
other piece's id there is one higher than in the vocabulary a translation run trains."""

from __future__ import annotations

from pathlib import Path

import torch

from tasks.translation.tokenizer import Tokenizer
from tests.scripts import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "mlm_transfer.py"
TEXT = [f"a man rides a {w} bike near the {v} house" for w in ("red", "blue", "green")
        for v in ("old", "new", "small", "tall")] * 4


def _module():
    return load_script(SCRIPT, "benchmarks_mlm_transfer", siblings=True)  # masked_common


def test_each_translation_piece_gets_the_mlm_row_of_the_same_piece() -> None:
    align = _module().align_embeddings
    mlm_vocab = Tokenizer.train(TEXT, 60, user_defined_symbols=["[MASK]"])
    mt_vocab = Tokenizer.train(TEXT, 60)
    assert mlm_vocab.sp.piece_to_id("man") != mt_vocab.sp.piece_to_id("man")  # shifted by one
    mlm_rows = torch.randn(len(mlm_vocab), 8)
    fresh = {"src_adapter.embed.weight": torch.zeros(len(mt_vocab), 8),
             "core.layers.0.norm1.weight": torch.ones(8)}
    state = {"src_adapter.embed.weight": mlm_rows, "core.layers.0.norm1.weight": torch.ones(8)}
    out = align(state, fresh, mlm_vocab, mt_vocab)
    rows = out["src_adapter.embed.weight"]
    assert rows.shape == (len(mt_vocab), 8)
    for new in range(len(mt_vocab)):
        piece = mt_vocab.sp.id_to_piece(new)
        old = mlm_vocab.sp.piece_to_id(piece)
        if mlm_vocab.sp.id_to_piece(old) == piece:
            assert torch.equal(rows[new], mlm_rows[old]), piece
        else:  # a piece the MLM lacks keeps the fresh model's row
            assert torch.equal(rows[new], torch.zeros(8)), piece
    assert out["core.layers.0.norm1.weight"] is state["core.layers.0.norm1.weight"]
