"""The I/O edge of the topic catalogue: read topics from Kafka, apply a :class:`Plan` to it.

The admin client is built by :func:`pipeline.kafka.clients.build_admin` and passed in (anything
shaped
like :class:`KafkaAdmin`). Every call has a timeout, so an unreachable broker becomes a
:class:`PipelineError` ("Kafka at ... does not answer") rather than a hang, and every Kafka error is
turned into a one-line :class:`PipelineError` naming the topic.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from functools import partial
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException

# confluent-kafka's admin module re-exports these without an __all__, which strict mypy flags.
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    ResourceType,
)

from pipeline.errors import PipelineError
from pipeline.plurals import counted
from pipeline.stack.preflight import port_answers, split_host_port
from pipeline.topics.plan import (
    ActualTopic,
    CreateTopic,
    IncreasePartitions,
    Plan,
    SetConfig,
    unapplied,
)

DEFAULT_TIMEOUT_S = 15.0

_UNREACHABLE_CODES = frozenset(
    {
        KafkaError._TRANSPORT,
        KafkaError._TIMED_OUT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._RESOLVE,
        KafkaError.REQUEST_TIMED_OUT,
    }
)


class KafkaAdmin(Protocol):
    """The part of :class:`confluent_kafka.admin.AdminClient` this module uses."""

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any: ...

    def describe_configs(self, resources: list[Any], **kwargs: Any) -> dict[Any, Future[Any]]: ...

    def create_topics(self, new_topics: list[Any], **kwargs: Any) -> dict[str, Future[Any]]: ...

    def create_partitions(
        self, new_partitions: list[Any], **kwargs: Any
    ) -> dict[str, Future[Any]]: ...

    def incremental_alter_configs(
        self, resources: list[Any], **kwargs: Any
    ) -> dict[Any, Future[Any]]: ...


def is_internal_topic(name: str) -> bool:
    """Kafka's own topics (``__consumer_offsets``, ``__transaction_state``...)."""
    return name.startswith("__")


def _kafka_at(bootstrap: str | None) -> str:
    return f"Kafka at {bootstrap}" if bootstrap else "Kafka"


class KafkaUnavailableError(PipelineError):
    """Kafka did not answer in time (down, unreachable, or the wrong address)."""


class KafkaRefusedError(KafkaUnavailableError):
    """Kafka answered but refused the connection: a login or TLS handshake it turned down."""


class MissingTopicsError(PipelineError):
    """Topics a command needs do not exist; every command words this the same way."""

    def __init__(self, names: Iterable[str], bootstrap: str | None) -> None:
        self.names = tuple(names)
        several = len(self.names) > 1
        super().__init__(
            f"topic{'s' if several else ''} {', '.join(self.names)} "
            f"do{'' if several else 'es'} not exist on {_kafka_at(bootstrap)} "
            f"(create {'them' if several else 'it'} first, e.g. with `pipeline topics apply`)"
        )


def _unreachable(bootstrap: str | None, detail: str) -> KafkaUnavailableError:
    return KafkaUnavailableError(
        f"{_kafka_at(bootstrap)} does not answer ({detail}); is the broker running and "
        "PIPELINE_KAFKA__BOOTSTRAP_SERVERS right?"
    )


#: How long every bootstrap address must refuse connections (nothing listens there) or name a
#: host that does not resolve before a command gives up on Kafka, rather than waiting out its
#: whole timeout: long enough for a broker that is restarting, short enough for a person who
#: mistyped the address.
NOTHING_LISTENS_GRACE_S = 3.0


def _nowhere_reason(bootstrap: str | None) -> str | None:
    """Why no bootstrap address can be connected to right now (each refuses connections or names
    a host that does not resolve), or ``None`` if one might answer (or there is none to try).

    The socket module's own answers: librdkafka says "Broker transport failure" for both."""
    if not bootstrap:
        return None
    reasons = []
    for address in bootstrap.split(","):
        try:
            host, port = split_host_port(address.strip())
        except PipelineError:
            return None
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return None
        except socket.gaierror:
            reasons.append(f"cannot resolve host {host}")
        except ConnectionRefusedError:
            reasons.append(f"nothing listens at {address.strip()}: connection refused")
        except Exception:  # a timeout, no route (the network may yet answer), or no probe at all
            return None
    return "; ".join(reasons)


def _listening_address(bootstrap: str | None) -> str | None:
    """The first bootstrap address where something accepts a TCP connection, if any: Kafka
    "not answering" there most likely means a listener of another kind (TLS, SASL) than the
    client's settings, or a broker still starting."""
    if not bootstrap:
        return None
    for address in bootstrap.split(","):
        try:
            host, port = split_host_port(address.strip())
        except PipelineError:
            continue
        if port_answers(host, port, timeout_s=0.5):
            return address.strip()
    return None


def not_answering_text(bootstrap: str, detail: str, protocol: str = "PLAINTEXT") -> str:
    """What every command says when Kafka at ``bootstrap`` does not answer (``detail``:
    librdkafka's error): where something listens there, which setting to check for the
    client's ``protocol`` (a long-running program's health check says the same)."""
    return str(_not_answering(bootstrap, detail, protocol))


def _not_answering(
    bootstrap: str | None, detail: str, protocol: str = "PLAINTEXT"
) -> KafkaUnavailableError:
    """:func:`_unreachable`, or, when something listens at a bootstrap address, what to check
    (``protocol``: the client's ``security.protocol``). Where nothing can be connected to, the
    socket module's reason replaces librdkafka's ``detail``, which says "Broker transport
    failure" for a host that does not resolve and for a port nothing listens at alike."""
    listening = _listening_address(bootstrap)
    if listening is None:
        return _unreachable(bootstrap, _nowhere_reason(bootstrap) or detail)
    if protocol != "PLAINTEXT":  # set already: the listener may not be Kafka's, or not this kind
        # A TLS listener that also wants a SASL login answers an SSL client's handshake, then
        # nothing: the same silence as a listener of another kind.
        sasl = " or SASL_SSL, if it also wants a login" if protocol == "SSL" else ""
        return KafkaUnavailableError(
            f"{_kafka_at(bootstrap)} does not answer ({detail}), though something listens at "
            f"{listening}: is it a Kafka listener that takes {protocol}{sasl} "
            "(PIPELINE_KAFKA__SECURITY_PROTOCOL)? or the broker is still starting"
        )
    return KafkaUnavailableError(
        f"{_kafka_at(bootstrap)} does not answer ({detail}), though something listens at "
        f"{listening}: if it is a TLS or SASL listener, set PIPELINE_KAFKA__SECURITY_PROTOCOL "
        "(and the PIPELINE_KAFKA__SASL_* or SSL_* settings); or the broker is still starting"
    )


def _error_of(exception: BaseException) -> KafkaError | None:
    if isinstance(exception, KafkaException) and exception.args:
        first = exception.args[0]
        if isinstance(first, KafkaError):
            return first
    return None


def _wait(future: Future[Any], timeout_s: float, bootstrap: str | None, doing: str) -> Any:
    try:
        return future.result(timeout=timeout_s)
    except TimeoutError:
        raise _unreachable(bootstrap, f"no reply within {timeout_s:g}s while {doing}") from None


#: The metadata request is waited for in slices this long, so that a refused login or TLS
#: handshake (which librdkafka only logs, retrying for ever) is reported at once rather than
#: after the whole timeout.
_METADATA_SLICE_S = 1.0


def _metadata(admin: KafkaAdmin, bootstrap: str | None, timeout_s: float) -> Any:
    began = time.monotonic()
    deadline = began + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        try:
            return admin.list_topics(timeout=max(0.001, min(_METADATA_SLICE_S, remaining)))
        except KafkaException as exception:
            error = _error_of(exception)
            detail = error.str() if error is not None else str(exception)
            if error is not None and error.code() not in _UNREACHABLE_CODES:
                raise PipelineError(
                    f"cannot list the topics of {_kafka_at(bootstrap)}: {detail}"
                ) from None
            refusal = getattr(admin, "security_failure", None)
            if isinstance(refusal, str):
                raise KafkaRefusedError(
                    f"{_kafka_at(bootstrap)} refused the connection ({refusal}); check the "
                    "PIPELINE_KAFKA__SASL_* and PIPELINE_KAFKA__SSL_* settings"
                ) from None
            now = time.monotonic()
            if now >= deadline:
                protocol = getattr(admin, "security_protocol", "PLAINTEXT")
                raise _not_answering(bootstrap, detail, str(protocol)) from None
            if now - began >= NOTHING_LISTENS_GRACE_S:
                nowhere = _nowhere_reason(bootstrap)
                if nowhere:
                    raise _unreachable(bootstrap, nowhere) from None


def _cluster_topics(
    admin: KafkaAdmin, bootstrap: str | None, timeout_s: float
) -> dict[str, tuple[int, int]]:
    """``{name: (partitions, replication factor)}`` of every topic, from the cluster metadata."""
    metadata = _metadata(admin, bootstrap, timeout_s)
    topics: dict[str, tuple[int, int]] = {}
    for name, topic in metadata.topics.items():
        partitions = list(topic.partitions.values())
        if not partitions:
            continue  # being created or deleted right now: not a topic yet (or any more)
        replication = max(len(partition.replicas) for partition in partitions)
        topics[name] = (len(partitions), replication)
    return topics


def _topic_configs(
    admin: KafkaAdmin, names: list[str], bootstrap: str | None, timeout_s: float
) -> tuple[dict[str, dict[str, str]], dict[str, frozenset[str]]]:
    """Each topic's configs (every one with a value), and the names of those set on the topic
    itself (not the broker's or Kafka's defaults)."""
    if not names:
        return {}, {}
    resources = [ConfigResource(ResourceType.TOPIC, name) for name in names]
    futures = admin.describe_configs(resources, request_timeout=timeout_s)
    configs: dict[str, dict[str, str]] = {}
    overridden: dict[str, frozenset[str]] = {}
    for resource, future in futures.items():
        name = resource.name
        try:
            entries = _wait(future, timeout_s, bootstrap, f"reading the configs of {name}")
        except KafkaException as exception:
            error = _error_of(exception)
            if error is not None and error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                continue  # deleted meanwhile, or not yet known to this broker: does not exist
            raise _failure(
                exception, bootstrap, f"cannot read the configs of topic {name}"
            ) from None
        configs[name] = {
            key: entry.value for key, entry in entries.items() if entry.value is not None
        }
        overridden[name] = frozenset(
            key
            for key, entry in entries.items()
            if entry.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
        )
    return configs, overridden


def _describe(
    admin: KafkaAdmin,
    names: list[str],
    shapes: Mapping[str, tuple[int, int]],
    bootstrap: str | None,
    timeout_s: float,
) -> dict[str, ActualTopic]:
    configs, overridden = _topic_configs(admin, names, bootstrap, timeout_s)
    return {
        name: ActualTopic(name, shapes[name][0], shapes[name][1], configs[name], overridden[name])
        for name in names
        if name in configs
    }


def describe_cluster_topics(
    admin: KafkaAdmin,
    names: Iterable[str],
    *,
    bootstrap: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> dict[str, ActualTopic]:
    """The topics among ``names`` that exist on the cluster, with all their configs.

    A name missing from the result does not exist (or not yet, for the broker that answered).
    ``bootstrap`` only names the cluster in errors.
    """
    shapes = _cluster_topics(admin, bootstrap, timeout_s)
    existing = [name for name in dict.fromkeys(names) if name in shapes]
    return _describe(admin, existing, shapes, bootstrap, timeout_s)


def require_topics(
    admin: KafkaAdmin,
    names: Sequence[str],
    *,
    bootstrap: str | None = None,
    optional: Sequence[str] = (),
) -> dict[str, ActualTopic]:
    """:func:`describe_cluster_topics` of topics a command needs: a :class:`MissingTopicsError`
    naming every one that does not exist. ``optional`` topics are described in the same
    requests, and are in the answer only if they exist."""
    found = describe_cluster_topics(admin, [*names, *optional], bootstrap=bootstrap)
    missing = [name for name in names if name not in found]
    if missing:
        raise MissingTopicsError(missing, bootstrap)
    return found


def list_cluster_topics(
    admin: KafkaAdmin,
    *,
    include_internal: bool = False,
    bootstrap: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> dict[str, ActualTopic]:
    """Every topic on the cluster, sorted by name, without Kafka's internal ones unless asked."""
    shapes = _cluster_topics(admin, bootstrap, timeout_s)
    names = sorted(name for name in shapes if include_internal or not is_internal_topic(name))
    return _describe(admin, names, shapes, bootstrap, timeout_s)


def _failure(exception: KafkaException, bootstrap: str | None, doing: str) -> PipelineError:
    error = _error_of(exception)
    if error is None:
        return PipelineError(f"{doing}: {exception}")
    if error.code() in _UNREACHABLE_CODES:
        return _unreachable(bootstrap, f"{error.str()} while {doing.removeprefix('cannot ')}")
    return PipelineError(f"{doing}: {error.str()}")


def _check_replication(
    admin: KafkaAdmin, changes: tuple[CreateTopic, ...], bootstrap: str | None, timeout_s: float
) -> None:
    if not changes:
        return
    brokers = len(_metadata(admin, bootstrap, timeout_s).brokers)
    for change in changes:
        if change.spec.replication_factor > brokers:
            raise PipelineError(
                f"cannot create topic {change.topic}: replication factor "
                f"{change.spec.replication_factor} is more than the "
                f"{counted(brokers, 'broker')} available "
                "(nothing was changed)"
            )


def _creation_failure(
    change: CreateTopic, exception: KafkaException, bootstrap: str | None
) -> PipelineError:
    error = _error_of(exception)
    spec = change.spec
    if error is not None and error.code() == KafkaError.INVALID_REPLICATION_FACTOR:
        return PipelineError(
            f"cannot create topic {spec.name}: replication factor {spec.replication_factor} is "
            f"more than the brokers available ({error.str()})"
        )
    if error is not None and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
        return PipelineError(
            f"cannot create topic {spec.name}: it was created meanwhile; plan and apply again"
        )
    return _failure(exception, bootstrap, f"cannot create topic {spec.name}")


#: What confluent-kafka raises, before it sends anything, for a request it cannot encode: a
#: partition count or replication factor past librdkafka's limits, text that is not UTF-8.
_CLIENT_REFUSALS = (ValueError, OverflowError)

#: Admin requests by topic: the request, and what it does (``cannot create topic ...``).
_Requests = dict[str, tuple[Any, str]]


def _request(
    call: Callable[[list[Any]], Mapping[Any, Future[Any]]],
    requests: _Requests,
    bootstrap: str | None,
    timeout_s: float,
    refused: Callable[[str, KafkaException], PipelineError] | None = None,
) -> list[PipelineError]:
    """Send ``requests`` in one admin ``call`` and wait for each: a one-line failure for each
    that Kafka refuses (``refused(topic, exception)``, else :func:`_failure`) or the client
    does. The client refuses a whole call for one request it cannot encode (a ValueError,
    before it sends any): they are then sent one at a time, so that the others are."""
    if not requests:
        return []
    failures: list[PipelineError] = []
    try:
        answered = dict(call([request for request, _ in requests.values()]))
    except _CLIENT_REFUSALS:
        answered = {}
        for request, doing in requests.values():
            try:
                answered.update(call([request]))
            except _CLIENT_REFUSALS as error:
                detail = " ".join(str(error).split()) or type(error).__name__
                failures.append(PipelineError(f"{doing}: the Kafka client refuses it ({detail})"))
    for key, future in answered.items():
        topic = str(getattr(key, "name", key))  # a config change's is keyed by its resource
        doing = requests[topic][1]
        try:
            _wait(future, timeout_s, bootstrap, doing.removeprefix("cannot "))
        except KafkaException as exception:
            failures.append(
                refused(topic, exception) if refused else _failure(exception, bootstrap, doing)
            )
    return failures


def _creations(changes: tuple[CreateTopic, ...]) -> _Requests:
    return {
        change.topic: (
            NewTopic(
                change.spec.name,
                num_partitions=change.spec.partitions,
                replication_factor=change.spec.replication_factor,
                config=change.spec.desired_configs(),
            ),
            f"cannot create topic {change.topic}",
        )
        for change in changes
    }


def _partition_increases(changes: tuple[IncreasePartitions, ...]) -> _Requests:
    return {
        change.topic: (
            NewPartitions(change.topic, change.new),
            f"cannot raise the partitions of topic {change.topic} to {change.new}",
        )
        for change in changes
    }


def _config_changes(changes: tuple[SetConfig, ...]) -> _Requests:
    by_topic: dict[str, list[SetConfig]] = {}
    for change in changes:
        by_topic.setdefault(change.topic, []).append(change)
    return {
        topic: (
            ConfigResource(
                ResourceType.TOPIC,
                topic,
                incremental_configs=[
                    ConfigEntry(change.key, change.new, incremental_operation=AlterConfigOpType.SET)
                    for change in topic_changes
                ],
            ),
            f"cannot set {', '.join(change.key for change in topic_changes)} of topic {topic}",
        )
        for topic, topic_changes in by_topic.items()
    }


def wait_until_described(
    admin: KafkaAdmin, names: Sequence[str], *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> None:
    """Until the cluster describes every topic of ``names`` (one whose creation was just
    acknowledged can be missing from a describe for a moment); a :class:`PipelineError` after
    ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while missing := [n for n in names if n not in describe_cluster_topics(admin, names)]:
        if time.monotonic() >= deadline:
            raise PipelineError(f"topic {missing[0]} was created but after {timeout_s:g}s is "
                                "still not described")  # fmt: skip
        time.sleep(0.05)


def _wait_until_visible(
    admin: KafkaAdmin, plan: Plan, bootstrap: str | None, timeout_s: float
) -> None:
    names = list(dict.fromkeys(change.topic for change in plan.changes))
    deadline = time.monotonic() + timeout_s
    pause_s = 0.02
    while True:
        actual = describe_cluster_topics(admin, names, bootstrap=bootstrap, timeout_s=timeout_s)
        pending = unapplied(plan, actual)
        if not pending:
            return
        if time.monotonic() >= deadline:
            first = pending[0]
            raise PipelineError(
                f"{_kafka_at(bootstrap)} accepted the changes but after {timeout_s:g}s still does "
                f"not show them all, e.g. topic {first.topic}: {first.describe()}"
            )
        time.sleep(pause_s)
        pause_s = min(pause_s * 2, 0.5)


def apply_plan(
    admin: KafkaAdmin,
    plan: Plan,
    *,
    bootstrap: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    validate_only: bool = False,
) -> None:
    """Apply the plan's changes; its warnings are for a person and are not acted on.

    1. create the missing topics (with all their configs);
    2. add partitions;
    3. set configs (incrementally: configs the catalogue does not manage are left alone);
    4. wait until the cluster shows every change: Kafka acknowledges a change a moment before
       its brokers' metadata shows it, and whoever runs next (a producer, another plan) must see it.

    A topic whose replication factor exceeds the brokers available stops the plan before any
    change. Steps 1-3 run even if an earlier one failed for some topic (they touch different
    topics); all failures are then raised together as one :class:`PipelineError`.

    With ``validate_only`` the broker checks steps 1-3 (config names and values, partition
    counts, a topic that exists meanwhile) and changes nothing (Kafka's ``validateOnly``); what
    it would refuse is raised the same way, as "Kafka would refuse ...".
    """
    if not plan.has_changes:
        return
    _check_replication(admin, plan.creations, bootstrap, timeout_s)
    creations = {change.topic: change for change in plan.creations}
    options: dict[str, Any] = {"request_timeout": timeout_s, "validate_only": validate_only}
    failures = [
        *_request(
            partial(admin.create_topics, operation_timeout=timeout_s, **options),
            _creations(plan.creations),
            bootstrap,
            timeout_s,
            lambda topic, exception: _creation_failure(creations[topic], exception, bootstrap),
        ),
        *_request(
            partial(admin.create_partitions, operation_timeout=timeout_s, **options),
            _partition_increases(plan.partition_increases),
            bootstrap,
            timeout_s,
        ),
        *_request(
            partial(admin.incremental_alter_configs, **options),
            _config_changes(plan.config_changes),
            bootstrap,
            timeout_s,
        ),
    ]
    if not failures:
        if not validate_only:
            _wait_until_visible(admin, plan, bootstrap, timeout_s)
        return
    for failure in failures:
        if isinstance(failure, KafkaUnavailableError):
            raise failure
    summary = "; ".join(str(failure) for failure in failures)
    if validate_only:
        raise PipelineError(f"Kafka would refuse {_part_of(failures, plan)}the plan: {summary}")
    if not _part_of(failures, plan):
        raise PipelineError(f"nothing of the plan was applied: {summary}")
    raise PipelineError(f"applied only part of the plan: {summary}")


def _part_of(failures: list[PipelineError], plan: Plan) -> str:
    """ "part of " when some of the plan's changes did not fail, else ""."""
    # One failure per topic and kind of change: as many as were tried means all of them failed.
    tried = (
        len(plan.creations)
        + len(plan.partition_increases)
        + len({change.topic for change in plan.config_changes})
    )
    return "" if len(failures) >= tried else "part of "
