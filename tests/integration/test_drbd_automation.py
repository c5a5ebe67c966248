"""The shipped example automation, end to end on a Prefect API: a resource turns critical → the flow's
``inferops.drbd.critical`` event → the automation → a real webhook notification block posts to us."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from flows.common.runtime import run_flow
from flows.common.settings import reload_settings
from tests.integration.webhook import Webhook

pytestmark = pytest.mark.slow
DATA = Path(__file__).parents[1] / "data" / "drbd"
AUTOMATION = Path(__file__).parents[2] / "flows" / "drbd_health" / "automations" / "drbd-critical.yaml"


@pytest.fixture
def webhook():
    hook = Webhook()
    yield hook
    hook.close()


def test_example_automation_notifies_when_a_resource_turns_critical(prefect_client, webhook, tmp_path, monkeypatch):
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.events.schemas.automations import AutomationCore

    from flows.drbd_health.flow import DrbdNotOk, drbd_health

    block_id = CustomWebhookNotificationBlock(
        name="drbd-test-hook", url=webhook.url, json_data={"subject": "{{subject}}", "body": "{{body}}"},
    ).save("drbd-test-hook", overwrite=True)
    [spec] = yaml.safe_load(AUTOMATION.read_text())["automations"]
    spec["actions"][0]["block_document_id"] = str(block_id)
    automation_id = prefect_client.create_automation(AutomationCore.model_validate(spec))
    monkeypatch.setenv("INFEROPS_STATE_DIR", str(tmp_path / "state"))
    reload_settings()
    try:
        time.sleep(2)  # the triggers service loads new automations periodically
        with pytest.raises(DrbdNotOk) as failed:  # a critical resource: the recorded run ends Failed
            run_flow(drbd_health, inputs=[str(DATA / "json_split_brain.json"), str(DATA / "json_resync.json")])
        report = failed.value.report
        assert report["events"] == ["json_split_brain/models"] and failed.value.exit_code == 2
        msg = webhook.wait_for(lambda m: m["subject"].startswith("DRBD CRITICAL"))
    finally:
        prefect_client.delete_automation(automation_id)
        monkeypatch.undo()
        reload_settings()
    assert msg["subject"] == "DRBD CRITICAL: models on json_split_brain"
    assert "split_brain (StandAlone from storage-b with 18432 KiB out of sync)" in msg["body"]
    assert "drbdadm connect --discard-my-data models" in msg["body"]
