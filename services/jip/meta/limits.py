"""How much work one search may ask of the index: the ``meta`` settings, as
:func:`jip.meta.query.parse_query` and :func:`jip.meta.aggs.parse_aggs` check them.

The limits are checked while a request is parsed, before any engine sees it, so that
the SQLite and the OpenSearch index refuse the same input with the same message (a 400
naming the setting). The defaults keep every statement within what SQLite runs
(SQLITE_MAX_LIKE_PATTERN_LENGTH, SQLITE_MAX_COLUMN) and what OpenSearch runs (its
max_clause_count of 1024, max_terms_count of 65,536).
"""

from __future__ import annotations

from dataclasses import dataclass

from jip.config import MetaSettings
from jip.errors import Invalid


@dataclass(frozen=True)
class QueryLimits:
    """How much work one search may ask for; each limit is a ``meta`` setting, named in
    the 400 that refuses a request beyond it."""

    max_clauses: int  # every clause of every bool level (Lucene's max_clause_count)
    max_terms: int  # values in all: a terms clause counts each, a match each word
    max_pattern_length: int  # characters of a wildcard or prefix pattern
    max_value_length: int  # characters of any other value (term, range bound, match)
    max_aggregations: int  # named aggregations in one request

    @classmethod
    def of(cls, settings: MetaSettings) -> QueryLimits:
        return cls(
            max_clauses=settings.max_query_clauses,
            max_terms=settings.max_query_terms,
            max_pattern_length=settings.max_pattern_length,
            max_value_length=settings.max_value_length,
            max_aggregations=settings.max_aggregations,
        )


DEFAULT_LIMITS = QueryLimits.of(MetaSettings())


class Budget:
    """What one query has used of its :class:`QueryLimits` so far, while it is parsed."""

    def __init__(self, limits: QueryLimits) -> None:
        self.limits = limits
        self.clauses = 0
        self.terms = 0

    def add_clauses(self, count: int, path: str) -> None:
        self.clauses += count
        if self.clauses > self.limits.max_clauses:
            raise Invalid(
                f"{path}: at most {self.limits.max_clauses} clauses in one query "
                "(setting meta.max_query_clauses): use terms for lists of values"
            )

    def add_terms(self, count: int, path: str) -> None:
        self.terms += count
        if self.terms > self.limits.max_terms:
            raise Invalid(
                f"{path}: at most {self.limits.max_terms} values in one query "
                "(setting meta.max_query_terms)"
            )

    def check_length(self, value: object, path: str, pattern: bool = False) -> None:
        if not isinstance(value, str):
            return
        limit = self.limits.max_pattern_length if pattern else self.limits.max_value_length
        if len(value) > limit:
            what, setting = (
                ("pattern", "max_pattern_length") if pattern else ("value", "max_value_length")
            )
            raise Invalid(
                f"{path}: a {what} may be at most {limit} characters, got {len(value)} "
                f"(setting meta.{setting})"
            )
