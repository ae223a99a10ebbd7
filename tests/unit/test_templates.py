"""The notification renderer gives exactly what Jinja's own ``Template.render`` gives, for every
template shipped in the package, and fails the same way on a missing variable."""

from __future__ import annotations

from importlib import resources
from typing import Any

import jinja2
import pytest

from accrue.adapters.local.templates import JinjaRenderer
from accrue.domain.loyalty import Tier

CONTEXTS: dict[str, dict[str, Any]] = {
    "milestone": {"milestones": [100, 500], "points": 1200, "tier": "SILVER"},
    "tier_upgrade": {"old_tier": "BRONZE", "new_tier": "GOLD", "points": 5200, "benefits": Tier.GOLD.benefits},
    "payout_completed": {
        "month": "2026-11",
        "referrers": 3,
        "rewards": 7,
        "total_amount": "$70.00",
        "report_location": "s3://reports/2026-11.csv",
    },
    "referral_signup": {
        "referred_id": "usr_2",
        "reward_amount": "$10.00",
        "referral_count": 4,
        "total_rewards": "$40.00",
        "held": True,
    },
    "email_layout.html": {"subject": "Fish & <Chips>", "paragraphs": ["One <b>", "Two & three"]},
}


def shipped_templates() -> list[str]:
    folder = resources.files("accrue") / "templates" / "notifications"
    names = [
        f"notifications/{kind.name}/{t.name}" for kind in folder.iterdir() if kind.is_dir() for t in kind.iterdir()
    ]
    names += [f"notifications/{t.name}" for t in folder.iterdir() if t.is_file()]
    return sorted(name for name in names if name.endswith((".j2", ".html")))


def context_for(name: str) -> dict[str, Any]:
    return CONTEXTS[name.split("/")[1]]


def test_every_shipped_template_is_covered() -> None:
    assert len(shipped_templates()) == 17  # four kinds x four texts, and the e-mail layout


@pytest.mark.parametrize("name", shipped_templates())
def test_each_template_renders_as_jinja_itself_renders_it(name: str) -> None:
    renderer = JinjaRenderer()
    expected = renderer.env.get_template(name).render(**context_for(name)).strip()
    assert renderer.render(name, context_for(name)) == expected
    assert expected  # the context fills the template: nothing renders empty


def test_html_is_escaped_and_jinja_globals_are_still_there() -> None:
    renderer = JinjaRenderer()
    html = renderer.render("notifications/email_layout.html", context_for("notifications/email_layout.html"))
    assert "Fish &amp; &lt;Chips&gt;" in html and "One &lt;b&gt;" in html
    assert "range" in renderer._globals and "namespace" in renderer._globals


def test_a_missing_variable_fails_as_jinja_fails() -> None:
    renderer, name, context = JinjaRenderer(), "notifications/milestone/default.j2", {"points": 1, "tier": "BRONZE"}
    with pytest.raises(jinja2.UndefinedError, match="milestones") as jinja_itself:
        renderer.env.get_template(name).render(**context)
    with pytest.raises(jinja2.UndefinedError, match="milestones") as ours:
        renderer.render(name, context)
    assert str(ours.value) == str(jinja_itself.value)
