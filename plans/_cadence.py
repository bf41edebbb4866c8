"""`MapCadence`: when the maps of an operando experiment start, in protocol time.

The paper maps every ~5 min while the biphasic front crosses the cathode and less often
elsewhere. A cadence is a list of stretches ``(from_time_s, interval_s)``: from protocol time
``from_time_s`` on (s since the potentiostat started), a map starts every ``interval_s``.
A fixed schedule, not an adaptive one: it is known before the experiment, reviewable, and the
same whatever the analysis or the machine's load does (see docs/plans.md).
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["MapCadence"]


def _stretch(index: int, stretch: Sequence[float]) -> tuple[float, float]:
    """One ``(from_time_s, interval_s)`` pair, checked; errors name ``map_schedule[index]``."""
    where = f"map_schedule[{index}]"
    try:
        from_time_s, interval_s = (float(value) for value in stretch)
    except (TypeError, ValueError):
        raise ValueError(
            f"{where}={stretch!r} must be a pair (from_time_s, interval_s) of numbers"
        ) from None
    if not (math.isfinite(from_time_s) and from_time_s >= 0):
        raise ValueError(f"{where}: from_time_s={from_time_s} must be a finite time >= 0 s")
    if not (math.isfinite(interval_s) and interval_s > 0):
        raise ValueError(f"{where}: interval_s={interval_s} must be a finite time > 0 s")
    return from_time_s, interval_s


@dataclass(frozen=True)
class MapCadence:
    """Map start times as stretches of constant interval, in protocol time (s).

    Parameters
    ----------
    stretches
        ``(from_time_s, interval_s)`` pairs, ``from_time_s`` strictly increasing and the
        first 0 s; ``interval_s`` > 0 s holds until the next stretch begins.

    Examples
    --------
    >>> cadence = MapCadence(((0.0, 300.0), (2100.0, 1500.0)))
    >>> cadence.next_start_s(0.0), cadence.next_start_s(1800.0), cadence.next_start_s(2100.0)
    (300.0, 2100.0, 3600.0)
    >>> MapCadence(((0.0, 300.0), (100.0, -1.0)))
    Traceback (most recent call last):
    ...
    ValueError: map_schedule[1]: interval_s=-1.0 must be a finite time > 0 s
    """

    stretches: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        if isinstance(self.stretches, (str, bytes)) or not isinstance(self.stretches, Iterable):
            raise ValueError(
                f"map_schedule={self.stretches!r} must be a list of (from_time_s, interval_s)"
            )
        stretches = tuple(_stretch(i, s) for i, s in enumerate(self.stretches))
        if not stretches:
            raise ValueError("map_schedule must hold at least one (from_time_s, interval_s)")
        if stretches[0][0] != 0.0:
            raise ValueError(
                f"map_schedule[0]: from_time_s={stretches[0][0]} must be 0 s "
                "(every protocol time needs an interval)"
            )
        for i, (earlier, later) in enumerate(itertools.pairwise(stretches)):
            if not later[0] > earlier[0]:
                raise ValueError(
                    f"map_schedule[{i + 1}]: from_time_s={later[0]} must be later than "
                    f"map_schedule[{i}]'s {earlier[0]} s"
                )
        object.__setattr__(self, "stretches", stretches)

    @classmethod
    def every(cls, interval_s: float) -> MapCadence:
        """One interval for the whole protocol."""
        return cls(((0.0, interval_s),))

    def scaled(self, factor: float) -> MapCadence:
        """Every time multiplied by ``factor`` (> 0): the cadence of a time-scaled protocol."""
        if not (math.isfinite(factor) and factor > 0):
            raise ValueError(f"factor={factor} must be a finite number > 0")
        return MapCadence(tuple((t * factor, dt * factor) for t, dt in self.stretches))

    def interval_at(self, time_s: float) -> float:
        """The interval (s) of the stretch holding protocol time ``time_s`` (s)."""
        starts = [t for t, _ in self.stretches]
        index = max(bisect.bisect_right(starts, time_s) - 1, 0)
        return self.stretches[index][1]

    def next_start_s(self, start_s: float) -> float:
        """Protocol time (s) of the next map after a map that started at ``start_s``.

        ``start_s`` plus its stretch's interval, or the start of the next stretch if that
        comes first (a new cadence begins on time).
        """
        following = [t for t, _ in self.stretches if t > start_s]
        candidate = start_s + self.interval_at(start_s)
        return min([candidate, *following[:1]])

    def starts_s(self, until_s: float, map_duration_s: float = 0.0) -> list[float]:
        """Planned map starts (s) before ``until_s`` for maps of ``map_duration_s`` (s).

        A map longer than its interval delays the next one (maps never overlap).
        """
        starts: list[float] = []
        time_s = 0.0
        while time_s < until_s:
            starts.append(time_s)
            time_s = max(self.next_start_s(time_s), time_s + map_duration_s)
        return starts
