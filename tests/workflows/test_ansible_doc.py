"""ansible-doc renders every module and both roles of the collection cleanly: exit 0, no warning.

This is the documentation check `make docs` falls back to (issue 6): what users read with
`ansible-doc entra.pim.<module>` must render without errors or warnings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MODULES = sorted(p.stem for p in (ROOT / "plugins" / "modules").glob("*.py") if not p.stem.startswith("_"))
ROLES = sorted(p.parent.parent.name for p in (ROOT / "roles").glob("*/meta/argument_specs.yml"))


def _doc(collections_path, *args):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(collections_path), ANSIBLE_NOCOLOR="1")
    return subprocess.run(
        [str(BIN / "ansible-doc"), *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def test_every_module_file_is_found():
    # guards the parametrization below against an empty glob
    assert "pim_role_eligibility" in MODULES
    assert ROLES == ["offboard", "onboard"]


@pytest.mark.parametrize("module", MODULES)
def test_module_doc_renders_cleanly(collections_path, module):
    proc = _doc(collections_path, "-t", "module", "entra.pim." + module)
    assert proc.returncode == 0, proc.stderr
    assert "WARNING" not in proc.stderr.upper(), proc.stderr
    assert "ERROR" not in proc.stderr.upper(), proc.stderr
    text = proc.stdout
    assert text.startswith("> MODULE entra.pim.%s" % module), text[:200]
    for section in ("OPTIONS", "EXAMPLES", "RETURN VALUES", "ATTRIBUTES"):
        assert section in text, "%s: no %s section" % (module, section)


@pytest.mark.parametrize("role", ROLES)
def test_role_argument_spec_renders_cleanly(collections_path, role):
    proc = _doc(collections_path, "-t", "role", "entra.pim." + role)
    assert proc.returncode == 0, proc.stderr
    assert "WARNING" not in proc.stderr.upper(), proc.stderr
    assert "ENTRY POINT: *main*" in proc.stdout
    assert ("%s_principal" % role) in proc.stdout


def test_module_list_names_every_module(collections_path):
    proc = _doc(collections_path, "-t", "module", "-l", "entra.pim")
    assert proc.returncode == 0, proc.stderr
    listed = {line.split()[0] for line in proc.stdout.splitlines() if line.startswith("entra.pim.")}
    assert listed == {"entra.pim." + m for m in MODULES}
