"""Topological order of a directed graph, with the cycle named when there is one."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


class CycleError(ValueError):
    """The graph has a cycle; ``cycle`` lists it with its first node repeated at the end."""

    def __init__(self, cycle: list[str]):
        self.cycle = cycle
        super().__init__(" -> ".join(cycle))


def topological_order(nodes: Iterable[str], parents: Mapping[str, Iterable[str]]) -> list[str]:
    """``nodes`` ordered so that each comes after its parents (parents outside ``nodes`` are
    ignored); ties keep the given order. Depth-first, so a cycle is reported as a path.

    :raises CycleError: naming the nodes of one cycle.
    """
    nodes = list(nodes)
    members = set(nodes)
    order: list[str] = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> None:
        if state.get(node) == 2:
            return
        if state.get(node) == 1:
            raise CycleError(path[path.index(node):] + [node])
        state[node] = 1
        for parent in parents.get(node, ()):
            if parent in members:
                visit(parent, path + [node])
        state[node] = 2
        order.append(node)

    for node in nodes:
        visit(node, [])
    return order
