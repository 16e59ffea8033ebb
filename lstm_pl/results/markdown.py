"""RESULTS.md's generated block: the sections the regeneration writes go between ``BEGIN`` and
``END``, each between its own markers, and everything else in the file stays as it was."""

from __future__ import annotations

from pathlib import Path

from lstm_pl.files import atomic_write

BEGIN, END = "<!-- results: begin (python -m lstm_pl.results) -->", "<!-- results: end -->"


def write_results(sections: dict[str, str], path: Path) -> None:
    """Put each section into the generated block of ``path`` (between ``BEGIN`` and ``END``): a
    section already there is replaced in place, a new one goes at the block's end, the others and
    everything outside the block stay; written atomically."""
    text = path.read_text() if path.exists() else ""
    if BEGIN not in text or END not in text:
        text = (text + "\n" if text else "") + f"{BEGIN}\n{END}\n"
    for name, markdown in sections.items():
        opening, closing = f"<!-- section: {name} -->", f"<!-- /section: {name} -->"
        block = f"{opening}\n{markdown.rstrip()}\n{closing}\n"
        if opening in text and closing in text:
            text = text[: text.index(opening)] + block + text[text.index(closing) + len(closing) + 1:]
        else:
            text = text[: text.index(END)] + block + "\n" + text[text.index(END):]
    with atomic_write(path) as partial:
        partial.write_text(text)
