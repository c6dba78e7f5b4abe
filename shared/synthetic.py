"""A deterministic, synthetic question-generation corpus written as SQuAD v1.1 JSON.

This machine has no network and no data-set hub, so the default run trains on data made here. The corpus is
built so that the highlight matters: every paragraph states several facts (plus distractor sentences about
other entities), several answers are marked in the same paragraph, and each answer has its own question. A
model that ignores the [HL] markers cannot know which of the paragraph's questions to ask.

It is synthetic: scores on it say that a trainer works, not how well a model asks questions about real text.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

SYLLABLES = [
    "ka", "lo", "mi", "ren", "dor", "va", "shi", "tam", "bel", "qui", "nor", "zed", "pa", "lin", "gor",
    "fe", "ru", "sol", "tek", "mar", "ol", "bri", "cas", "den", "ith", "um", "yor", "hal", "ves", "ana",
]
FIRST_NAMES = [
    "Alice", "Bruno", "Chen", "Dalia", "Emeka", "Farah", "Goran", "Hana", "Ivan", "Jamal", "Keiko", "Luis",
    "Maya", "Nikos", "Olga", "Pavel", "Quinn", "Rosa", "Sami", "Tara", "Umar", "Vera", "Wen", "Yusuf", "Zofia",
]
PROFESSIONS = ["chemist", "painter", "engineer", "poet", "surgeon", "architect", "composer", "astronomer",
               "historian", "botanist", "judge", "sculptor"]
FIELDS = ["shipbuilding", "textiles", "printing", "glassmaking", "mining", "banking", "railways", "brewing",
          "pharmaceuticals", "telegraphy"]
RIVERS_SUFFIX = ["River", "Water", "Creek"]
INSTRUMENTS = ["violin", "cello", "flute", "harp", "organ", "trumpet", "piano", "oboe"]
PRIZES = ["Golden Quill", "Silver Compass", "Iron Lantern", "Crystal Bell", "Copper Star", "Amber Leaf"]


def _word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(syllables)).capitalize()


@dataclass
class World:
    """Entity tables: people, cities and companies, with their facts."""

    people: list[dict]
    cities: list[dict]
    companies: list[dict]


def make_world(rng: random.Random, n_people: int, n_cities: int, n_companies: int) -> World:
    names = set()

    def unique(make) -> str:
        while True:
            value = make()
            if value not in names:
                names.add(value)
                return value

    cities = [
        {
            "name": unique(lambda: _word(rng, 2)),
            "country": _word(rng, 3),
            "river": f"{_word(rng, 2)} {rng.choice(RIVERS_SUFFIX)}",
            "population": f"{rng.randint(2, 95) * 10_000:,}",
            "founded": str(rng.randint(800, 1700)),
        }
        for _ in range(n_cities)
    ]
    people = [
        {
            "name": unique(lambda: f"{rng.choice(FIRST_NAMES)} {_word(rng, 2)}"),
            "born_city": rng.choice(cities)["name"],
            "born_year": str(rng.randint(1780, 1960)),
            "profession": rng.choice(PROFESSIONS),
            "instrument": rng.choice(INSTRUMENTS),
            "prize": rng.choice(PRIZES),
            "prize_year": None,  # filled below, after the birth year is known
        }
        for _ in range(n_people)
    ]
    for person in people:
        person["prize_year"] = str(int(person["born_year"]) + rng.randint(25, 60))
    companies = [
        {
            "name": unique(lambda: f"{_word(rng, 2)} {rng.choice(['Works', 'Company', 'Brothers', 'Group'])}"),
            "founder": rng.choice(people)["name"],
            "founded": str(rng.randint(1800, 1990)),
            "city": rng.choice(cities)["name"],
            "field": rng.choice(FIELDS),
        }
        for _ in range(n_companies)
    ]
    return World(people, cities, companies)


# Each relation: (sentence template, question templates, answer field). The sentence states the fact; the
# question asks for the answer field. Several question wordings per relation make the target less trivial.
PERSON_FACTS = [
    ("{name} was born in {born_city} in {born_year}.",
     ["Where was {name} born?", "In which city was {name} born?"], "born_city"),
    ("{name} was born in {born_city} in {born_year}.",
     ["When was {name} born?", "In what year was {name} born?"], "born_year"),
    ("{name} worked as a {profession} for most of {pronoun} life.",
     ["What was {name}'s profession?", "What did {name} work as?"], "profession"),
    ("In {prize_year}, {name} received the {prize}.",
     ["Which award did {name} receive in {prize_year}?", "What prize was given to {name}?"], "prize"),
    ("In {prize_year}, {name} received the {prize}.",
     ["When did {name} receive the {prize}?", "In which year was {name} given the {prize}?"], "prize_year"),
    ("As a child, {name} learned to play the {instrument}.",
     ["Which instrument did {name} learn as a child?", "What did {name} learn to play?"], "instrument"),
]
CITY_FACTS = [
    ("{name} lies on the banks of the {river}.",
     ["On which river does {name} lie?", "What river runs through {name}?"], "river"),
    ("{name} is a city in {country}.",
     ["In which country is {name}?", "Which country is {name} part of?"], "country"),
    ("About {population} people live in {name}.",
     ["How many people live in {name}?", "What is the population of {name}?"], "population"),
    ("{name} was founded in {founded}.",
     ["When was {name} founded?", "In what year was {name} founded?"], "founded"),
]
COMPANY_FACTS = [
    ("{name} was founded by {founder} in {founded}.",
     ["Who founded {name}?", "Who was the founder of {name}?"], "founder"),
    ("{name} was founded by {founder} in {founded}.",
     ["When was {name} founded?", "In which year was {name} established?"], "founded"),
    ("The headquarters of {name} are in {city}.",
     ["Where are the headquarters of {name}?", "In which city is {name} based?"], "city"),
    ("{name} made its name in {field}.",
     ["In which industry did {name} make its name?", "What field is {name} known for?"], "field"),
]
KINDS = [("people", PERSON_FACTS), ("cities", CITY_FACTS), ("companies", COMPANY_FACTS)]


def _render_paragraph(rng: random.Random, world: World, kind: str, facts: list, entity: dict, par_id: str):
    """One paragraph about `entity`: 3-4 facts and 1-2 distractor sentences, with 2-3 questions."""
    fields = dict(entity, pronoun=rng.choice(["his", "her", "their"]))
    chosen = rng.sample(range(len(facts)), k=min(len(facts), rng.randint(3, 4)))
    sentences: list[tuple[str, int | None]] = []  # (text, index into `facts` or None for a distractor)
    seen_text = set()
    for i in chosen:
        text = facts[i][0].format(**fields)
        if text not in seen_text:  # two relations can share one sentence (born in X in Y)
            seen_text.add(text)
            sentences.append((text, i))
    for _ in range(rng.randint(1, 2)):
        other_kind, other_facts = rng.choice(KINDS)
        other = rng.choice(getattr(world, other_kind))
        template = rng.choice(other_facts)[0]
        other_fields = dict(other, pronoun=rng.choice(["his", "her", "their"]))
        sentences.insert(rng.randint(1, len(sentences)), (template.format(**other_fields), None))

    context = ""
    offsets = []  # start of each sentence in the context
    for text, _ in sentences:
        if context:
            context += " "
        offsets.append(len(context))
        context += text

    qas = []
    asked = set()
    for fact_index in chosen:
        template, questions, answer_field = facts[fact_index]
        sentence = template.format(**fields)
        answer = fields[answer_field]
        if answer in asked:
            continue
        # Offset of the answer inside its sentence: render the template only up to the answer's slot, so a
        # name that happens to contain the answer text earlier in the sentence cannot fool us.
        prefix = template.split("{" + answer_field + "}")[0].format(**fields)
        answer_start = offsets[[text for text, _ in sentences].index(sentence)] + len(prefix)
        asked.add(answer)
        qas.append({
            "id": f"{par_id}-q{len(qas)}",
            "question": rng.choice(questions).format(**fields),
            "answers": [{"text": answer, "answer_start": answer_start}],
        })
    return {"context": context, "qas": qas[: rng.randint(2, 3)]}


def make_split(rng: random.Random, world: World, n_examples: int, split: str) -> dict:
    """A SQuAD v1.1 document with at least `n_examples` questions."""
    articles = []
    count = 0
    while count < n_examples:
        kind, facts = KINDS[len(articles) % len(KINDS)]
        entity = rng.choice(getattr(world, kind))
        paragraph = _render_paragraph(rng, world, kind, facts, entity, f"{split}-{len(articles)}")
        count += len(paragraph["qas"])
        articles.append({"title": entity["name"], "paragraphs": [paragraph]})
    return {"version": "1.1", "data": articles}


DEFAULT_SIZES = {"train": 5000, "dev": 600, "test": 300}


def write_synthetic_squad(out_dir: str | Path, seed: int = 1234, sizes: dict[str, int] | None = None) -> dict:
    """Write train.json, dev.json and test.json (SQuAD v1.1 format) into `out_dir`; return their paths.

    Each split draws its entities from its own world so that test paragraphs are about unseen entities.
    Files are written to a temporary name and renamed, so a reader never sees half a file.
    """
    sizes = dict(DEFAULT_SIZES, **(sizes or {}))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for offset, split in enumerate(("train", "dev", "test")):
        rng = random.Random(f"{seed}-{split}-{offset}")
        n = sizes[split]
        world = make_world(rng, n_people=max(20, n // 4), n_cities=max(10, n // 10), n_companies=max(10, n // 8))
        document = make_split(rng, world, n, split)
        path = out / f"{split}.json"
        tmp = out / f".{split}.json.tmp-{os.getpid()}"
        tmp.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)
        paths[split] = path
    return paths
