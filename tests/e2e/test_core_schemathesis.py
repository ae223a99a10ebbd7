"""Property-based API conformance: schemathesis generates requests from the published /openapi.json
and checks every response of a real server (no 5xx, documented status codes and content types,
bodies matching the documented schema, invalid input refused).

The schema is loaded from the running server, so the operations are only known at run time; we drive
hypothesis directly per operation (schemathesis' lazy pytest loader does not support pytest 9).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.conftest import LiveServer, auth, start_server, stop_server

pytestmark = pytest.mark.slow

# Bounded so the whole run stays under a minute on two shared cores.
MAX_EXAMPLES = {GenerationMode.POSITIVE: 40, GenerationMode.NEGATIVE: 25}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    running = start_server(Path(tmp_path_factory.mktemp("schemathesis")))
    yield running
    stop_server(running)


def check_operation(operation: schemathesis.APIOperation, mode: GenerationMode) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES[mode],
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate()

    try:
        run()
    except Unsatisfiable:
        # Nothing in the operation can be made invalid (GET /health takes no input): nothing to check.
        if mode is not GenerationMode.NEGATIVE:
            raise


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_every_operation_answers_generated_requests_within_its_documented_contract(
    server: LiveServer, mode: GenerationMode
) -> None:
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    schema.config.update(base_url=server.url, request_timeout=30, headers=auth("admin", "admin"))
    # The token is a real admin token, not a generated parameter.
    schema.config.generation.update(with_security_parameters=False)
    # 422 is the documented answer for a well-formed request that a business rule refuses (e.g. an
    # amount with more decimals than its currency has); every other refusal of valid data is a bug.
    acceptance = schema.config.checks.positive_data_acceptance
    acceptance.expected_statuses = [*acceptance.expected_statuses, "422"]
    failures: dict[str, str] = {}
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        try:
            check_operation(operation, mode)
        except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - collect every failure, report all
            failures[operation.label] = f"{type(exc).__name__}: {exc}"[:3000]
    assert operations >= 10
    assert not failures, "\n\n".join(f"{label}\n{text}" for label, text in failures.items())
