"""execution-environment.yml builds a context with ansible-builder (no container engine needed),
and the collection it installs declares its Python needs (meta/execution-environment.yml)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _run(args, **kwargs):
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False, **kwargs)
    assert proc.returncode == 0, "%s failed:\n%s\n%s" % (args[:3], proc.stdout[-4000:], proc.stderr[-4000:])
    return proc


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The collection tarball, built where execution-environment.yml expects it, in a scratch copy."""
    work = tmp_path_factory.mktemp("ee")
    version = yaml.safe_load((ROOT / "galaxy.yml").read_text())["version"]
    dist = work / ".tmp" / "dist"
    _run([str(BIN / "ansible-galaxy"), "collection", "build", "--force", "--output-path", str(dist), str(ROOT)])
    shutil.copy(ROOT / "execution-environment.yml", work / "execution-environment.yml")
    return work, version, dist / ("entra-pim-%s.tar.gz" % version)


def test_ee_file_names_the_collection_version_galaxy_builds(built):
    work, version, tarball = built
    ee = yaml.safe_load((work / "execution-environment.yml").read_text())
    assert ee["version"] == 3
    assert tarball.is_file()
    sources = [f["src"] for f in ee["additional_build_files"]]
    assert sources == [".tmp/dist/entra-pim-%s.tar.gz" % version]
    names = [c["name"] for c in ee["dependencies"]["galaxy"]["collections"]]
    assert names == ["collections/entra-pim-%s.tar.gz" % version]


def test_ansible_builder_create_writes_a_complete_context(built):
    work, version, _tarball = built
    context = work / "context"
    _run(
        [
            str(BIN / "ansible-builder"),
            "create",
            "-f",
            "execution-environment.yml",
            "-c",
            str(context),
            "--output-filename",
            "Containerfile",
        ],
        cwd=work,
    )
    containerfile = (context / "Containerfile").read_text()
    assert 'EE_BASE_IMAGE="quay.io/fedora/python-311:latest"' in containerfile
    assert "ansible-core>=2.17,<2.20" in containerfile
    assert "ansible-runner>=2.4,<3" in containerfile
    # the galaxy stage installs the collection from the file copied into the context
    assert "COPY _build /build" in containerfile
    assert "ansible-galaxy collection install" in containerfile
    assert (context / "_build" / "collections" / ("entra-pim-%s.tar.gz" % version)).is_file()
    requirements = yaml.safe_load((context / "_build" / "requirements.yml").read_text())
    assert requirements == {"collections": [{"name": "collections/entra-pim-%s.tar.gz" % version, "type": "file"}]}
    # the Python dependencies are found by introspecting the installed collection at build time
    assert "introspect.py introspect" in containerfile


def test_installed_collection_declares_only_msal_and_requests(built, tmp_path):
    _work, _version, tarball = built
    target = tmp_path / "collections"
    # --force: the test session's collections path already links this collection
    _run([str(BIN / "ansible-galaxy"), "collection", "install", "--force", "-p", str(target), str(tarball)])
    installed = target / "ansible_collections" / "entra" / "pim"
    for path in ("roles/onboard/meta/argument_specs.yml", "roles/offboard/tasks/main.yml", "playbooks/onboard.yml"):
        assert (installed / path).is_file(), path
    out = _run([str(BIN / "ansible-builder"), "introspect", str(target)]).stdout
    deps = yaml.safe_load(out.split("---", 1)[1])
    assert deps["system"] == []
    assert sorted(line.split("#")[0].strip() for line in deps["python"]) == sorted(
        line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines() if line.strip() and line[0] != "#"
    )
    assert sorted(line.split("#")[0].strip().split(">")[0] for line in deps["python"]) == ["msal", "requests"]
