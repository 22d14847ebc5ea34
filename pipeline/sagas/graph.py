"""A saga definition as a Mermaid flowchart (``pipeline saga graph NAME``).

Forwards: solid arrows from start through each element (a parallel group forks and joins) to
the confirms of its try/confirm/cancel steps and ``completed``. Backwards: dotted arrows from
each step to the compensation that undoes it, chained in reverse order to ``compensated``.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

from pipeline.plurals import counted
from pipeline.sagas.definition import Parallel, SagaDefinition, Step

__all__ = ["mermaid"]


def _node(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def _label(step: Step[Any]) -> str:
    kind = "TCC try" if step.confirm is not None else "step"
    retries = f", {counted(step.retries, 'retry', 'retries')}" if step.retries else ""
    return (
        f'{_node(step.name)}["{step.name}<br/>{kind} on {step.participant}<br/>'
        f'timeout {step.timeout_s:g} s{retries}"]'
    )


def mermaid(definition: SagaDefinition[Any]) -> str:
    """The flowchart text; paste it into any Mermaid renderer (GitHub renders it in Markdown)."""
    lines = [
        "flowchart TD",
        f"  %% {definition.name} version {definition.version}",
        "  start((start))",
    ]
    previous = ["start"]
    for element in definition.elements:
        if isinstance(element, Parallel):
            fork, join = f"{_node(element.name)}_fork", f"{_node(element.name)}_join"
            lines.append(f"  {fork}{{{{fork {element.name}}}}}")
            lines.append(f"  {join}{{{{join {element.name}}}}}")
            lines.extend(f"  {node} --> {fork}" for node in previous)
            for branch in element.branches:
                lines.append(f"  {_label(branch)}")
                lines.append(f"  {fork} --> {_node(branch.name)} --> {join}")
            previous = [join]
        else:
            lines.append(f"  {_label(element)}")
            lines.extend(f"  {node} --> {_node(element.name)}" for node in previous)
            previous = [_node(element.name)]
    confirms = [step for step in definition.steps() if step.confirm is not None]
    for step in confirms:
        node = f"confirm_{_node(step.name)}"
        lines.append(f'  {node}(["confirm {step.name}"])')
        lines.extend(f"  {p} --> {node}" for p in previous)
        previous = [node]
    lines.append("  completed((completed))")
    lines.extend(f"  {p} --> completed" for p in previous)
    undoable = [step for step in definition.steps() if step.compensation is not None]
    if undoable:
        lines.append("  compensated((compensated))")
        chain = [f"undo_{_node(step.name)}" for step in reversed(undoable)]
        for step in undoable:
            word = "cancel" if step.confirm is not None else "compensate"
            lines.append(f'  undo_{_node(step.name)}(["{word} {step.name}"])')
            lines.append(f"  {_node(step.name)} -. undone by .-> undo_{_node(step.name)}")
        for later, earlier in itertools.pairwise(chain):
            lines.append(f"  {later} -.-> {earlier}")
        lines.append(f"  {chain[-1]} -.-> compensated")
    return "\n".join(lines) + "\n"
