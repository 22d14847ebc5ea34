import json
from collections import Counter

from pipeline.errors import PipelineError
from pipeline.request_types import request_type
from producers.demo_traffic import demo_requests


def _valid(request) -> bool:
    try:
        request_type(request.request_type).validate(json.loads(request.body))
    except (ValueError, PipelineError):
        return False
    return True


def test_the_demo_traffic_mixes_request_types_with_a_few_bad_ones():
    requests = list(demo_requests(2_000, run="r"))
    kinds = Counter(request.request_type for request in requests)
    assert set(kinds) == {"place_order", "cancel_order", "register_customer"}
    bad = [request for request in requests if not _valid(request)]
    assert 0 < len(bad) < 0.05 * len(requests)
    assert len({request.idempotency_key for request in requests}) == len(requests)
    assert any(request.replay for request in requests)


def test_the_demo_traffic_is_reproducible_from_its_seed():
    assert list(demo_requests(100, run="r", seed=3)) == list(demo_requests(100, run="r", seed=3))
