import json
import subprocess
import sys
import zipfile
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from elimity_scim.connector.contract import ENTRY_POINT_GROUP, load_source
from elimity_scim.source import ScimSource

ROOT = Path(__file__).resolve().parents[1]


def test_entry_point_finds_the_scim_source() -> None:
    names = [e.name for e in entry_points(group=ENTRY_POINT_GROUP)]
    assert "scim" in names
    assert isinstance(load_source("scim"), ScimSource)


def test_manifest_declares_exactly_the_three_admin_options() -> None:
    manifest = json.loads((ROOT / "manifest.json").read_text())
    assert (manifest["id"], manifest["name"]) == ("scim", "SCIM")
    options = {
        o["key"]: (o["name"], o["type"], o["optional"])
        for o in manifest["configuration"]
    }
    assert options == {
        "baseUrl": ("Base URL", "string", False),
        "username": ("Username", "string", True),
        "password": ("Password", "secret", False),
    }
    assert all(s["optional"] and "default" in s for s in manifest["settings"])


@pytest.mark.slow
def test_built_wheel_ships_the_same_manifest_and_data_model(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("elimity_scim-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        shipped = json.loads(archive.read("elimity_scim/manifest.json"))
        model = json.loads(archive.read("elimity_scim/data_model.json"))
        entry_points_txt = next(n for n in names if n.endswith("entry_points.txt"))
        entry_text = archive.read(entry_points_txt).decode()
    assert shipped == json.loads((ROOT / "manifest.json").read_text())
    assert model == ScimSource().data_model()
    assert "elimity-connector = elimity_scim.connector.cli:main" in entry_text
    assert "scim = elimity_scim.source:ScimSource" in entry_text
    assert "elimity_scim/py.typed" in names
    assert not any(n.startswith("tests/") for n in names)
