"""MODULE:PROCESSOR as users write it: a path in place of a module is one line saying so."""

from __future__ import annotations

import pytest

from pipeline.cli.process import load_processor
from pipeline.errors import PipelineError


@pytest.mark.parametrize(
    "spec", ["../app/billing:processor", "app/billing.py:processor", "billing.py:processor"]
)
def test_a_path_for_the_module_is_one_line_saying_a_dotted_name_is_wanted(spec):
    # `pipeline process ../app/rvproc:processor` said importlib's "TypeError: the 'package'
    # argument is required to perform a relative import".
    with pytest.raises(PipelineError) as refused:
        load_processor(spec)

    message = str(refused.value)
    assert message.startswith(f"{spec.partition(':')[0]!r} is not a module's dotted name")
    assert "PYTHONPATH" in message and "TypeError" not in message


def test_a_dotted_name_that_is_not_there_still_says_it_cannot_be_imported():
    with pytest.raises(PipelineError, match=r"cannot import no_such_package\.billing"):
        load_processor("no_such_package.billing:processor")
