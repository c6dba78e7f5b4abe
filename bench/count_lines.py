"""What Lightning removes, in lines: per feature, the lines of code that implement it in vanilla/ and in
lightning/ (non-blank lines that are not comments or docstrings).

A file counts towards one feature (the table below) unless it carries section markers, comment lines
`# feature: NAME`, which switch the feature of the lines that follow; the two train.py files use them to
split their wiring by feature. Lines Lightning needed anyway (the exact-resume hooks, the sampler, the metrics
row keeping) are counted on Lightning's side. The shared/ layer (data, model, metrics, CLI) is used by both and
counted by neither.

    python bench/count_lines.py           # the table
    python bench/count_lines.py --show    # every counted line with its feature
"""

from __future__ import annotations

import argparse
import ast
import io
import json
import sys
import tokenize
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FEATURES = ("loop", "early stopping", "checkpointing + resume", "data parallel / DDP", "batch-size search",
            "precision", "logging", "test phase", "wiring")
FILE_FEATURE = {
    "vanilla/fit_loop.py": "loop",
    "vanilla/seed.py": "loop",
    "vanilla/early_stopping.py": "early stopping",
    "vanilla/model_checkpoint.py": "checkpointing + resume",
    "vanilla/checkpoint_io.py": "checkpointing + resume",
    "vanilla/checkpoint_connector.py": "checkpointing + resume",
    "vanilla/resumable_sampler.py": "checkpointing + resume",
    "vanilla/accelerator.py": "data parallel / DDP",
    "vanilla/data_parallel.py": "data parallel / DDP",
    "vanilla/ddp.py": "data parallel / DDP",
    "vanilla/batch_size_finder.py": "batch-size search",
    "vanilla/precision.py": "precision",
    "vanilla/loggers.py": "logging",
    "vanilla/progress_bar.py": "logging",
    "vanilla/test_loop.py": "test phase",
    "vanilla/train.py": "wiring",
    "lightning/exact_resume.py": "checkpointing + resume",
    "lightning/train.py": "wiring",
}
MARKER = "# feature:"


def docstring_lines(source: str) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                lines.update(range(first.lineno, first.end_lineno + 1))
    return lines


def code_lines(source: str) -> set[int]:
    """Line numbers holding a token that is code (not a comment, not layout, not a docstring)."""
    skip = docstring_lines(source)
    layout = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
              tokenize.ENDMARKER, tokenize.ENCODING}
    lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in layout:
            lines.update(n for n in range(token.start[0], token.end[0] + 1) if n not in skip)
    return lines


def count_file(relative: str) -> list[tuple[int, str, str]]:
    """(line number, feature, text) of every counted line of one file."""
    source = (REPO / relative).read_text(encoding="utf-8")
    counted = code_lines(source)
    feature = FILE_FEATURE[relative]
    result = []
    for number, text in enumerate(source.splitlines(), start=1):
        stripped = text.strip()
        if stripped.startswith(MARKER):
            feature = stripped[len(MARKER):].strip()
            if feature not in FEATURES:
                raise SystemExit(f"error: {relative}:{number}: unknown feature {feature!r} (one of {FEATURES})")
        elif number in counted:
            result.append((number, feature, text))
    return result


def count() -> dict[str, dict[str, int]]:
    """{feature: {"vanilla": lines, "lightning": lines}}, plus a "total" row."""
    table = {feature: {"vanilla": 0, "lightning": 0} for feature in FEATURES}
    for relative in FILE_FEATURE:
        side = relative.split("/")[0]
        for _, feature, _ in count_file(relative):
            table[feature][side] += 1
    table["total"] = {side: sum(row[side] for row in table.values()) for side in ("vanilla", "lightning")}
    return table


def check_every_file_is_mapped() -> None:
    for side in ("vanilla", "lightning"):
        for path in sorted((REPO / side).glob("*.py")):
            relative = path.relative_to(REPO).as_posix()
            if relative not in FILE_FEATURE and path.read_text().strip():
                raise SystemExit(f"error: {relative} is not assigned a feature in bench/count_lines.py")


def markdown(table: dict[str, dict[str, int]]) -> str:
    lines = ["| feature | vanilla/ | lightning/ | Lightning removes |", "|---|---:|---:|---:|"]
    for feature, row in table.items():
        removed = row["vanilla"] - row["lightning"]
        name = f"**{feature}**" if feature == "total" else feature
        share = f" ({removed / row['vanilla']:.0%})" if row["vanilla"] else ""
        lines.append(f"| {name} | {row['vanilla']} | {row['lightning']} | {removed}{share} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--show", action="store_true", help="print every counted line with its feature")
    parser.add_argument("--json", action="store_true", help="print the table as JSON")
    args = parser.parse_args(argv)
    check_every_file_is_mapped()
    if args.show:
        for relative in FILE_FEATURE:
            for number, feature, text in count_file(relative):
                print(f"{relative}:{number:<4} {feature:<24} {text}")
    table = count()
    print(json.dumps(table, indent=2) if args.json else markdown(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
