"""The container and Kubernetes files, checked for structure (no Docker engine runs here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pipeline.stages.builtin import PIPELINE

STAGES = PIPELINE.names

ROOT = Path(__file__).resolve().parents[2]


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def compose() -> dict[str, Any]:
    document = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert isinstance(document, dict)
    return document


def test_every_stage_has_its_own_compose_service() -> None:
    services = compose()["services"]
    for stage in STAGES:
        command = services[stage]["command"]
        assert command[:3] == ["worker", "--stage", stage]
        assert command.count("--stage") == 1  # exactly one stage: it scales on its own
    assert services["reconciler"]["command"] == ["reconciler"]
    assert services["migrate"]["command"] == ["db", "upgrade"]
    assert services["api"]["command"][0] == "api"


def test_every_pipeline_service_uses_the_one_image() -> None:
    services = compose()["services"]
    ours = [name for name in services if name not in ("postgres", "redis")]
    assert {services[name]["image"] for name in ours} == {"pipeline:latest"}
    assert all(services[name]["build"] == "." for name in ours)


def test_healthchecks_volumes_and_dependencies() -> None:
    document = compose()
    services = document["services"]
    for name in ("postgres", "redis", "api"):
        assert services[name]["healthcheck"]["test"]
    assert services["postgres"]["volumes"]
    assert services["redis"]["volumes"]
    assert set(document["volumes"]) == {"postgres-data", "redis-data"}
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["restart"] == "no"
    for name in (*STAGES, "api", "reconciler"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["redis"]["condition"] == "service_healthy"
        assert services[name]["environment"]["DATABASE_URL"].startswith("postgresql://")
    for stage in STAGES:  # time for in-flight stages to finish on SIGTERM
        assert services[stage]["stop_grace_period"] == "40s"


def test_dockerfile_is_multi_stage_non_root_with_uv() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.count("\nFROM ") + dockerfile.startswith("FROM ") >= 2
    assert "uv sync" in dockerfile
    assert "\nUSER pipeline" in dockerfile
    assert 'ENTRYPOINT ["pipeline"]' in dockerfile
    assert "COPY migrations" in dockerfile


def test_kubernetes_has_a_deployment_and_a_scaled_object_per_stage() -> None:
    k8s = ROOT / "deploy" / "k8s"
    kustomization = yaml.safe_load((k8s / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (k8s / resource).is_file(), resource
    deployments = {doc["metadata"]["name"]: doc for doc in load_all(k8s / "workers.yaml")}
    scaled = {
        doc["spec"]["scaleTargetRef"]["name"]: doc
        for doc in load_all(k8s / "keda.yaml")
        if doc["kind"] == "ScaledObject"
    }
    for stage in STAGES:
        deployment = deployments[f"pipeline-{stage}"]
        assert deployment["kind"] == "Deployment"
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["image"] == "pipeline"
        assert container["args"][:3] == ["worker", "--stage", stage]
        trigger = scaled[f"pipeline-{stage}"]["spec"]["triggers"][0]
        assert trigger["type"] == "redis"
        assert trigger["metadata"]["listName"] == f"pipeline:{stage}"
        assert int(trigger["metadata"]["listLength"]) > 0


def test_kubernetes_api_probes_and_reconciler() -> None:
    k8s = ROOT / "deploy" / "k8s"
    api = next(doc for doc in load_all(k8s / "api.yaml") if doc["kind"] == "Deployment")
    container = api["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    (reconciler,) = load_all(k8s / "reconciler.yaml")
    assert reconciler["spec"]["replicas"] == 2  # one sweeps, one stands by
    (job,) = load_all(k8s / "migrate-job.yaml")
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["db", "upgrade"]


def test_deployments_require_api_keys() -> None:
    api = compose()["services"]["api"]["environment"]
    assert api["PIPELINE_AUTH"] == "required"
    assert api["DATABASE_URL"].startswith("postgresql://")  # the shared settings are kept
    documents = load_all(ROOT / "deploy" / "k8s" / "config.yaml")
    config = next(doc for doc in documents if doc["kind"] == "ConfigMap")["data"]
    assert config["PIPELINE_AUTH"] == "required"
    assert config["PIPELINE_METRICS_PUBLIC"] == "false"
