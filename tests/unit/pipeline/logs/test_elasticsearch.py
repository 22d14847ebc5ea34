import pytest
from pydantic import SecretStr

from pipeline.logs.elasticsearch import elasticsearch_options
from pipeline.settings import ElasticsearchSettings


def test_elasticsearch_auth_is_api_key_or_basic_never_both():
    assert elasticsearch_options(ElasticsearchSettings(api_key=SecretStr("k")))["api_key"] == "k"
    basic = elasticsearch_options(ElasticsearchSettings(username="u", password=SecretStr("p")))
    assert basic["basic_auth"] == ("u", "p")
    with pytest.raises(ValueError, match="not both"):
        ElasticsearchSettings(api_key=SecretStr("k"), username="u", password=SecretStr("p"))
