"""Ask an exported model for a question: `python -m shared.ask --model runs/vanilla/version_0/export
--context "Marie Curie was born in Warsaw in 1867." --answer Warsaw`."""

from __future__ import annotations

import argparse

import torch

from shared.decoding import generate_questions
from shared.entry_point import exit_on_user_error
from shared.errors import UserError
from shared.squad import QGExample


def ask(model, tokenizer, context: str, answer: str, answer_start: int | None = None, num_beams: int = 4,
        max_length: int = 256) -> str:
    from shared.data import encode_source

    start = context.find(answer) if answer_start is None else answer_start
    if not answer or start < 0 or context[start:start + len(answer)] != answer:
        raise UserError(f"the answer {answer!r} does not occur in the context"
                        + ("" if answer_start is None else f" at --answer-start {answer_start}"))
    ids = encode_source(tokenizer, QGExample("cli", context, answer, start, ""), max_length)
    batch = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long)}
    return generate_questions(model, tokenizer, batch, num_beams=num_beams)[0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m shared.ask", description=__doc__)
    parser.add_argument("--model", required=True, help="a directory written by save_pretrained (the run's export/)")
    parser.add_argument("--context", required=True, help="the paragraph")
    parser.add_argument("--answer", required=True, help="the answer span, as it appears in the context")
    parser.add_argument("--answer-start", type=int, help="character offset of the answer (default: first match)")
    parser.add_argument("--num-beams", type=int, default=4)
    args = parser.parse_args(argv)
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(args.model)
        model = AutoModelForSeq2SeqLM.from_pretrained(args.model).eval()
    except (OSError, ValueError) as error:
        raise UserError(f"--model {args.model}: cannot load ({str(error).splitlines()[0]})") from None
    print(ask(model, tokenizer, args.context, args.answer, args.answer_start, args.num_beams))


if __name__ == "__main__":
    exit_on_user_error(main)()
