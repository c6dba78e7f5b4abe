"""Deterministic beam-search decoding of questions."""

from __future__ import annotations

import torch


@torch.inference_mode()
def generate_questions(model, tokenizer, batch: dict[str, torch.Tensor], num_beams: int = 4,
                       max_new_tokens: int = 32) -> list[str]:
    """Beam search, no sampling: the same weights and inputs always give the same questions."""
    output = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            num_beams=num_beams, do_sample=False, max_new_tokens=max_new_tokens,
                            early_stopping=True)
    return [text.strip() for text in tokenizer.batch_decode(output, skip_special_tokens=True)]
