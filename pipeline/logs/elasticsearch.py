"""The Elasticsearch client, built here from settings and passed in elsewhere.

:func:`elasticsearch_options` is pure (settings in, client keyword arguments out); the client
opens no connection until first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline.settings import ElasticsearchSettings

if TYPE_CHECKING:  # imported when a client is built: `pipeline --help` need not load it
    from elasticsearch import Elasticsearch


def elasticsearch_options(es: ElasticsearchSettings) -> dict[str, Any]:
    """Keyword arguments for :class:`elasticsearch.Elasticsearch`."""
    options: dict[str, Any] = {"hosts": [es.url], "request_timeout": es.request_timeout_s}
    if es.api_key is not None:
        options["api_key"] = es.api_key.get_secret_value()
    elif es.username is not None:
        password = es.password.get_secret_value() if es.password is not None else ""
        options["basic_auth"] = (es.username, password)
    if es.ca_certs is not None:
        options["ca_certs"] = str(es.ca_certs)
    return options


def build_elasticsearch(es: ElasticsearchSettings) -> Elasticsearch:
    from elasticsearch import Elasticsearch

    return Elasticsearch(**elasticsearch_options(es))
