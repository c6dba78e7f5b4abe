"""Reader for the official SQuAD JSON format (v1.1 and v2.0), with every record checked.

SQuAD nests data -> paragraphs -> qas; each qa has an id, a question and answers with `text` and
`answer_start`. The NQG split of Du et al. (2017) uses the same format in three files. Unanswerable v2.0
questions (`is_impossible: true`) have no answer to highlight, so they are skipped and counted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from shared.errors import DataError

HIGHLIGHT = "[HL]"


@dataclass(frozen=True)
class QGExample:
    id: str
    context: str
    answer: str
    answer_start: int
    question: str

    @property
    def highlighted_context(self) -> str:
        return highlight(self.context, self.answer_start, self.answer)


@dataclass(frozen=True)
class SquadFile:
    path: Path
    examples: list[QGExample]
    skipped_unanswerable: int


def highlight(context: str, start: int, answer: str) -> str:
    """Mark the answer as the seed's reference repository does: `...[HL]answer[HL]...`."""
    return context[:start] + HIGHLIGHT + answer + HIGHLIGHT + context[start + len(answer):]


def _field(record: dict, key: str, kind: type, where: str, path: Path):
    if not isinstance(record, dict):
        raise DataError(f"{path}: {where}: expected an object, found {type(record).__name__}")
    if key not in record:
        raise DataError(f"{path}: {where}: missing field '{key}'")
    value = record[key]
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise DataError(f"{path}: {where}: field '{key}' should be {kind.__name__}, found {type(value).__name__}")
    return value


def _nonempty(value: str, key: str, where: str, path: Path) -> str:
    if not value.strip():
        raise DataError(f"{path}: {where}: field '{key}' is empty")
    return value


def read_squad(path: str | Path) -> SquadFile:
    """Read and validate one SQuAD file; any problem raises DataError naming the file and the record."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a SQuAD JSON file") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read: {error.strerror}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not valid UTF-8 at byte {error.start}") from None
    if not text.strip():
        raise DataError(f"{path}: empty file, expected SQuAD JSON")
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: malformed JSON at line {error.lineno} column {error.colno}: {error.msg}") from None
    if not isinstance(document, dict) or "data" not in document:
        raise DataError(f"{path}: not a SQuAD file (expected a JSON object with a 'data' list)")

    examples: list[QGExample] = []
    skipped = 0
    seen_ids: set[str] = set()
    for a, article in enumerate(_field(document, "data", list, "top level", path)):
        for p, paragraph in enumerate(_field(article, "paragraphs", list, f"data[{a}]", path)):
            where = f"data[{a}].paragraphs[{p}]"
            context = _nonempty(_field(paragraph, "context", str, where, path), "context", where, path)
            for q, qa in enumerate(_field(paragraph, "qas", list, where, path)):
                qa_where = f"{where}.qas[{q}]"
                record_id = _field(qa, "id", str, qa_where, path)
                where_id = f"record {record_id!r}"
                if record_id in seen_ids:
                    raise DataError(f"{path}: {where_id}: duplicate id")
                seen_ids.add(record_id)
                if qa.get("is_impossible", False) is True:
                    skipped += 1
                    continue
                question = _nonempty(_field(qa, "question", str, where_id, path), "question", where_id, path)
                answers = _field(qa, "answers", list, where_id, path)
                if not answers:
                    raise DataError(f"{path}: {where_id}: no answers (and not marked is_impossible)")
                answer = _nonempty(_field(answers[0], "text", str, f"{where_id} answer", path), "text",
                                   f"{where_id} answer", path)
                start = _field(answers[0], "answer_start", int, f"{where_id} answer", path)
                if not 0 <= start <= len(context) - len(answer):
                    raise DataError(f"{path}: {where_id}: answer_start {start} is outside the context "
                                    f"({len(context)} characters)")
                if context[start:start + len(answer)] != answer:
                    found = context[start:start + len(answer)]
                    raise DataError(f"{path}: {where_id}: answer_start {start} does not point at the answer "
                                    f"{answer!r} (the context there reads {found!r})")
                examples.append(QGExample(record_id, context, answer, start, question))
    if not examples:
        raise DataError(f"{path}: holds no answerable questions")
    return SquadFile(path, examples, skipped)
