"""Bulk point awards from a CSV file: large transactions, resumable, idempotent per file.

Each row's transfer id is ``import:<file sha256>:<line>``: a row can be posted once, ever, so a
re-run after a crash (or a second run of the same file) skips what is already in the ledger.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from accrue.domain.errors import InvalidInput
from accrue.domain.ledger import Reason
from accrue.ports import UnitOfWork

HEADER = ["userId", "points", "reason"]
MAX_POINTS_PER_ROW = 1_000_000_000
MAX_REASON_LENGTH = 200
_WHOLE_NUMBER = re.compile(r"[+-]?[0-9]+")
# Rows per transaction: each commit writes every index page the chunk touched (members spread over
# the whole transfers_by_member index), so fewer, larger commits go faster (bench/ledger_bench.py).
DEFAULT_CHUNK_ROWS = 20_000


@dataclass(frozen=True, slots=True)
class AwardRow:
    line: int
    user_id: str
    points: int
    reason: str


@dataclass(frozen=True, slots=True)
class ImportReport:
    file_sha256: str
    rows: int
    awarded: int
    skipped: int
    rejected: list[tuple[int, str]]
    already_completed: bool = False


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def parse_rows(path: Path) -> Iterator[AwardRow | tuple[int, str]]:
    """Stream the file: valid rows, or (line, reason) for a bad one."""
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or [h.strip() for h in header] != HEADER:
            raise InvalidInput("header", f"must be {','.join(HEADER)}")
        for record in reader:
            if len(record) != 3:
                if any(v.strip() for v in record):  # blank lines are not rows
                    yield (reader.line_num, f"expected 3 columns, got {len(record)}")
                continue
            user_id, points_text, reason = record[0].strip(), record[1].strip(), record[2].strip()
            line = reader.line_num
            if not user_id:
                if points_text or reason:
                    yield (line, "userId: is required")
                continue
            if not (points_text.isascii() and points_text.isdigit()) and not _WHOLE_NUMBER.fullmatch(points_text):
                yield (line, "points: must be a whole number")
                continue
            points = int(points_text)
            if points <= 0:
                yield (line, "points: must be greater than 0")
                continue
            if points > MAX_POINTS_PER_ROW:
                yield (line, f"points: must be at most {MAX_POINTS_PER_ROW}")
                continue
            if len(reason) > MAX_REASON_LENGTH:
                yield (line, f"reason: must be at most {MAX_REASON_LENGTH} characters")
                continue
            yield AwardRow(line=line, user_id=user_id, points=points, reason=reason or "bulk import")


def award_chunk(uow: UnitOfWork, sha: str, rows: list[AwardRow], last_line: int, now: datetime) -> ChunkResult:
    """Post the chunk's rows not yet in the ledger and record progress, in one transaction."""
    transfer_ids = {row.line: f"import:{sha}:{row.line}" for row in rows}
    # Postings and progress commit together, so rows past the recorded progress cannot be in the
    # ledger yet: only a chunk that overlaps it (another process importing the same file at the same
    # time) needs the row-by-row check. The UNIQUE transfer id stays the last line of defence.
    done = uow.imports.lines_done(sha)
    overlaps = done is None or (bool(rows) and rows[0].line <= done)
    already = uow.ledger.existing_ids(list(transfer_ids.values())) if overlaps else set()
    members = {m.user_id: m for m in uow.members.get_many(list({row.user_id for row in rows}))}
    awarded = skipped = 0
    rejected: list[tuple[int, str]] = []
    for row in rows:
        transfer_id = transfer_ids[row.line]
        if transfer_id in already:
            skipped += 1
            continue
        member = members.get(row.user_id)
        if member is None or member.erased:
            rejected.append((row.line, f"userId: no member {row.user_id}"))
            continue
        uow.track(member)
        member.credit(
            transfer_id=transfer_id,
            points=row.points,
            reason=Reason.ADJUST,
            reference=row.reason,
            now=now,
        )
        awarded += 1
    uow.imports.record_progress(sha, last_line, awarded, skipped, now)
    uow.commit()
    return ChunkResult(awarded, skipped, rejected)


@dataclass(frozen=True, slots=True)
class ChunkResult:
    awarded: int
    skipped: int
    rejected: list[tuple[int, str]]


def import_points(
    uow_factory: Callable[[], UnitOfWork],
    path: Path,
    clock: Callable[[], datetime],
    *,
    chunk_size: int = DEFAULT_CHUNK_ROWS,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    sha = file_sha256(path)
    with uow_factory() as uow:
        status, resume_after_line = uow.imports.start(sha, path.name, clock())
        uow.commit()
    if status == "completed":
        return ImportReport(sha, 0, 0, 0, [], already_completed=True)
    awarded = skipped = rows = 0
    rejected: list[tuple[int, str]] = []
    chunk: list[AwardRow] = []
    last_line = resume_after_line

    def flush() -> None:
        nonlocal awarded, skipped, chunk
        with uow_factory() as uow:
            result = award_chunk(uow, sha, chunk, last_line, clock())
        awarded += result.awarded
        skipped += result.skipped
        rejected.extend(result.rejected)
        chunk = []
        if progress:
            progress(rows)

    for item in parse_rows(path):
        line = item.line if isinstance(item, AwardRow) else item[0]
        rows += 1
        if line <= resume_after_line:
            skipped += 1  # finished by an earlier, interrupted run
            continue
        last_line = line
        if isinstance(item, AwardRow):
            chunk.append(item)
        else:
            rejected.append(item)
        if len(chunk) >= chunk_size:
            flush()
    flush()
    with uow_factory() as uow:
        uow.imports.finish(sha, clock())
        uow.commit()
    return ImportReport(sha, rows, awarded, skipped, rejected)
