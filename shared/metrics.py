"""BLEU-1..4 and ROUGE-L over lowercased, tokenised text (torchmetrics implementations)."""

from __future__ import annotations

import re

from torchmetrics.text import BLEUScore, ROUGEScore

_TOKEN = re.compile(r"\w+|[^\w\s]")


def normalise(text: str) -> str:
    """Lowercase and split words from punctuation, so 'born?' and 'born ?' score alike."""
    return " ".join(_TOKEN.findall(text.lower()))


def qg_scores(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Corpus BLEU-1..4 (one reference each) and mean ROUGE-L F1, each a fraction in [0, 1]."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    preds = [normalise(p) for p in predictions]
    refs = [[normalise(r)] for r in references]
    scores = {f"bleu_{n}": float(BLEUScore(n_gram=n)(preds, refs)) for n in range(1, 5)}
    rouge = ROUGEScore(rouge_keys="rougeL", accumulate="best")(preds, [r[0] for r in refs])
    scores["rouge_l"] = float(rouge["rougeL_fmeasure"])
    return scores
