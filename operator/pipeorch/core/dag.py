"""Graph helpers over ``{step: [steps it depends on]}`` mappings. Deterministic orders."""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence


def find_cycle(depends_on: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A cycle as a path that ends where it starts (``[a, b, c, a]``), or None.

    Iterative depth-first search in name order, so the same graph always reports the same
    cycle, and deep chains do not hit the recursion limit.
    """
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(depends_on, white)
    for root in sorted(depends_on):
        if color[root] != white:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        path: list[str] = [root]
        color[root] = grey
        while stack:
            node, index = stack[-1]
            deps = sorted(depends_on.get(node, ()))
            if index < len(deps):
                stack[-1] = (node, index + 1)
                nxt = deps[index]
                state = color.get(nxt, black)
                if state == grey:
                    return [*path[path.index(nxt) :], nxt]
                if state == white:
                    color[nxt] = grey
                    stack.append((nxt, 0))
                    path.append(nxt)
            else:
                color[node] = black
                stack.pop()
                path.pop()
    return None


def ancestors(depends_on: Mapping[str, Sequence[str]], node: str) -> set[str]:
    """Every step ``node`` transitively depends on."""
    return _reachable(depends_on, node)


def descendants(depends_on: Mapping[str, Sequence[str]], node: str) -> set[str]:
    """Every step that transitively depends on ``node``."""
    dependents: dict[str, list[str]] = {}
    for step, deps in depends_on.items():
        for dep in deps:
            dependents.setdefault(dep, []).append(step)
    return _reachable(dependents, node)


def _reachable(edges: Mapping[str, Sequence[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = list(edges.get(start, ()))
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(edges.get(current, ()))
    return seen


def topological_order(depends_on: Mapping[str, Sequence[str]]) -> list[str]:
    """Steps so that every step comes after its dependencies; ties broken by name.

    Kahn's algorithm with a heap: O((steps + edges) log steps), so a fan-out of thousands of
    steps is ordered in milliseconds."""
    waiting = {step: len(set(deps)) for step, deps in depends_on.items()}
    dependents: dict[str, list[str]] = {}
    for step, deps in depends_on.items():
        for dep in set(deps):
            dependents.setdefault(dep, []).append(step)
    ready = [step for step, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        step = heapq.heappop(ready)
        order.append(step)
        for other in dependents.get(step, ()):
            waiting[other] -= 1
            if waiting[other] == 0:
                heapq.heappush(ready, other)
    if len(order) < len(waiting):
        raise ValueError(f"cycle among {sorted(set(waiting) - set(order))}")
    return order
