"""Build and synthesise the app offline, with cdk-nag, and report what the checks found.

Used by ``infra/app.py`` (``make synth``, ``cdk deploy``) and by the infrastructure tests, so both
synthesise exactly the same app.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aws_cdk import App, Environment, Validations
from cdk_nag import AwsSolutionsChecks

from accrue_infra.settings import DeploymentSettings
from accrue_infra.stack import AccrueStack

VALIDATION_REPORT = "policy-validation-report.json"
# How jsii surfaces CDK's policy-validation failure (the message text varies between versions).
VALIDATION_FAILED = re.compile(r"ValidationFailed|Validation failed")
# Feature flags (normally in cdk.json) live here so `python infra/app.py` and the cdk CLI agree.
FEATURE_FLAGS: dict[str, Any] = {
    # Access-log delivery through a bucket policy, not the legacy LogDeliveryWrite ACL.
    "@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy": True,
    # cdk-nag reads the structured validation report.
    "@aws-cdk/core:validationReportJson": True,
}


@dataclass
class Synthesis:
    outdir: Path
    stack_name: str
    template_path: Path
    # cdk-nag violations nobody acknowledged: "RuleId path: description".
    findings: list[str] = field(default_factory=list)
    # Warnings and errors CDK itself attached to constructs (deprecations, misconfigurations).
    annotations: list[str] = field(default_factory=list)

    @property
    def template(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.template_path.read_text(encoding="utf-8"))
        return loaded

    @property
    def ok(self) -> bool:
        return not self.findings and not self.annotations


def stack_name(settings: DeploymentSettings) -> str:
    return f"Accrue-{settings.env_suffix}"


def build_app(outdir: Path, context: dict[str, Any] | None = None) -> tuple[App, AccrueStack]:
    app = App(outdir=str(outdir), context={**FEATURE_FLAGS, **(context or {})})
    settings = DeploymentSettings.from_context(app.node.try_get_context)
    account, region = os.environ.get("CDK_DEFAULT_ACCOUNT"), os.environ.get("CDK_DEFAULT_REGION")
    stack = AccrueStack(
        app,
        stack_name(settings),
        settings=settings,
        description=f"accrue ({settings.env_suffix}): loyalty, referrals and payments, serverless",
        env=Environment(account=account, region=region) if account and region else None,
    )
    Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True))
    return app, stack


def synthesize(outdir: Path, context: dict[str, Any] | None = None) -> Synthesis:
    app, stack = build_app(outdir, context)
    try:
        app.synth()
    except RuntimeError as error:
        # cdk-nag findings fail synthesis after the template and the report are written.
        if not VALIDATION_FAILED.search(str(error)):
            raise
    result = Synthesis(
        outdir=outdir,
        stack_name=stack.stack_name,
        template_path=outdir / stack.template_file,
    )
    result.findings = nag_findings(outdir / VALIDATION_REPORT)
    result.annotations = construct_annotations(outdir / "manifest.json")
    return result


def nag_findings(report_path: Path) -> list[str]:
    if not report_path.exists():
        return []
    report = json.loads(report_path.read_text(encoding="utf-8"))
    findings = []
    for plugin in report.get("pluginReports", []):
        for violation in plugin.get("violations", []):
            for resource in violation.get("violatingResources", []):
                findings.append(
                    f"{violation['ruleName']} {resource.get('constructPath')}: {violation.get('description', '')}"
                )
    return findings


def construct_annotations(manifest_path: Path) -> list[str]:
    """Warnings and errors in the cloud assembly (the manifest, and each stack's metadata file)."""
    if not manifest_path.exists():
        return []
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    found = []
    for artifact in manifest.get("artifacts", {}).values():
        metadata = dict(artifact.get("metadata", {}))
        extra = artifact.get("additionalMetadataFile")
        if extra:
            metadata.update(json.loads((manifest_path.parent / extra).read_text(encoding="utf-8")))
        for path, entries in metadata.items():
            for entry in entries:
                if entry.get("type") in ("aws:cdk:warning", "aws:cdk:error"):
                    found.append(f"{entry['type']} {path}: {entry.get('data')}")
    return found
