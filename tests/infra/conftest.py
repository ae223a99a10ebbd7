"""Synthesise the CDK app once per test session; every infrastructure test reads that one template."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

INFRA_DIR = Path(__file__).resolve().parents[2] / "infra"
if str(INFRA_DIR) not in sys.path:
    sys.path.insert(0, str(INFRA_DIR))

from accrue_infra.synth import Synthesis, synthesize  # noqa: E402
from accrue_infra.validators import CheckovFailure, ToolMissing, checkov_failures, start_checkov  # noqa: E402

# A suffix no default uses, so "every name carries the suffix" cannot pass by accident.
ENV_SUFFIX = "citest"
# `make test` sets this: there a missing validator is a failure, not a skip.
TOOLS_REQUIRED = os.environ.get("ACCRUE_INFRA_TOOLS_REQUIRED") == "1"


@pytest.fixture(scope="session")
def synthesis(tmp_path_factory: pytest.TempPathFactory) -> Synthesis:
    outdir = tmp_path_factory.mktemp("cdk.out")
    # The source tree as the asset: the same template as with `make lambda-package`, but no 90 MB copy.
    return synthesize(outdir, {"env_suffix": ENV_SUFFIX, "lambda_asset": "src"})


# The optional SES sender (and configuration set): a second synthesis, only for the tests that ask.
SES_CONTEXT = {"ses_from_address": "loyalty@accrue.example", "ses_configuration_set": "accrue-mail"}


@pytest.fixture(scope="session")
def ses_synthesis(tmp_path_factory: pytest.TempPathFactory) -> Synthesis:
    outdir = tmp_path_factory.mktemp("cdk.out.ses")
    return synthesize(outdir, {"env_suffix": ENV_SUFFIX, "lambda_asset": "src", **SES_CONTEXT})


@pytest.fixture(scope="session")
def ses_resources(ses_synthesis: Synthesis) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = ses_synthesis.template["Resources"]
    return found


@pytest.fixture(scope="session")
def checkov_results(synthesis: Synthesis) -> Iterator[Callable[[], list[CheckovFailure]]]:
    """checkov starts as soon as the template exists and runs while the other checks do."""
    try:
        process = start_checkov(synthesis.template_path)
    except ToolMissing as missing:
        error = missing

        def missing_tool() -> list[CheckovFailure]:
            require_tool(error)
            raise error

        yield missing_tool
        return
    results: list[list[CheckovFailure]] = []

    def collect() -> list[CheckovFailure]:
        if not results:
            results.append(checkov_failures(process))
        return results[0]

    yield collect
    if process.poll() is None:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def template(synthesis: Synthesis) -> dict[str, Any]:
    return synthesis.template


@pytest.fixture(scope="session")
def resources(
    template: dict[str, Any], checkov_results: Callable[[], list[CheckovFailure]]
) -> dict[str, dict[str, Any]]:
    # Requesting checkov_results here starts checkov with the first template test, not the last.
    found: dict[str, dict[str, Any]] = template["Resources"]
    return found


def of_type(resources: dict[str, dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {logical_id: r for logical_id, r in resources.items() if r["Type"] == kind}


def require_tool(error: ToolMissing) -> None:
    """Skip (with the reason) when a developer runs pytest without the tools; fail under `make test`."""
    if TOOLS_REQUIRED:
        pytest.fail(str(error))
    pytest.skip(str(error))
