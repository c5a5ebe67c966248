"""model-build knows which Kubernetes Deployment serves it: ``serving`` in the spec and the manifest,
checked as a Kubernetes (DNS-1123) name when the spec is made, before any build work."""

import pytest
from pydantic import ValidationError

from model_build.build import BuildSpec, Serving

BASE = {"source": "m.onnx", "calib": "c.npz", "eval": "e.npz"}


def test_default_serves_nothing():
    spec = BuildSpec(**BASE)
    assert spec.serving == Serving(namespace="inference", deployment="", image="")


@pytest.mark.parametrize("name", ["digits-cnn", "llm-server", "a", "x" * 54])
def test_kubernetes_names_are_accepted(name):
    assert BuildSpec(**BASE, serving={"deployment": name}).serving.deployment == name


@pytest.mark.parametrize("name", ["digits_cnn", "all-MiniLM-L6-v2", "-lead", "trail-", "x" * 55, "a.b", "a b"])
def test_model_names_are_not_kubernetes_names(name):
    with pytest.raises(ValidationError, match="serving.deployment .* is not a Kubernetes name"):
        BuildSpec(**BASE, serving={"deployment": name})


def test_namespace_and_image_are_checked():
    with pytest.raises(ValidationError, match="serving.namespace"):
        BuildSpec(**BASE, serving={"deployment": "d", "namespace": "Inference"})
    with pytest.raises(ValidationError, match="serving.image"):
        BuildSpec(**BASE, serving={"deployment": "d", "image": "registry.local/x:1 --privileged"})
    assert BuildSpec(**BASE, serving={"deployment": "d", "image": "registry.local:5000/x:broken"}).serving.image


def test_descriptions_have_no_angle_brackets():
    for model in (BuildSpec, Serving):
        for name, field in model.model_fields.items():
            assert "<" not in (field.description or "") and ">" not in (field.description or ""), name
