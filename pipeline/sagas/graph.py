"""A saga definition as a Mermaid flowchart (``pipeline saga graph NAME``).

Forwards: solid arrows from start through each element (a parallel group forks and joins) to
the confirms of its try/confirm/cancel steps and ``completed``. Backwards: dotted arrows from
each step to the compensation that undoes it, chained in reverse order to ``compensated``.

Node ids are generated, never taken from names: ``s<i>`` for the i-th step (definition order,
parallel branches included), ``c<i>`` its confirm, ``u<i>`` its compensation, ``f<j>``/``j<j>``
the fork and join of the j-th parallel group, beside the fixed ``start``, ``completed`` and
``compensated``. So no name can make two nodes one, merge with a fixed node or be read as a
Mermaid keyword (``end``, ``graph``, ``click``, ...). Names appear only in quoted labels, escaped
with Mermaid's entity codes (``#quot;``, ``#lt;``, ...).
"""

from __future__ import annotations

import itertools
from typing import Any

from pipeline.plurals import counted
from pipeline.sagas.definition import Parallel, SagaDefinition, Step

__all__ = ["mermaid"]

# Characters a quoted Mermaid label cannot hold as themselves: the quote ends it, ``<``, ``>``
# and ``&`` are HTML to the renderer, a backtick starts a Markdown string, ``#`` an entity code
# (a name holding ``#quot;`` stays as written), and ``%%{...}%%`` anywhere in the text is a
# directive that reconfigures the diagram. Mermaid decodes ``#name;`` and ``#number;`` codes.
_ENTITIES = {
    "#": "#35;",
    '"': "#quot;",
    "<": "#lt;",
    ">": "#gt;",
    "&": "#amp;",
    "`": "#96;",
    "%": "#37;",
}
_LINE_BREAKS = ("\r\n", "\r", "\n")


def _text(value: str) -> str:
    """``value`` as label text: escaped, its line breaks drawn as line breaks."""
    text = "".join(_ENTITIES.get(char, char) for char in value)
    for line_break in _LINE_BREAKS:
        text = text.replace(line_break, "<br/>")
    return text


def _comment(value: str) -> str:
    """``value`` on one ``%%`` comment line (read by people, never rendered), no directive."""
    for line_break in _LINE_BREAKS:
        value = value.replace(line_break, " ")
    return value.replace("%", "#37;")


def _step_label(step: Step[Any]) -> str:
    kind = "TCC try" if step.confirm is not None else "step"
    retries = f", {counted(step.retries, 'retry', 'retries')}" if step.retries else ""
    return (
        f'["{_text(step.name)}<br/>{kind} on {_text(step.participant)}<br/>'
        f'timeout {step.timeout_s:g} s{retries}"]'
    )


def mermaid(definition: SagaDefinition[Any]) -> str:
    """The flowchart text; paste it into any Mermaid renderer (GitHub renders it in Markdown)."""
    index = {step.name: position for position, step in enumerate(definition.steps())}

    def node(step: Step[Any], prefix: str = "s") -> str:
        return f"{prefix}{index[step.name]}"

    lines = [
        "flowchart TD",
        f"  %% {_comment(definition.name)} version {definition.version}",
        "  start((start))",
    ]
    previous = ["start"]
    groups = itertools.count()
    for element in definition.elements:
        if isinstance(element, Parallel):
            group = next(groups)
            fork, join = f"f{group}", f"j{group}"
            lines.append(f'  {fork}{{{{"fork {_text(element.name)}"}}}}')
            lines.append(f'  {join}{{{{"join {_text(element.name)}"}}}}')
            lines.extend(f"  {p} --> {fork}" for p in previous)
            for branch in element.branches:
                lines.append(f"  {node(branch)}{_step_label(branch)}")
                lines.append(f"  {fork} --> {node(branch)} --> {join}")
            previous = [join]
        else:
            lines.append(f"  {node(element)}{_step_label(element)}")
            lines.extend(f"  {p} --> {node(element)}" for p in previous)
            previous = [node(element)]
    for step in definition.steps():
        if step.confirm is not None:
            lines.append(f'  {node(step, "c")}(["confirm {_text(step.name)}"])')
            lines.extend(f"  {p} --> {node(step, 'c')}" for p in previous)
            previous = [node(step, "c")]
    lines.append("  completed((completed))")
    lines.extend(f"  {p} --> completed" for p in previous)
    undoable = [step for step in definition.steps() if step.compensation is not None]
    if undoable:
        lines.append("  compensated((compensated))")
        for step in undoable:
            word = "cancel" if step.confirm is not None else "compensate"
            lines.append(f'  {node(step, "u")}(["{word} {_text(step.name)}"])')
            lines.append(f"  {node(step)} -. undone by .-> {node(step, 'u')}")
        chain = [node(step, "u") for step in reversed(undoable)]
        for later, earlier in itertools.pairwise(chain):
            lines.append(f"  {later} -.-> {earlier}")
        lines.append(f"  {chain[-1]} -.-> compensated")
    return "\n".join(lines) + "\n"
