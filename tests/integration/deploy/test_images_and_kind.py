"""The Docker and kind path, as far as this machine (no Docker engine) can run it: the images'
install steps run for real into a scratch environment, the kind config and the checks of
kind/up.sh. The images themselves are built only where Docker is (make images)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]


def dockerfile_syncs(path: Path) -> list[list[str]]:
    """The `uv sync` commands of a Dockerfile, as argv lists."""
    text = path.read_text().replace("\\\n", " ")
    return [line.split()[1:] for line in text.splitlines() if line.startswith("RUN uv sync")]


@pytest.mark.parametrize(
    ("dockerfile", "imports"),
    [
        ("operator/Dockerfile", "import pipeorch.cli, pipeorch.netem.agent, kubernetes"),
        ("worker/Dockerfile", "import pipeorch_worker.main, sklearn"),
    ],
)
def test_an_image_s_install_steps_give_a_working_environment(dockerfile, imports, tmp_path):
    """Run the Dockerfile's own `uv sync` lines into a fresh environment, as its build does."""
    syncs = dockerfile_syncs(ROOT / dockerfile)
    assert len(syncs) == 2  # dependencies first (cached layer), then the project
    env = {
        **os.environ,
        "UV_PROJECT_ENVIRONMENT": str(tmp_path / "venv"),
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_LINK_MODE": "copy",
    }
    env.pop("VIRTUAL_ENV", None)
    for argv in syncs:
        subprocess.run(["uv", *argv[1:]], cwd=ROOT, env=env, check=True, capture_output=True)
    python = tmp_path / "venv" / "bin" / "python"
    subprocess.run([str(python), "-c", imports], check=True, cwd=tmp_path)
    if dockerfile.startswith("operator"):
        dev_only = subprocess.run([str(python), "-c", "import pytest"], cwd=tmp_path)
        assert dev_only.returncode != 0, "the image must not carry the dev tools"
    help_ = subprocess.run(
        [str(tmp_path / "venv" / "bin" / "pipeorch"), "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "controlplane" in help_.stdout


def test_the_images_run_as_a_non_root_user():
    for dockerfile in ("operator/Dockerfile", "worker/Dockerfile"):
        text = (ROOT / dockerfile).read_text()
        users = re.findall(r"^USER (\S+)", text, flags=re.MULTILINE)
        assert users == ["10001:10001"], dockerfile
        assert text.count("FROM ") == 2, f"{dockerfile}: build and runtime stages"


def test_the_kind_cluster_has_one_node_per_region_pool():
    config = yaml.safe_load((ROOT / "kind" / "cluster.yaml").read_text())
    roles = [n["role"] for n in config["nodes"]]
    assert roles == ["control-plane", "worker", "worker", "worker"]
    regions = [n["labels"] for n in config["nodes"][1:]]
    assert regions == [
        {"topology.kubernetes.io/region": r, "pipeorch.dev/region": r}
        for r in ("aws", "gcp", "azure")
    ]


def test_kind_up_says_what_is_missing_and_how_to_get_it(tmp_path):
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for tool in ("bash", "dirname", "grep"):
        (bin_ / tool).symlink_to(shutil.which(tool) or f"/usr/bin/{tool}")
    done = subprocess.run(
        ["bash", str(ROOT / "kind" / "up.sh"), "up"],
        env={"PATH": str(bin_)},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 127
    assert "'docker' is not installed" in done.stderr
    assert "docs.docker.com" in done.stderr
