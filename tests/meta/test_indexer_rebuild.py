"""`Indexer.rebuild_all` and `jip meta rebuild`: a whole index built anew from the
summaries the catalog keeps, without reading a header again; the same documents as
everyday indexing, in bulk (SQLite) or batch by batch (an index without a bulk path);
series indexed while it runs are not lost at the swap."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from tests.meta.test_indexer import indexer_of, ingest, plan_series, site_settings

from jip.cli.main import cli
from jip.meta.fields import ID_FIELD
from jip.meta.service import PROJECTS_FIELD, IndexLedger
from jip.runtime import Runtime, build_runtime


@pytest.fixture
def indexed(tmp_path: Path) -> Iterator[Runtime]:
    runtime = build_runtime(site_settings(tmp_path / "data"))
    ingest(runtime, plan_series(12, seed=7), tmp_path / "spool")
    indexer_of(runtime, batch_size=5).drain()
    yield runtime
    runtime.close()


def documents(runtime: Runtime) -> list[dict[str, Any]]:
    return sorted(runtime.index.search(limit=1000).hits, key=lambda d: d[ID_FIELD])


def no_header_reads(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("a rebuild reads no stored header")

    monkeypatch.setattr(runtime.storage, "open", refuse)


class NoBulkIndex:
    """The same index seen without its bulk path, as an OpenSearch index is."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        if name == "rebuild":
            raise AttributeError(name)
        return getattr(self._inner, name)


@pytest.mark.parametrize("bulk", [True, False], ids=["bulk", "batches"])
def test_a_rebuild_gives_the_documents_everyday_indexing_gave(
    indexed: Runtime, monkeypatch: pytest.MonkeyPatch, bulk: bool
) -> None:
    before = documents(indexed)
    assert len(before) == 12 and all(d[PROJECTS_FIELD] for d in before)
    indexed.index.clear()  # lost: the index is derived data
    no_header_reads(indexed, monkeypatch)
    indexer = indexer_of(indexed, batch_size=5)
    if not bulk:
        indexer.index = NoBulkIndex(indexed.index)  # type: ignore[assignment]
    seen: list[int] = []
    assert indexer.rebuild_all(seen.append) == 12
    assert documents(indexed) == before
    assert seen and seen[-1] == 12 and seen == sorted(seen)


def test_series_indexed_while_a_rebuild_runs_are_kept(
    indexed: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    late = plan_series(14, seed=8)[-2:]  # two series the corpus does not hold
    walk = IndexLedger.summaries_by_series

    def walk_then_receive(ledger: IndexLedger) -> Iterable[tuple[str, list[dict[str, Any]]]]:
        for number, item in enumerate(walk(ledger)):
            if number == 1:  # the site's indexer stores two new series meanwhile
                ingest(indexed, late, tmp_path / "late")
                indexer_of(indexed).drain()
            yield item

    monkeypatch.setattr(IndexLedger, "summaries_by_series", walk_then_receive)
    assert indexer_of(indexed).rebuild_all() == 14
    held = {d[ID_FIELD] for d in documents(indexed)}
    assert {p.expected[ID_FIELD] for p in late} <= held


def test_jip_meta_rebuild_restores_a_lost_index(tmp_path: Path) -> None:
    settings = site_settings(tmp_path / "data")
    runtime = build_runtime(settings)
    try:
        ingest(runtime, plan_series(5, seed=43), tmp_path / "spool")
        indexer_of(runtime).drain()
        before = documents(runtime)
        runtime.index.clear()
    finally:
        runtime.close()
    result = CliRunner().invoke(cli, ["--data-dir", str(settings.data_dir), "meta", "rebuild"])
    assert result.exit_code == 0, result.output
    assert "Done: 5 series indexed from 5 with summaries" in result.output
    runtime = build_runtime(settings)
    try:
        assert documents(runtime) == before
    finally:
        runtime.close()
    helped = CliRunner().invoke(cli, ["meta", "rebuild", "--help"])
    assert helped.exit_code == 0 and "no header is read again" in helped.output
