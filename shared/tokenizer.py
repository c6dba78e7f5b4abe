"""Tokenizers: a small byte-level BPE trained on the training split, or a pretrained one with [HL] added."""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from shared.errors import UserError
from shared.squad import HIGHLIGHT

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>", HIGHLIGHT]


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1000) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE (BART's scheme) on `texts`. Deterministic for the same texts and vocab size."""
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(texts, trainer=trainer)
    bos, eos = bpe.token_to_id("<s>"), bpe.token_to_id("</s>")
    bpe.post_processor = processors.TemplateProcessing(single="<s> $A </s>",
                                                       special_tokens=[("<s>", bos), ("</s>", eos)])
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", mask_token="<mask>", additional_special_tokens=[HIGHLIGHT])


def load_pretrained_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    """Load a pretrained tokenizer and add [HL] as a special token (the model's embeddings must grow to match)."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as error:
        raise UserError(f"--model {name_or_path}: cannot load its tokenizer ({str(error).splitlines()[0]})") from None
    if HIGHLIGHT not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [HIGHLIGHT]})
    return tokenizer
