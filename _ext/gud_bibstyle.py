"""Author–year labels for the reference list, matching the author–year citations in the text.

Registered as the pybtex formatting style ``gud_author_year`` (``bibtex_default_style`` in
``_config.yml``): pybtex's ``plain`` style (sorted by author, year, title) with labels such as
"Gerdes et al., 2024", a letter added where two entries would share one ("Song et al., 2021a").
"""
from __future__ import annotations

from collections import Counter

import pybtex.plugin
from pybtex.richtext import Text
from pybtex.style.formatting.plain import Style as PlainStyle
from pybtex.style.labels import BaseLabelStyle


def _surname(person) -> str:
    return " ".join(Text.from_latex(part).render_as("text") for part in person.prelast_names + person.last_names)


def _label(entry) -> str:
    people = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [_surname(p) for p in people]
    if not names:
        who = Text.from_latex(entry.fields.get("author", entry.key)).render_as("text").strip("{}")
    elif len(names) == 1:
        who = names[0]
    elif len(names) == 2:
        who = f"{names[0]} and {names[1]}"
    else:
        who = f"{names[0]} et al."
    return f"{who}, {entry.fields.get('year', 'n.d.')}"


class AuthorYearLabels(BaseLabelStyle):
    def format_labels(self, sorted_entries):
        entries = list(sorted_entries)
        labels = [_label(e) for e in entries]
        count, seen = Counter(labels), Counter()
        for label in labels:
            if count[label] > 1:
                seen[label] += 1
                yield label + "abcdefghijklmnopqrstuvwxyz"[seen[label] - 1]
            else:
                yield label


class AuthorYearStyle(PlainStyle):
    default_label_style = "gud_author_year"


def setup(app):
    pybtex.plugin.register_plugin("pybtex.style.labels", "gud_author_year", AuthorYearLabels)
    pybtex.plugin.register_plugin("pybtex.style.formatting", "gud_author_year", AuthorYearStyle)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
