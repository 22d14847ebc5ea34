"""The Mermaid diagram of a saga definition."""

from pipeline.sagas import mermaid
from tests.unit.pipeline.sagas.test_machine import fork_saga, order_saga


def test_the_graph_runs_forwards_through_every_step_and_confirm_to_completed():
    text = mermaid(order_saga())
    assert text.startswith("flowchart TD\n")
    assert "  start --> reserve\n" in text
    assert "  reserve --> charge\n" in text
    assert "  charge --> ship\n" in text
    assert "  ship --> confirm_reserve\n" in text
    assert "  confirm_reserve --> completed\n" in text


def test_the_graph_compensates_backwards_in_reverse_order():
    text = mermaid(order_saga())
    assert "  undo_ship -.-> undo_charge\n" in text
    assert "  undo_charge -.-> undo_reserve\n" in text
    assert "  undo_reserve -.-> compensated\n" in text
    assert 'undo_reserve(["cancel reserve"])' in text


def test_a_parallel_group_forks_and_joins():
    text = mermaid(fork_saga())
    assert "  first --> both_fork\n" in text
    assert "  both_fork --> left --> both_join\n" in text
    assert "  both_fork --> right --> both_join\n" in text
    assert "  both_join --> last\n" in text
    assert "undo_last" not in text  # a step without compensation has nothing to undo
