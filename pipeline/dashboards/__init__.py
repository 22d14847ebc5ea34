"""Kibana assets as code: saved objects and the index template, generated from the log schema.

``pipeline dashboards export`` writes them to ``dashboards/`` (committed; a test keeps them equal
to the generator's output), ``pipeline dashboards import`` sends them to Kibana.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.dashboards.kibana import (
    ImportResult,
    KibanaImportError,
    ObjectError,
    import_to_kibana,
)
from pipeline.dashboards.saved_objects import (
    SAVED_SEARCHES,
    VISUALISATIONS,
    SavedSearch,
    Visualisation,
    export_ndjson,
    index_template_json,
    saga_query,
    saved_objects,
    trace_query,
)
from pipeline.logs.schema import INDEX_ALIAS

#: The files ``pipeline dashboards export`` writes, in ``dashboards/`` of the repository.
NDJSON_FILE = "pipeline-logs.ndjson"
TEMPLATE_FILE = "index-template.json"


def export_files(out_dir: Path, alias: str = INDEX_ALIAS) -> list[Path]:
    """Write the saved objects and the index template of ``alias`` to ``out_dir``; the paths
    written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    files = ((NDJSON_FILE, export_ndjson(alias)), (TEMPLATE_FILE, index_template_json(alias)))
    for name, text in files:
        path = out_dir / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


__all__ = [
    "NDJSON_FILE",
    "SAVED_SEARCHES",
    "TEMPLATE_FILE",
    "VISUALISATIONS",
    "ImportResult",
    "KibanaImportError",
    "ObjectError",
    "SavedSearch",
    "Visualisation",
    "export_files",
    "export_ndjson",
    "import_to_kibana",
    "index_template_json",
    "saga_query",
    "saved_objects",
    "trace_query",
]
