"""Static checks of deploy/: Dockerfile, docker-compose.yml and the Kubernetes manifests.

No Docker engine or Kubernetes runs here, so these read the files: required fields, the node's
command lines resolved by the real ``raftcache serve`` option handling, ports that agree with
each other, probes on /v1/health, non-root users, tokens from an env file or a Secret.
"""

from __future__ import annotations

import fnmatch
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from raftcache.process.config import OPTIONS
from raftcache.process.memlimit import default_max_bytes

from .manifests import (
    DEPLOY,
    K8S,
    ROOT,
    dockerfile_instructions,
    exec_form,
    expand_k8s_vars,
    k8s_objects,
    load_yaml_documents,
    one,
    parse_env_file,
    serve_options,
)

ENV_NAMES = {"RAFTCACHE_" + opt.name.removesuffix("_s").upper() for opt in OPTIONS}
LABELS = {"app.kubernetes.io/name": "raftcache"}


@pytest.fixture(scope="module")
def serve_help() -> str:
    """``raftcache serve --help`` of the installed console script's module."""
    done = subprocess.run(
        [sys.executable, "-m", "raftcache", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def flags_of(argv: list[str]) -> list[str]:
    return [arg.split("=", 1)[0] for arg in argv if arg.startswith("--")]


# ---- Dockerfile ----


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM"]
    assert len(starts) >= 2, "expected a build stage and a runtime stage"
    return instructions[starts[-1] :]


def image_env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in stage:
        if keyword == "ENV":
            for item in rest.split():
                key, _, value = item.partition("=")
                env[key] = value
    return env


def test_dockerfile_runtime_stage_is_small_non_root_and_healthchecked() -> None:
    stage = final_stage(dockerfile_instructions(DEPLOY / "Dockerfile"))
    keywords = [keyword for keyword, _ in stage]
    assert stage[0][1].startswith("python:${PYTHON_VERSION}-slim")
    (user,) = [rest for keyword, rest in stage if keyword == "USER"]
    uid = user.split(":")[0]
    assert uid.isdigit()
    assert int(uid) != 0  # numeric, so runAsNonRoot can verify it
    assert keywords.index("USER") < keywords.index("ENTRYPOINT")
    (health,) = [rest for keyword, rest in stage if keyword == "HEALTHCHECK"]
    options, _, command = health.partition("CMD ")
    assert "--interval=" in options
    assert "--timeout=" in options
    assert exec_form(command) == ["python", "/usr/local/bin/raftcache-healthcheck"]
    copies = [rest.split() for keyword, rest in stage if keyword == "COPY"]
    assert ["deploy/healthcheck.py", "/usr/local/bin/raftcache-healthcheck"] in copies
    (entrypoint,) = [rest for keyword, rest in stage if keyword == "ENTRYPOINT"]
    (cmd,) = [rest for keyword, rest in stage if keyword == "CMD"]
    assert exec_form(entrypoint) + exec_form(cmd) == ["raftcache", "serve"]
    assert "STOPSIGNAL" in keywords


def test_dockerfile_defaults_start_a_node_on_the_exposed_port() -> None:
    stage = final_stage(dockerfile_instructions(DEPLOY / "Dockerfile"))
    env = image_env(stage)
    for name in env:
        if name.startswith("RAFTCACHE_"):
            assert name in ENV_NAMES, f"{name} is not a raftcache serve option"
    (expose,) = [rest for keyword, rest in stage if keyword == "EXPOSE"]
    listen_port = env["RAFTCACHE_LISTEN"].rpartition(":")[2]
    assert expose == listen_port
    (volume,) = [rest for keyword, rest in stage if keyword == "VOLUME"]
    assert exec_form(volume) == [env["RAFTCACHE_DATA_DIR"]]
    # With only an id and peers added, the image's defaults make a valid node.
    options = serve_options(
        ["serve", "--id", "n1", "--peers", f"n1=http://n1:{listen_port}"],
        {k: v for k, v in env.items() if k.startswith("RAFTCACHE_")},
    )
    assert (options.host, options.port) == ("0.0.0.0", int(listen_port))
    assert options.data_dir == Path(env["RAFTCACHE_DATA_DIR"])


def test_dockerfile_copies_only_what_exists_and_is_not_ignored() -> None:
    patterns = [
        line.strip()
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        # Docker's rule: the last matching pattern wins; "!" re-includes.
        verdict = False
        for pattern in patterns:
            negate = pattern.startswith("!")
            bare = pattern.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, bare) or path.startswith(bare + "/"):
                verdict = not negate
        return verdict

    for keyword, rest in dockerfile_instructions(DEPLOY / "Dockerfile"):
        if keyword != "COPY" or rest.startswith("--from"):
            continue
        *sources, _target = rest.split()
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
            assert not ignored(source), f"COPY {source}: excluded by Dockerfile.dockerignore"
    for unwanted in (".venv", ".git", "data", "tests"):
        assert ignored(unwanted), f"{unwanted} would be sent to the Docker build"


# ---- docker compose ----


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    (document,) = load_yaml_documents(DEPLOY / "docker-compose.yml")
    return document


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    """The service's environment: env_file (the committed example stands in) + environment."""
    env: dict[str, str] = {}
    for entry in service["env_file"]:
        assert entry["path"] == "./raftcache.env"
        assert entry["required"] is True
        env.update(parse_env_file(DEPLOY / "raftcache.env.example"))
    env.update({k: str(v) for k, v in service["environment"].items()})
    return env


def test_compose_runs_three_valid_nodes_that_find_each_other(
    compose: dict[str, Any], serve_help: str
) -> None:
    services = compose["services"]
    assert sorted(services) == ["n1", "n2", "n3"]
    published: set[str] = set()
    for name, service in services.items():
        assert service["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
        argv = service["command"]
        for flag in flags_of(argv):
            assert flag in serve_help, f"{name}: {flag} is not a raftcache serve option"
        env = compose_env(service)
        options = serve_options(argv, env)
        assert options.id == name
        assert sorted(options.peers) == sorted(services)
        for peer_id, url in options.peers.items():
            parts = urlsplit(url)
            assert parts.hostname == services[peer_id]["hostname"] == peer_id
            assert parts.port == options.port  # every node listens on the same port
        assert options.cluster_token is not None
        assert options.client_token is not None
        http_map, resp_map = service["ports"]
        for port_map, port in ((http_map, options.port), (resp_map, options.resp_port)):
            host_ip, host_port, container_port = port_map.split(":")
            assert host_ip == "127.0.0.1"  # published on loopback only
            assert int(container_port) == port
            published.add(host_port)
        (volume,) = service["volumes"]
        volume_name, _, mount = volume.partition(":")
        assert volume_name in compose["volumes"]  # a named volume, not a bind mount
        assert Path(mount) == options.data_dir
        assert service["stop_grace_period"] == "30s"
        # A memory limit, the same on every node: each derives the same --max-bytes from it.
        assert service["mem_limit"] == "1g"
        assert options.max_bytes is None
    assert published == {"8001", "8002", "8003", "6379", "6380", "6381"}


def test_compose_tokens_come_only_from_the_env_file(compose: dict[str, Any]) -> None:
    example = parse_env_file(DEPLOY / "raftcache.env.example")
    assert set(example) == {"RAFTCACHE_CLUSTER_TOKEN", "RAFTCACHE_CLIENT_TOKEN"}
    text = (DEPLOY / "docker-compose.yml").read_text()
    for name in example:
        assert name not in text  # no token value written in the compose file
    for service in compose["services"].values():
        assert not any("TOKEN" in key for key in service["environment"])
    assert "raftcache.env" in (DEPLOY / ".gitignore").read_text().split()


# ---- Kubernetes ----


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return k8s_objects()


def container_of(statefulset: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = statefulset["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def test_k8s_headless_service_publishes_unready_pods(objects: list[dict[str, Any]]) -> None:
    statefulset = one(objects, "StatefulSet")
    headless = one(objects, "Service", statefulset["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    client = one(objects, "Service", "raftcache-client")
    assert client["spec"].get("publishNotReadyAddresses") is not True  # ready pods only
    container_ports = {p["name"]: p["containerPort"] for p in container_of(statefulset)["ports"]}
    for service in (headless, client):
        assert service["spec"]["selector"] == LABELS
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in container_ports


def test_k8s_statefulset_required_fields(objects: list[dict[str, Any]]) -> None:
    statefulset = one(objects, "StatefulSet")
    spec = statefulset["spec"]
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["replicas"] == 3
    assert spec["selector"]["matchLabels"] == LABELS
    assert spec["template"]["metadata"]["labels"] == LABELS
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["terminationGracePeriodSeconds"] > 10  # above the node's shutdown timeout
    container = container_of(statefulset)
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    resources = container["resources"]
    assert resources["requests"]["cpu"]
    assert resources["requests"]["memory"]
    assert resources["limits"]["memory"]
    readiness = container["readinessProbe"]["httpGet"]
    assert readiness["path"] == "/v1/health"
    assert readiness["port"] in {p["name"] for p in container["ports"]}
    assert "httpGet" not in container.get("livenessProbe", {})  # see the manifest's comment
    # A node replaying a long log must not be killed by liveness before it listens.
    startup = container["startupProbe"]
    assert startup["tcpSocket"]["port"] == "http"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert claim["metadata"]["name"] in mounts


@pytest.mark.parametrize("ordinal", [0, 1, 2])
def test_k8s_pods_resolve_to_valid_nodes_with_stable_dns_peers(
    objects: list[dict[str, Any]], serve_help: str, ordinal: int
) -> None:
    statefulset = one(objects, "StatefulSet")
    container = container_of(statefulset)
    namespace = "cache-prod"
    pod_name = f"raftcache-{ordinal}"
    field_values = {"metadata.name": pod_name, "metadata.namespace": namespace}
    secret = one(objects, "Secret", "raftcache-tokens")
    env: dict[str, str] = {}
    for var in container["env"]:
        if "value" in var:
            env[var["name"]] = str(var["value"])
        elif "fieldRef" in var["valueFrom"]:
            env[var["name"]] = field_values[var["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            assert ref["name"] == secret["metadata"]["name"]
            env[var["name"]] = secret["stringData"][ref["key"]]
    argv = [expand_k8s_vars(arg, env) for arg in container["args"]]
    for flag in flags_of(argv):
        assert flag in serve_help, f"{flag} is not a raftcache serve option"
    options = serve_options(argv, {k: v for k, v in env.items() if k.startswith("RAFTCACHE_")})
    assert options.id == pod_name
    replicas = statefulset["spec"]["replicas"]
    service = statefulset["spec"]["serviceName"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert options.port == ports["http"]
    assert options.resp_port == ports["resp"]
    # The cache bound is set for every pod at once, a quarter of the memory limit (what a
    # node would derive from its cgroup limit: replicas must share one bound).
    limit = parse_quantity(container["resources"]["limits"]["memory"])
    assert options.max_bytes == default_max_bytes(limit)
    assert options.peers == {
        f"raftcache-{i}": (
            f"http://raftcache-{i}.{service}.{namespace}.svc.cluster.local:{options.port}"
        )
        for i in range(replicas)
    }
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert Path(mounts["data"]) == options.data_dir
    assert options.cluster_token is not None
    assert options.client_token is not None


def test_k8s_services_publish_the_http_and_resp_ports(objects: list[dict[str, Any]]) -> None:
    for name in ("raftcache", "raftcache-client"):
        service = one(objects, "Service", name)
        ports = {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]}
        assert ports == {"http": (8001, "http"), "resp": (6379, "resp")}


def test_license_file_matches_the_package_license() -> None:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"
    text = (ROOT / "LICENSE").read_text()
    assert text.splitlines()[0] == "MIT License"
    assert "Permission is hereby granted, free of charge" in text
    copies = [r.split() for k, r in dockerfile_instructions(DEPLOY / "Dockerfile") if k == "COPY"]
    assert any("LICENSE" in sources for sources in copies)  # the wheel in the image carries it


def parse_quantity(text: str) -> int:
    """A Kubernetes memory quantity (``1Gi``, ``512Mi``, ``1G``) in bytes."""
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "K": 10**3, "M": 10**6, "G": 10**9}
    for suffix, factor in units.items():
        if text.endswith(suffix) and text[: -len(suffix)].isdigit():
            return int(text[: -len(suffix)]) * factor
    return int(text)


def test_k8s_disruption_budget_keeps_a_quorum(objects: list[dict[str, Any]]) -> None:
    budget = one(objects, "PodDisruptionBudget")
    assert budget["apiVersion"] == "policy/v1"
    assert budget["spec"]["selector"]["matchLabels"] == LABELS
    replicas = one(objects, "StatefulSet")["spec"]["replicas"]
    if "maxUnavailable" in budget["spec"]:
        down = budget["spec"]["maxUnavailable"]
    else:
        down = replicas - budget["spec"]["minAvailable"]
    assert replicas - down > replicas // 2


def test_k8s_kustomization_lists_the_manifests_but_not_the_placeholder_secret() -> None:
    (kustomization,) = load_yaml_documents(K8S / "kustomization.yaml")
    resources = kustomization["resources"]
    for name in resources:
        assert (K8S / name).exists()
    assert "secret.yaml" not in resources
    others = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.yaml"}
    assert set(resources) == others


def test_k8s_every_object_has_the_basics(objects: list[dict[str, Any]]) -> None:
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == ["PodDisruptionBudget", "Secret", "Service", "Service", "StatefulSet"]
    for obj in objects:
        assert obj["apiVersion"]
        assert obj["metadata"]["name"]
        assert obj["metadata"]["labels"] == LABELS
        assert "namespace" not in obj["metadata"]  # applied to whichever namespace is chosen


# ---- systemd ----


def test_systemd_unit_starts_a_valid_node_from_its_env_files(serve_help: str) -> None:
    unit = (DEPLOY / "systemd" / "raftcache@.service").read_text()
    lines = [line.strip() for line in unit.splitlines() if "=" in line and line[:1] != "#"]
    settings: dict[str, list[str]] = {}
    for line in lines:
        key, _, value = line.partition("=")
        settings.setdefault(key, []).append(value)
    assert settings["User"] != ["root"]
    assert settings["KillSignal"] == ["SIGTERM"]
    instance = "n1"
    env: dict[str, str] = {}
    for path in settings["EnvironmentFile"]:
        example = DEPLOY / "systemd" / (Path(path).name.replace("%i", instance) + ".example")
        env.update(parse_env_file(example))
    for assignment in settings["Environment"]:
        key, _, value = assignment.partition("=")
        env[key] = value.replace("%i", instance)
    (exec_start,) = settings["ExecStart"]
    argv = exec_start.replace("%i", instance).split()
    assert argv[0].endswith("/raftcache")
    for flag in flags_of(argv):
        assert flag in serve_help
    options = serve_options(argv[1:], env)
    assert options.id == instance
    assert f"{options.host}:{options.port}" == urlsplit(options.peers[instance]).netloc
    (state_dir,) = settings["StateDirectory"]
    assert options.data_dir == Path("/var/lib") / state_dir.replace("%i", instance)
    assert options.cluster_token is not None


# ---- the package's dependencies: every install is the fast one ----


def test_httptools_and_uvloop_are_ordinary_dependencies() -> None:
    # So the Dockerfile (`pip install .`), the systemd install and a plain `pip install
    # raftcache` all get the lean front and uvloop; the `speed` extra stays for old lines.
    requirement = pytest.importorskip("packaging.requirements").Requirement
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = {req.name: req for req in map(requirement, project["dependencies"])}
    assert deps["httptools"].marker is None  # wheels for every platform CPython runs on
    uvloop = deps["uvloop"].marker
    assert uvloop is not None
    linux = {"sys_platform": "linux", "platform_python_implementation": "CPython"}
    assert uvloop.evaluate(linux)
    assert uvloop.evaluate({**linux, "sys_platform": "darwin"})
    assert not uvloop.evaluate({**linux, "sys_platform": "win32"})  # no uvloop on Windows
    assert not uvloop.evaluate({**linux, "platform_python_implementation": "PyPy"})
    assert "speed" in project["optional-dependencies"]
    # The image installs the project itself, no extra: the dependencies above come with it.
    instructions = dockerfile_instructions(DEPLOY / "Dockerfile")
    installs = [r for k, r in instructions if k == "RUN" and "pip install" in r]
    assert [r.split()[-1] for r in installs] == ["."], installs
