"""Every deployment's flow loads from its entrypoint the way a worker loads it, and accepts the
parameters prefect.yaml gives it (the same validation a worker runs before calling the flow)."""

from pathlib import Path

import pytest
import yaml
from prefect.exceptions import ParameterTypeError
from prefect.flows import load_flow_from_entrypoint

REPO = Path(__file__).resolve().parents[2]
DEPLOYMENTS = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]


@pytest.mark.parametrize("dep", DEPLOYMENTS, ids=[d["name"] for d in DEPLOYMENTS])
def test_entrypoint_loads_and_validates_parameters(dep, monkeypatch):
    monkeypatch.chdir(REPO)
    flow = load_flow_from_entrypoint(dep["entrypoint"])
    params = dict(dep.get("parameters") or {})
    schema = flow.parameters.model_dump()
    assert schema["properties"], f"{dep['name']}: no typed parameters for the UI form"
    assert set(params) <= set(schema["properties"]), "prefect.yaml sets parameters the flow does not have"
    required = set(schema.get("required") or [])
    if required <= set(params):
        assert set(params) <= set(flow.validate_parameters(params))
    else:
        # the UI form, CI (--param) or an event trigger supplies the rest: the only complaint allowed
        # is about exactly those missing required fields
        with pytest.raises(ParameterTypeError) as err:
            flow.validate_parameters(params)
        problems = [line for line in str(err.value).splitlines() if line.strip().startswith("- ")]
        assert problems and all("Field required" in line for line in problems), str(err.value)
        missing = {line.strip()[2:].split(":")[0] for line in problems}
        assert missing == required - set(params)
