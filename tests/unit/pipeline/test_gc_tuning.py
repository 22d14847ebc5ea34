import gc

import pytest

from pipeline.gc_tuning import collector_paused, few_collections


def test_the_collector_runs_less_often_in_the_block_and_as_before_after_it():
    before = gc.get_threshold()
    with few_collections(12_345):
        assert gc.get_threshold() == (12_345, *before[1:])
        assert gc.get_freeze_count() > 0  # what existed before is out of the scans
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_an_error_in_the_block_still_restores_the_collector():
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), few_collections():
        raise RuntimeError("boom")
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


@pytest.mark.parametrize("enabled", [True, False], ids=["enabled", "disabled"])
def test_a_paused_collector_is_as_it_was_after_the_block_and_freezes_nothing(enabled):
    frozen = gc.get_freeze_count()
    (gc.enable if enabled else gc.disable)()
    try:
        with pytest.raises(RuntimeError), collector_paused():
            assert not gc.isenabled()
            assert gc.get_freeze_count() == frozen
            raise RuntimeError("boom")
        assert gc.isenabled() is enabled
    finally:
        gc.enable()
