"""A saga written as code: typed data, steps, their compensations, versions.

::

    class OrderData(BaseModel):
        order_id: str
        amount_cents: int
        payment_id: str | None = None

    create_order = SagaDefinition(
        "CreateOrder",
        version=1,
        data_model=OrderData,
        steps=[
            tcc(
                "reserve_stock",
                participant="inventory",
                try_=lambda d: Call("ReserveStock", {"order_id": d.order_id}),
                confirm=lambda d: Call("ConfirmReservation", {"order_id": d.order_id}),
                cancel=lambda d: Call("ReleaseStock", {"order_id": d.order_id}),
            ),
            Step(
                "charge_card",
                participant="payment",
                action=lambda d: Call("ChargeCard", {"amount_cents": d.amount_cents}),
                on_success=lambda d, reply: d.model_copy(update={"payment_id": reply["id"]}),
                compensation=lambda d: Call("RefundCard", {"payment_id": d.payment_id}),
                timeout_s=30,
                retries=2,
            ),
        ],
    )

Three kinds of step:

- :class:`Step`: an action on one participant and, optionally, its compensation (the action
  undone). A step with no compensation is one whose effect needs no undoing (a read, a check).
- :class:`Parallel`: steps sent at once, joined before the next element. When one branch fails,
  the branches that completed (or whose outcome is unknown after a timeout) are compensated.
- :func:`tcc`: try / confirm / cancel. The try reserves; the confirm makes it final once every
  step of the saga succeeded (the last step is the saga's pivot); the cancel releases it
  otherwise.

Every step has a timeout per attempt and a number of retries before the saga compensates, and
its compensation (or confirm) a number of attempts before the saga stops in
``compensation_failed`` for an operator. A definition is identified by ``(name, version)``; a
running instance keeps the version it started with (:class:`SagaRegistry` holds them all), so
a new definition can be deployed while old instances finish on theirs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from pipeline.errors import PipelineError

__all__ = [
    "Call",
    "Element",
    "Parallel",
    "SagaDefinition",
    "SagaDefinitionError",
    "SagaRegistry",
    "Step",
    "UnknownSagaVersion",
    "tcc",
]

D = TypeVar("D", bound=BaseModel)


class SagaDefinitionError(PipelineError):
    """A saga definition that cannot run as written (duplicate names, no steps, ...)."""


class UnknownSagaVersion(SagaDefinitionError):
    """A saga's (name, version) that a registry does not hold (:meth:`SagaRegistry.get`): a
    version not deployed here yet (a rolling deploy), or one dropped while its sagas run."""

    def __init__(self, name: str, version: int, held: str) -> None:
        super().__init__(
            f"saga {name!r} version {version} is not in this registry (it holds: {held})"
        )
        self.name = name
        self.version = version
        #: The registry's versions, as ``"TripBooking v1, Other v3"`` (``"none"``).
        self.held = held


@dataclass(frozen=True)
class Call:
    """One command for a participant: its event type and its data (JSON)."""

    type: str
    data: Mapping[str, Any] = field(default_factory=dict)


def _keep(data: Any, _reply: Mapping[str, Any]) -> Any:
    return data


#: The longest timeout or backoff a step may have (a deadline must stay a date Python can write).
_MAX_SECONDS = 366 * 86_400.0


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _check_seconds(where: str, name: str, value: Any, *, allow_zero: bool) -> None:
    """A duration in seconds: a real number (not a bool), finite, > 0 (or >= 0), at most a year."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    least = "0 or more" if allow_zero else "more than 0"
    if (
        not number
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not allow_zero)
        or value > _MAX_SECONDS
    ):
        raise SagaDefinitionError(
            f"{where}: {name} must be a number of seconds, {least} and at most "
            f"{_MAX_SECONDS:,.0f} (a year), got {value!r:.40}"
        )


def _check_count(where: str, name: str, value: Any, *, least: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise SagaDefinitionError(
            f"{where}: {name} must be a whole number >= {least}, got {value!r:.40}"
        )


@dataclass(frozen=True)
class Step(Generic[D]):
    """An action on ``participant``, and the compensation that undoes it.

    ``on_success(data, reply_data)`` returns the saga data after the action succeeded (by
    default unchanged). ``retries``: further attempts after a failure or a timeout before the
    saga compensates; a reply that says ``retryable=False`` (a business refusal: out of stock,
    card declined) compensates at once. ``compensation_attempts``: attempts of the compensation
    before the saga stops in ``compensation_failed``.
    """

    name: str
    participant: str
    action: Callable[[D], Call]
    compensation: Callable[[D], Call] | None = None
    on_success: Callable[[D, Mapping[str, Any]], D] = _keep
    timeout_s: float = 30.0
    retries: int = 0
    retry_backoff_s: float = 1.0
    compensation_attempts: int = 5
    compensation_backoff_s: float = 1.0
    #: Only a try / confirm / cancel step (:func:`tcc`) has one.
    confirm: Callable[[D], Call] | None = None

    def __post_init__(self) -> None:
        if not _is_text(self.name) or not _is_text(self.participant):
            raise SagaDefinitionError("a step needs a name and a participant (texts)")
        where = f"step {self.name!r}"
        for role in ("action", "on_success"):
            if not callable(getattr(self, role)):
                raise SagaDefinitionError(
                    f"{where}: {role} must be a function, got {getattr(self, role)!r:.60}"
                )
        for role in ("compensation", "confirm"):
            if getattr(self, role) is not None and not callable(getattr(self, role)):
                raise SagaDefinitionError(
                    f"{where}: {role} must be a function or None, got {getattr(self, role)!r:.60}"
                )
        _check_seconds(where, "timeout_s", self.timeout_s, allow_zero=False)
        _check_seconds(where, "retry_backoff_s", self.retry_backoff_s, allow_zero=True)
        _check_seconds(
            where, "compensation_backoff_s", self.compensation_backoff_s, allow_zero=True
        )
        _check_count(where, "retries", self.retries, least=0)
        _check_count(where, "compensation_attempts", self.compensation_attempts, least=1)

    @property
    def max_attempts(self) -> int:
        return self.retries + 1

    @property
    def is_tcc(self) -> bool:
        return self.confirm is not None


def tcc(
    name: str,
    *,
    participant: str,
    try_: Callable[[D], Call],
    confirm: Callable[[D], Call],
    cancel: Callable[[D], Call],
    **options: Any,
) -> Step[D]:
    """A try / confirm / cancel step: ``try_`` is its action, ``cancel`` its compensation, and
    ``confirm`` is sent once every step of the saga succeeded (``options`` as for :class:`Step`).
    """
    return Step(
        name,
        participant=participant,
        action=try_,
        compensation=cancel,
        confirm=confirm,
        **options,
    )


@dataclass(frozen=True)
class Parallel(Generic[D]):
    """Branches sent at once and joined before the next element."""

    name: str
    branches: Sequence[Step[D]]

    def __post_init__(self) -> None:
        if not _is_text(self.name):
            raise SagaDefinitionError(
                f"a parallel group needs a name (a text), got {self.name!r:.40}"
            )
        if isinstance(self.branches, str | Step) or not isinstance(self.branches, Sequence):
            raise SagaDefinitionError(f"parallel {self.name!r}: branches must be a list of steps")
        for branch in self.branches:
            if not isinstance(branch, Step):
                kind = "a parallel group" if isinstance(branch, Parallel) else repr(branch)[:60]
                raise SagaDefinitionError(
                    f"parallel {self.name!r}: each branch must be a Step, got {kind} (a group "
                    "inside a group is not supported: make it an element of its own)"
                )
        if len(self.branches) < 2:
            raise SagaDefinitionError(f"parallel {self.name!r} needs at least two branches")


Element = Step[Any] | Parallel[Any]


class SagaDefinition(Generic[D]):
    """A named, versioned list of elements (steps or parallel groups) over ``data_model``."""

    def __init__(
        self,
        name: str,
        *,
        version: int,
        data_model: type[D],
        steps: Sequence[Step[D] | Parallel[D]],
        description: str = "",
    ) -> None:
        if not _is_text(name):
            raise SagaDefinitionError(f"a saga needs a name (a text), got {name!r:.40}")
        _check_count(f"saga {name!r}", "version", version, least=1)
        if not (isinstance(data_model, type) and issubclass(data_model, BaseModel)):
            raise SagaDefinitionError(
                f"saga {name!r}: data_model must be a pydantic model class, got {data_model!r:.60}"
            )
        if isinstance(steps, str | Step | Parallel) or not isinstance(steps, Sequence):
            raise SagaDefinitionError(f"saga {name!r}: steps must be a list of steps and groups")
        if not steps:
            raise SagaDefinitionError(f"saga {name!r} has no steps")
        for element in steps:
            if not isinstance(element, Step | Parallel):
                raise SagaDefinitionError(
                    f"saga {name!r}: each element must be a Step or a Parallel, got {element!r:.60}"
                )
        self.name = name
        self.version = version
        self.data_model = data_model
        self.elements: tuple[Step[D] | Parallel[D], ...] = tuple(steps)
        self.description = description
        self._steps: dict[str, tuple[int, Step[D]]] = {}
        names: set[str] = set()
        for position, element in enumerate(self.elements):
            if element.name in names:
                raise SagaDefinitionError(f"saga {name!r}: two elements named {element.name!r}")
            names.add(element.name)
            for step in self.leaves(position):
                if step.name in self._steps or (step is not element and step.name in names):
                    raise SagaDefinitionError(f"saga {name!r}: two steps named {step.name!r}")
                self._steps[step.name] = (position, step)
        self._step_names = frozenset(self._steps)

    @property
    def key(self) -> tuple[str, int]:
        return (self.name, self.version)

    @property
    def step_names(self) -> frozenset[str]:
        return self._step_names

    def leaves(self, position: int) -> tuple[Step[D], ...]:
        """The steps of the element at ``position`` (one, or a parallel group's branches)."""
        element = self.elements[position]
        return tuple(element.branches) if isinstance(element, Parallel) else (element,)

    def step(self, name: str) -> Step[D]:
        return self._steps[name][1]

    def position_of(self, name: str) -> int:
        return self._steps[name][0]

    def steps(self) -> Iterator[Step[D]]:
        """Every step, in definition order (parallel branches in their order)."""
        for position in range(len(self.elements)):
            yield from self.leaves(position)

    @property
    def participants(self) -> list[str]:
        return sorted({step.participant for step in self.steps()})

    def __repr__(self) -> str:
        return f"SagaDefinition({self.name!r}, version={self.version})"


class SagaRegistry:
    """Every deployed version of every saga; an instance runs on the version it started with."""

    def __init__(self, definitions: Sequence[SagaDefinition[Any]] = ()) -> None:
        self._definitions: dict[tuple[str, int], SagaDefinition[Any]] = {}
        for definition in definitions:
            self.register(definition)

    def register(self, definition: SagaDefinition[Any]) -> SagaDefinition[Any]:
        if definition.key in self._definitions:
            raise SagaDefinitionError(
                f"saga {definition.name!r} version {definition.version} is registered already"
            )
        self._definitions[definition.key] = definition
        return definition

    def get(self, name: str, version: int) -> SagaDefinition[Any]:
        """The definition of ``name`` ``version``; :class:`UnknownSagaVersion` when it is not
        here."""
        try:
            return self._definitions[(name, version)]
        except KeyError:
            raise UnknownSagaVersion(name, version, self._held()) from None

    def latest(self, name: str) -> SagaDefinition[Any]:
        versions = [v for (n, v) in self._definitions if n == name]
        if not versions:
            raise SagaDefinitionError(
                f"no saga named {name!r} in this registry (it holds: {self._held()})"
            )
        return self._definitions[(name, max(versions))]

    def held(self) -> list[tuple[str, int]]:
        """The (name, version) of every definition here."""
        return sorted(self._definitions)

    def _held(self) -> str:
        return ", ".join(f"{n} v{v}" for n, v in sorted(self._definitions)) or "none"

    @property
    def names(self) -> list[str]:
        return sorted({name for name, _ in self._definitions})
