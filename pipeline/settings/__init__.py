"""The one settings object of the project.

Read once at each entry point with ``PipelineSettings()`` (environment variables with the prefix
``PIPELINE_``, nested with ``__``, e.g. ``PIPELINE_KAFKA__BOOTSTRAP_SERVERS``) and passed down.
The nested sections are frozen value objects that never read the environment themselves.
They live in submodules (``base``, ``connections``, ``programs``, ``stack``); import
them from here.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import get_args, get_origin

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.settings.base import LONGEST_S, masked_url, refuse_undecodable, shown_url
from pipeline.settings.connections import (
    PASSWORD_NOT_ENCODED,
    DatabaseSettings,
    ElasticsearchSettings,
    KafkaSettings,
    ProducerSettings,
)
from pipeline.settings.programs import (
    DemoSettings,
    GatewaySettings,
    JwtAlgorithm,
    JwtSettings,
    LogSettings,
    OutboxSettings,
    ProcessingSettings,
    SagaSettings,
)
from pipeline.settings.stack import (
    ELASTICSEARCH_VERSION,
    KAFKA_SCALA_VERSION,
    KAFKA_VERSION,
    StackSettings,
)

__all__ = [
    "ELASTICSEARCH_VERSION",
    "KAFKA_SCALA_VERSION",
    "KAFKA_VERSION",
    "LONGEST_S",
    "PASSWORD_NOT_ENCODED",
    "DatabaseSettings",
    "DemoSettings",
    "ElasticsearchSettings",
    "GatewaySettings",
    "JwtAlgorithm",
    "JwtSettings",
    "KafkaSettings",
    "LogSettings",
    "OutboxSettings",
    "PipelineSettings",
    "ProcessingSettings",
    "ProducerSettings",
    "SagaSettings",
    "StackSettings",
    "complex_setting_variables",
    "gateway_timeout_problem",
    "masked_url",
    "misspelled_settings",
    "setting_variables",
    "shown_url",
]


class PipelineSettings(BaseSettings):
    """Everything configurable: environment (prefix ``PIPELINE_``, nested ``__``) or ``.env``."""

    model_config = SettingsConfigDict(
        env_prefix="PIPELINE_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
        frozen=True,
        # An optional setting is unset with the value null (e.g. PIPELINE_SAGAS__RETENTION_S).
        env_parse_none_str="null",
        hide_input_in_errors=True,  # as _Frozen: no value quoted in an error
    )

    service_name: str = "pipeline"
    kafka: KafkaSettings = KafkaSettings()
    producer: ProducerSettings = ProducerSettings()
    gateway: GatewaySettings = GatewaySettings()
    elasticsearch: ElasticsearchSettings = ElasticsearchSettings()
    database: DatabaseSettings = DatabaseSettings()
    outbox: OutboxSettings = OutboxSettings()
    logs: LogSettings = LogSettings()
    processing: ProcessingSettings = ProcessingSettings()
    sagas: SagaSettings = SagaSettings()
    demo: DemoSettings = DemoSettings()
    # Built per PipelineSettings() (at the entry point), not at import: its home depends on
    # who runs the program.
    stack: StackSettings = Field(default_factory=StackSettings)

    @field_validator("service_name")
    @classmethod
    def _service_name_decodes(cls, value: str) -> str:
        refuse_undecodable(value)  # as every section's texts
        return value


def gateway_timeout_problem(producer: ProducerSettings, gateway: GatewaySettings) -> str | None:
    """Why the gateway may not run with these timeouts, if it may not (its start refuses them;
    other programs do not use its setting). Its 503 means "not acknowledged yet, librdkafka
    is still trying"; waiting longer than librdkafka ever tries makes that timeout dead code,
    and usually means a unit mix-up (milliseconds given to a field in seconds)."""
    delivery_timeout_s = producer.delivery_timeout_ms / 1000
    if gateway.produce_timeout_s <= delivery_timeout_s:
        return None
    return (
        f"PIPELINE_GATEWAY__PRODUCE_TIMEOUT_S ({gateway.produce_timeout_s:g} s) must not exceed "
        f"PIPELINE_PRODUCER__DELIVERY_TIMEOUT_MS ({producer.delivery_timeout_ms:,} ms, "
        f"{delivery_timeout_s:g} s): librdkafka settles every event within its delivery timeout"
    )


def setting_variables(
    model: type[BaseModel] = PipelineSettings, prefix: str = "PIPELINE_"
) -> set[str]:
    """The environment variable of every setting (``PIPELINE_KAFKA__BOOTSTRAP_SERVERS``), and
    of every section (``PIPELINE_KAFKA``, which takes JSON)."""
    names: set[str] = set()
    for field_name, field in model.model_fields.items():
        variable = f"{prefix}{field_name.upper()}"
        names.add(variable)
        for kind in (field.annotation, *get_args(field.annotation)):  # JwtSettings | None
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                names |= setting_variables(kind, f"{variable}__")
    return names


def complex_setting_variables(
    model: type[BaseModel] = PipelineSettings, prefix: str = "PIPELINE_"
) -> set[str]:
    """The environment variables that take JSON: a list or map setting's
    (``PIPELINE_GATEWAY__TRUSTED_PROXIES``) and a section's (``PIPELINE_KAFKA``), as
    pydantic-settings parses them. No other setting's value is JSON (a password starting with
    ``{`` is a password)."""
    names: set[str] = set()
    for field_name, field in model.model_fields.items():
        variable = f"{prefix}{field_name.upper()}"
        for kind in (field.annotation, *get_args(field.annotation)):  # JwtSettings | None
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                names.add(variable)
                names |= complex_setting_variables(kind, f"{variable}__")
            elif get_origin(kind) in (list, dict, set, frozenset, tuple):
                names.add(variable)
    return names


def misspelled_settings(variables: Iterable[str]) -> dict[str, str]:
    """Each of ``variables`` that is not a setting's but is one with its underscores or case
    wrong (``PIPELINE_KAFKA_BOOTSTRAP_SERVERS``): pydantic-settings ignores such a name, so
    the setting would silently keep its default. Maps it to the setting's variable."""
    known = setting_variables()

    def squeezed(name: str) -> str:
        return name.upper().replace("_", "")

    by_squeezed = {squeezed(name): name for name in known}
    found = {}
    for variable in variables:
        # Names are read whatever their case (pydantic-settings' default).
        if variable.upper() in known or not variable.upper().startswith("PIPELINE_"):
            continue
        meant = by_squeezed.get(squeezed(variable)) or _section_misspelled(variable, known)
        if meant is not None:
            found[variable] = meant
    return found


def _section_misspelled(variable: str, known: set[str]) -> str | None:
    """The setting's variable meant by one whose section is misspelled
    (``PIPELINE_PROCESING__MAX_IN_FLIGHT``): pydantic-settings ignores a section it does not
    know, where a wrong field of a known one is refused as an extra input. Only when the
    section is like one (its own name compared, not the prefix all share) and the rest is one
    of that section's settings: a script's own ``PIPELINE_STAGE__NAME`` is left alone."""
    section, sep, rest = variable.upper().removeprefix("PIPELINE_").partition("__")
    sections = {name.removeprefix("PIPELINE_") for name in known if "__" not in name}
    if not sep:
        return None
    if section in sections:
        # A known section, a field like one of its own (PIPELINE_KAFKA__BOOTSTRAP_SERVER):
        # pydantic refuses it as an extra input, which does not say what was meant.
        fields = {
            name.split("__", 1)[1] for name in known if name.startswith(f"PIPELINE_{section}__")
        }
        field = difflib.get_close_matches(rest, fields, n=1, cutoff=0.85)
        return f"PIPELINE_{section}__{field[0]}" if field else None
    for close in difflib.get_close_matches(section, sections, n=3, cutoff=0.8):
        fixed = f"PIPELINE_{close}__{rest}"
        if fixed in known:
            return fixed
    return None
