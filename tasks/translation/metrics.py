"""Corpus BLEU and chrF with sacreBLEU (Post 2018), on detokenized text against raw references."""

from __future__ import annotations

from collections.abc import Sequence

from sacrebleu.metrics import BLEU, CHRF


def corpus_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus-level ``bleu``, ``bleu_lc`` and ``chrf`` (0-100) of detokenized hypotheses, one
    reference each.

    sacreBLEU's defaults: BLEU with the 13a tokenizer, mixed case, exponential smoothing;
    chrF with character 6-grams and beta 2 (see ``signatures``). ``bleu_lc`` is the same BLEU
    on lowercased text, the form most multimodal-MT papers report for Multi30k.
    """
    if len(hypotheses) != len(references):
        raise ValueError(
            f"{len(hypotheses)} hypotheses for {len(references)} references; they must pair up"
        )
    refs = [list(references)]
    return {
        "bleu": BLEU().corpus_score(list(hypotheses), refs).score,
        "bleu_lc": BLEU(lowercase=True).corpus_score(list(hypotheses), refs).score,
        "chrf": CHRF().corpus_score(list(hypotheses), refs).score,
    }


def signatures() -> dict[str, str]:
    """sacreBLEU signatures of the two metrics, to quote beside a score, e.g.
    ``nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0``."""
    metrics = {"bleu": BLEU(), "bleu_lc": BLEU(lowercase=True), "chrf": CHRF()}
    for metric in metrics.values():
        # The signature reports the reference count; it is known once a corpus has been scored.
        metric.corpus_score(["a"], [["a"]])
    return {name: str(metric.get_signature()) for name, metric in metrics.items()}
