"""The Mermaid diagram of a saga definition."""

import itertools
import re

from pipeline.sagas import mermaid
from pipeline.sagas.definition import Call, Parallel, SagaDefinition, Step, tcc
from tests.unit.pipeline.sagas.test_machine import Order, fork_saga, order_saga

DECLARATION = re.compile(r"^  (\w+)[\[({]", re.MULTILINE)
EDGE = re.compile(r"^  (\w+) -(?:->|\. undone by \.->|\.->) (\w+)(?: --> (\w+))?$", re.MULTILINE)


def step(name: str, participant: str = "x") -> Step[Order]:
    return Step(
        name,
        participant=participant,
        action=lambda d: Call("Do", {}),
        compensation=lambda d: Call("Undo", {}),
    )


def saga(*steps: Step[Order] | Parallel[Order], name: str = "Odd") -> SagaDefinition[Order]:
    return SagaDefinition(name, version=1, data_model=Order, steps=list(steps))


def declared(text: str) -> list[str]:
    return DECLARATION.findall(text)


def edges(text: str) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for match in EDGE.finditer(text):
        nodes = [node for node in match.groups() if node]
        found.update(itertools.pairwise(nodes))
    return found


def test_the_graph_runs_forwards_through_every_step_and_confirm_to_completed():
    text = mermaid(order_saga())
    assert text.startswith("flowchart TD\n")
    assert '  s0["reserve<br/>TCC try on inventory<br/>timeout 30 s"]\n' in text
    assert '  s1["charge<br/>step on payment<br/>timeout 10 s"]\n' in text
    assert "  start --> s0\n" in text
    assert "  s0 --> s1\n" in text
    assert "  s1 --> s2\n" in text
    assert "  s2 --> c0\n" in text
    assert '  c0(["confirm reserve"])\n' in text
    assert "  c0 --> completed\n" in text


def test_the_graph_compensates_backwards_in_reverse_order():
    text = mermaid(order_saga())
    assert "  s2 -. undone by .-> u2\n" in text
    assert "  u2 -.-> u1\n" in text
    assert "  u1 -.-> u0\n" in text
    assert "  u0 -.-> compensated\n" in text
    assert '  u0(["cancel reserve"])\n' in text
    assert '  u1(["compensate charge"])\n' in text


def test_a_parallel_group_forks_and_joins():
    text = mermaid(fork_saga())
    assert '  f0{{"fork both"}}\n' in text
    assert '  j0{{"join both"}}\n' in text
    assert "  s0 --> f0\n" in text
    assert "  f0 --> s1 --> j0\n" in text
    assert "  f0 --> s2 --> j0\n" in text
    assert "  j0 --> s3\n" in text
    assert '  s3["last<br/>step on d<br/>timeout 30 s"]\n' in text
    assert "u3" not in text  # a step without compensation has nothing to undo


def test_every_node_is_declared_once_and_every_edge_joins_declared_nodes():
    text = mermaid(fork_saga())
    nodes = declared(text)
    assert len(nodes) == len(set(nodes))
    assert {node for edge in edges(text) for node in edge} <= set(nodes)
    assert edges(text) == {
        ("start", "s0"),
        ("s0", "f0"),
        ("f0", "s1"),
        ("s1", "j0"),
        ("f0", "s2"),
        ("s2", "j0"),
        ("j0", "s3"),
        ("s3", "completed"),
        ("s0", "u0"),
        ("s1", "u1"),
        ("s2", "u2"),
        ("u2", "u1"),
        ("u1", "u0"),
        ("u0", "compensated"),
    }
    assert len(edges(text)) == text.count("->")  # every arrow line was read


def test_mermaid_keywords_as_step_names_are_labels_not_node_ids():
    keywords = ["end", "graph", "subgraph", "click", "style", "flowchart", "class", "default"]
    text = mermaid(saga(*(step(keyword) for keyword in keywords)))
    nodes = declared(text)
    assert nodes[1 : 1 + len(keywords)] == [f"s{i}" for i in range(len(keywords))]
    assert not set(keywords) & set(nodes)
    assert not set(keywords) & {node for edge in edges(text) for node in edge}
    assert '  s0["end<br/>step on x<br/>timeout 30 s"]\n' in text
    assert '  u2(["compensate subgraph"])\n' in text


def test_names_that_would_read_alike_stay_two_nodes():
    text = mermaid(saga(step("a b"), step("a_b"), step("a-b")))
    assert declared(text) == [
        "start",
        "s0",
        "s1",
        "s2",
        "completed",
        "compensated",
        "u0",
        "u1",
        "u2",
    ]
    assert {("start", "s0"), ("s0", "s1"), ("s1", "s2"), ("s2", "completed")} <= edges(text)
    assert {("u2", "u1"), ("u1", "u0"), ("u0", "compensated")} <= edges(text)
    assert '  s0["a b<br/>' in text
    assert '  s1["a_b<br/>' in text


def test_steps_named_like_the_fixed_nodes_stay_apart_from_them():
    text = mermaid(saga(step("start"), step("completed"), step("compensated")))
    nodes = declared(text)
    assert len(nodes) == len(set(nodes))
    assert {("start", "s0"), ("s0", "s1"), ("s1", "s2"), ("s2", "completed")} <= edges(text)
    assert ("u0", "compensated") in edges(text)
    assert not any(a == b for a, b in edges(text))
    assert '  s0["start<br/>step on x<br/>timeout 30 s"]\n' in text


def test_quotes_in_a_name_are_escaped_as_entity_codes():
    text = mermaid(saga(step('say "hi"', participant='the "best" one')))
    assert (
        '  s0["say #quot;hi#quot;<br/>step on the #quot;best#quot; one<br/>timeout 30 s"]\n' in text
    )
    assert '  u0(["compensate say #quot;hi#quot;"])\n' in text


def test_html_markdown_entity_and_directive_characters_are_escaped():
    text = mermaid(saga(step("<b>&`x`#quot;%%{init}%%")))
    escaped = "#lt;b#gt;#amp;#96;x#96;#35;quot;#37;#37;{init}#37;#37;"
    assert f'  s0["{escaped}<br/>step on x<br/>timeout 30 s"]\n' in text
    assert f'  u0(["compensate {escaped}"])\n' in text


def test_a_line_break_in_a_name_is_drawn_as_a_line_break():
    text = mermaid(saga(step("two\nlines"), step("also\r\nthese")))
    assert '  s0["two<br/>lines<br/>step on x<br/>timeout 30 s"]\n' in text
    assert '  u1(["compensate also<br/>these"])\n' in text


def test_a_parallel_group_and_a_tcc_step_with_odd_names_get_their_own_nodes():
    odd: Step[Order] = tcc(
        'end "now"',
        participant="x",
        try_=lambda d: Call("Try", {}),
        confirm=lambda d: Call("Confirm", {}),
        cancel=lambda d: Call("Cancel", {}),
    )
    text = mermaid(saga(Parallel("start", [odd, step("s0")]), step("c0")))
    nodes = declared(text)
    assert len(nodes) == len(set(nodes))
    assert '  f0{{"fork start"}}\n' in text
    assert '  j0{{"join start"}}\n' in text
    assert '  c0(["confirm end #quot;now#quot;"])\n' in text
    assert '  s1["s0<br/>step on x<br/>timeout 30 s"]\n' in text
    assert {("start", "f0"), ("f0", "s0"), ("s0", "j0"), ("j0", "s2"), ("s2", "c0")} <= edges(text)


def test_the_saga_name_stays_on_its_comment_line():
    text = mermaid(saga(step("a"), name="Odd\nend %%{init}%%"))
    assert "  %% Odd end #37;#37;{init}#37;#37; version 1\n" in text
