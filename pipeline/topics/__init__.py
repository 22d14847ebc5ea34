"""The topic catalogue: every topic declared once, planned against the cluster, then applied.

- :mod:`~pipeline.topics.spec`: :class:`TopicSpec` (a topic), :class:`Catalogue` (a validated set).
- :mod:`~pipeline.topics.catalogue`: the project's topics and the TOML catalogue loader.
- :mod:`~pipeline.topics.plan`: the pure diff between the catalogue and the cluster.
- :mod:`~pipeline.topics.admin`: reading and changing the cluster through the admin client.
"""

from pipeline.topics.admin import (
    KafkaUnavailableError,
    apply_plan,
    describe_cluster_topics,
    list_cluster_topics,
)
from pipeline.topics.catalogue import default_catalogue, load_catalogue_file
from pipeline.topics.plan import (
    ActualTopic,
    CreateTopic,
    IncreasePartitions,
    Plan,
    PlanWarning,
    SetConfig,
    build_plan,
    unapplied,
)
from pipeline.topics.spec import Catalogue, CatalogueError, TopicSpec, dlq_name

__all__ = [
    "ActualTopic",
    "Catalogue",
    "CatalogueError",
    "CreateTopic",
    "IncreasePartitions",
    "KafkaUnavailableError",
    "Plan",
    "PlanWarning",
    "SetConfig",
    "TopicSpec",
    "apply_plan",
    "build_plan",
    "default_catalogue",
    "describe_cluster_topics",
    "dlq_name",
    "list_cluster_topics",
    "load_catalogue_file",
    "unapplied",
]
