"""Is Kafka / Elasticsearch answering at the configured address, and what is it?"""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import KafkaException
from elasticsearch import ApiError, TransportError

from pipeline.errors import PipelineError
from pipeline.kafka.clients import build_admin
from pipeline.logs.elasticsearch import build_elasticsearch
from pipeline.plurals import counted
from pipeline.settings import ElasticsearchSettings, KafkaSettings, masked_url
from pipeline.stack.preflight import port_answers, split_host_port


@dataclass(frozen=True)
class Health:
    name: str
    address: str
    ok: bool
    detail: str
    version: str | None = None
    port_open: bool = False


def kafka_health(kafka: KafkaSettings, timeout_s: float = 5.0) -> Health:
    """Ask the cluster for its metadata; ``ok`` when at least one broker answers."""
    address = kafka.bootstrap_servers
    host, port = split_host_port(address.split(",")[0])
    if not port_answers(host, port):
        return Health("kafka", address, ok=False, detail="nothing listens there")
    # librdkafka reports connection failures on stderr by default; they belong to this check.
    admin = build_admin(kafka)  # quiet: connection failures belong to this check
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as error:
        # A login or TLS handshake refused is only logged by librdkafka (the admin client
        # keeps it). A SASL refusal is Kafka saying no to these credentials; a failed TLS
        # handshake may be anything else listening there (a plaintext Kafka, not Kafka).
        refusal = getattr(admin, "security_failure", None)
        if isinstance(refusal, str) and refusal.startswith("SASL"):
            detail = (
                f"Kafka answers but refuses the connection ({refusal}): check the credentials "
                "(PIPELINE_KAFKA__SASL_*; the secure stack's own are in its credentials.json)"
            )
        elif isinstance(refusal, str):
            detail = f"the port is open but the TLS handshake failed: {refusal}"
        else:
            detail = f"the port is open but Kafka does not answer: {error.args[0]}"
        return Health("kafka", address, ok=False, port_open=True, detail=detail)
    brokers = [str(b) for b in metadata.brokers.values()]
    return Health(
        "kafka",
        address,
        ok=True,
        port_open=True,
        detail=kafka_detail(metadata.cluster_id, brokers, len(metadata.topics)),
    )


def kafka_detail(cluster_id: str | None, brokers: list[str], topics: int) -> str:
    """The status line's detail for a Kafka that answers."""
    label = "broker" if len(brokers) == 1 else "brokers"
    return f"cluster {cluster_id}, {label} {', '.join(brokers)}, {counted(topics, 'topic')}"


def elasticsearch_detail(cluster: str, status: str, nodes: int) -> str:
    """The status line's detail for an Elasticsearch that answers."""
    return f"cluster {cluster} is {status}, {counted(nodes, 'node')}"


def elasticsearch_health(es: ElasticsearchSettings, timeout_s: float = 5.0) -> Health:
    """Cluster health (green or yellow is ok) and the local node's version."""
    address = masked_url(es.url)  # shown: never a password given in the URL
    host, port = split_host_port(es.url)
    if not port_answers(host, port):
        return Health("elasticsearch", address, ok=False, detail="nothing listens there")
    try:
        client = build_elasticsearch(es).options(request_timeout=timeout_s, max_retries=0)
    except PipelineError as error:  # a setting that cannot work: say which
        return Health("elasticsearch", address, ok=False, port_open=True, detail=str(error))
    try:
        health = client.cluster.health()
        nodes = client.nodes.info(node_id="_local", metric="_none")
    except (ApiError, TransportError) as error:
        return Health(
            "elasticsearch",
            address,
            ok=False,
            port_open=True,
            detail=f"the port is open but Elasticsearch does not answer: {_short(error)}",
        )
    finally:
        client.close()
    status = str(health["status"])
    versions = {str(node["version"]) for node in nodes["nodes"].values()}
    return Health(
        "elasticsearch",
        address,
        ok=status in ("green", "yellow"),
        port_open=True,
        version=", ".join(sorted(versions)),
        detail=elasticsearch_detail(
            str(health["cluster_name"]), status, int(health["number_of_nodes"])
        ),
    )


def _short(error: ApiError | TransportError) -> str:
    """The error in a line: an HTTP status without its body for a server that is not
    Elasticsearch (a web server's whole HTML page was the detail), else the client's words."""
    if isinstance(error, ApiError):
        return f"it answered HTTP {error.meta.status}, not as Elasticsearch does"
    return " ".join(str(error).split())[:300]
