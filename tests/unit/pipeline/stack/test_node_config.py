from pathlib import Path

from pipeline.stack import elasticsearch_node, kafka_node
from pipeline.stack.distribution import ElasticsearchDistribution, KafkaDistribution, kafka_pom
from pipeline.stack.preflight import Java

JAVA = Java(executable=Path("/jdk/bin/java"), home=Path("/jdk"), major=17)


def _properties(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines())


def test_kafka_server_properties_make_one_kraft_node_on_the_given_address():
    props = _properties(kafka_node.server_properties("127.0.0.1", 19092, 19093, Path("/d")))
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["log.dirs"] == "/d"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["transaction.state.log.min.isr"] == "1"
    # Topics come from the catalogue, never from a typo in a producer.
    assert props["auto.create.topics.enable"] == "false"


def test_kafka_cluster_ids_are_22_char_urlsafe_base64_and_fresh():
    first, second = kafka_node.new_cluster_id(), kafka_node.new_cluster_id()
    assert len(first) == 22 and first != second
    assert set(first) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_kafka_commands_run_the_server_and_storage_tool_from_the_libs_classpath():
    dist = KafkaDistribution(version="3.9.1", libs=Path("/dist/kafka/libs"))
    server = kafka_node.server_command(JAVA, dist, Path("/s.properties"), Path("/l4j"), "512m")
    assert server[0] == "/jdk/bin/java"
    assert server[server.index("-cp") + 1] == "/dist/kafka/libs/*"
    assert server[-2:] == ["kafka.Kafka", "/s.properties"]
    assert "-Xmx512m" in server
    storage = kafka_node.format_command(JAVA, dist, Path("/s.properties"), Path("/l4j"), "-bc")
    assert storage[-6:] == [
        "kafka.tools.StorageTool",
        "format",
        "--ignore-formatted",
        "--cluster-id=-bc",  # an id starting with "-" must not read as an option
        "-c",
        "/s.properties",
    ]


def test_kafka_pom_asks_for_the_broker_and_the_tools_of_one_version():
    pom = kafka_pom("3.9.1", "2.13")
    assert "<artifactId>kafka_2.13</artifactId><version>3.9.1</version>" in pom
    assert "<artifactId>kafka-tools</artifactId><version>3.9.1</version>" in pom


def test_elasticsearch_yml_is_single_node_without_security_in_the_state_folder():
    yml = elasticsearch_node.elasticsearch_yml(
        "127.0.0.1", 9200, 9300, Path("/state/data"), Path("/state/logs")
    )
    settings = dict(line.split(": ", 1) for line in yml.splitlines())
    assert settings["discovery.type"] == "single-node"
    assert settings["xpack.security.enabled"] == "false"
    assert settings["network.host"] == "127.0.0.1"
    assert settings["http.port"] == "9200"
    assert settings["transport.port"] == "9300"
    assert settings["path.data"] == "/state/data"
    assert settings["path.logs"] == "/state/logs"


def test_elasticsearch_runs_through_runuser_only_when_a_user_is_given():
    dist = ElasticsearchDistribution(version="8.19.3", home=Path("/dist/es"))
    args = (JAVA, dist, Path("/conf"), Path("/es.pid"), "1g")
    as_user = elasticsearch_node.server_command(*args, user="pipeline-es")
    assert as_user[:4] == ["runuser", "-u", "pipeline-es", "--"]
    assert "ES_PATH_CONF=/conf" in as_user and "ES_JAVA_HOME=/jdk" in as_user
    assert "ES_JAVA_OPTS=-Xms1g -Xmx1g" in as_user
    assert as_user[-3:] == ["/dist/es/bin/elasticsearch", "-p", "/es.pid"]
    assert elasticsearch_node.server_command(*args, user=None)[0] == "env"
