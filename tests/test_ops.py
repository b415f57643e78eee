"""What platform engineers load into Prefect parses and points at real flows."""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_prefect_yaml_entrypoints_are_flows() -> None:
    from prefect import Flow

    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    names = set()
    for deployment in config["deployments"]:
        path, func = deployment["entrypoint"].split(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        flow = getattr(module, func)
        assert isinstance(flow, Flow)
        names.add(flow.name)
        assert set(deployment.get("parameters", {})) <= set(flow.parameters.properties)
    assert names >= {"submission", "stress", "feedback"}


def test_feedback_runs_on_a_schedule() -> None:
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    by_name = {d["name"]: d for d in config["deployments"]}
    assert by_name["feedback"]["schedules"][0]["cron"] == "*/5 * * * *"


def test_sla_automation_is_a_valid_proactive_trigger() -> None:
    from prefect.events.schemas.automations import AutomationCore, Posture

    data = yaml.safe_load((ROOT / "ops" / "automations.yaml").read_text())["automations"][0]
    automation = AutomationCore(**data)
    assert automation.trigger.posture == Posture.Proactive
    assert automation.trigger.within.total_seconds() == 300
