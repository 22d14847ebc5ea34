"""Faust's private API: used in pipeline/processing/faust/internals.py only, and pinned to the
Faust sources that module was checked against.

internals.py copies, replaces or depends on the Faust methods below. Each one's source is
pinned by its SHA-256: when an upgraded (or patched) Faust changes one, this test fails, names
it and says what to re-check in internals.py. Once re-checked (and internals.py's
CHECKED_VERSIONS updated), pin the new hash printed in the failure.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import inspect
from pathlib import Path
from typing import NamedTuple

import faust
import pytest

REPO = Path(__file__).resolve().parents[5]
INTERNALS = REPO / "pipeline" / "processing" / "faust" / "internals.py"
#: The conductor's channel-queue protocol: public names, Faust's internal contract all the same.
QUEUE_PROTOCOL = {"put_nowait_enhanced"}


class Pinned(NamedTuple):
    module: str
    name: str  # "Class.method", or a file next to the module ("conductor.pyx")
    sha256: str
    recheck: str


PINNED = [
    Pinned(
        "faust.transport.drivers.aiokafka",
        "AIOKafkaConsumerThread._create_worker_consumer",
        "c2701bfc3e6f6cad95c2be36d6a255a86e2c57d18d36cc1082b5fb5c482d99d7",
        "read_committed wraps it: it must still return the aiokafka consumer, not started",
    ),
    Pinned(
        "faust.transport.drivers.aiokafka",
        "AIOKafkaConsumerThread._create_consumer",
        "a4dc6ba0681a298c05d60994890984fe35edee17dea101f8071da9456700c238",
        "read_committed relies on a worker's consumer coming from self._create_worker_consumer",
    ),
    Pinned(
        "aiokafka.consumer.consumer",
        "AIOKafkaConsumer.start",
        "2f1ba70443327538800d348e61042cdedd5a5e6306f40ebe1a06dddba7494c45",
        "read_committed sets _isolation_level before start, which hands it to the Fetcher",
    ),
    Pinned(
        "aiokafka.consumer.fetcher",
        "Fetcher.close",
        "1cd24bc1c442149e7d9a4ddef0770f4aa1272c60c4c7f2a89ab7a50e4444d44b",
        "stop_past_cancelled_fetches finishes it when a cancelled fetch re-raises its "
        "CancelledError at `await x`: it must still cancel and await self._pending_tasks (if "
        "aiokafka fixed that, the wrapper can go)",
    ),
    Pinned(
        "aiokafka.consumer.consumer",
        "AIOKafkaConsumer.stop",
        "bc5da9c98595299a3d968526cd9f4a344e672520892a917547d15151cd588d35",
        "stop_past_cancelled_fetches replaces self._fetcher.close before calling it: stop must "
        "still close the fetcher through that attribute, then the client",
    ),
    Pinned(
        "faust.transport.drivers.aiokafka",
        "AIOKafkaConsumerThread._ensure_consumer",
        "ff4a4c693b7ec63f4a76dfb61c419380bef70dd32383fe38ebcfcc27091605a6",
        "last_fetch_answer_ms reads the aiokafka consumer through it: it must still return "
        "the consumer the thread runs (or raise when there is none)",
    ),
    Pinned(
        "aiokafka.consumer.consumer",
        "AIOKafkaConsumer.last_poll_timestamp",
        "da08643199629e28881ddafd6894a574f75534b2a1165c4b1fb899b96a5b78a0",
        "last_fetch_answer_ms: the ms timestamp of the fetch answer that last gave the "
        "partition's highwater (None before one), asserting the partition is assigned",
    ),
    Pinned(
        "faust.transport.consumer",
        "Consumer._drain_messages",
        "44a2500309e83c630493f6828af50166ec8d96a0b3e4fb2bab735f704ae93417",
        "drain_messages is a copy of this loop without wait_first: carry any change over "
        "(read offsets, gaps, commit-every, flow suspension, how it ends when stopped or "
        "cancelled)",
    ),
    Pinned(
        "faust.transport.consumer",
        "Fetcher._fetcher",
        "68f894f0b577d8100419d6288088177609415aec9fc0ae82aec70b961a2e59b1",
        "how the fetcher treats the fetch loop ending or being cancelled: drain_messages "
        "returns on a cancellation while the app stops and raises it otherwise",
    ),
    Pinned(
        "faust.transport.consumer",
        "Consumer.getmany",
        "4b168d84882a70d6e3e2f9804430a63b92f8fd117d3187cbb4aeb54305bda34e",
        "drain_messages iterates getmany(timeout=...) as (tp, message) pairs",
    ),
    Pinned(
        "faust.transport.consumer",
        "Consumer._add_gap",
        "4df2573ded7c1c2cde04dc6bde6d4480cb5875ef565256e56966b585ae39b1c1",
        "drain_messages calls _add_gap(tp, first missing offset, offset)",
    ),
    Pinned(
        "faust.transport.consumer",
        "Consumer._commit_offsets",
        "1a6979904118844111259d182ca1c6e92ccc16364ccbe55c58e59d6e254a7adb",
        "FaustInternals.commit_revoked commits revoked partitions' positions with it, inside "
        "on_partitions_revoked: it must still commit partitions still in the assignment",
    ),
    Pinned(
        "faust.transport.consumer",
        "Consumer.on_partitions_revoked",
        "d04b7ae72c6fc206924a2879d6c90dd383f3e8ba6f4b10a19ca99a921eb8f4db",
        "Faust forgets revoked partitions' acknowledgements before the on_partitions_revoked "
        "signal, which is why the binding commits them through commit_revoked",
    ),
    Pinned(
        "faust.app.base",
        "App._on_partitions_revoked",
        "d5c895bbe57dc73ae4d7f762f6fdc9fdd3abd02f9e05863ccfd8034082e5682f",
        "the binding drains revoked partitions in the on_partitions_revoked signal, sent after "
        "the flow is suspended and not at all while the app stops; the whole revocation is in "
        "a flight_recorder of REVOCATION_RECORDER_SHARE (0.95) x broker_session_timeout, which "
        "the binding's drain must end before (rebalance.revocation_drain_timeout)",
    ),
    Pinned(
        "faust.app.base",
        "App._stop_consumer",
        "55854a5de12c3f5296b4acf16ddfe359be0b702d0cd7686bcab541847c396077",
        "the binding drains and commits before this stops the fetcher (which cancels the fetch "
        "loop) on shutdown",
    ),
    Pinned(
        "faust.topics",
        "Topic._compile_decode",
        "6474178f8c211c056192d1b1a470cd9a617a3d7c59babf9b9297b24e3e507c26",
        "RawTopic overrides it to put its raw decoder in the instance's decode",
    ),
    Pinned(
        "faust.serializers.schemas",
        "Schema.compile",
        "d46eec5ce3195b2c6752cb860a10946cee66ddf6a955f2ea44ac1568c0ecb9ad",
        "the decoder RawTopic replaces: with raw serializers it must still amount to "
        "app.create_event(message.key, message.value, message.headers, message)",
    ),
    Pinned(
        "faust.topics",
        "Topic.put",
        "f680fd1d81e1d5ee3cbb2278e46ce4f1f444e79f3d64e33b8f79d7e3a1f3b31e",
        "the conductor puts to a full channel with Topic.put, which must await queue.put "
        "(EngineQueue.put)",
    ),
    Pinned(
        "faust.transport.conductor",
        "ConductorCompiler.build",
        "837cf521368c1ee4b22c235a2b137f665eca03d0e3e01b5ddedb65232ee73bf2",
        "EngineQueue is the channel queue this handler uses: full(), "
        "put_nowait_enhanced(event, on_pressure_high=..., on_pressure_drop=...), else "
        "channel.put(event)",
    ),
    Pinned(
        "faust.transport._cython",
        "conductor.pyx",
        "dde1f974267881cf8c5f7e4fd2b114a2c6d754633a2aa9a2a2fc92f93e143dba",
        "the compiled conductor handler (used when built): the same queue protocol as "
        "ConductorCompiler.build, with value= passed by keyword",
    ),
]


def source_of(pinned: Pinned) -> bytes:
    module = importlib.import_module(pinned.module)
    if "." not in pinned.name or pinned.name.endswith(".pyx"):
        return (Path(inspect.getfile(module)).parent / pinned.name).read_bytes()
    owner, attribute = pinned.name.split(".")
    found = getattr(getattr(module, owner), attribute)
    found = getattr(found, "fun", found)  # mode's @Service.task keeps the function as .fun
    return inspect.getsource(found).encode()


@pytest.mark.parametrize("pinned", PINNED, ids=lambda pinned: pinned.name)
def test_the_faust_source_is_the_one_checked(pinned: Pinned) -> None:
    found = hashlib.sha256(source_of(pinned)).hexdigest()

    assert found == pinned.sha256, (
        f"faust-streaming {faust.__version__}: {pinned.module}.{pinned.name} is not the source "
        f"pipeline/processing/faust/internals.py was checked against. Re-check: "
        f"{pinned.recheck}. Then pin sha256 {found}."
    )


def test_every_private_faust_method_internals_calls_or_overrides_is_pinned() -> None:
    """Private attributes internals.py reads off Faust objects are either pinned methods above
    or the state Faust's constructors set up (listed here)."""
    state = {"_stopped", "_read_offset", "_commit_every", "_n_acked", "_thread"}
    # aiokafka's AIOKafkaConsumer keeps its isolation level there until start (pinned below).
    state |= {"_isolation_level"}
    # ... and its fetcher, with the fetch tasks it cancels on close (Fetcher.close, pinned).
    state |= {"_fetcher", "_pending_tasks"}
    pinned = {pinned.name.split(".")[-1] for pinned in PINNED}
    used = private_faust_names(ast.parse(INTERNALS.read_text()))

    assert used - state - pinned == set()
    assert {"_drain_messages", "_commit_offsets", "_compile_decode"} <= used


def private_faust_names(tree: ast.Module) -> set[str]:
    """Private names read off objects other than ``self``; inside subclasses of Faust's classes,
    also those read off ``self`` and the private methods they define."""
    names = set()
    for node in ast.walk(tree):
        on_self = isinstance(node, ast.Attribute) and ast.unparse(node.value) == "self"
        if isinstance(node, ast.Attribute) and is_private(node.attr) and not on_self:
            names.add(node.attr)
        if isinstance(node, ast.ClassDef) and any(
            ast.unparse(base).startswith("faust.") for base in node.bases
        ):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Attribute) and is_private(inner.attr):
                    names.add(inner.attr)
                defines = isinstance(inner, ast.FunctionDef | ast.AsyncFunctionDef)
                if defines and is_private(inner.name):
                    names.add(inner.name)
    return names


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def faust_private_names() -> set[str]:
    """The private attributes of a Faust app and the objects internals.py touches."""
    app = faust.App("names", broker="kafka://127.0.0.1:1", autodiscover=False)
    touched = [app, app.consumer, app._fetcher, app.topics, app.topic("t"), app.flow_control]
    return {name for each in touched for name in dir(each) if is_private(name)}


def test_fausts_private_names_appear_in_internals_only() -> None:
    faust_names = faust_private_names() | QUEUE_PROTOCOL
    elsewhere = []
    for package in ("pipeline", "producers", "consumers"):
        for path in sorted((REPO / package).rglob("*.py")):
            if path == INTERNALS:
                continue
            tree = ast.parse(path.read_text(), filename=str(path))
            named = (private_faust_names(tree) | defined_or_read(tree)) & faust_names
            elsewhere += [f"{path.relative_to(REPO)}: {name}" for name in sorted(named)]

    assert elsewhere == []
    assert private_faust_names(ast.parse(INTERNALS.read_text())) & faust_names


def defined_or_read(tree: ast.Module) -> set[str]:
    """The queue protocol's names, wherever they are defined or read."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in QUEUE_PROTOCOL:
            names.add(node.attr)
        if isinstance(node, ast.FunctionDef) and node.name in QUEUE_PROTOCOL:
            names.add(node.name)
    return names
