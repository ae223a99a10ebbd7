"""The SES e-mail settings: a bare sender address and an optional configuration set, checked at start."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from accrue.config import Settings


def test_the_ses_settings_come_from_the_environment_and_are_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (Settings().ses_from_address, Settings().ses_configuration_set) == (None, None)
    monkeypatch.setenv("ACCRUE_SES_FROM_ADDRESS", "loyalty+no-reply@mail.accrue.example")
    monkeypatch.setenv("ACCRUE_SES_CONFIGURATION_SET", "accrue_mail-1")
    settings = Settings()
    assert settings.ses_from_address == "loyalty+no-reply@mail.accrue.example"
    assert settings.ses_configuration_set == "accrue_mail-1"


def test_an_empty_value_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    # A CDK or shell template that renders an empty variable must not turn SES on with no sender.
    monkeypatch.setenv("ACCRUE_SES_FROM_ADDRESS", "")
    monkeypatch.setenv("ACCRUE_SES_CONFIGURATION_SET", " ")
    assert (Settings().ses_from_address, Settings().ses_configuration_set) == (None, None)


@pytest.mark.parametrize(
    "value",
    [
        "loyalty",
        "loyalty@localhost",
        "@accrue.example",
        "loyalty@",
        "Accrue <loyalty@accrue.example>",
        "loyalty@accrue.example, other@accrue.example",
        "loy alty@accrue.example",
        "loyalty@@accrue.example",
        "loyalty@accrue..example",
    ],
)
def test_a_sender_that_is_not_one_bare_address_is_refused_naming_the_setting(value: str) -> None:
    with pytest.raises(ValidationError, match="ACCRUE_SES_FROM_ADDRESS: must be one e-mail address"):
        Settings(ses_from_address=value)


@pytest.mark.parametrize("value", ["has space", "a.b", "x" * 65, "set/name"])
def test_a_configuration_set_name_ses_would_refuse_is_refused_naming_the_setting(value: str) -> None:
    with pytest.raises(ValidationError, match="ACCRUE_SES_CONFIGURATION_SET: 1-64 of letters, digits, _ and -"):
        Settings(ses_configuration_set=value)
