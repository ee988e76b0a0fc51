"""The endpoint table: which loaded versions answer for each endpoint name, and in what shares.

The table is immutable. Changing it builds a new table and swaps one reference, so a request
reads one consistent snapshot and keeps the host it picked until it is answered, whatever
changes meanwhile: moving traffic never drops or mixes a request.

An endpoint has one or more arms (a host and a weight). One arm is plain serving; several arms
with weights are a canary or an A/B split. A request without a key picks an arm at random by
weight; with a key (a header named ``Endpoint.sticky_header``, else the request field named
``Endpoint.sticky_field``) the arm follows from a stable hash of the endpoint name and the key
(BLAKE2b, never Python's per-process ``hash``), so the same key gets the same arm in every worker
and after restarts. Keys map to a point in [0, 1) and arms take consecutive slices of it in
order, so with two arms, growing one arm's share only moves keys into it (a canary's steps never
move a key back to stable).

An arm with a ``mirror`` percentage is a shadow: that share of requests is copied to it after
the answering arm has answered, and its answers are compared, never returned. An arm of weight
0 answers nothing (a pure shadow, or a stable version kept warm for an instant rollback).
"""

from __future__ import annotations

import bisect
import hashlib
import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from shipway.core.errors import InvalidInput

if TYPE_CHECKING:
    from shipway.serving.host import ModelHost


def stable_fraction(endpoint: str, key: str) -> float:
    """A point in [0, 1) that depends only on the endpoint name and the key."""
    digest = hashlib.blake2b(f"{endpoint}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass(frozen=True)
class Arm:
    """One version an endpoint routes to, with its relative share of traffic.

    ``label`` names the arm in the ``Shipway-Arm`` header and the metrics' ``arm`` label (keep
    the set of labels small: ``stable``, ``candidate``); ``mirror`` is the percent of requests
    copied to it as a shadow.
    """

    host: ModelHost
    weight: float = 1.0
    label: str = "stable"
    mirror: float = 0.0


@dataclass(frozen=True)
class RolloutRef:
    """The rollout and step an endpoint's table belongs to, so each request is counted in its window."""

    id: str
    step: int


@dataclass(frozen=True)
class Endpoint:
    """A name clients call, and the arms that answer for it.

    With no arms the endpoint is known but cannot answer yet (503); ``problem`` says why
    (a version still loading, or one that failed to load).
    """

    name: str
    arms: tuple[Arm, ...] = ()
    sticky_header: str | None = None
    problem: str | None = None
    sticky_field: str | None = None
    rollout: RolloutRef | None = None
    _bounds: tuple[float, ...] = field(default=(), repr=False, compare=False)
    shadows: tuple[Arm, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        weights = [arm.weight for arm in self.arms]
        if any(not w >= 0 for w in weights) or (weights and sum(weights) <= 0):
            raise InvalidInput(f"Arm weights of '{self.name}' must be non-negative and not all 0: {weights}.")
        mirrors = [arm.mirror for arm in self.arms]
        if any(not 0 <= m <= 100 for m in mirrors):
            raise InvalidInput(f"Mirror percentages of '{self.name}' must be within 0-100: {mirrors}.")
        object.__setattr__(self, "shadows", tuple(arm for arm in self.arms if arm.mirror > 0))
        total, running, bounds = sum(weights), 0.0, []
        for w in weights:
            running += w
            bounds.append(running / total)
        object.__setattr__(self, "_bounds", tuple(bounds))
        if self.sticky_header is not None:
            object.__setattr__(self, "sticky_header", self.sticky_header.lower())

    @property
    def ready(self) -> bool:
        return bool(self.arms)

    @property
    def versions(self) -> list[str]:
        """Version labels of the arms, in arm order, without repeats."""
        return list(dict.fromkeys(arm.host.label for arm in self.arms))

    @property
    def sticky(self) -> bool:
        """Whether a request's arm follows from a key (only matters with several arms)."""
        return (self.sticky_header is not None or self.sticky_field is not None) and len(self.arms) > 1

    def choose(self, key: str | None = None, draw: Callable[[], float] = random.random) -> Arm:
        """The arm for one request: by a stable hash of ``key`` when given, else at random by weight.

        An arm of weight 0 is never chosen: its slice of [0, 1) is empty.
        """
        if len(self.arms) == 1:
            return self.arms[0]
        if not self.arms:
            raise LookupError(f"Endpoint '{self.name}' has no arms.")
        point = stable_fraction(self.name, key) if key is not None else draw()
        index = bisect.bisect_right(self._bounds, point)
        return self.arms[min(index, len(self.arms) - 1)]

    def host_for(self, version: str) -> ModelHost | None:
        """The host serving ``version`` in any arm, if one does."""
        for arm in self.arms:
            if arm.host.label == version:
                return arm.host
        return None


@dataclass(frozen=True)
class RoutingTable:
    """Every endpoint by name; ``generation`` counts the swaps that made it."""

    endpoints: Mapping[str, Endpoint]
    generation: int = 0


class Router:
    """Holds the current table; writers serialize, readers take ``router.table`` without a lock."""

    def __init__(self) -> None:
        self._table = RoutingTable(MappingProxyType({}))
        self._lock = threading.Lock()

    @property
    def table(self) -> RoutingTable:
        return self._table

    def _change(self, name: str, make: Callable[[Endpoint | None], Endpoint | None]) -> Endpoint | None:
        """Swap in a table where ``name`` maps to ``make(current)`` (None removes it)."""
        with self._lock:
            endpoints = dict(self._table.endpoints)
            previous = endpoints.get(name)
            endpoint = make(previous)
            if endpoint is None:
                endpoints.pop(name, None)
            else:
                endpoints[name] = endpoint
            self._table = RoutingTable(MappingProxyType(endpoints), self._table.generation + 1)
        return previous

    def publish(self, endpoint: Endpoint) -> Endpoint | None:
        """Add or replace one endpoint in one atomic swap; returns the endpoint it replaced."""
        return self._change(endpoint.name, lambda _: endpoint)

    def route(
        self,
        name: str,
        *arms: Arm,
        sticky_header: str | None = None,
        sticky_field: str | None = None,
        rollout: RolloutRef | None = None,
    ) -> Endpoint | None:
        """Point ``name`` at ``arms`` (one arm: plain serving); returns the endpoint it replaced."""
        if not arms:
            raise InvalidInput(f"Routing '{name}' needs at least one arm.")
        endpoint = Endpoint(name, tuple(arms), sticky_header, sticky_field=sticky_field, rollout=rollout)
        return self.publish(endpoint)

    def mark_unready(self, name: str, problem: str) -> None:
        """Declare ``name`` known but not answering yet; an endpoint that already answers keeps its arms."""
        self._change(
            name,
            lambda current: (
                current if current is not None and current.arms else Endpoint(name, problem=problem)
            ),
        )

    def remove(self, name: str) -> Endpoint | None:
        """Stop routing ``name``; returns the endpoint removed."""
        return self._change(name, lambda _: None)


def retired_hosts(previous: Endpoint | None, current: Endpoint | None) -> list[ModelHost]:
    """Hosts ``previous`` routed to that ``current`` no longer does."""
    if previous is None:
        return []
    keep = {id(arm.host) for arm in current.arms} if current is not None else set()
    return [arm.host for arm in previous.arms if id(arm.host) not in keep]
