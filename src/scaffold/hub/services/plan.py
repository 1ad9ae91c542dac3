"""The goal and master plan: one markdown document, replaced whole, that every agent reads."""

from __future__ import annotations

from scaffold.hub.core.types import Clock, Plan
from scaffold.hub.store.base import Store


class Plans:
    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    def get(self) -> Plan:
        return self.store.get_plan()

    def set(self, goal: str, plan: str, actor: str) -> Plan:
        return self.store.set_plan(goal, plan, actor, self.clock())
