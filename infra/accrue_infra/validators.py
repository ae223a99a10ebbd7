"""The offline template validators: cfn-lint, checkov (its own venv), asl-validator (pinned npm).

Each returns what it found; the infrastructure tests decide what fails. The tool locations are the
ones the Makefile provisions (``make infra-tools``).
"""

from __future__ import annotations

import json
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accrue_infra.settings import REPO_ROOT

INFRA_DIR = REPO_ROOT / "infra"
CHECKOV = REPO_ROOT / ".checkov-venv" / "bin" / "checkov"
ASL_VALIDATOR = INFRA_DIR / "node_modules" / ".bin" / "asl-validator"
CHECKOV_SKIPS = INFRA_DIR / "checkov-skips.toml"

# cfn-lint rules ignored everywhere, with the reason.
CFN_LINT_IGNORED = {
    "W3005": (
        "CDK adds an explicit DependsOn on a function's (or state machine's) role next to the GetAtt of its "
        "ARN; the duplicate ordering is harmless and comes from aws-cdk-lib, not from this app."
    ),
}
# Regions the template is linted for (resource types and property values differ per region).
CFN_LINT_REGIONS = ["us-east-1", "eu-west-1", "eu-central-1"]


@dataclass(frozen=True)
class LintFinding:
    rule: str
    severity: str  # error | warning | informational
    message: str
    path: str


@dataclass(frozen=True)
class CheckovFailure:
    check_id: str
    resource: str  # "<Type>.<LogicalId>"
    name: str


@dataclass(frozen=True)
class CheckovSkip:
    check_id: str
    title: str
    reason: str
    resources: tuple[str, ...]

    def covers(self, failure: CheckovFailure) -> bool:
        return failure.check_id == self.check_id and failure.resource.startswith(self.resources)


class ToolMissing(RuntimeError):
    """A pinned validator is not installed: ``make infra-tools`` installs it."""


def cfn_lint(template_path: Path) -> list[LintFinding]:
    from cfnlint.api import ManualArgs, lint_file

    matches = lint_file(template_path, config=ManualArgs(regions=CFN_LINT_REGIONS))
    findings = []
    for match in matches:
        rule_id = match.rule.id
        if rule_id in CFN_LINT_IGNORED:
            continue
        findings.append(
            LintFinding(
                rule=rule_id,
                severity=str(match.rule.severity).lower(),
                message=match.message,
                path="/".join(str(p) for p in match.path) if getattr(match, "path", None) else "",
            )
        )
    return findings


def start_checkov(template_path: Path) -> subprocess.Popen[str]:
    """Start checkov in the background (it takes seconds; other checks can run meanwhile)."""
    if not CHECKOV.exists():
        raise ToolMissing(f"{CHECKOV} is missing: run `make infra-tools`")
    return subprocess.Popen(
        [
            str(CHECKOV),
            "--file",
            str(template_path),
            "--framework",
            "cloudformation",
            "--output",
            "json",
            "--quiet",
            "--compact",
            "--skip-download",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def checkov_failures(process: subprocess.Popen[str]) -> list[CheckovFailure]:
    stdout, stderr = process.communicate(timeout=600)
    # Exit code 1 means "some check failed"; anything else but 0 is checkov itself failing.
    if process.returncode not in (0, 1):
        raise RuntimeError(f"checkov failed ({process.returncode}): {stderr[-2000:]}")
    report: Any = json.loads(stdout) if stdout.strip() else {}
    reports = report if isinstance(report, list) else [report]
    failures = []
    for entry in reports:
        for check in entry.get("results", {}).get("failed_checks", []):
            failures.append(CheckovFailure(check["check_id"], check["resource"], check.get("check_name", "")))
    return failures


def checkov(template_path: Path) -> list[CheckovFailure]:
    return checkov_failures(start_checkov(template_path))


def checkov_skips(path: Path = CHECKOV_SKIPS) -> dict[str, CheckovSkip]:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    return {
        check_id: CheckovSkip(
            check_id=check_id,
            title=str(entry.get("title", "")),
            reason=" ".join(str(entry.get("reason", "")).split()),
            resources=tuple(entry.get("resources", ())),
        )
        for check_id, entry in data.items()
    }


def asl_validator(definition: dict[str, Any], workdir: Path) -> tuple[bool, str]:
    """Validate a state machine definition with the pinned asl-validator (schema, paths, ARNs)."""
    if not ASL_VALIDATOR.exists():
        raise ToolMissing(f"{ASL_VALIDATOR} is missing: run `make infra-tools`")
    path = workdir / "state-machine.asl.json"
    path.write_text(json.dumps(definition, indent=2), encoding="utf-8")
    completed = subprocess.run(
        [str(ASL_VALIDATOR), "--json-path", str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    return completed.returncode == 0, (completed.stdout + completed.stderr).strip()
