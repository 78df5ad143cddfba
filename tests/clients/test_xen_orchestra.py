"""Xen Orchestra's own XenAPI client (npm `xen-api`, the library XO's server and XO Lite use)
against the real server: connect, objects, events, statistics the XO way, export and import
through getResource/putResource. `make test` installs node and the package."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
XO = ROOT / "tests" / "clients" / "xo"


@pytest.fixture(scope="module")
def seen(tmp_path_factory):
    if not (XO / "node_modules" / "xen-api").is_dir() or shutil.which("node") is None:
        pytest.fail("Xen Orchestra's client is not installed: run `make test` (npm install "
                    "in tests/clients/xo)")
    work = tmp_path_factory.mktemp("xo")
    p = subprocess.run(["unshare", "--net", sys.executable, "-m", "tests.clients.xo_scenario",
                        str(work)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert p.returncode == 0, p.stderr[-4000:]
    facts = json.loads(p.stdout.strip().splitlines()[-1])
    assert "error" not in facts["steps"], facts["steps"]["error"]
    return facts


def test_connects_and_fetches_every_class(seen):
    steps = seen["steps"]
    assert steps["connect"]["status"] == "connected"
    objects = steps["objects"]
    assert objects["host"] == 1 and objects["pool"] == 1 and objects["SR"] >= 1
    assert objects["VM"] >= 2                      # the control domain, templates, the demo VM


def test_a_new_vm_arrives_as_an_event(seen):
    event = seen["steps"]["event"]
    assert event["ref"] == event["expected"] and event["is_a_template"] is True


def test_statistics_poll_the_xo_way_and_finish_their_task(seen):
    stats = seen["steps"]["stats"]
    assert stats["meta_step"] == "5" and stats["columns"] == stats["legend"] > 0
    assert stats["rows"] > 0
    # the task XO made for the poll ended with it (it used to stay pending forever)
    assert seen["tasks"]["Xapi#getResource /rrd_updates"] == "success"


def test_export_and_import_through_get_and_put_resource(seen):
    transfer = seen["steps"]["transfer"]
    assert transfer["bytes"] > 0 and len(seen["imported"]) == 1
    assert seen["imported_name"] == "demo"
    assert seen["disks_imported"] == seen["disks_source"] and seen["disks_source"]
    assert not [name for name, status in seen["tasks"].items()
                if name.startswith("Xapi#putResource") and status != "success"]


def test_incremental_backup_the_xo_way(seen):
    """Snapshot, a full VHD export restored with format=vhd, 16 MiB changed, a second snapshot,
    a delta (`base=` the first snapshot's VDI) restored over it: the restored VDI equals the
    second snapshot, and the delta carried only the changed blocks."""
    inc = seen["incremental"]
    assert "error" not in inc.get("full", {}) and "error" not in inc.get("delta", {}), inc
    assert inc["is_a_snapshot"] and inc["snapshot_of"]
    assert inc["first_differs"] and inc["restored_equals_second"]
    block = 2 * 2**20 + 512
    assert inc["full"]["bytes"] < 3 * block            # the 3 MiB written: 2 blocks, no holes
    assert 8 * block <= inc["delta"]["bytes"] < 9 * block + 4096    # 16 MiB: 8 blocks
