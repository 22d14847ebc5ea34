"""docs/testing.md's backend test, on the real stack: the page's processor as a ``pipeline
process`` program with the outbox relay, fed its recording through Kafka."""

from __future__ import annotations

from tests.unit.pipeline.testing.test_testing_doc import doc_files

pytest_plugins = ["pytester"]


def test_the_pages_backend_test_passes_on_kafka(pytester, pipeline_stack, postgres_stack):
    for path, (_, text) in doc_files().items():
        target = pytester.path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    (pytester.path / "shop" / "__init__.py").write_text("")

    result = pytester.runpytest_subprocess(
        "tests/test_points_backend.py",
        "--pipeline-backend",
        "kafka",
        "--pipeline-stack",
        "external",
        "-p",
        "no:cacheprovider",
    )

    result.assert_outcomes(passed=1)
