"""Value types shared by the HTTP routers.

Database row ids are 64-bit: a larger number in a path, query or body must be a 4xx,
not an overflow deep in the database driver (schemathesis found exactly that).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query
from pydantic import Field

MAX_ROW_ID = 2**63 - 1

RowIdPath = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]
RowIdQuery = Annotated[int | None, Query(ge=1, le=MAX_ROW_ID)]
ByteCount = Annotated[int, Field(ge=0, le=MAX_ROW_ID)]
