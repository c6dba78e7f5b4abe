"""Dataset, windowing, dynamic padding and the synthetic corpus."""

from __future__ import annotations

import json

import torch

from shared.data import LABEL_PAD, PadCollator, QGDataset, encode_source
from shared.squad import HIGHLIGHT, QGExample, read_squad
from shared.synthetic import write_synthetic_squad
from shared.tokenizer import train_tokenizer


def _tokenizer(tiny_data):
    examples = read_squad(tiny_data / "train.json").examples
    return train_tokenizer([e.context for e in examples] + [e.question for e in examples], vocab_size=400)


def test_long_context_is_windowed_around_the_answer(tiny_data):
    tokenizer = _tokenizer(tiny_data)
    filler = "The weather was mild and the harvest was good. "
    for position in ("start", "middle", "end"):
        before = filler * {"start": 0, "middle": 40, "end": 80}[position]
        after = filler * {"start": 80, "middle": 40, "end": 0}[position]
        context = before + "Ada was born in London. " + after
        example = QGExample("x", context, "London", context.index("London"), "Where was Ada born?")
        ids = encode_source(tokenizer, example, max_length=64)
        tokens = tokenizer.convert_ids_to_tokens(ids)
        assert len(ids) == 64
        assert tokens.count(HIGHLIGHT) == 2, position
        assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
        between = tokenizer.decode(ids[tokens.index(HIGHLIGHT) + 1: len(tokens) - 1 - tokens[::-1].index(HIGHLIGHT)])
        assert between.strip() == "London"


def test_short_context_is_kept_whole(tiny_data):
    tokenizer = _tokenizer(tiny_data)
    example = read_squad(tiny_data / "train.json").examples[0]
    ids = encode_source(tokenizer, example, max_length=256)
    assert tokenizer.decode(ids, skip_special_tokens=False).replace("<s>", "").replace("</s>", "") \
        == example.highlighted_context


def test_collator_pads_each_batch_to_its_own_longest(tiny_data):
    tokenizer = _tokenizer(tiny_data)
    dataset = QGDataset(read_squad(tiny_data / "train.json").examples, tokenizer, 256, 32)
    collate = PadCollator(tokenizer.pad_token_id)
    items = [dataset[0], dataset[1], dataset[2]]
    batch = collate(items)
    longest = max(len(item["input_ids"]) for item in items)
    assert batch["input_ids"].shape == (3, longest)
    for row, item in enumerate(items):
        n = len(item["input_ids"])
        assert batch["input_ids"][row, :n].tolist() == item["input_ids"]
        assert (batch["input_ids"][row, n:] == tokenizer.pad_token_id).all()
        assert batch["attention_mask"][row].sum() == n
        m = len(item["labels"])
        assert batch["labels"][row, :m].tolist() == item["labels"]
        assert (batch["labels"][row, m:] == LABEL_PAD).all()
    assert batch["labels"].shape[1] == max(len(item["labels"]) for item in items)
    assert batch["input_ids"].shape[1] < 256  # not padded to a fixed length


def test_synthetic_corpus_is_deterministic_squad_with_several_questions_per_paragraph(tmp_path):
    first = write_synthetic_squad(tmp_path / "a")
    second = write_synthetic_squad(tmp_path / "b")
    for split in ("train", "dev", "test"):
        assert first[split].read_bytes() == second[split].read_bytes()
    train = read_squad(first["train"])  # the real reader accepts it
    assert len(train.examples) >= 5000
    document = json.loads(first["train"].read_text())
    assert document["version"] == "1.1"
    paragraphs = [p for article in document["data"] for p in article["paragraphs"]]
    assert all(len(p["qas"]) >= 2 for p in paragraphs)
    for p in paragraphs[:200]:
        questions = [q["question"] for q in p["qas"]]
        answers = [q["answers"][0]["text"] for q in p["qas"]]
        assert len(set(questions)) == len(questions) and len(set(answers)) == len(answers)
    # Distractors: most paragraphs mention more than one entity, so the highlight is needed.
    titles = {article["title"] for article in document["data"]}
    assert len(titles) > 100
    test_contexts = {p["context"] for a in json.loads(first["test"].read_text())["data"] for p in a["paragraphs"]}
    assert not test_contexts & {p["context"] for p in paragraphs}


def test_dataset_targets_are_the_questions(tiny_data):
    tokenizer = _tokenizer(tiny_data)
    examples = read_squad(tiny_data / "dev.json").examples
    dataset = QGDataset(examples, tokenizer, 256, 64)
    for i in range(5):
        assert tokenizer.decode(dataset[i]["labels"], skip_special_tokens=True) == examples[i].question
    assert torch.is_tensor(PadCollator(tokenizer.pad_token_id)([dataset[0]])["index"])


def test_the_start_line_counts_skipped_unanswerable_questions(tmp_path):
    from types import SimpleNamespace

    import torch

    from shared.summary import start_line

    data = SimpleNamespace(train=[1] * 5, dev=[1] * 2, test=[1], files=SimpleNamespace(synthetic=False),
                           skipped_unanswerable={"train": 3, "dev": 0, "test": 1})
    line = start_line(data, torch.nn.Linear(2, 3), "single on 1 cpu device(s)")
    assert line == ("data: 5 train / 2 dev / 1 test examples (unanswerable SQuAD v2.0 questions skipped: 3 train, "
                    "1 test); model: 9 parameters; single on 1 cpu device(s)")
    data.skipped_unanswerable = {"train": 0, "dev": 0, "test": 0}
    assert "skipped" not in start_line(data, torch.nn.Linear(2, 3), "")
