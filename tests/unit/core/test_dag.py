from __future__ import annotations

import pytest

from pipeorch.core import dag

DIAMOND = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"], "e": []}


def test_topological_order_is_deterministic_and_respects_dependencies():
    assert dag.topological_order(DIAMOND) == ["a", "b", "c", "d", "e"]


def test_ancestors_and_descendants():
    assert dag.ancestors(DIAMOND, "d") == {"a", "b", "c"}
    assert dag.descendants(DIAMOND, "a") == {"b", "c", "d"}
    assert dag.descendants(DIAMOND, "e") == set()


def test_cycle_is_reported_as_a_closed_path():
    assert dag.find_cycle(DIAMOND) is None
    assert dag.find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]
    with pytest.raises(ValueError, match="cycle"):
        dag.topological_order({"a": ["b"], "b": ["a"]})


def test_a_long_chain_does_not_recurse():
    chain = {f"s{i}": [f"s{i - 1}"] if i else [] for i in range(5000)}
    assert dag.find_cycle(chain) is None
    assert len(dag.ancestors(chain, "s4999")) == 4999
