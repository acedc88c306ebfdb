"""One vocabulary for the network: this site's local values, mapped to network terms.

Sites write the same thing differently: BodyPartExamined ``PROSTATA`` at one,
``PROSTATE_GLAND`` at another; SeriesDescription ``ep2d_diff_b50_800`` where the network
says ``dwi``. A federated job's cohort query speaks the network's vocabulary; each site
keeps a table (``fed_vocabulary``) of which local values, or glob patterns (``*`` any run,
``?`` one character, as the cohort language's ``wildcard``), mean each network term of a
META field, and :meth:`Vocabulary.translate` rewrites the query into local values before
it runs. Network terms compare case-folded (the network's vocabulary is lower case);
local values exactly, as META's keyword fields do.

How a clause is rewritten, on a field with mappings (other clauses, unmapped fields and
unmapped terms pass through unchanged):

- ``term`` on a mapped term: the OR (``bool.should``, one must match) of a ``terms`` on
  its exact local values and a ``wildcard`` per local pattern; ``terms``: the same over
  all its values, unmapped ones kept as they are;
- ``match`` on a text field (SeriesDescription) whose whole text is a mapped term: the
  same OR on the field's exact twin (``SeriesDescription.keyword``);
- ``bool``: each clause of must, filter, should and must_not, rewritten alike.

Nothing is mapped unless the site admin sets it (`jip fed mapping set`); proposals from
the site's own frequent values come from :mod:`.suggest`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, delete, select
from sqlalchemy.orm import Session

from jip.base import now_utc
from jip.errors import Invalid, NotFound
from jip.federation.site.schema import FedVocabulary
from jip.meta import FIELDS

EXACT_SUFFIX = ".keyword"
MAPPABLE = {"keyword", "text"}  # META field types whose values are words
OCCURS = ("must", "filter", "should", "must_not")
MAX_LOCAL, MAX_NETWORK = 256, 128


@dataclass(frozen=True)
class TermMapping:
    """One local value (or pattern) of a field and the network term it means."""

    field: str
    local: str
    network: str
    pattern: bool

    def view(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "local": self.local,
            "network": self.network,
            "pattern": self.pattern,
        }


def is_pattern(local: str) -> bool:
    return "*" in local or "?" in local


def mappable_field(name: str) -> str:
    """The META field ``name`` (``X.keyword`` is ``X``) whose values may be mapped;
    Invalid naming the fields that may be, for any other name."""
    base = name.removesuffix(EXACT_SUFFIX)
    spec = FIELDS.get(base)
    if spec is None or spec.type.value not in MAPPABLE:
        words = sorted(n for n, f in FIELDS.items() if f.type.value in MAPPABLE)
        raise Invalid(f"field {name!r}: not a META field of words (mappable: {', '.join(words)})")
    return base


def network_term(text: str) -> str:
    """A network term as the vocabulary keeps and compares it: stripped, case-folded."""
    return text.strip().casefold()


def exact_name(field: str) -> str:
    """The name a term, terms or wildcard clause uses for ``field``'s exact values."""
    return f"{field}{EXACT_SUFFIX}" if FIELDS[field].type.value == "text" else field


class Vocabulary:
    """This site's mappings (``fed_vocabulary``), and queries rewritten with them."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def set(self, field: str, local: str, network: str, *, by: str) -> TermMapping:
        """Map ``local`` (a value, or a pattern with * or ?) of ``field`` to ``network``;
        a local value means one network term, so this replaces its earlier mapping."""
        base, term = mappable_field(field), network_term(network)
        if not local or len(local) > MAX_LOCAL:
            raise Invalid(f"local value: 1 to {MAX_LOCAL} characters, got {len(local)}")
        if not term or len(term) > MAX_NETWORK:
            raise Invalid(f"network term: 1 to {MAX_NETWORK} characters, got {len(term)}")
        with Session(self.engine) as session, session.begin():
            row = session.scalar(
                select(FedVocabulary).where(
                    FedVocabulary.field == base, FedVocabulary.local == local
                )
            )
            if row is None:
                row = FedVocabulary(field=base, local=local)
                session.add(row)
            row.network, row.pattern = term, is_pattern(local)
            row.updated_by, row.updated_at = by[:64], now_utc()
        return TermMapping(base, local, term, is_pattern(local))

    def remove(self, field: str, local: str) -> None:
        base = mappable_field(field)
        with Session(self.engine) as session, session.begin():
            gone = session.execute(
                delete(FedVocabulary).where(
                    FedVocabulary.field == base, FedVocabulary.local == local
                )
            )
            if not getattr(gone, "rowcount", 0):
                raise NotFound(
                    f"{base} {local!r}: not mapped at this site (`jip fed mapping list`)"
                )

    def list(self, field: str | None = None) -> list[TermMapping]:
        query = select(FedVocabulary).order_by(
            FedVocabulary.field, FedVocabulary.network, FedVocabulary.local
        )
        if field is not None:
            query = query.where(FedVocabulary.field == mappable_field(field))
        with Session(self.engine) as session:
            return [
                TermMapping(r.field, r.local, r.network, r.pattern) for r in session.scalars(query)
            ]

    def translate(self, query: dict[str, Any]) -> dict[str, Any]:
        """``query`` (the cohort language, in network terms) in this site's local values;
        a new document, ``query`` is left as it was."""
        return Translation(self.list()).rewrite(query)


class Translation:
    """One query's rewriting under a fixed set of mappings."""

    def __init__(self, mappings: Iterable[TermMapping]) -> None:
        self.locals: dict[str, dict[str, list[TermMapping]]] = {}
        for m in mappings:
            self.locals.setdefault(m.field, {}).setdefault(m.network, []).append(m)

    def rewrite(self, node: Any) -> Any:
        if not isinstance(node, dict) or len(node) != 1:
            return node  # not a clause: META's parser names the fault when it reads it
        ((clause, body),) = node.items()
        if clause == "bool" and isinstance(body, dict):
            return {"bool": {k: self._occur(v) if k in OCCURS else v for k, v in body.items()}}
        if clause in ("term", "terms", "match") and isinstance(body, dict):
            rewritten = getattr(self, f"_{clause}")(body)
            return node if rewritten is None else rewritten
        return node

    def _occur(self, clauses: Any) -> Any:
        if isinstance(clauses, list):
            return [self.rewrite(c) for c in clauses]
        return self.rewrite(clauses)

    def _mapped(self, name: object) -> dict[str, list[TermMapping]] | None:
        if not isinstance(name, str):
            return None
        return self.locals.get(name.removesuffix(EXACT_SUFFIX))

    def _term(self, body: dict[str, Any]) -> dict[str, Any] | None:
        if len(body) != 1:
            return None
        ((name, spec),) = body.items()
        value = spec.get("value") if isinstance(spec, dict) else spec
        return self._values(name, [value])

    def _terms(self, body: dict[str, Any]) -> dict[str, Any] | None:
        names = [k for k in body if k != "boost"]
        if len(names) != 1 or not isinstance(body[names[0]], list):
            return None
        return self._values(names[0], body[names[0]])

    def _match(self, body: dict[str, Any]) -> dict[str, Any] | None:
        if len(body) != 1:
            return None
        ((name, spec),) = body.items()
        text = spec.get("query") if isinstance(spec, dict) else spec
        mapped = self._mapped(name)
        if (
            mapped is None
            or not isinstance(name, str)
            or not isinstance(text, str)
            or network_term(text) not in mapped
        ):
            return None
        return _any_of(exact_name(name.removesuffix(EXACT_SUFFIX)), [], mapped[network_term(text)])

    def _values(self, name: str, values: list[Any]) -> dict[str, Any] | None:
        mapped = self._mapped(name)
        if mapped is None:
            return None
        kept: list[Any] = []
        found: list[TermMapping] = []
        for value in values:
            hit = mapped.get(network_term(value)) if isinstance(value, str) else None
            if hit is None:
                kept.append(value)
            else:
                found += hit
        if not found:
            return None
        return _any_of(name, kept, found)


def _any_of(name: str, values: list[Any], mappings: list[TermMapping]) -> dict[str, Any]:
    """The clause matching any of ``values`` and of the mappings' locals on ``name``."""
    exact = list(dict.fromkeys([*values, *(m.local for m in mappings if not m.pattern)]))
    clauses: list[dict[str, Any]] = []
    if len(exact) == 1:
        clauses.append({"term": {name: exact[0]}})
    elif exact:
        clauses.append({"terms": {name: exact}})
    clauses += [{"wildcard": {name: m.local}} for m in mappings if m.pattern]
    if len(clauses) == 1:
        return clauses[0]
    return {"bool": {"should": clauses, "minimum_should_match": 1}}
