"""What is imported into Kibana is checked before anything is sent."""

import pytest

from pipeline.dashboards import export_ndjson
from pipeline.dashboards.kibana import KibanaImportError, check_saved_objects, import_to_kibana


def test_the_exported_saved_objects_pass_the_check():
    check_saved_objects(export_ndjson())


@pytest.mark.parametrize(
    ("ndjson", "says"),
    [
        ('{"type": "search", "id": "a"}\ngarbage\n', "line 2 is not JSON"),
        ("[1, 2]\n", "line 1 is not a JSON object"),
        ('{"attributes": {}}\n', "line 1 is not a saved object"),
        ('{"exportedCount": 0}\n\n', "no saved object to import"),
    ],
)
def test_a_file_that_is_not_saved_objects_is_refused_before_kibana_is_asked(ndjson, says):
    # Port 1: were Kibana asked, the error would be that it cannot be reached.
    with pytest.raises(KibanaImportError, match=says):
        import_to_kibana("http://127.0.0.1:1", ndjson)
