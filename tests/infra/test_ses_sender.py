"""The optional SES sender: with ``ses_from_address`` (and ``ses_configuration_set``) the stack has
the sender's identity and tells the notifications worker (only) about it, and the template still
passes cdk-nag, cfn-lint and checkov; without them the stack has nothing of SES."""

from __future__ import annotations

from typing import Any

import pytest

from accrue_infra.settings import DeploymentSettings, SettingsError
from accrue_infra.synth import Synthesis
from accrue_infra.validators import ToolMissing, cfn_lint, checkov, checkov_skips
from tests.infra.conftest import ENV_SUFFIX, SES_CONTEXT, of_type, require_tool

pytestmark = pytest.mark.infra

Resources = dict[str, dict[str, Any]]
SES_VARIABLES = {
    "ACCRUE_SES_FROM_ADDRESS": SES_CONTEXT["ses_from_address"],
    "ACCRUE_SES_CONFIGURATION_SET": SES_CONTEXT["ses_configuration_set"],
}


def told_about_ses(resources: Resources) -> dict[str, dict[str, str]]:
    """function name -> the ACCRUE_SES_* variables it is given."""
    told = {}
    for function in of_type(resources, "AWS::Lambda::Function").values():
        variables = function["Properties"]["Environment"]["Variables"]
        ses = {k: v for k, v in variables.items() if k.startswith("ACCRUE_SES_")}
        if ses:
            told[function["Properties"]["FunctionName"]] = ses
    return told


def test_the_sender_gets_an_email_identity(ses_resources: Resources) -> None:
    [identity] = of_type(ses_resources, "AWS::SES::EmailIdentity").values()
    assert identity["Properties"]["EmailIdentity"] == SES_CONTEXT["ses_from_address"]
    # The configuration set is the operator's (event destinations); the stack does not make one.
    assert not of_type(ses_resources, "AWS::SES::ConfigurationSet")


def test_only_the_notifications_worker_is_told_the_sender(ses_resources: Resources) -> None:
    assert told_about_ses(ses_resources) == {f"accrue-notifications-worker-{ENV_SUFFIX}": SES_VARIABLES}


def test_without_a_sender_the_stack_has_no_ses_resource_and_no_function_is_told_of_ses(
    resources: Resources,
) -> None:
    assert not [r for r in resources.values() if r["Type"].startswith("AWS::SES::")]
    assert told_about_ses(resources) == {}


def test_with_a_sender_cdk_nag_and_cdk_report_nothing(ses_synthesis: Synthesis) -> None:
    assert ses_synthesis.findings == []
    assert ses_synthesis.annotations == []


def test_with_a_sender_cfn_lint_and_checkov_stay_clean(ses_synthesis: Synthesis) -> None:
    lint = cfn_lint(ses_synthesis.template_path)
    assert [f for f in lint if f.severity in ("error", "warning")] == []
    try:
        failures = checkov(ses_synthesis.template_path)
    except ToolMissing as missing:
        require_tool(missing)
    skips = checkov_skips()
    assert [f for f in failures if not any(skip.covers(f) for skip in skips.values())] == []
    assert failures, "checkov reported nothing: it did not check the template"


def context(**values: Any) -> DeploymentSettings:
    return DeploymentSettings.from_context(values.get)


def test_the_sender_settings_are_read_from_context() -> None:
    chosen = context(**SES_CONTEXT)
    assert (chosen.ses_from_address, chosen.ses_configuration_set) == ("loyalty@accrue.example", "accrue-mail")
    assert (context().ses_from_address, context(ses_from_address="").ses_from_address) == (None, None)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"ses_from_address": "Accrue <loyalty@accrue.example>"}, "ses_from_address='Accrue <loyalty@accrue"),
        ({"ses_from_address": "loyalty"}, "ses_from_address='loyalty': must be one bare e-mail address"),
        ({"ses_configuration_set": "accrue-mail"}, "ses_configuration_set: needs ses_from_address"),
        (
            {"ses_from_address": "loyalty@accrue.example", "ses_configuration_set": "a.b"},
            "ses_configuration_set='a.b': 1-64 of letters, digits, _ and -",
        ),
    ],
)
def test_an_unusable_sender_setting_is_refused_naming_the_key(values: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as raised:
        context(**values)
    assert message in str(raised.value)
