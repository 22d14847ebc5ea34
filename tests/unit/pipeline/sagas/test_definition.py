"""Saga definitions are checked when they are built: a definition that could not run is a
SagaDefinitionError naming what is wrong, never an error when a saga of it starts or times out."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from pipeline.sagas import Call, Parallel, SagaDefinition, SagaRegistry, Step
from pipeline.sagas.definition import SagaDefinitionError


class Data(BaseModel):
    n: int


def _step(name: str = "one", **options: Any) -> Step[Data]:
    return Step(name, participant="worker", **({"action": lambda d: Call("Do", {})} | options))


def _saga(**changes: Any) -> SagaDefinition[Data]:
    arguments: dict[str, Any] = {"version": 1, "data_model": Data, "steps": [_step()]}
    return SagaDefinition(changes.pop("name", "Saga"), **(arguments | changes))


@pytest.mark.parametrize(
    ("options", "said"),
    [
        ({"timeout_s": float("nan")}, "timeout_s must be a number of seconds, more than 0"),
        ({"timeout_s": float("inf")}, "timeout_s must be a number of seconds"),
        ({"timeout_s": 1e12}, "at most 31,622,400 (a year), got 1000000000000.0"),
        ({"timeout_s": 0}, "timeout_s must be a number of seconds, more than 0"),
        ({"timeout_s": "30"}, "got '30'"),
        ({"timeout_s": True}, "got True"),
        ({"retry_backoff_s": -1.0}, "retry_backoff_s must be a number of seconds, 0 or more"),
        ({"compensation_backoff_s": -0.5}, "compensation_backoff_s must be"),
        ({"retries": 1.5}, "retries must be a whole number >= 0, got 1.5"),
        ({"retries": -1}, "retries must be a whole number >= 0"),
        ({"compensation_attempts": 0}, "compensation_attempts must be a whole number >= 1"),
        ({"action": None}, "action must be a function, got None"),
        ({"action": "Debit"}, "action must be a function, got 'Debit'"),
        ({"compensation": "Refund"}, "compensation must be a function or None"),
        ({"on_success": None}, "on_success must be a function"),
    ],
)
def test_a_step_that_could_not_run_is_refused_when_it_is_built(options, said):
    with pytest.raises(SagaDefinitionError, match="step 'one': ") as refused:
        _step(**options)
    assert said in str(refused.value)


def test_a_step_with_zero_backoffs_and_a_long_timeout_is_fine():
    step = _step(retry_backoff_s=0, compensation_backoff_s=0.0, timeout_s=86_400 * 30, retries=3)
    assert step.max_attempts == 4


@pytest.mark.parametrize(
    ("make", "said"),
    [
        (lambda: Parallel("", [_step("a"), _step("b")]), "a parallel group needs a name"),
        (
            lambda: Parallel("outer", [_step("a"), Parallel("inner", [_step("b"), _step("c")])]),
            "each branch must be a Step, got a parallel group (a group inside a group",
        ),
        (lambda: Parallel("g", _step("a")), "branches must be a list of steps"),
        (lambda: Parallel("g", [_step("a"), "b"]), "each branch must be a Step, got 'b'"),
        (lambda: _saga(steps=_step()), "steps must be a list of steps and groups"),
        (lambda: _saga(steps=[_step(), "two"]), "each element must be a Step or a Parallel"),
        (lambda: _saga(version="1"), "version must be a whole number >= 1, got '1'"),
        (lambda: _saga(version=0), "version must be a whole number >= 1"),
        (lambda: _saga(data_model=dict), "data_model must be a pydantic model class"),
        (lambda: _saga(name=""), "a saga needs a name"),
        (lambda: _saga(steps=[]), "has no steps"),
        (lambda: _saga(steps=[_step("a"), _step("a")]), "two elements named 'a'"),
    ],
)
def test_a_definition_that_could_not_run_is_refused_when_it_is_built(make, said):
    with pytest.raises(SagaDefinitionError) as refused:
        make()
    assert said in str(refused.value)


def test_a_registry_refuses_the_same_version_twice():
    with pytest.raises(SagaDefinitionError, match="version 1 is registered already"):
        SagaRegistry([_saga(), _saga()])
