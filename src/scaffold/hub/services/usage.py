"""What the team spent: Claude Code's telemetry taken in, attributed to tasks, and the budgets.

Each model request arrives as one OTLP log event (`claude_code.api_request`) and is stored once,
attributed to the task its session's worker held when the request was made (the store decides,
from the hub's own record of claims). The metrics are kept beside as a cross-check. Budgets are
checked here, as the usage arrives: the fleet's and each worker's spend of the day are kept in
memory (read from the store once a day), a task's is summed when a request of it arrives.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from scaffold.errors import BudgetExhausted, HubError
from scaffold.hub.core import lifecycle, otlp
from scaffold.hub.core.settings import HubSettings
from scaffold.hub.core.types import Charge, Clock, Spent
from scaffold.hub.services.messages import Messages
from scaffold.hub.store.base import Store, UsageGroup, UsageRow

log = logging.getLogger("scaffold.hub")

DAY = 86_400.0
SENDER = "hub"
CHUNK = 50
"""Requests (or points) stored in one transaction: ~0.6 ms, so a claim waits no longer behind them."""


def day_start(at: float) -> float:
    """The start of the UTC day holding `at`."""
    return math.floor(at / DAY) * DAY


@dataclass(frozen=True)
class Limit:
    """A budget: USD and/or tokens (0: none)."""

    usd: float = 0.0
    tokens: int = 0

    @property
    def set(self) -> bool:
        return self.usd > 0 or self.tokens > 0

    def passed(self, spent: Spent) -> str | None:
        """How `spent` passes this budget ("$2.01 of $2.00"), or None while within it."""
        if self.usd > 0 and spent.cost_micros >= round(self.usd * 1_000_000):
            return f"${spent.cost_usd:.2f} of ${self.usd:.2f}"
        if self.tokens > 0 and spent.tokens >= self.tokens:
            return f"{spent.tokens:,} of {self.tokens:,} tokens"
        return None

    def view(self) -> dict[str, Any]:
        return {"usd": self.usd or None, "tokens": self.tokens or None}


@dataclass(frozen=True)
class Budgets:
    task: Limit
    worker_day: Limit
    fleet_day: Limit
    task_action: str

    @classmethod
    def of(cls, settings: HubSettings) -> Budgets:
        return cls(
            Limit(settings.budget_task_usd, settings.budget_task_tokens),
            Limit(settings.budget_worker_day_usd, settings.budget_worker_day_tokens),
            Limit(settings.budget_fleet_day_usd, settings.budget_fleet_day_tokens),
            settings.budget_task_action,
        )


@dataclass
class _Today:
    """The day's spend, kept as it arrives (the store is read once, when the day begins here)."""

    start: float
    fleet: Spent
    workers: dict[int, Spent] = field(default_factory=dict)
    fleet_stop: str | None = None
    worker_stops: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Report:
    """The requests of a window summed per group, with the cross-checks."""

    by: UsageGroup
    rows: list[UsageRow]
    total: Spent
    metrics: tuple[float, float]
    """(USD, tokens) the metrics say for the same window."""
    runs: dict[int, tuple[int, float]]
    """Worker id -> (headless runs, their cost in USD), as the runs themselves reported."""


class Ledger:
    def __init__(self, store: Store, clock: Clock, settings: HubSettings, messages: Messages) -> None:
        self.store = store
        self.clock = clock
        self.budgets = Budgets.of(settings)
        self.messages = messages
        self.on_stop: Callable[[], None] = lambda: None
        """Called when claims stop (the queue wakes its long polls so they answer at once)."""
        self._today: _Today | None = None
        self._over: dict[int, str] = {}
        """Tasks known to be over their budget -> why (reported once)."""

    # -- taking usage in ------------------------------------------------------------------

    async def take_logs(self, document: Any) -> otlp.Logs:
        """Parse the whole export first (a bad record refuses all of it), then store it in parts,
        letting the event loop serve claims between them. A part stored before a crash is not
        counted again when the export is sent again."""
        logs = otlp.parse_logs(document)
        for start in range(0, len(logs.requests), CHUNK):
            if start:
                await asyncio.sleep(0)
            today = self._day()  # read before the part is stored: its totals must not hold it yet
            self.charge(today, self.store.record_requests(logs.requests[start : start + CHUNK]))
        return logs

    async def take_metrics(self, document: Any) -> otlp.Metrics:
        metrics = otlp.parse_metrics(document)
        for start in range(0, len(metrics.points), CHUNK):
            if start:
                await asyncio.sleep(0)
            self.store.record_metric_points(metrics.points[start : start + CHUNK])
        return metrics

    def charge(self, today: _Today, charges: Sequence[Charge]) -> None:
        """Count requests stored since `today` was read against the budgets, and act on any they
        pass."""
        tasks: dict[int, int | None] = {}
        # A worker's day is read from the store the first time it is needed, so it holds these.
        fresh = {c.worker_id for c in charges if c.worker_id is not None and c.worker_id not in today.workers}
        for worker_id in fresh:
            self._worker_today(today, worker_id)
        for charge in charges:
            if charge.task_id is not None:
                tasks[charge.task_id] = charge.worker_id
            if not today.start <= charge.at < today.start + DAY:
                continue  # another day's (a late export, or a skewed clock): no budget of today's
            today.fleet += charge.spent
            if charge.worker_id is not None and charge.worker_id not in fresh:
                today.workers[charge.worker_id] += charge.spent
        self._check_day(today, {charge.worker_id for charge in charges if charge.worker_id is not None})
        if self.budgets.task.set and tasks:
            self._check_tasks(tasks)

    # -- budgets --------------------------------------------------------------------------

    def admit(self, worker_id: int) -> None:
        """The queue's gate before each claim: BudgetExhausted when the fleet's budget or this
        worker's is spent for the day."""
        today = self._day()
        why = today.fleet_stop or today.worker_stops.get(worker_id)
        if why is not None:
            raise BudgetExhausted(why)

    def claims_stopped(self, worker_id: int | None = None) -> str | None:
        """Why claims are refused (to everyone, or to this worker), or None."""
        today = self._day()
        return today.fleet_stop or (today.worker_stops.get(worker_id) if worker_id is not None else None)

    def over_budget(self, task_id: int) -> str | None:
        return self._over.get(task_id)

    def _day(self) -> _Today:
        start = day_start(self.clock())
        if self._today is None or self._today.start != start:
            self._today = _Today(start, self.store.usage_total(start, start + DAY))
            self._check_day(self._today, set())
        return self._today

    def _worker_today(self, today: _Today, worker_id: int) -> Spent:
        if worker_id not in today.workers:
            today.workers[worker_id] = self.store.usage_total(today.start, today.start + DAY, worker_id)
        return today.workers[worker_id]

    def _check_day(self, today: _Today, workers: set[int]) -> None:
        stopped = False
        date = _date(today.start)
        passed = self.budgets.fleet_day.passed(today.fleet)
        if passed and today.fleet_stop is None:
            today.fleet_stop = (
                f"the fleet's budget for {date} is spent: {passed} ([budget] fleet_day_usd / "
                "fleet_day_tokens); no new claims until 00:00 UTC or a higher budget in hub.toml"
            )
            self._tell("coordinator", f"Budget: {today.fleet_stop}. Tasks already claimed go on.")
            self._event("budget.exhausted", scope="fleet", reason=today.fleet_stop)
            stopped = True
        if self.budgets.worker_day.set:
            for worker_id in sorted(workers - today.worker_stops.keys()):
                passed = self.budgets.worker_day.passed(self._worker_today(today, worker_id))
                if passed:
                    why = (
                        f"worker {worker_id}'s budget for {date} is spent: {passed} ([budget] "
                        "worker_day_usd / worker_day_tokens); it takes no new task until 00:00 UTC or a "
                        "higher budget"
                    )
                    today.worker_stops[worker_id] = why
                    self._tell("coordinator", f"Budget: {why}.")
                    self._tell(worker_id, f"Budget: {why}. Finish the task you hold, then stop.")
                    self._event("budget.exhausted", worker_id=worker_id, scope="worker", reason=why)
                    stopped = True
        if stopped:
            self.on_stop()

    def _check_tasks(self, tasks: dict[int, int | None]) -> None:
        spent = self.store.task_usage(sorted(tasks))
        for task_id, worker_id in tasks.items():
            passed = self.budgets.task.passed(spent.get(task_id, Spent()))
            if passed is None or task_id in self._over:
                continue
            why = f"task {task_id} is over its budget: {passed} ([budget] task_usd / task_tokens)"
            self._over[task_id] = why
            if worker_id is not None and any(
                event.task_id == task_id
                for event in self.store.worker_events(worker_id, "task.over_budget", 50)
            ):
                continue  # reported before this hub started
            now = self.clock()
            self._event(
                "task.over_budget", task_id=task_id, worker_id=worker_id, action=self.budgets.task_action
            )
            failed = False
            if self.budgets.task_action == "fail":
                decide = partial(lifecycle.over_budget, error=f"budget: {why}", now=now)
                failed = self.store.transition(task_id, decide, now)[1]
                then = "it failed (not retried)" if failed else "it had already ended, and stays as it is"
            else:
                then = 'it goes on ([budget] task_action = "warn")'
            self._tell("coordinator", f"Budget: {why}; {then}.")
            if failed:
                advice = "the hub failed it: stop working on it and end your turn"
            elif self.budgets.task_action == "warn":
                advice = "finish it quickly, or fail_task it if it cannot be done within reason"
            else:
                continue  # it had ended: nothing for its worker to do
            if worker_id is not None:
                self._tell(worker_id, f"Budget: {why}; {advice}.")

    def _tell(self, to: str | int, body: str) -> None:
        try:
            self.messages.send(SENDER, to, "message", body)
        except HubError as error:  # a worker deleted meanwhile: the coordinator still hears
            log.warning("budget message to %s not sent: %s", to, error.message)

    def _event(
        self, event_type: str, *, task_id: int | None = None, worker_id: int | None = None, **data: object
    ) -> None:
        self.store.append_event(
            event_type, self.clock(), SENDER, task_id=task_id, worker_id=worker_id, **data
        )

    # -- reading --------------------------------------------------------------------------

    def report(self, by: UsageGroup, since: float | None, until: float | None) -> Report:
        rows = sorted(
            self.store.usage_by(by, since, until), key=lambda row: (-row.spent.cost_micros, str(row.key))
        )
        total = sum((row.spent for row in rows), Spent())
        return Report(by, rows, total, self.store.metric_totals(since, until), self.store.run_totals())

    def tasks(self, task_ids: Sequence[int]) -> dict[int, Spent]:
        return self.store.task_usage(task_ids)

    def status(self) -> UsageStatus:
        now = self.clock()
        return UsageStatus(
            self._day().fleet, self.store.usage_total(now - 3600, None), self.claims_stopped(), self.budgets
        )


@dataclass(frozen=True)
class UsageStatus:
    """What the status shows of spend: today's, the last hour's (the burn rate), the budgets."""

    today: Spent
    last_hour: Spent
    claims_stopped: str | None
    budgets: Budgets


def _date(start: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(start))
