"""The SQuAD reader: formats it accepts, records it rejects, and how it says so."""

from __future__ import annotations

import pytest

from shared.errors import DataError
from shared.squad import highlight, read_squad
from tests.conftest import qa, squad_doc, write_json

CONTEXT = "Ada Lovelace was born in London in 1815."


def test_reads_v11_examples_with_highlight(tmp_path):
    path = write_json(tmp_path / "d.json", squad_doc(qa("a", "Where was Ada born?", "London", 25),
                                                     qa("b", "When was Ada born?", "1815", 35)))
    result = read_squad(path)
    assert [e.id for e in result.examples] == ["a", "b"]
    assert result.examples[0].highlighted_context == "Ada Lovelace was born in [HL]London[HL] in 1815."
    assert result.examples[1].question == "When was Ada born?"
    assert result.skipped_unanswerable == 0


def test_v20_unanswerable_questions_are_skipped_and_counted(tmp_path):
    doc = squad_doc(qa("a", "Where was Ada born?", "London", 25),
                    {"id": "u1", "question": "Who was king?", "answers": [], "is_impossible": True},
                    {"id": "u2", "question": "Why?", "answers": [], "plausible_answers": [], "is_impossible": True},
                    qa("b", "When?", "1815", 35, is_impossible=False))
    doc["version"] = "v2.0"
    result = read_squad(write_json(tmp_path / "d.json", doc))
    assert [e.id for e in result.examples] == ["a", "b"]
    assert result.skipped_unanswerable == 2


def test_highlight_is_the_reference_format():
    assert highlight("abc def ghi", 4, "def") == "abc [HL]def[HL] ghi"


@pytest.mark.fault
@pytest.mark.parametrize("document, expected", [
    (squad_doc(qa("r7", "Where?", "London", 24)), "record 'r7': answer_start 24 does not point at the answer"),
    (squad_doc(qa("r8", "Where?", "London", 900)), "record 'r8': answer_start 900 is outside the context"),
    (squad_doc({"id": "r9", "answers": [{"text": "London", "answer_start": 25}]}),
     "record 'r9': missing field 'question'"),
    (squad_doc({"question": "Where?", "answers": []}), "data[0].paragraphs[0].qas[0]: missing field 'id'"),
    (squad_doc(qa("r10", "  ", "London", 25)), "record 'r10': field 'question' is empty"),
    (squad_doc(qa("r11", "Where?", "London", "25")), "field 'answer_start' should be int, found str"),
    (squad_doc(qa("r12", "Where?", "London", True)), "field 'answer_start' should be int, found bool"),
    (squad_doc(qa("r13", "Where?", "London", 25), qa("r13", "Again?", "1815", 35)), "record 'r13': duplicate id"),
    (squad_doc({"id": "r14", "question": "Where?", "answers": []}), "record 'r14': no answers"),
    (squad_doc(qa("a", "Where?", "London", 25), context=""), "field 'context' is empty"),
    ({"data": [{"title": "t"}]}, "data[0]: missing field 'paragraphs'"),
    ({"version": "1.1"}, "not a SQuAD file"),
    ([1, 2, 3], "not a SQuAD file"),
    ("{\"data\": [", "malformed JSON at line 1"),
    ("", "empty file"),
    ({"data": []}, "holds no answerable questions"),
])
def test_bad_records_raise_one_line_error_naming_file_and_record(tmp_path, document, expected):
    path = write_json(tmp_path / "bad.json", document)
    with pytest.raises(DataError) as error:
        read_squad(path)
    message = str(error.value)
    assert str(path) in message and expected in message
    assert "\n" not in message


@pytest.mark.fault
def test_invalid_utf8_and_missing_file(tmp_path):
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"data": ["caf\xe9"]}')
    with pytest.raises(DataError, match="not valid UTF-8 at byte 14"):
        read_squad(path)
    with pytest.raises(DataError, match="no such file"):
        read_squad(tmp_path / "missing.json")
