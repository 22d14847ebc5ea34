"""``pipeline dashboards``: export the Kibana assets, import them into Kibana, put the template.

Exit codes: 0 done; 1 Kibana read the file but refused some objects (listed in a table);
2 usage or setup error (Kibana or Elasticsearch unreachable or not answering in time, the
request refused, a file missing). A URL is shown without its credentials.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from pipeline.cli.checks import http_url, index_name, shown_path
from pipeline.cli.console import stderr_console, stdout_console
from pipeline.errors import PipelineError
from pipeline.settings import LogSettings, PipelineSettings, masked_url

app = typer.Typer(
    help="Kibana assets as code: the logs' data view, searches, visualisations and dashboard.",
    no_args_is_help=True,
)

DEFAULT_KIBANA_URL = "http://127.0.0.1:5601"
#: The logs' read alias when PIPELINE_LOGS__INDEX_ALIAS is not set (pipeline.logs.schema's).
_DEFAULT_INDEX_ALIAS: str = LogSettings.model_fields["index_alias"].default


def _settings(ctx: typer.Context) -> PipelineSettings:
    settings = ctx.obj
    assert isinstance(settings, PipelineSettings), "read once by the `pipeline` entry point"
    return settings


AliasOption = Annotated[
    str | None,
    typer.Option(
        "--alias",
        callback=index_name,
        help="Read alias, index prefix (<alias>-YYYY.MM.DD) and template name "
        f"(default: PIPELINE_LOGS__INDEX_ALIAS, else {_DEFAULT_INDEX_ALIAS}).",
        show_default=False,
    ),
]


@app.command()
def export(
    ctx: typer.Context,
    alias: AliasOption = None,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Folder to write pipeline-logs.ndjson and index-template.json to (two files, "
            "so - for stdout is refused).",
            file_okay=False,
        ),
    ] = Path("dashboards"),
) -> None:
    """Write the saved objects (Kibana's import format) and the index template to files.

    Their data view and template are on the logs' read alias (--alias); the files can be kept
    in version control and imported with dashboards import --file.

    Examples:
      pipeline dashboards export                     # dashboards/pipeline-logs.ndjson and more
      pipeline dashboards export --out /tmp/kibana --alias pipeline-logs-staging
    """
    from pipeline.dashboards import export_files

    if str(out) == "-":  # read as stdout by most tools, it would be a folder named "-"
        raise typer.BadParameter(
            "- is not stdout here: the export is two files, give the folder to write them to",
            param_hint="'--out'",
        )
    if out.exists() and not out.is_dir():  # a file, or a device (/dev/full): "File exists"
        raise PipelineError(
            f"cannot write to {shown_path(out)}: it is not a folder (give the folder to write "
            "the two files to)"
        )
    try:
        written = export_files(out, alias or _settings(ctx).logs.index_alias)
    except OSError as error:
        raise PipelineError(
            f"cannot write to {shown_path(out)}: {error.strerror or error}"
        ) from None
    console = stdout_console()
    for path in written:
        console.print(f"wrote {escape(str(path))}")


@app.command("import")
def import_(
    ctx: typer.Context,
    alias: AliasOption = None,
    kibana_url: Annotated[
        str,
        typer.Option(
            "--kibana-url", help="Kibana's address.", show_default=True, callback=http_url
        ),
    ] = DEFAULT_KIBANA_URL,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            help="An NDJSON export to import instead of the generated saved objects "
            "(the same as the NDJSON file in dashboards/).",
            dir_okay=False,
        ),
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option(help="Replace objects that exist (they have stable ids)."),
    ] = True,
) -> None:
    """Import the saved objects into Kibana (POST /api/saved_objects/_import).

    Their data view is on the logs' read alias. Exit code 1 when Kibana refused some objects
    (a table lists them, with its reasons); 2 when it cannot be reached or refuses the request.

    Examples:
      pipeline dashboards import
      pipeline dashboards import --kibana-url https://kibana.internal:5601
      pipeline dashboards import --file dashboards/pipeline-logs.ndjson --no-overwrite
    """
    from pipeline.dashboards import export_ndjson, import_to_kibana

    if file is None:
        ndjson = export_ndjson(alias or _settings(ctx).logs.index_alias)
    else:
        try:
            data = file.read_bytes()
        except OSError as error:
            raise PipelineError(f"cannot read {file}: {error.strerror or error}") from None
        try:
            ndjson = data.decode("utf-8")
        except UnicodeDecodeError as error:
            line = data.count(b"\n", 0, error.start) + 1
            raise PipelineError(
                f"{file} is not UTF-8 text (line {line}): give an NDJSON export of saved objects"
            ) from None
    result = import_to_kibana(kibana_url, ndjson, overwrite=overwrite)
    if result.success:
        into = escape(masked_url(kibana_url))
        stdout_console().print(f"imported {result.success_count} saved objects into {into}")
        return
    table = Table("type", "id", "title", "error", "message", title="objects Kibana refused")
    for refused in result.errors:
        table.add_row(
            refused.type, refused.id, escape(refused.title), refused.error, escape(refused.message)
        )
    stdout_console().print(table)
    stderr_console().print(
        f"[red]error:[/red] Kibana refused {len(result.errors)} saved objects "
        f"({result.success_count} imported)",
        highlight=False,
    )
    raise typer.Exit(1)


@app.command()
def template(ctx: typer.Context, alias: AliasOption = None) -> None:
    """Put the logs' index template on Elasticsearch.

    The shipper (pipeline logs ship) puts it too, each time it starts.

    Examples:
      pipeline dashboards template
      pipeline dashboards template --alias pipeline-logs-staging
    """
    from elasticsearch import ApiError, ConnectionTimeout, SerializationError, TransportError
    from elasticsearch import ConnectionError as ESConnectionError

    from pipeline.logs.elasticsearch import (
        build_elasticsearch,
        not_elasticsearch,
        template_refusal,
        unanswered,
        unreadable,
    )
    from pipeline.logs.schema import ensure_index_template

    settings = _settings(ctx)
    alias = alias or settings.logs.index_alias
    try:
        with build_elasticsearch(settings.elasticsearch) as es:
            logs = settings.logs
            ensure_index_template(
                es,
                alias=alias,
                shards=logs.index_shards,
                replicas=logs.index_replicas,
                lifecycle_policy=logs.index_lifecycle_policy,
            )
    except ESConnectionError:
        url = masked_url(settings.elasticsearch.url)
        raise PipelineError(f"cannot reach Elasticsearch at {url}") from None
    except ConnectionTimeout:  # it accepted the connection and never answered
        server = settings.elasticsearch
        raise PipelineError(unanswered(server.url, server.request_timeout_s)) from None
    except SerializationError as error:  # its message holds the whole answer: not for a line
        raise PipelineError(unreadable(settings.elasticsearch.url, error)) from None
    except ApiError as error:
        foreign = not_elasticsearch(settings.elasticsearch.url, error.meta.status, error.body)
        raise PipelineError(foreign or template_refusal(error)) from None
    except TransportError as error:  # any other the client raises: one line too
        said = " ".join(str(error).split())
        raise PipelineError(f"the request to Elasticsearch failed: {said}") from None
    stdout_console().print(f"index template {escape(alias)} is in place")
