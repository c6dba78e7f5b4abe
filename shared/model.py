"""The seq2seq model: a small BART initialised from a config, or any pretrained seq2seq checkpoint."""

from __future__ import annotations

import torch
from transformers import AutoModelForSeq2SeqLM, BartConfig, BartForConditionalGeneration, PreTrainedModel

from shared.errors import UserError

# Sizes for a model trained from scratch. `small` is the default (a CPU epoch on the default data takes
# seconds); `tiny` is for tests and parity runs; `base` has bart-base's layers and widths (for GPUs, and for the
# benchmarks' overhead curve).
MODEL_SIZES = {
    "base": dict(d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12,
                 decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072),
    "small": dict(d_model=128, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                  decoder_attention_heads=4, encoder_ffn_dim=512, decoder_ffn_dim=512),
    "tiny": dict(d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                 decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64),
}


def build_model(tokenizer, size: str = "small", pretrained: str | None = None,
                max_positions: int = 512) -> PreTrainedModel:
    """A pretrained model (embeddings resized for [HL]) or a randomly initialised BART of `size`.

    Random initialisation draws from the global torch generator, so call this after seeding.
    """
    if pretrained is not None:
        try:
            model = AutoModelForSeq2SeqLM.from_pretrained(pretrained)
        except (OSError, ValueError) as error:
            first_line = str(error).splitlines()[0]
            raise UserError(f"--model {pretrained}: cannot load a seq2seq model ({first_line})") from None
        if model.get_input_embeddings().num_embeddings < len(tokenizer):
            model.resize_token_embeddings(len(tokenizer))
        # from_pretrained returns the model in eval mode; training starts with dropout on, as for a new model.
        # (Lightning keeps each submodule in the mode it finds it in, so it would otherwise train without.)
        return model.train()
    config = BartConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=max_positions,
        dropout=0.1,
        attention_dropout=0.0,
        activation_dropout=0.0,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.eos_token_id,
        forced_eos_token_id=tokenizer.eos_token_id,
        **MODEL_SIZES[size],
    )
    return BartForConditionalGeneration(config)


def seq2seq_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean token cross-entropy of the question given the highlighted context (label -100 is ignored)."""
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
