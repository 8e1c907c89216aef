"""The cluster launcher YAMLs and the KubeRay manifest in `cluster/` are valid for the Ray installed here.

Launcher files go through Ray's own checks, offline: its JSON schema (`ray/autoscaler/ray-schema.json`), the
`prepare_config` + `validate_config` steps `ray up` runs before it touches a cloud, and every `ray start` line is
parsed by Ray's own CLI, so a misspelt flag fails here rather than on a freshly billed GPU node.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

CLUSTER_DIR = Path(__file__).resolve().parents[1] / "cluster"
LAUNCHER_FILES = ("aws-gpu.yaml", "gcp-gpu.yaml", "onprem.yaml")
KUBERAY_FILE = "kuberay.yaml"
SIZE_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40, "ki": 2**10, "mi": 2**20, "gi": 2**30}


def _load(name: str) -> dict[str, Any]:
    with open(CLUSTER_DIR / name) as f:
        return yaml.safe_load(f)


def _schema() -> dict[str, Any]:
    import ray.autoscaler

    with open(Path(ray.autoscaler.__file__).parent / "ray-schema.json") as f:
        return json.load(f)


def _size_bytes(text: str) -> int:
    """'80g', '3Gi', '4000000000' -> bytes (docker --shm-size and Kubernetes quantities)."""
    match = re.fullmatch(r"(\d+)\s*([a-zA-Z]*)", str(text).strip().strip("'\""))
    assert match, f"cannot read size {text!r}"
    return int(match.group(1)) * SIZE_UNITS[match.group(2).lower().removesuffix("b")]


def _ray_start_params(command: str) -> dict[str, Any]:
    """Parse the `ray start ...` part of a start command with Ray's own click command (fails on unknown flags)."""
    from ray.scripts.scripts import start

    tail = command.split("ray start", 1)[1]
    args = shlex.split(tail.replace("$RAY_HEAD_IP", "10.0.0.1"))
    return start.make_context("start", args).params


def _start_command(commands: list[str]) -> str:
    found = [c for c in commands if "ray start" in c]
    assert len(found) == 1, f"expected one `ray start` command, got {commands}"
    return found[0]


@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_launcher_yaml_passes_rays_schema_and_validation(name: str) -> None:
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = _load(name)
    jsonschema.validate(config, _schema())
    prepared = prepare_config(copy.deepcopy(config))  # what `ray up` does before any cloud call
    validate_config(prepared)
    assert prepared["head_node_type"] in prepared["available_node_types"]


def test_schema_check_is_real() -> None:
    """The schema rejects a misspelt top-level key, so the test above can fail."""
    import jsonschema

    config = _load("aws-gpu.yaml")
    config["setup_command"] = config.pop("setup_commands")
    with pytest.raises(jsonschema.ValidationError, match="setup_command"):
        jsonschema.validate(config, _schema())


@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_launcher_installs_hexray_and_marks_edits(name: str) -> None:
    config = _load(name)
    text = (CLUSTER_DIR / name).read_text()
    setup = " ".join(config["setup_commands"])
    assert "pip install" in setup and "hexray" in setup, f"{name}: setup_commands must install hexray"
    assert "# EDIT:" in text, f"{name}: no `# EDIT:` markers"
    edit_lines = [line for line in text.splitlines() if "# EDIT" in line]
    assert any("pip install" in line for line in edit_lines), f"{name}: the hexray install line must be EDIT-marked"


@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_start_commands_parse_and_set_object_store(name: str) -> None:
    config = _load(name)
    head = _ray_start_params(_start_command(config["head_start_ray_commands"]))
    worker = _ray_start_params(_start_command(config["worker_start_ray_commands"]))
    assert head["head"] and not worker["head"]
    assert worker["address"] == "10.0.0.1:6379"
    for params in (head, worker):
        assert params["object_store_memory"] and params["object_store_memory"] >= 10**9


def test_unknown_ray_start_flag_is_caught() -> None:
    import click

    with pytest.raises(click.NoSuchOption):
        _ray_start_params("ray start --head --object-store-mem=1")


@pytest.mark.parametrize("name", ("aws-gpu.yaml", "gcp-gpu.yaml"))
def test_cloud_launcher_has_cpu_head_and_autoscaling_gpu_workers(name: str) -> None:
    config = _load(name)
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    gpu_types = [t for n, t in types.items() if n != config["head_node_type"] and t["resources"].get("GPU", 0) > 0]
    assert gpu_types, f"{name}: no GPU worker type"
    for node_type in gpu_types:
        assert node_type["max_workers"] > node_type.get("min_workers", 0), "GPU workers must be able to autoscale"
        assert node_type["resources"]["CPU"] >= 4 * node_type["resources"]["GPU"], "too few CPUs to decode images"


@pytest.mark.parametrize("name", ("aws-gpu.yaml", "gcp-gpu.yaml"))
def test_docker_shm_holds_the_object_store(name: str) -> None:
    """Ray's object store lives in /dev/shm: Docker's default 64 MiB would push it onto disk."""
    config = _load(name)
    docker = config["docker"]
    for role, option_key, commands_key in (
        ("head", "head_run_options", "head_start_ray_commands"),
        ("worker", "worker_run_options", "worker_start_ray_commands"),
    ):
        options = docker.get("run_options", []) + docker.get(option_key, [])
        shm = [o.split("=", 1)[1] for o in options if o.startswith("--shm-size=")]
        assert len(shm) == 1, f"{name}: {role} needs exactly one --shm-size"
        store = _ray_start_params(_start_command(config[commands_key]))["object_store_memory"]
        assert _size_bytes(shm[0]) > store, f"{name}: {role} /dev/shm ({shm[0]}) smaller than its object store"


def test_onprem_uses_local_provider_with_ips() -> None:
    provider = _load("onprem.yaml")["provider"]
    assert provider["type"] == "local"
    assert isinstance(provider["head_ip"], str) and provider["head_ip"]
    assert isinstance(provider["worker_ips"], list) and provider["worker_ips"]


# --- KubeRay ---------------------------------------------------------------------------------------------------


def _container(group: dict[str, Any]) -> dict[str, Any]:
    containers = group["template"]["spec"]["containers"]
    image = containers[0]["image"] if containers else ""
    name, _, tag = image.rpartition(":")
    assert "hexray" in name and tag and tag != "latest", f"pods must run a pinned hexray image, got {image!r}"
    return containers[0]


def test_kuberay_manifest_has_required_fields() -> None:
    manifest = _load(KUBERAY_FILE)
    assert manifest["apiVersion"] == "ray.io/v1"
    assert manifest["kind"] == "RayCluster"
    assert manifest["metadata"]["name"]
    spec = manifest["spec"]
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    _container(head)
    groups = spec["workerGroupSpecs"]
    assert groups
    for group in groups:
        for key in ("groupName", "replicas", "minReplicas", "maxReplicas", "rayStartParams", "template"):
            assert key in group, f"worker group lacks {key}"
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    gpus = [_container(g)["resources"]["limits"].get("nvidia.com/gpu", 0) for g in groups]
    assert any(int(n) > 0 for n in gpus), "no worker group asks for nvidia.com/gpu"


def test_kuberay_start_params_are_strings_and_valid_flags() -> None:
    """KubeRay's rayStartParams is a map of strings; each key must be a real `ray start` flag."""
    spec = _load(KUBERAY_FILE)["spec"]
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        params = group["rayStartParams"]
        assert all(isinstance(v, str) for v in params.values()), f"non-string rayStartParams: {params}"
        args = [f"--{k}={v}" for k, v in params.items()]
        _ray_start_params("ray start " + " ".join(shlex.quote(a) for a in args))


def test_dockerfile_pins_rays_image_and_installs_hexray() -> None:
    text = (CLUSTER_DIR / "Dockerfile").read_text()
    base = re.search(r"^ARG RAY_IMAGE=(\S+)$", text, re.M)
    assert base and base.group(1).startswith(f"rayproject/ray:{_load(KUBERAY_FILE)['spec']['rayVersion']}-")
    assert "FROM ${RAY_IMAGE}" in text and re.search(r"^RUN pip install .*\.", text, re.M)
    assert "COPY" in text and "hexray" in text


def test_kuberay_pods_run_the_hexray_image_and_size_shm() -> None:
    manifest = _load(KUBERAY_FILE)
    assert manifest["metadata"]["annotations"]["ray.io/overwrite-container-cmd"] == "true"
    spec = manifest["spec"]
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        container = _container(group)
        command = " ".join(container.get("command", []) + container.get("args", []))
        assert "pip install" not in command, "hexray comes with the image, not from a branch at pod start"
        assert not any("persistentVolumeClaim" in v for v in group["template"]["spec"]["volumes"]), \
            "storage is object storage: no shared volume"
        assert "$KUBERAY_GEN_RAY_START_CMD" in command, "the generated `ray start` must still run"
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in group["template"]["spec"]["volumes"]}
        shm = [volumes[n] for n, path in mounts.items() if path == "/dev/shm"]
        assert shm and shm[0]["emptyDir"]["medium"] == "Memory"
        store = int(group["rayStartParams"]["object-store-memory"])
        assert _size_bytes(shm[0]["emptyDir"]["sizeLimit"]) > store
        limits = container["resources"]["limits"]
        assert _size_bytes(limits["memory"]) > _size_bytes(shm[0]["emptyDir"]["sizeLimit"])


def test_aws_nodes_boot_the_listed_deep_learning_ami_for_their_region() -> None:
    """Every AWS node type names a real-looking AMI id, the one the file's comment lists for provider.region."""
    text = (CLUSTER_DIR / "aws-gpu.yaml").read_text()
    config = _load("aws-gpu.yaml")
    listed = dict(re.findall(r"#\s+([a-z]{2}-[a-z]+-\d)\s+(ami-[0-9a-f]{17})\s", text))
    assert len(listed) >= 3, "the comment lists recent AMI ids for a few regions"
    image_ids = {name: t["node_config"]["ImageId"] for name, t in config["available_node_types"].items()}
    for name, image_id in image_ids.items():
        assert re.fullmatch(r"ami-[0-9a-f]{17}", image_id), f"{name}: {image_id!r} is not an AMI id"
        assert image_id != "ami-0123456789abcdef0", f"{name}: still the placeholder"
        assert image_id == listed[config["provider"]["region"]], f"{name}: not the listed AMI of provider.region"
