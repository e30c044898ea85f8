"""The overview's chart: decisions per type over the last hour, as stacked bars in SVG.

Drawn on the server, so the page needs no chart library and the numbers are in the HTML
(the chart is ``aria-hidden``; a table beside it carries the same totals for screen
readers and for copying).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from cordum.models import Decision
from cordum.ports import DecisionCount

WINDOW_S: Final = 3600
BUCKET_S: Final = 300
WIDTH: Final = 600
HEIGHT: Final = 140

COLOURS: Final = {
    Decision.ALLOW: "#2e7d32",
    Decision.ALLOW_WITH_CONSTRAINTS: "#00838f",
    Decision.REQUIRE_APPROVAL: "#b26a00",
    Decision.THROTTLE: "#6a1b9a",
    Decision.DENY: "#c62828",
}


@dataclass(frozen=True)
class Bar:
    """One stacked segment: where it is drawn and what it stands for."""

    x: float
    y: float
    width: float
    height: float
    colour: str
    title: str


@dataclass(frozen=True)
class DecisionChart:
    """What the overview shows of the last hour's decisions."""

    bars: list[Bar]
    totals: dict[Decision, int]
    fail_open: int
    peak: int
    width: int = WIDTH
    height: int = HEIGHT

    @property
    def total(self) -> int:
        """Every decision of the hour."""
        return sum(self.totals.values())


def window_start(now: float | None = None) -> float:
    """Where the hour the chart covers begins: whole buckets, the current one included."""
    now = time.time() if now is None else now
    return (now // BUCKET_S) * BUCKET_S - (WINDOW_S - BUCKET_S)


def decision_chart(counts: Iterable[DecisionCount], now: float | None = None) -> DecisionChart:
    """Bucket ``counts`` by five minutes and lay them out as stacked bars."""
    start = window_start(now)
    slots = WINDOW_S // BUCKET_S
    per_slot: list[dict[Decision, int]] = [{} for _ in range(slots)]
    totals = dict.fromkeys(COLOURS, 0)
    fail_open = 0
    for count in counts:
        index = int((count.minute - start) // BUCKET_S)
        if not 0 <= index < slots:
            continue
        per_slot[index][count.decision] = per_slot[index].get(count.decision, 0) + count.count
        totals[count.decision] += count.count
        fail_open += count.count if count.fail_open else 0
    peak = max((sum(tally.values()) for tally in per_slot), default=0)
    bars: list[Bar] = []
    step = WIDTH / slots
    for index, tally in enumerate(per_slot):
        base = float(HEIGHT)
        for decision, colour in COLOURS.items():
            value = tally.get(decision, 0)
            if not value:
                continue
            height = HEIGHT * value / peak
            base -= height
            label = time.strftime("%H:%M", time.gmtime(start + index * BUCKET_S))
            bars.append(
                Bar(
                    index * step + 2,
                    base,
                    step - 4,
                    height,
                    colour,
                    f"{label} UTC: {value} {decision.value}",
                )
            )
    return DecisionChart(bars, totals, fail_open, peak)
