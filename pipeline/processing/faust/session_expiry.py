"""An instance silent for longer than the session timeout, said in the processor's own words.

A processor frozen (SIGSTOP, a debugger, a swapped-out host), whose event loop was blocked, or
cut off from Kafka past ``processing.session_timeout_s`` is put out of its consumer group: the
group gives its partitions to the other instances. When it runs again, aiokafka logs that at
ERROR as if the broker were failing ("Heartbeat session expired - marking coordinator dead",
then "OffsetCommit failed ... UnknownMemberIdError ..., will rejoin"), and the processor's own
lines said nothing of it. Nothing is lost: what the instance had in flight is not committed
here, the partitions' new owners handle it, and their inbox skips what was applied already.

:class:`SessionExpiryWarnings` makes each of those lines one WARNING that says so.
"""

from __future__ import annotations

import logging

__all__ = ["GROUP_COORDINATOR_LOGGER", "SessionExpiryWarnings", "install_session_expiry_warnings"]

#: The logger of aiokafka's consumer group coordinator.
GROUP_COORDINATOR_LOGGER = "aiokafka.consumer.group_coordinator"

_SESSION_EXPIRED = "Heartbeat session expired"
_MEMBER_NOT_RECOGNIZED = "Heartbeat failed: local member_id was not recognized"
_COMMIT_REFUSED = "OffsetCommit failed for group"
_REJOINS = "will rejoin"


class SessionExpiryWarnings(logging.Filter):
    """Turns aiokafka's ERRORs about an expired session into WARNINGs that say what happened;
    passes the rest as is."""

    def __init__(self, session_timeout_s: float, group_instance_id: str | None = None) -> None:
        super().__init__()
        self.session_timeout_s = session_timeout_s
        #: The static member's id (``processing.group_instance_id``), if it has one.
        self.group_instance_id = group_instance_id

    def filter(self, record: logging.LogRecord) -> bool:
        if not isinstance(record.msg, str):
            return True
        if self.group_instance_id is not None and record.msg.startswith(_MEMBER_NOT_RECOGNIZED):
            # A static member still running is only replaced by another joining under its id:
            # two instances given one id took the partitions from each other in turn, with
            # nothing but aiokafka's warning to say so.
            _as_level(
                record,
                logging.ERROR,
                "this instance was put out of its consumer group by another that joined under "
                f"the same group_instance_id {self.group_instance_id!r} "
                "(PIPELINE_PROCESSING__GROUP_INSTANCE_ID): two instances with one id take the "
                "partitions from each other in turn; give each instance an id of its own",
            )
            return True
        if record.levelno < logging.ERROR:
            return True
        if record.msg.startswith(_SESSION_EXPIRED):
            _as_warning(
                record,
                f"no heartbeat reached the consumer group for over {self.session_timeout_s:g} s "
                "(PIPELINE_PROCESSING__SESSION_TIMEOUT_S): this instance was paused, its event "
                "loop blocked, or Kafka out of its reach. The group gives its partitions to the "
                "other instances and this one rejoins; what it had in flight is not committed "
                "here, and the partitions' next owners handle it (their inbox skips what was "
                "applied already)",
            )
        elif record.msg.startswith(_COMMIT_REFUSED) and _REJOINS in record.msg:
            _as_warning(
                record,
                f"a commit was refused because the group went on without this instance "
                f"({record.getMessage()}); it rejoins, and the partitions' next owners handle "
                "what was not committed",
            )
        return True


def _as_warning(record: logging.LogRecord, text: str) -> None:
    _as_level(record, logging.WARNING, text)


def _as_level(record: logging.LogRecord, level: int, text: str) -> None:
    record.msg = text
    record.args = ()
    record.levelno = level
    record.levelname = logging.getLevelName(level)


def install_session_expiry_warnings(
    session_timeout_s: float, group_instance_id: str | None = None
) -> None:
    """Add :class:`SessionExpiryWarnings` to aiokafka's group coordinator logger (once; a later
    call only updates the timeout and the instance id it names)."""
    coordinator = logging.getLogger(GROUP_COORDINATOR_LOGGER)
    for known in coordinator.filters:
        if isinstance(known, SessionExpiryWarnings):
            known.session_timeout_s = session_timeout_s
            known.group_instance_id = group_instance_id
            return
    coordinator.addFilter(SessionExpiryWarnings(session_timeout_s, group_instance_id))
