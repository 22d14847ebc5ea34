"""Consumer groups as the benches wait for them: the members of each stable group.

A broker just started answers NOT_COORDINATOR (or COORDINATOR_NOT_AVAILABLE /
COORDINATOR_LOAD_IN_PROGRESS) while it creates ``__consumer_offsets``; a bench that describes
its groups then waits and asks again instead of failing.
"""

from __future__ import annotations

from collections.abc import Sequence

from confluent_kafka import ConsumerGroupState, KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

#: The coordinator is not there yet: ask again.
NOT_READY = {
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
}


def stable_members(admin: AdminClient, groups: Sequence[str]) -> dict[str, int] | None:
    """Each group's members if it is stable, else 0; ``None`` while the coordinator is not
    ready."""
    futures = admin.describe_consumer_groups(list(groups))
    try:
        found = [future.result(30) for future in futures.values()]
    except KafkaException as error:
        if error.args[0].code() in NOT_READY:
            return None
        raise
    return {
        group.group_id: len(group.members) if group.state == ConsumerGroupState.STABLE else 0
        for group in found
    }
