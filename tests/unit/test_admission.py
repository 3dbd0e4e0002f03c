"""Admission control: slots, the memory budget, arrival order, and fast 503s under overload.

On virtual time (``virtual_time``): the clock moves only when every task waits, so "at once",
"after 2 s" and a transform's measured pace are exact, however loaded the machine; and a step
waits for ``all_blocked()``, every other task settled, instead of a short sleep.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import anyio
import pytest

from handler.contract.errors import ImageError
from handler.request import admission as admission_module
from handler.request.admission import Admission
from kit.virtual_time import VirtualTimeLoop, all_blocked, monotonic

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return "asyncio", {"loop_factory": VirtualTimeLoop}


@pytest.fixture(autouse=True)
def virtual_monotonic(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Admission times the transforms it grants with ``time.monotonic()``: the loop's clock."""
    monkeypatch.setattr(admission_module, "time", SimpleNamespace(monotonic=monotonic))
    yield


class Trace:
    """Which jobs ran, in what order, and how many were inside their slot at once."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.inside = 0
        self.most_inside = 0

    async def job(
        self, admission: Admission, name: str, memory: int, *, hold: anyio.Event, deadline: float
    ) -> None:
        async with admission.slot(memory, deadline=deadline):
            self.started.append(name)
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
            await hold.wait()
            self.inside -= 1


def far() -> float:
    return anyio.current_time() + 60


async def test_at_most_max_running_and_in_arrival_order() -> None:
    admission = Admission(max_running=2, memory_budget=10**9, max_queue=10)
    trace, release = Trace(), anyio.Event()
    async with anyio.create_task_group() as tg:
        for name in "abcde":
            tg.start_soon(lambda n=name: trace.job(admission, n, 1, hold=release, deadline=far()))
            await all_blocked()  # arrival order a, b, c, d, e
        assert trace.started == ["a", "b"]
        assert (admission.running, admission.queued) == (2, 3)
        release.set()
    assert trace.started == list("abcde")
    assert trace.most_inside == 2
    assert (admission.running, admission.reserved, admission.queued) == (0, 0, 0)


async def test_the_memory_budget_holds_back_what_does_not_fit() -> None:
    admission = Admission(max_running=4, memory_budget=100, max_queue=10)
    trace, release = Trace(), anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: trace.job(admission, "big", 70, hold=release, deadline=far()))
        await all_blocked()
        tg.start_soon(lambda: trace.job(admission, "next", 40, hold=release, deadline=far()))
        await all_blocked()
        # 70 + 40 > 100: the second waits although slots are free, and so does a small third
        # one behind it (first come, first served: a big job is never starved by small ones).
        tg.start_soon(lambda: trace.job(admission, "small", 10, hold=release, deadline=far()))
        await all_blocked()
        assert trace.started == ["big"]
        assert admission.reserved == 70
        release.set()
    assert trace.started == ["big", "next", "small"]


async def test_a_job_bigger_than_the_budget_runs_alone() -> None:
    admission = Admission(max_running=4, memory_budget=100, max_queue=10)
    trace, release = Trace(), anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: trace.job(admission, "huge", 10**12, hold=release, deadline=far()))
        await all_blocked()
        tg.start_soon(lambda: trace.job(admission, "tiny", 1, hold=release, deadline=far()))
        await all_blocked()
        assert trace.started == ["huge"]
        assert admission.reserved == 100  # capped at the budget
        release.set()
    assert trace.most_inside == 1


async def test_a_full_queue_answers_503_at_once_with_retry_after() -> None:
    admission = Admission(max_running=1, memory_budget=10**9, max_queue=1)
    trace, release = Trace(), anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: trace.job(admission, "running", 1, hold=release, deadline=far()))
        await all_blocked()
        tg.start_soon(lambda: trace.job(admission, "queued", 1, hold=release, deadline=far()))
        await all_blocked()
        started = anyio.current_time()
        with pytest.raises(ImageError) as refused:
            await trace.job(admission, "refused", 1, hold=release, deadline=far())
        assert anyio.current_time() - started < 0.05
        release.set()
    assert refused.value.status == 503
    assert refused.value.message == "The image optimizer is busy; retry shortly"
    assert refused.value.headers["Cache-Control"] == "no-store"
    assert 1 <= int(refused.value.headers["Retry-After"]) <= 60
    assert trace.started == ["running", "queued"]


async def test_a_request_that_would_start_too_late_gets_503_at_once() -> None:
    admission = Admission(max_running=1, memory_budget=10**9, max_queue=10)
    trace, release = Trace(), anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: trace.job(admission, "running", 1, hold=release, deadline=far()))
        await all_blocked()
        started = anyio.current_time()
        # One transform ahead (~1 s, the first guess) plus its own: it cannot finish in 1.5 s.
        with pytest.raises(ImageError) as refused:
            await trace.job(admission, "late", 1, hold=release, deadline=started + 1.5)
        assert anyio.current_time() - started < 0.05
        assert admission.queued == 0
        release.set()
    assert refused.value.status == 503
    assert trace.started == ["running"]


async def test_a_queued_request_gives_up_in_time_to_finish_within_its_budget() -> None:
    admission = Admission(max_running=1, memory_budget=10**9, max_queue=10, trusted_after=0)
    trace, release = Trace(), anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: trace.job(admission, "running", 1, hold=release, deadline=far()))
        await all_blocked()
        started = anyio.current_time()
        # Queued: by the plans it finishes at ~2 s, well inside 3.5 s.
        with pytest.raises(ImageError) as refused:
            await trace.job(admission, "waiting", 1, hold=release, deadline=started + 3.5)
        waited = anyio.current_time() - started
        assert 2.2 < waited < 3.0  # ~1 s before its deadline, room for a transform
        assert admission.queued == 0
        release.set()
    assert refused.value.status == 503


async def test_check_refuses_only_when_the_queue_is_full() -> None:
    admission = Admission(max_running=1, memory_budget=10**9, max_queue=1)
    admission.check()  # idle
    trace, release = Trace(), anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: trace.job(admission, "running", 1, hold=release, deadline=far()))
        await all_blocked()
        admission.check()  # a slot is taken, the queue is empty
        tg.start_soon(lambda: trace.job(admission, "queued", 1, hold=release, deadline=far()))
        await all_blocked()
        with pytest.raises(ImageError) as refused:
            admission.check()
        assert refused.value.status == 503
        release.set()


async def test_the_last_transform_to_end_reports_idle() -> None:
    idle: list[float] = []
    admission = Admission(max_running=2, memory_budget=10**9, max_queue=10)
    admission.on_idle = lambda: idle.append(anyio.current_time())
    trace, first, second = Trace(), anyio.Event(), anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: trace.job(admission, "a", 1, hold=first, deadline=far()))
        tg.start_soon(lambda: trace.job(admission, "b", 1, hold=second, deadline=far()))
        await all_blocked()
        first.set()
        await all_blocked()
        assert idle == []  # one still runs
        second.set()
    assert len(idle) == 1


async def test_a_cancelled_waiter_gives_its_place_to_the_next() -> None:
    admission = Admission(max_running=1, memory_budget=10**9, max_queue=10)
    trace, release, second = Trace(), anyio.Event(), anyio.Event()
    scopes: list[anyio.CancelScope] = []

    async def leaver() -> None:  # a client that goes away while queued
        with anyio.CancelScope() as scope:
            scopes.append(scope)
            await trace.job(admission, "leaver", 1, hold=release, deadline=far())

    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: trace.job(admission, "first", 1, hold=release, deadline=far()))
        await all_blocked()
        tg.start_soon(leaver)
        await all_blocked()
        tg.start_soon(lambda: trace.job(admission, "third", 1, hold=second, deadline=far()))
        await all_blocked()
        scopes[0].cancel()
        await all_blocked()
        assert admission.queued == 1
        release.set()
        await all_blocked()
        assert trace.started == ["first", "third"]
        second.set()
    assert (admission.running, admission.reserved, admission.queued) == (0, 0, 0)


def test_workers_share_the_default_limits_out() -> None:
    from handler.entry import machine
    from handler.entry.settings import Settings
    from handler.entry.wiring import MEMORY_BUDGET_SHARE, build_admission

    one = build_admission(Settings())
    two = build_admission(Settings(workers="2"))
    assert one.max_running == machine.cpu_count()
    assert two.max_running == max(1, machine.cpu_count() // 2)
    assert one.memory_budget == int(machine.memory_limit() * MEMORY_BUDGET_SHARE)
    assert two.memory_budget == int(machine.memory_limit() * MEMORY_BUDGET_SHARE / 2)
    explicit = build_admission(Settings(workers="2", max_transforms=3, memory_budget=10**9))
    assert (explicit.max_running, explicit.memory_budget) == (3, 10**9)  # flags are per worker


async def test_waiters_that_can_no_longer_start_in_time_are_told_when_the_queue_moves() -> None:
    admission = Admission(max_running=1, memory_budget=10**9, max_queue=10, trusted_after=0)
    trace, release, second = Trace(), anyio.Event(), anyio.Event()
    refused: list[float] = []

    async def late_one(deadline: float) -> None:
        with pytest.raises(ImageError):
            await trace.job(admission, "late", 1, hold=second, deadline=deadline)
        refused.append(anyio.current_time())

    async with anyio.create_task_group() as tg:
        started = anyio.current_time()
        tg.start_soon(lambda: trace.job(admission, "first", 1, hold=release, deadline=far()))
        await all_blocked()
        tg.start_soon(lambda: trace.job(admission, "next", 1, hold=second, deadline=far()))
        await all_blocked()
        # Two transforms ahead of ~1 s each: it finishes at ~3 s, well inside 4.6 s, when it asks.
        tg.start_soon(late_one, started + 4.6)
        await anyio.sleep(2.0)
        release.set()  # the first took 2 s: the pace doubles, "late" cannot make it now
        await all_blocked()
        assert refused and refused[0] - started < 2.2  # told at once, not ~3.6 s in
        second.set()
    assert trace.started == ["first", "next"]


async def _refused_at_once(
    admission: Admission, *, seconds: float, budget: float, memory: int = 1
) -> ImageError:
    """Ask for a slot for a transform planned at ``seconds`` with ``budget`` seconds left: it
    must be refused without waiting."""
    started = anyio.current_time()
    with pytest.raises(ImageError) as refused:
        async with admission.slot(memory, seconds=seconds, deadline=started + budget):
            pass
    assert anyio.current_time() - started < 0.05
    return refused.value


async def _timed_job(
    admission: Admission, seconds: float, *, deadline: float, memory: int = 1, slower: float = 1.0
) -> None:
    """A transform planned at ``seconds`` that takes that long (``slower`` times that)."""
    async with admission.slot(memory, seconds=seconds, deadline=deadline):
        await anyio.sleep(seconds * slower)


async def test_a_request_behind_long_transforms_is_refused_at_once_from_their_plans() -> None:
    admission = Admission(max_running=1, memory_budget=10**9, max_queue=10)
    trace, release = Trace(), anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: trace.job(admission, "running", 1, hold=release, deadline=far()))
        await all_blocked()
        for _ in range(2):  # two 3840 px AVIFs of 5K photos, say: 5 s each by their plans
            tg.start_soon(lambda: _timed_job(admission, 5.0, deadline=far()))
        await all_blocked()
        # By the average (1 s so far) it could start by 3 s; by the plans ahead, at ~11 s.
        refused = await _refused_at_once(admission, seconds=0.2, budget=8)
        assert refused.status == 503
        assert int(refused.headers["Retry-After"]) >= 10  # when the queue should drain
        tg.cancel_scope.cancel()


async def test_a_request_behind_short_transforms_waits_its_turn_and_runs() -> None:
    admission = Admission(max_running=1, memory_budget=10**9, max_queue=20)
    started = anyio.current_time()
    ran: list[float] = []

    async def small() -> None:
        async with admission.slot(1, seconds=0.05, deadline=started + 2):
            ran.append(anyio.current_time() - started)
            await anyio.sleep(0.05)

    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: _timed_job(admission, 0.05, deadline=far()))
        await all_blocked()
        for _ in range(10):  # 11 x 50 ms ahead: by a 1 s average it could never make 2 s
            tg.start_soon(small)
        await all_blocked()
        await small()
    assert len(ran) == 11
    assert max(ran) < 1.5


async def test_the_pace_scales_plans_to_how_long_transforms_really_take() -> None:
    admission = Admission(max_running=1, memory_budget=10**9, max_queue=10)
    for _ in range(12):  # planned at 20 ms, each takes 60 ms: this machine is 3x slower
        async with admission.slot(1, seconds=0.02, deadline=far()):
            await anyio.sleep(0.06)
    assert 2.2 < admission.pace < 4
    trace, release = Trace(), anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: trace.job(admission, "running", 1, hold=release, deadline=far()))
        await all_blocked()
        # Planned 0.5 s each: 1 s at the plans' pace, ~3 s at this machine's.
        await _refused_at_once(admission, seconds=0.5, budget=2.0)
        release.set()


async def test_background_work_waits_behind_requests_and_leaves_a_slot_free() -> None:
    admission = Admission(max_running=2, memory_budget=10**9, max_queue=10)
    trace, release = Trace(), anyio.Event()

    async def background(name: str) -> None:
        async with admission.slot(1, deadline=far(), background=True):
            trace.started.append(name)
            await release.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(background, "bg1")
        await all_blocked()
        tg.start_soon(background, "bg2")  # would take the last slot: waits
        await all_blocked()
        assert trace.started == ["bg1"]
        tg.start_soon(lambda: trace.job(admission, "visitor", 1, hold=release, deadline=far()))
        await all_blocked()
        assert trace.started == ["bg1", "visitor"]  # the free slot was the visitor's
        release.set()
    assert trace.started[-1] == "bg2"


async def test_a_waiting_request_goes_before_earlier_background_work() -> None:
    admission = Admission(max_running=1, memory_budget=10**9, max_queue=10)
    trace, first, rest = Trace(), anyio.Event(), anyio.Event()

    async def background() -> None:
        async with admission.slot(1, deadline=far(), background=True):
            trace.started.append("background")
            await rest.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: trace.job(admission, "first", 1, hold=first, deadline=far()))
        await all_blocked()
        tg.start_soon(background)
        await all_blocked()
        tg.start_soon(lambda: trace.job(admission, "visitor", 1, hold=rest, deadline=far()))
        await all_blocked()
        first.set()
        await all_blocked()
        assert trace.started == ["first", "visitor"]
        rest.set()
    assert trace.started == ["first", "visitor", "background"]


async def test_a_full_house_runs_slower_than_a_lone_transform_and_the_plans_say_so() -> None:
    admission = Admission(max_running=2, memory_budget=10**9, max_queue=10, trusted_after=0)
    for _ in range(5):  # alone, each takes exactly its plan: pace 1
        await _timed_job(admission, 0.05, deadline=far())
    assert 0.9 < admission.pace < 1.3
    trace, release = Trace(), anyio.Event()
    async with anyio.create_task_group() as tg:
        for name in ("a", "b"):  # both slots busy: each gets half the cores a lone one had
            tg.start_soon(lambda n=name: trace.job(admission, n, 1, hold=release, deadline=far()))
        await all_blocked()
        # Alone it would wait ~1 s and run ~1 s (2 s, x1.5 margin = 3 s); crowded, ~1.3 + 1.3.
        await _refused_at_once(admission, seconds=1.0, budget=3.5)
        release.set()


async def _queued_behind_one(admission: Admission, budget: float) -> bool:
    """Is a request with ``budget`` seconds queued behind one running ~1 s transform?"""
    trace, release = Trace(), anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: trace.job(admission, "run", 1, hold=release, deadline=far()))
        await all_blocked()
        try:
            with anyio.fail_after(0.05):  # queued: still waiting when this gives up
                async with admission.slot(1, deadline=anyio.current_time() + budget):
                    pass
        except TimeoutError:
            return True
        except ImageError:
            return False
        finally:
            release.set()
    raise AssertionError("granted while the only slot was taken")


async def test_a_fresh_process_queues_with_a_wider_margin_until_it_has_measured_some() -> None:
    fresh = Admission(max_running=1, memory_budget=10**9, max_queue=10)
    trusting = Admission(max_running=1, memory_budget=10**9, max_queue=10, trusted_after=0)
    assert (fresh.admit_margin, trusting.admit_margin) == (3.0, 1.5)
    # ~1 s ahead + ~1 s of its own: inside 3.5 s by a 1.5x margin, not by 3x.
    assert await _queued_behind_one(trusting, 3.5)
    assert not await _queued_behind_one(fresh, 3.5)
    for _ in range(4):  # with the one above, 5 planned seconds measured: half the extra margin
        async with fresh.slot(1, seconds=1.0, deadline=far()):
            pass
    assert fresh.admit_margin == pytest.approx(2.25)


async def test_one_stalled_small_transform_does_not_refuse_the_requests_behind_it() -> None:
    """A 50 ms plan that runs 10 s and more (an image decoded whole, CPU steal): taken as the
    machine's pace it made every estimate 150x too long, and requests were refused."""
    admission = Admission(max_running=2, memory_budget=10**9, max_queue=10, trusted_after=0)
    for _ in range(5):  # alone, each takes exactly its plan: pace 1
        await _timed_job(admission, 0.2, deadline=far())
    measured = admission.pace
    stall = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: _stalled(admission, stall))
        await anyio.sleep(10.0)  # 200x its plan, and still running
        started = anyio.current_time()
        ran: list[float] = []

        async def small() -> None:  # 0.2 s by its plan, 4 s of budget
            async with admission.slot(1, seconds=0.2, deadline=started + 4.0):
                ran.append(anyio.current_time() - started)
                await anyio.sleep(0.2)

        async with anyio.create_task_group() as smalls:  # an ImageError would fail the test
            for _ in range(5):
                smalls.start_soon(small)
            await all_blocked()
            # One runs beside the stall at once, the others queue for that slot: none refused.
            assert (admission.running, admission.queued) == (2, 4)
        assert ran == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8])  # none told 503 while queued
        assert admission.running == 1  # the stall goes on
        before = admission.pace  # the small ones ran a little faster than planned, crowded
        stall.set()
    # Once over (~220x its plan), it moves the pace by at most 2 ** 0.5, like any other.
    assert 0.7 * measured < before < admission.pace <= before * 2**0.5


async def _stalled(admission: Admission, stall: anyio.Event) -> None:
    async with admission.slot(1, seconds=0.05, deadline=far()):
        await stall.wait()


async def test_a_machine_uniformly_slower_raises_the_pace_and_refuses_at_once() -> None:
    admission = Admission(max_running=1, memory_budget=10**9, max_queue=10, trusted_after=0)
    plans = (0.1, 0.3, 0.2, 0.5)
    for seconds in plans * 2:  # each takes its plan: pace 1
        await _timed_job(admission, seconds, deadline=far())
    assert admission.pace == pytest.approx(1.0)
    # ~1 s ahead and ~1 s of its own: 2 s, x1.5 margin, inside 3.5 s.
    assert await _queued_behind_one(admission, 3.5)
    for seconds in plans * 4:  # now every transform takes 3x its plan
        await _timed_job(admission, seconds, deadline=far(), slower=3.0)
    assert 2.2 < admission.pace < 3.3
    # Alone: planned 1 s, ~3 s at this pace, with 2 s left.
    assert (await _refused_at_once(admission, seconds=1.0, budget=2.0)).status == 503
    assert not await _queued_behind_one(admission, 3.5)  # ~6 s now: refused at once


async def test_running_transforms_all_past_their_plans_raise_the_pace_before_they_finish() -> None:
    """At the start of a burst nothing has finished: the running ones already tell."""
    admission = Admission(max_running=2, memory_budget=10**9, max_queue=10, trusted_after=0)
    for _ in range(5):
        await _timed_job(admission, 0.5, deadline=far())
    at_rest = admission.expected_seconds
    release = anyio.Event()

    async def slow() -> None:
        async with admission.slot(1, seconds=0.5, deadline=far()):
            await release.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(slow)
        await anyio.sleep(0.1)
        crowded = admission.expected_seconds  # one running: no overrun yet
        tg.start_soon(slow)
        await anyio.sleep(3.0)  # both at 6x their plans (4.6x alone)
        raised = admission.expected_seconds
        release.set()
    assert crowded == pytest.approx(at_rest)  # one running, not yet past its plan
    crowding = 1.3  # two at once on two slots
    # 2x: each of the two counts at most 2 ** 0.5 (4.6x alone would be its old worst overrun).
    assert raised == pytest.approx(2 * at_rest * crowding)


async def test_a_request_whose_wait_for_memory_outlasts_its_budget_is_refused_at_once() -> None:
    admission = Admission(max_running=4, memory_budget=100, max_queue=10, trusted_after=0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: _timed_job(admission, 2.0, deadline=far(), memory=80))
        await all_blocked()
        # Three slots free, but 80 + 40 > 100: it would start at ~2 s, end at ~2.7 s.
        refused = await _refused_at_once(admission, seconds=0.5, budget=2.0, memory=40)
        assert refused.status == 503
        assert admission.queued == 0
        started = anyio.current_time()
        async with admission.slot(40, seconds=0.5, deadline=started + 5.0):  # ~2.7 s x1.5 < 5
            waited = anyio.current_time() - started
        assert waited == pytest.approx(2.0)  # as soon as the 80 were given back


async def test_memory_waits_count_for_the_requests_queued_behind_them() -> None:
    admission = Admission(max_running=4, memory_budget=100, max_queue=10, trusted_after=0)
    ran: list[str] = []

    async def job(name: str, memory: int, seconds: float, budget: float) -> None:
        async with admission.slot(memory, seconds=seconds, deadline=started + budget):
            ran.append(name)
            await anyio.sleep(seconds)

    started = anyio.current_time()
    async with anyio.create_task_group() as tg:
        tg.start_soon(job, "big", 80, 2.0, 60.0)
        await all_blocked()
        tg.start_soon(job, "waits for memory", 40, 0.5, 60.0)
        await all_blocked()
        # Small, and a slot is free, but first come first served: it starts after the 40,
        # which waits ~2 s for memory: ~2.3 s, x1.5, is beyond 3 s.
        await _refused_at_once(admission, seconds=0.2, budget=3.0)
        tg.start_soon(job, "small", 1, 0.2, 5.0)  # ~2.3 s x1.5 < 5 s: waits its turn
        await all_blocked()
        assert admission.queued == 2
    assert ran == ["big", "waits for memory", "small"]


async def test_a_lone_transform_over_its_budget_is_refused_at_once() -> None:
    admission = Admission(max_running=2, memory_budget=10**9, max_queue=10, trusted_after=0)
    refused = await _refused_at_once(admission, seconds=3.0, budget=2.0)  # nothing ahead of it
    assert refused.status == 503
    assert refused.message == "The image optimizer is busy; retry shortly"
    assert refused.category == "overload"
    assert refused.headers["Cache-Control"] == "no-store"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert (admission.running, admission.queued) == (0, 0)
    # Within its budget by its plan: it starts (no margin for one that would start now).
    async with admission.slot(1, seconds=1.5, deadline=anyio.current_time() + 2.0):
        assert admission.running == 1
