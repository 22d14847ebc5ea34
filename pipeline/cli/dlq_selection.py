"""What ``pipeline dlq inspect|redrive|discard`` select: their topic argument and filter options,
the pending dead letters read from a dead-letter topic, a redrive's selection (the later dead
letters of the same keys with it), and what is said about it before anything is sent (a
selection that would leave earlier dead letters of its keys behind is refused unless
``--out-of-order``).

``--since`` selects by when a letter was dead-lettered (:func:`dead_lettered_time`). The whole
topic is still read, not sought to that time with ``offsets_for_times``: the counts of pending
letters, a redrive's check for earlier letters of its keys left behind and a discard's keys
need every letter, and a letter's time is its header's, which the message's timestamp (what
Kafka seeks by) need not agree with.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence, Sized
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape

from pipeline.cli.checks import topic_name
from pipeline.cli.console import stderr_console
from pipeline.cli.plurals import counted
from pipeline.dead_letters.reasons import REASONS
from pipeline.errors import PipelineError
from pipeline.settings import PipelineSettings

if TYPE_CHECKING:
    from confluent_kafka import TopicPartition

    from pipeline.dead_letters.letter import DeadLetter, Marker, Stray
    from pipeline.dead_letters.redrive import DeadLetterConsumer

__all__ = [
    "ErrorTypeOption",
    "EventIdOption",
    "Filters",
    "GroupOption",
    "KeyOption",
    "ReadBack",
    "ReasonOption",
    "Selection",
    "SinceOption",
    "TopicArgument",
    "by_reason",
    "dead_lettered_time",
    "describe_selection",
    "describe_strays",
    "read_back",
    "read_letters",
    "refuse_gaps",
    "require_topics",
    "resolve_topics",
    "select_letters",
    "settings_of",
]

_READ_TIMEOUT_S = 60.0
_err = stderr_console()


# --- arguments, options, topics ---------------------------------------------------------------


TopicArgument = typer.Argument(
    ...,
    help="The original topic (requests.orders) or its dead-letter topic (requests.orders.dlq).",
    callback=topic_name,
)
ErrorTypeOption = typer.Option(
    None,
    "--error-type",
    "-e",
    help="Only dead letters of this error type: the qualified class name or its last part "
    "(EnvelopeError).",
)
ReasonOption = typer.Option(
    None, "--reason", "-r", help=f"Only dead letters with this reason: {', '.join(REASONS)}."
)
KeyOption = typer.Option(
    None, "--key", "-k", help="Only dead letters with this key (one key a run)."
)
EventIdOption = typer.Option(
    None,
    "--event-id",
    help="Only the dead letter of this event id (ce_id), or of kafka:TOPIC:PARTITION:OFFSET, "
    "the id the logs and dlq.parked_by give a message without one; repeatable.",
)
GroupOption = typer.Option(
    None,
    "--group",
    help="Only dead letters of this consumer group (dlq.consumer.group): each group that reads "
    "the topic dead-letters an event on its own, with the same event id.",
)
SinceOption = typer.Option(
    None,
    "--since",
    metavar="TIME",
    help="Only dead letters dead-lettered at or after TIME: a duration back from now (30m, 1h, "
    "2d, 1h30m) or an ISO 8601 time, read as UTC unless it has an offset (2026-12-06T11:30 "
    "is 11:30 UTC), as `pipeline logs search --since` reads it. A letter's time is its "
    "dlq.dead_lettered_at header (the processor's clock), or without one its Kafka message "
    "timestamp.",
)


def settings_of(ctx: typer.Context) -> PipelineSettings:
    settings = ctx.obj
    assert isinstance(settings, PipelineSettings), "read once by the `pipeline` entry point"
    return settings


def resolve_topics(topic: str) -> tuple[str, str]:
    """``(original topic, dead-letter topic)`` from either name."""
    from pipeline.topics.spec import dlq_base, dlq_name, is_dlq

    if is_dlq(topic):
        if not dlq_base(topic):
            raise PipelineError(
                f"{topic} names no topic: give the topic (requests.orders) or its "
                "dead-letter topic (requests.orders.dlq)"
            )
        return dlq_base(topic), topic
    return topic, dlq_name(topic)


def require_topics(settings: PipelineSettings, dlq_topic: str, original: set[str]) -> None:
    """A one-line :class:`PipelineError` when the dead-letter topic or a target is missing."""
    from pipeline.kafka.clients import build_admin
    from pipeline.topics.admin import describe_cluster_topics
    from pipeline.topics.spec import dlq_base

    bootstrap = settings.kafka.bootstrap_servers
    base = dlq_base(dlq_topic)
    names = [dlq_topic, base, *sorted(original)]
    found = describe_cluster_topics(build_admin(settings.kafka), names, bootstrap=bootstrap)
    if dlq_topic not in found:
        if base in found:  # the topic is there, without a dead-letter topic
            raise PipelineError(
                f"{base} has no dead-letter topic on Kafka at {bootstrap} ({dlq_topic} does "
                "not exist): declare it in your catalogue and run `pipeline topics apply` (a "
                "processor dead-letters to it)"
            )
        raise PipelineError(
            f"dead-letter topic {dlq_topic} does not exist on Kafka at {bootstrap}, nor "
            f"{base} (is {base} a topic of yours? `pipeline topics apply` creates the "
            "catalogue's topics with their .dlq)"
        )
    missing = [name for name in sorted(original) if name not in found]
    if missing:
        raise PipelineError(
            f"cannot redrive to {', '.join(missing)}: no such topic on Kafka at {bootstrap}"
        )


# --- filters and reading ----------------------------------------------------------------------


@dataclass(frozen=True)
class Filters:
    error_type: str | None
    reason: str | None
    key: str | None
    event_ids: frozenset[str] | None
    group: str | None = None
    #: ``--since``: only letters dead-lettered at or after this time (UTC).
    since: datetime | None = None

    @classmethod
    def of(
        cls,
        error_type: str | None,
        reason: str | None,
        keys: list[str] | None,
        event_ids: list[str] | None,
        group: str | None = None,
        since: str | None = None,
    ) -> Filters:
        if event_ids and not all(event_id.strip() for event_id in event_ids):
            raise typer.BadParameter("an event id is never empty", param_hint="--event-id")
        if error_type is not None and not error_type.strip():
            raise typer.BadParameter("must not be empty", param_hint="--error-type")
        if group is not None and not group.strip():
            raise typer.BadParameter("must not be empty", param_hint="--group")
        if reason is not None and reason not in REASONS:
            raise typer.BadParameter(
                f"{reason!r} is not a reason; one of {', '.join(REASONS)}", param_hint="--reason"
            )
        if keys and len(set(keys)) > 1:
            # Taken as the last one, silently, the others were left out of a redrive.
            raise typer.BadParameter(
                f"one key a run ({', '.join(map(repr, keys))} given)", param_hint="--key"
            )
        key = keys[0] if keys else None
        start = None
        if since is not None:
            from pipeline.logs.search import parse_since

            try:
                start = parse_since(since)
            except ValueError as error:  # it names --since and what is accepted
                raise typer.BadParameter(str(error)) from None
        ids = frozenset(event_ids) if event_ids else None
        return cls(error_type, reason, key, ids, group, start)

    def match(self, letter: DeadLetter, stamps: Mapping[str, int] | None = None) -> bool:
        """Whether ``letter`` passes every filter; ``stamps``: the Kafka timestamps (ms) of the
        topic's messages by position, for ``--since`` (:func:`dead_lettered_time`)."""
        from pipeline.dead_letters.selection import matches

        if self.since is not None:
            stamp = None if stamps is None else stamps.get(letter.position)
            moment = dead_lettered_time(letter, stamp)
            if moment is None or moment < self.since:
                return False
        return matches(
            letter,
            error_type=self.error_type,
            reason=self.reason,
            key=self.key,
            event_ids=self.event_ids,
            group=self.group,
        )

    @property
    def any(self) -> bool:
        return self.group is not None or self.any_but_group

    @property
    def any_but_group(self) -> bool:
        """Whether a filter other than ``--group`` is given (a discard needs one)."""
        return any(
            value is not None
            for value in (self.error_type, self.reason, self.key, self.event_ids, self.since)
        )


def dead_lettered_time(letter: DeadLetter, stamp_ms: int | None = None) -> datetime | None:
    """When ``letter`` was dead-lettered (UTC): its ``dlq.dead_lettered_at`` header (written by
    the processor that gave up, UTC), or when it has none that reads as a time, ``stamp_ms``
    (its message's Kafka timestamp); None without either (pure)."""
    text = letter.dead_lettered_at.strip()
    if text:
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
    if stamp_ms is None:
        return None
    try:
        return datetime.fromtimestamp(stamp_ms / 1000, UTC)
    except (OverflowError, OSError, ValueError):  # beyond what a date holds
        return None


class _Stamping:
    """A dead-letter consumer that notes the Kafka timestamp (ms) of each message it gives, by
    position (``partition:offset``): a letter's time for ``--since`` when it has no
    ``dlq.dead_lettered_at`` header."""

    def __init__(self, consumer: DeadLetterConsumer, stamps: dict[str, int]) -> None:
        self._consumer = consumer
        self._stamps = stamps

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        return self._consumer.list_topics(topic, timeout=timeout)

    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float = -1, cached: bool = False
    ) -> tuple[int, int]:
        return self._consumer.get_watermark_offsets(partition, timeout=timeout, cached=cached)

    def assign(self, partitions: list[TopicPartition]) -> None:
        self._consumer.assign(partitions)

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return self._consumer.position(partitions)

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Any]:
        from confluent_kafka import TIMESTAMP_NOT_AVAILABLE

        messages = self._consumer.consume(num_messages=num_messages, timeout=timeout)
        for message in messages:
            if message.error() is None:
                kind, stamp = message.timestamp()
                if kind != TIMESTAMP_NOT_AVAILABLE and stamp >= 0:
                    self._stamps[f"{message.partition()}:{message.offset()}"] = stamp
        return messages


def read_letters(
    settings: PipelineSettings, dlq_topic: str, stamps: dict[str, int] | None = None
) -> list[DeadLetter | Marker | Stray]:
    """Every message of ``dlq_topic`` read back; ``stamps``, when given, gets the Kafka
    timestamp of each by position."""
    from pipeline.dead_letters.redrive import open_dead_letter_consumer, read_dead_letter_topic

    with open_dead_letter_consumer(settings.kafka) as consumer:
        reader = consumer if stamps is None else _Stamping(consumer, stamps)
        return read_dead_letter_topic(reader, dlq_topic, timeout_s=_READ_TIMEOUT_S)


@dataclass(frozen=True)
class ReadBack:
    """A dead-letter topic read back: every dead letter, the marker of each one redriven or
    discarded (by position), and the pending ones (neither), in the order read; and the
    messages that are neither dead letters nor markers; and, when asked for (``--since``), the
    Kafka timestamp (ms) of each message by position."""

    letters: list[DeadLetter]
    settled: dict[str, Marker]
    pending: list[DeadLetter]
    strays: list[Stray] = field(default_factory=list)
    stamps: dict[str, int] = field(default_factory=dict)


def read_back(settings: PipelineSettings, dlq_topic: str, stamped: bool = False) -> ReadBack:
    """``dlq_topic`` read back; ``stamped``: with the messages' timestamps (for ``--since``)."""
    from pipeline.dead_letters.letter import Stray, settled_dead_letters

    stamps: dict[str, int] = {}
    read = read_letters(settings, dlq_topic, stamps if stamped else None)
    letters, settled = settled_dead_letters(read)
    pending = [letter for letter in letters if letter.position not in settled]
    strays = [item for item in read if isinstance(item, Stray)]
    return ReadBack(letters, settled, pending, strays, stamps)


#: How many stray messages are named by position (all are counted).
_STRAYS_NAMED = 5


def describe_strays(strays: Sequence[Stray], dlq_topic: str) -> str | None:
    """The line saying which messages of ``dlq_topic`` are not dead letters (skipped: never
    shown, never redriven), or None when there are none."""
    if not strays:
        return None
    one = len(strays) == 1
    whys = Counter(stray.why for stray in strays)
    why = (
        next(iter(whys))
        if len(whys) == 1
        else "; ".join(f"{reason}: {count:,}" for reason, count in whys.most_common())
    )
    where = ", ".join(stray.position for stray in strays[:_STRAYS_NAMED])
    if len(strays) > _STRAYS_NAMED:
        where += f" and {len(strays) - _STRAYS_NAMED:,} more"
    return (
        f"{counted(len(strays), 'message')} in {dlq_topic} "
        f"{'is not a dead letter' if one else 'are not dead letters'} ({why}), at "
        f"{where} (partition:offset): skipped"
    )


# --- inspect ----------------------------------------------------------------------------------


def by_reason(letters: Sequence[DeadLetter]) -> str:
    counts = Counter(letter.reason for letter in letters)
    return ", ".join(f"{reason} {count:,}" for reason, count in counts.most_common())


@dataclass(frozen=True)
class Selection:
    pending: list[DeadLetter]
    letters: list[DeadLetter]
    matched: int
    earlier_left: list[DeadLetter]
    #: The messages of the topic that are not dead letters: never redriven.
    strays: list[Stray] = field(default_factory=list)


def select_letters(
    settings: PipelineSettings, dlq_topic: str, filters: Filters, limit: int | None
) -> Selection:
    from pipeline.dead_letters.selection import earlier_of_same_keys, select_for_redrive

    read = read_back(settings, dlq_topic, filters.since is not None)
    pending = read.pending
    # Another group's letters are never a selected letter's followers (a key's order is per
    # consumer group), so leaving them out first selects what --group asks, and only that.
    candidates = (
        pending
        if filters.group is None
        else [letter for letter in pending if letter.consumer_group == filters.group]
    )
    if filters.since is not None:
        candidates = _from_first_match(candidates, filters, read.stamps)
    options: dict[str, Any] = {
        "error_type": filters.error_type,
        "reason": filters.reason,
        "key": filters.key,
        "event_ids": filters.event_ids,
    }
    selected = select_for_redrive(candidates, **options, limit=limit)
    if limit is not None and not selected:
        everything = select_for_redrive(candidates, **options)
        if everything:
            first = [letter for letter in everything if letter.key == everything[0].key]
            raise PipelineError(
                f"--limit {limit} is less than the {counted(len(first), 'dead letter')} of the "
                f"first key ({everything[0].key_text}), and keys are redriven whole: "
                "nothing selected"
            )
    matched = sum(1 for letter in selected if filters.match(letter, read.stamps))
    earlier = earlier_of_same_keys(pending, selected)
    return Selection(pending, selected, matched, earlier, read.strays)


def _from_first_match(
    candidates: Sequence[DeadLetter], filters: Filters, stamps: Mapping[str, int]
) -> list[DeadLetter]:
    """Of each key's candidates (original topic, key and consumer group; a letter without a
    key is one of its own), those from the first in original order that passes every filter,
    ``--since`` too, onward; in the order given (pure).

    :func:`~pipeline.dead_letters.selection.select_for_redrive` knows no time: given these, it
    starts each key at that letter and takes every later one of the key with it, whenever
    they were dead-lettered. The earlier ones of the key stay pending, and are named as left
    behind (:func:`refuse_gaps`)."""
    from pipeline.dead_letters.selection import original_order

    def key_of(letter: DeadLetter) -> tuple[str, bytes | str, str]:
        return (
            letter.original_topic,
            letter.position if letter.key is None else letter.key,
            letter.consumer_group,
        )

    first: dict[tuple[str, bytes | str, str], tuple[int, int]] = {}
    for letter in candidates:
        if filters.match(letter, stamps):
            key, order = key_of(letter), original_order(letter)
            if key not in first or order < first[key]:
                first[key] = order
    return [
        letter
        for letter in candidates
        if key_of(letter) in first and original_order(letter) >= first[key_of(letter)]
    ]


def _do(letters: Sized) -> str:
    return "does" if len(letters) == 1 else "do"


def refuse_gaps(selection: Selection, out_of_order: bool) -> None:
    """A :class:`PipelineError` when the selection leaves earlier dead letters of its keys
    behind, unless ``out_of_order``: their keys' later events would be applied first, and the
    key let go past them (the park's promise broken by a filter)."""
    if selection.earlier_left and not out_of_order:
        raise PipelineError(
            f"{counted(len(selection.earlier_left), 'earlier dead letter')} of the selected "
            f"keys {_do(selection.earlier_left)} not match and would stay behind, their keys' "
            "later events applied before them: widen the filters to take them too (see "
            "--dry-run), or pass --out-of-order"
        )


def describe_selection(selection: Selection, dlq_topic: str) -> None:
    letters = selection.letters
    strays = describe_strays(selection.strays, dlq_topic)
    if strays is not None:
        _err.print(f"[yellow]warning:[/yellow] {escape(strays)}")
    if not letters:
        _err.print(
            f"nothing to redrive in {escape(dlq_topic)} ({len(selection.pending):,} pending)"
        )
        return
    keys = len({(letter.original_topic, letter.key) for letter in letters})
    followers = len(letters) - selection.matched
    targets = ", ".join(sorted({letter.original_topic for letter in letters}))
    _err.print(
        escape(
            f"{counted(len(letters), 'dead letter')} of {counted(keys, 'key')} to redrive from "
            f"{dlq_topic} to {targets}: {selection.matched:,} matched, "
            f"{counted(followers, 'later one', 'later ones')} of the same "
            f"keys added to keep their order ({len(selection.pending):,} pending); by reason: "
            f"{by_reason(letters)}"
        )
    )
    if selection.earlier_left:
        _err.print(
            f"[yellow]warning:[/yellow] "
            f"{counted(len(selection.earlier_left), 'earlier dead letter')}"
            f" of the same keys {_do(selection.earlier_left)} not match and would stay in the "
            "dead-letter topic, their keys' later events going back before them (a redrive is "
            "refused without --out-of-order)"
        )
