"""Proposed mappings (`jip fed mapping suggest`): this site's most frequent values of a
field, each with the network term simple rules read in it, and how many series have it.

Rules, tried in order: body parts through a table of synonyms (PROSTATA, PROSTATE_GLAND:
``prostate``); series descriptions through the usual words of a few MR contrasts (ADC,
diffusion: ``dwi``, T2); any other field, the value case-folded with spaces and hyphens
as ``_``. A value that needs no mapping (it is its network term already) is proposed
only where other values map to the same term, since a mapped term matches nothing but
its mapped local values. Nothing is applied: the site admin sets what is right.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from jip.federation.site.vocabulary import Vocabulary, exact_name, mappable_field
from jip.meta import MetaIndex

# Network term: the spellings (case-folded, spaces and hyphens as "_") sites write.
BODY_PARTS: dict[str, tuple[str, ...]] = {
    "prostate": ("prostate", "prostata", "prostate_gland", "prostatic", "prost"),
    "brain": ("brain", "head", "cerebrum", "kopf", "schaedel", "schädel", "neuro"),
    "chest": ("chest", "thorax", "lung", "lungs", "lunge"),
    "abdomen": ("abdomen", "abd", "abdominal", "bauch"),
    "pelvis": ("pelvis", "becken", "pelvic"),
    "breast": ("breast", "mamma", "brust"),
    "liver": ("liver", "leber", "hepar"),
    "heart": ("heart", "herz", "cardiac", "cor"),
    "knee": ("knee", "knie"),
    "spine": ("spine", "wirbelsaeule", "wirbelsäule", "cspine", "tspine", "lspine"),
}
SYNONYMS = {spelling: term for term, spellings in BODY_PARTS.items() for spelling in spellings}
# Series descriptions: (network term, pattern in the case-folded description), in order.
SERIES_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("adc", re.compile(r"(?<![a-z0-9])adc(?![a-z])|apparent.diffusion")),
    (
        "dwi",
        re.compile(
            r"diff|(?<![a-z0-9])dwi|(?<![a-z0-9])trace(?![a-z])|(?<![a-z0-9])b[0-9]{3,4}(?![0-9])"
        ),
    ),
    ("t2", re.compile(r"(?<![a-z0-9])t2(?!\*|_?star|[0-9])")),
)


@dataclass(frozen=True)
class Suggestion:
    field: str
    local: str
    network: str
    count: int  # series with this local value
    rule: str  # synonym, series-description, case-fold, as-is
    mapped: str | None  # the network term it is mapped to now, if any


def normal_form(value: str) -> str:
    return re.sub(r"[\s\-]+", "_", value.strip().casefold())


def propose(field: str, value: str) -> tuple[str, str] | None:
    """The network term the rules read in ``value`` of ``field``, and the rule's name."""
    normal = normal_form(value)
    if not normal:
        return None
    if field == "BodyPartExamined" and normal in SYNONYMS:
        return SYNONYMS[normal], "synonym"
    if field in ("SeriesDescription", "ProtocolName"):
        for term, pattern in SERIES_RULES:
            if pattern.search(normal):
                return term, "series-description"
        return None  # free text: no guess
    return normal, "case-fold" if normal != value else "as-is"


def suggest(
    vocabulary: Vocabulary, index: MetaIndex, field: str, top: int = 20
) -> list[Suggestion]:
    """Proposals for the ``top`` most frequent values of ``field`` at this site."""
    base = mappable_field(field)
    mapped = {m.local: m.network for m in vocabulary.list(base)}
    found: list[Suggestion] = []
    for bucket in index.field_values(exact_name(base), size=top):
        local = bucket["key"]
        proposal = propose(base, local) if isinstance(local, str) else None
        if proposal is not None:
            term, rule = proposal
            found.append(
                Suggestion(base, local, term, int(bucket["doc_count"]), rule, mapped.get(local))
            )
    targets = {s.network for s in found if s.local != s.network} | set(mapped.values())
    return [s for s in found if s.local != s.network or s.network in targets]
