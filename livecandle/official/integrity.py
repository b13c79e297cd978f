"""Checks of the stored data against every invariant of DESIGN.md section 2, and repair
of what older code could leave behind (same-score duplicates, forming rows, stale meta).

1. ``klines_z`` holds only closed candles (close time < now), score = open time.
2. At most one member per score.
3. Live data never in ``klines_z`` (members are 12-field kline arrays); official data
   never in ``live_candle`` (values are live JSON objects, ``source: "live"``).
4. ``klines_meta.latest`` = highest score, ``earliest`` = lowest, ``count`` = ZCARD.
5. Every missing open time between stored candles is a recorded exchange gap.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import msgspec

from livecandle.domain.model import SeriesKey
from livecandle.store import Store

CHUNK = 10_000


@dataclass(frozen=True, slots=True)
class Breach:
    series: str
    invariant: int
    detail: str


@dataclass
class SeriesReport:
    series: str
    count: int = 0
    breaches: list[Breach] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    duplicates: dict[int, list[bytes]] = field(default_factory=dict)
    bad_members: list[bytes] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)

    def breach(self, invariant: int, detail: str) -> None:
        self.breaches.append(Breach(self.series, invariant, detail))


@dataclass
class Report:
    series: list[SeriesReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(r.breaches for r in self.series)

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "series": [
                {
                    "series": r.series,
                    "count": r.count,
                    "breaches": [asdict(b) for b in r.breaches],
                    "warnings": r.warnings,
                    "repaired": r.repaired,
                }
                for r in self.series
            ],
        }

    def text(self) -> str:
        lines = []
        for r in self.series:
            status = "ok" if not r.breaches else f"{len(r.breaches)} breach(es)"
            lines.append(f"{r.series}: {r.count} candles, {status}")
            lines.extend(f"  invariant {b.invariant}: {b.detail}" for b in r.breaches[:20])
            if len(r.breaches) > 20:
                lines.append(f"  ... and {len(r.breaches) - 20} more")
            lines.extend(f"  warning: {w}" for w in r.warnings[:10])
            lines.extend(f"  repaired: {x}" for x in r.repaired)
        breached = sum(1 for r in self.series if r.breaches)
        lines.append(
            "all invariants hold"
            if self.ok
            else f"{breached} of {len(self.series)} series break invariants"
        )
        return "\n".join(lines)


def _decode_row(member: bytes) -> list[Any] | None:
    try:
        row = msgspec.json.decode(member)
    except msgspec.DecodeError:
        return None
    if not isinstance(row, list) or len(row) < 11:
        return None
    if not (isinstance(row[0], int) and isinstance(row[6], int) and isinstance(row[8], int)):
        return None
    if not all(isinstance(row[i], str) for i in (1, 2, 3, 4, 5, 7, 9, 10)):
        return None
    return row


def _rank(member: bytes) -> tuple[int, float, bytes]:
    row = _decode_row(member)
    if row is None:
        return (-1, -1.0, member)
    return (row[8], float(row[5]), member)


async def check_series(store: Store, series: SeriesKey, now_ms: int) -> SeriesReport:
    rep = SeriesReport(str(series))
    interval = series.interval
    meta = await store.meta(series)
    total = await store.count(series)
    rep.count = total
    gaps = await store.gaps(series)
    gap_starts = {g[0]: g[1] for g in gaps}
    prev_score: int | None = None
    prev_members: list[bytes] = []
    lowest_ms: int | None = None
    highest_ms: int | None = None
    misaligned = 0
    missing_unrecorded = 0
    for offset in range(0, total, CHUNK):
        chunk = await store.members(series, offset, offset + CHUNK - 1)
        for member, score_f in chunk:
            score = int(score_f)
            if score_f != score:
                rep.breach(2, f"score {score_f!r} is not an integer open time")
            if lowest_ms is None:
                lowest_ms = score
            highest_ms = score
            row = _decode_row(member)
            if row is None:
                rep.bad_members.append(member)
                rep.breach(3, f"member at {score} is not a 12-field kline array: {member[:80]!r}")
            elif row[0] != score:
                rep.breach(1, f"member at score {score} has open time {row[0]}")
            elif row[6] >= now_ms:
                rep.bad_members.append(member)
                rep.breach(1, f"candle at {score} is not closed (close time {row[6]} >= now)")
            if score == prev_score:
                prev_members.append(member)
                rep.duplicates[score] = list(prev_members)
                continue
            if not interval.is_aligned(score):
                misaligned += 1
            if prev_score is not None and interval.is_aligned(prev_score):
                expected_ms = interval.next_open(prev_score)
                if score > expected_ms and gap_starts.get(expected_ms) != score:
                    missing_unrecorded += 1
                    if missing_unrecorded <= 5:
                        n = interval.count_between(expected_ms, interval.open_of(score))
                        rep.breach(
                            5,
                            f"{n} candle(s) missing from {expected_ms} to {score} and "
                            f"not recorded as an exchange gap",
                        )
            prev_score, prev_members = score, [member]
    for score, members in rep.duplicates.items():
        rep.breach(2, f"{len(members)} members share open time {score}")
    if missing_unrecorded > 5:
        rep.breach(5, f"... {missing_unrecorded} unrecorded holes in all")
    if misaligned:
        rep.warnings.append(
            f"{misaligned} open time(s) off the {interval.name} grid "
            f"(irregular exchange history is kept as Binance sent it)"
        )
    if meta.count != total:
        rep.breach(4, f"klines_meta.count = {meta.count} but ZCARD = {total}")
    if meta.latest != highest_ms:
        rep.breach(4, f"klines_meta.latest = {meta.latest} but the highest score is {highest_ms}")
    if meta.earliest != lowest_ms:
        rep.breach(4, f"klines_meta.earliest = {meta.earliest} but the lowest score is {lowest_ms}")
    live = await store.live_candle(series)
    if live is not None:
        try:
            value = msgspec.json.decode(live)
        except msgspec.DecodeError:
            value = None
        if not isinstance(value, dict) or value.get("source") != "live":
            rep.breach(3, f"live_candle holds something other than a live candle: {live[:80]!r}")
    return rep


async def repair_series(store: Store, series: SeriesKey, rep: SeriesReport, now_ms: int) -> None:
    """Keep the best member of each duplicated open time (a closed 12-field row with the
    most trades), drop rows that are not closed klines, and recompute the meta hash."""
    if rep.bad_members:
        removed = await store.remove_members(series, rep.bad_members, now_ms)
        rep.repaired.append(f"removed {removed} member(s) that were not closed kline rows")
    for score, members in rep.duplicates.items():
        valid = [m for m in members if m not in rep.bad_members]
        if not valid:
            continue
        best = max(valid, key=_rank)
        await store.write_candles(series, [(score, best)], now_ms)
        rep.repaired.append(f"kept 1 of {len(members)} members at {score}")
    if not rep.repaired and any(b.invariant == 4 for b in rep.breaches):
        await store.write_candles(series, [], now_ms)
        rep.repaired.append("recomputed klines_meta")


async def verify(
    store: Store,
    series: list[SeriesKey],
    now_ms: int,
    repair: bool = False,
) -> Report:
    report = Report()
    for s in series:
        rep = await check_series(store, s, now_ms)
        if repair and rep.breaches:
            await repair_series(store, s, rep, now_ms)
            after = await check_series(store, s, now_ms)
            after.repaired = rep.repaired
            rep = after
        report.series.append(rep)
    return report
