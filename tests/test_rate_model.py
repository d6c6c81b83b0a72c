"""A model of the rate store's arithmetic alone (:func:`reserve`), in exact arithmetic.

Hypothesis draws rates, bursts and arrival sequences (bursts, gaps, idle stretches, clocks that
disagree) and checks on the starts GCRA hands out what docs and docstrings promise:

* over ANY closed window of ``w`` seconds, at most ``floor(w / T) + burst`` starts (``T`` the
  emission interval ``per / rate``), and the bound is reached;
* every start is at or after its arrival, and starts come in arrival order;
* backlogged, starts come exactly ``T`` apart: the throughput is the rate;
* whatever order the callers' clock readings reach the item in, the booked instants keep the
  bound; with clocks within ``skew`` of each other, the true start times keep
  ``floor((w + skew) / T) + burst``, and that is reached too;
* the three write variants of the store compute exactly this.

Times are :class:`fractions.Fraction`, so every bound is asserted exactly, with no tolerance.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from durable_semaphore.store.rates import (
    BURST,
    IDLE,
    QUEUED,
    reserve,
    skew_window_bound,
    variant_for,
    window_bound,
)

T0 = Fraction(1_765_000_000)


@st.composite
def rates(draw: st.DrawFn) -> tuple[Fraction, int]:
    """(emission interval T, burst): ``rate`` starts per ``per`` seconds."""
    rate = draw(st.integers(1, 40))
    per = draw(st.fractions(min_value=Fraction(1, 10), max_value=10, max_denominator=10))
    burst = draw(st.integers(1, 8))
    return per / rate, burst


def gaps(interval: Fraction) -> st.SearchStrategy[Fraction]:
    """Gaps between arrivals: mostly none or a fraction of an interval (backlog), sometimes
    several intervals (the key drains, or goes idle)."""
    return st.one_of(
        st.just(Fraction(0)),
        st.integers(0, 16).map(lambda k: interval * k / 16),
        st.integers(0, 96).map(lambda k: interval * k / 8),
    )


def book_all(
    nows: Sequence[Fraction], interval: Fraction, burst: int
) -> tuple[list[Fraction], list[bool]]:
    """Starts for bookings applied in this order at these clock readings, and whether each
    was queued (started after its arrival)."""
    tolerance = (burst - 1) * interval
    tat: Fraction | None = None
    starts, queued = [], []
    for now in nows:
        start, tat = reserve(tat, now, interval, tolerance)  # type: ignore[arg-type]
        starts.append(start)
        queued.append(start > now)
    return starts, queued


def worst_window(
    starts: Sequence[Fraction], interval: Fraction, burst: int, skew: Fraction = Fraction(0)
) -> tuple[int, int] | None:
    """A window holding more starts than allowed, as (count, allowed); None if every window
    keeps the bound. For the sorted starts, the window from the i-th to the j-th holds at
    least ``j - i + 1`` of them, and every window's starts are such a run, so checking every
    pair is checking every window."""
    xs = sorted(starts)
    for i in range(len(xs)):
        for j in range(i, len(xs)):
            allowed = skew_window_bound(xs[j] - xs[i], skew, interval, burst)  # type: ignore[arg-type]
            if j - i + 1 > allowed:
                return j - i + 1, allowed
    return None


def most_in_window(starts: Sequence[Fraction], width: Fraction) -> int:
    """The most starts any closed window of ``width`` holds (one starting at a start)."""
    xs = sorted(starts)
    return max(bisect.bisect_right(xs, x + width) - i for i, x in enumerate(xs))


@settings(max_examples=200, deadline=None)
@given(data=st.data(), rate=rates())
def test_any_window_holds_at_most_floor_w_over_t_plus_burst(
    data: st.DataObject, rate: tuple[Fraction, int]
) -> None:
    interval, burst = rate
    steps = data.draw(st.lists(gaps(interval), min_size=1, max_size=40))
    nows = [T0 + sum(steps[: i + 1], Fraction(0)) for i in range(len(steps))]
    starts, queued = book_all(nows, interval, burst)

    assert worst_window(starts, interval, burst) is None
    assert all(s >= n for s, n in zip(starts, nows, strict=True)), "never before arrival"
    assert starts == sorted(starts), "starts in arrival order"
    for i in range(1, len(starts)):
        if queued[i]:
            # A queued booking follows the one before by at most T (no gap in a backlog),
            # and by exactly T when that one was queued too: the backlog runs at the rate.
            assert starts[i] - starts[i - 1] <= interval
            if queued[i - 1]:
                assert starts[i] - starts[i - 1] == interval
    # Spot checks of the bound's own form at some widths (what the observer computes).
    for width in (Fraction(0), interval / 2, interval, 3 * interval, 10 * interval):
        assert most_in_window(starts, width) <= window_bound(width, interval, burst)  # type: ignore[arg-type]


@settings(max_examples=100, deadline=None)
@given(rate=rates(), n=st.integers(1, 40))
def test_a_backlog_from_idle_is_the_burst_then_exactly_the_rate(
    rate: tuple[Fraction, int], n: int
) -> None:
    """``n`` callers at one instant: ``burst`` start at once, then one every ``T``. That
    reaches the bound in every window of ``k T``, so the bound is exact, and over the backlog
    the starts per second are the rate."""
    interval, burst = rate
    starts, _ = book_all([T0] * n, interval, burst)
    assert starts == [T0 + max(0, k - burst + 1) * interval for k in range(n)]
    for k in range(n):
        width = k * interval
        assert most_in_window(starts, width) == min(n, window_bound(width, interval, burst))  # type: ignore[arg-type]
    if n > burst:
        assert (n - burst) / (starts[-1] - starts[0]) == 1 / interval


@settings(max_examples=200, deadline=None)
@given(data=st.data(), rate=rates())
def test_booked_instants_keep_the_bound_in_any_order_of_clock_readings(
    data: st.DataObject, rate: tuple[Fraction, int]
) -> None:
    """The proof's step 3 never uses an order of the readings: whatever clock readings reach
    the item, in whatever order, the booked instants keep the exact bound."""
    interval, burst = rate
    offsets = data.draw(
        st.lists(st.integers(-160, 160).map(lambda k: interval * k / 8), min_size=1, max_size=40)
    )
    starts, _ = book_all([T0 + o for o in offsets], interval, burst)
    assert worst_window(starts, interval, burst) is None
    assert all(s >= T0 + o for s, o in zip(starts, offsets, strict=True))


@settings(max_examples=200, deadline=None)
@given(data=st.data(), rate=rates())
def test_skewed_clocks_keep_the_skew_bound(data: st.DataObject, rate: tuple[Fraction, int]) -> None:
    """Callers whose clocks are within ``skew`` of each other, arriving in true-time order:
    each starts when its own clock reads its start. The true start times keep
    ``floor((w + skew) / T) + burst`` in every window, and none is before its arrival."""
    interval, burst = rate
    skew = interval * data.draw(st.integers(0, 72)) / 12
    callers = data.draw(st.integers(1, 6))
    offset = data.draw(
        st.lists(
            st.integers(0, 24).map(lambda k: skew * k / 24), min_size=callers, max_size=callers
        )
    )
    arrivals = data.draw(
        st.lists(st.tuples(st.integers(0, callers - 1), gaps(interval)), min_size=1, max_size=40)
    )
    true_now = T0
    truth: list[Fraction] = []
    true_arrivals: list[Fraction] = []
    tat: Fraction | None = None
    tolerance = (burst - 1) * interval
    for caller, gap in arrivals:
        true_now += gap
        start, tat = reserve(tat, true_now + offset[caller], interval, tolerance)  # type: ignore[arg-type]
        truth.append(start - offset[caller])
        true_arrivals.append(true_now)
    assert worst_window(truth, interval, burst, skew=skew) is None
    assert all(u >= t for u, t in zip(truth, true_arrivals, strict=True))


def test_the_skew_bound_is_reached() -> None:
    """The module docstring's example: burst 1, T 1, clocks 0..k seconds ahead, all booking
    at true time 0, ahead-most last: k + 1 true starts at one instant, the bound at w = 0."""
    for k in range(6):
        tat: Fraction | None = None
        truth = []
        for ahead in range(k + 1):
            start, tat = reserve(tat, T0 + ahead, 1, 0)  # type: ignore[arg-type]
            truth.append(start - ahead)
        assert truth == [T0] * (k + 1)
        assert k + 1 == skew_window_bound(0, k, 1, 1)


@settings(max_examples=500, deadline=None)
@given(
    tat=st.one_of(st.none(), st.fractions(min_value=-50, max_value=50, max_denominator=8)),
    now=st.fractions(min_value=-50, max_value=50, max_denominator=8),
    rate=rates(),
)
def test_each_write_variant_computes_the_model(
    tat: Fraction | None, now: Fraction, rate: tuple[Fraction, int]
) -> None:
    """The store's three writes, as arithmetic: under the condition that selects each, its
    SET clauses give exactly :func:`reserve`'s start and new ``tat``."""
    interval, burst = rate
    tolerance = (burst - 1) * interval
    want = reserve(tat, now, interval, tolerance)  # type: ignore[arg-type]
    variant = variant_for(tat, now, tolerance)  # type: ignore[arg-type]
    if variant == IDLE:  # (no tat OR tat <= now): tat = now + T, record now
        assert tat is None or tat <= now
        assert want == (now, now + interval)
    elif variant == BURST:  # now < tat <= now + tau: tat = tat + T, record now
        assert tat is not None and now < tat <= now + tolerance
        assert want == (now, tat + interval)
    else:  # tat > now + tau: tat = tat + T, record tat - tau
        assert variant == QUEUED and tat is not None and tat > now + tolerance
        assert want == (tat - tolerance, tat + interval)
    assert math.isfinite(float(want[0]))
