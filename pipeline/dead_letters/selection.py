"""Choosing dead letters to redrive (pure): filters, and every later pending dead letter of the
same key, original topic and consumer group, so a key's events go back in their original order.

A key's order is per consumer group: each group that reads a topic dead-letters (and parks) a
key on its own, and a redriven message is handled only by the group whose letter it was
(:data:`pipeline.dead_letters.letter.REDRIVE_GROUP`).

:func:`matches` applies the filters (``--reason``, ``--error-type``, ``--key``, event ids,
``--group``);
:func:`select_for_redrive` adds what per-key order needs; :func:`earlier_of_same_keys` names the
pending letters a selection would jump; :func:`with_last_of_key` tells the redrive which letter
is the last of its key in a run.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

from pipeline.dead_letters.letter import DeadLetter

__all__ = [
    "earlier_of_same_keys",
    "matches",
    "original_order",
    "select_for_redrive",
    "with_last_of_key",
]


def matches(
    letter: DeadLetter,
    *,
    error_type: str | None = None,
    reason: str | None = None,
    key: str | None = None,
    event_ids: Collection[str] | None = None,
    group: str | None = None,
) -> bool:
    """Whether ``letter`` passes every given filter (``None`` is no filter).

    ``error_type`` matches the qualified class name or its last parts: ``EnvelopeError`` and
    ``envelope.EnvelopeError`` both match ``pipeline.envelope.EnvelopeError``. ``key`` is the
    key as text; ``event_ids`` are ``ce_id`` values (one event dead-lettered by two consumer
    groups has the same one in both letters), or the ``kafka:TOPIC:PARTITION:OFFSET`` id of
    the original (:attr:`DeadLetter.position_id`), by which processors name a message that
    carries no event id they can keep; ``group`` is the consumer group whose letter it
    is (``dlq.consumer.group``).
    """
    if group is not None and letter.consumer_group != group:
        return False
    if reason is not None and letter.reason != reason:
        return False
    if error_type is not None and not (
        letter.error_type == error_type or letter.error_type.endswith("." + error_type)
    ):
        return False
    if key is not None and (letter.key is None or letter.key_text != key):
        return False
    return event_ids is None or letter.event_id in event_ids or letter.position_id in event_ids


_Group = tuple[str, bytes | str, str]


def _group(letter: DeadLetter) -> _Group:
    """Letters whose order matters together: same original topic, key and consumer group (each
    group parks its keys on its own, and handles only its own redriven letters). A letter
    without a key has no order to keep and is a group of its own."""
    if letter.key is None:
        return (letter.original_topic, f"no key at {letter.position}", letter.consumer_group)
    return (letter.original_topic, letter.key, letter.consumer_group)


def original_order(letter: DeadLetter) -> tuple[int, int]:
    """A dead letter's place in its original topic: ``(partition, offset)``."""
    # Kafka's partitioner puts one key in one partition, so this is the original offset order.
    return (letter.original_partition, letter.original_offset)


def _groups(pending: Iterable[DeadLetter]) -> dict[_Group, list[DeadLetter]]:
    groups: dict[_Group, list[DeadLetter]] = {}
    for letter in pending:
        groups.setdefault(_group(letter), []).append(letter)
    for letters in groups.values():
        letters.sort(key=original_order)
    return groups


def select_for_redrive(
    pending: Sequence[DeadLetter],
    *,
    error_type: str | None = None,
    reason: str | None = None,
    key: str | None = None,
    event_ids: Collection[str] | None = None,
    limit: int | None = None,
) -> list[DeadLetter]:
    """The dead letters to redrive, in the order to send them (pure).

    1. the dead letters of ``pending`` that pass the filters (:func:`matches`);
    2. per-key order: with a selected dead letter of key K, every *later* pending dead letter
       of K from the same original topic and consumer group is selected too (the
       ``key_parked`` ones waiting behind it, whatever the filters say); earlier ones that do
       not pass the filters are not (see :func:`earlier_of_same_keys`); another group's
       letters of K are a key of their own;
    3. within a key, original offset order; keys in the order their first selected dead letter
       appears in ``pending``; a dead letter without a key has no order to keep and no
       followers;
    4. ``limit``: at most that many dead letters, whole keys only. Keys are taken in order
       until the next one would not fit; so when the first key alone has more dead letters
       than ``limit``, nothing is selected.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    wanted = {
        letter.position
        for letter in pending
        if matches(letter, error_type=error_type, reason=reason, key=key, event_ids=event_ids)
    }
    groups = _groups(pending)
    chosen: list[tuple[int, list[DeadLetter]]] = []
    order = {letter.position: index for index, letter in enumerate(pending)}
    for letters in groups.values():
        first = next((i for i, letter in enumerate(letters) if letter.position in wanted), None)
        if first is None:
            continue
        selected = letters[first:]
        chosen.append((min(order[letter.position] for letter in selected), selected))
    chosen.sort(key=lambda item: item[0])
    result: list[DeadLetter] = []
    for _, selected in chosen:
        if limit is not None and len(result) + len(selected) > limit:
            break
        result.extend(selected)
    return result


def earlier_of_same_keys(
    pending: Sequence[DeadLetter], selected: Sequence[DeadLetter]
) -> list[DeadLetter]:
    """Pending dead letters left out of ``selected`` although a later one of their key is in it.

    Redriving ``selected`` sends those keys' later events before these earlier ones: worth a
    warning (pure).
    """
    taken = {letter.position for letter in selected}
    first_taken: dict[_Group, tuple[int, int]] = {}
    for letter in selected:
        group = _group(letter)
        order = original_order(letter)
        if group not in first_taken or order < first_taken[group]:
            first_taken[group] = order
    return [
        letter
        for letter in pending
        if letter.position not in taken
        and _group(letter) in first_taken
        and original_order(letter) < first_taken[_group(letter)]
    ]


def with_last_of_key(letters: Sequence[DeadLetter]) -> list[tuple[DeadLetter, bool]]:
    """Each letter with whether it is the last of its key (original topic, key and consumer
    group) in ``letters``.

    The group's processor lets its parked key go once that last one succeeded: per group, as
    each group skips another's redriven letters. A letter without a key is always the last of
    its own (pure).
    """
    last: dict[_Group, str] = {}
    for letter in letters:
        last[_group(letter)] = letter.position
    return [(letter, last[_group(letter)] == letter.position) for letter in letters]
