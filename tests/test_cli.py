import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e  # the installed command line in fresh processes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "run_search.py"), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_arch_show_preset_and_json(tmp_path):
    r = run("arch", "show", "XS")
    assert r.returncode == 0, r.stderr
    assert "3,475,360" in r.stdout and "0.605" in r.stdout
    p = tmp_path / "spec.json"
    p.write_text(json.dumps({"depths": [2, 2, 4, 3], "widths": [32, 64, 128, 192],
                             "mlp_ratios": [3, 3, 4, 2], "attn_blocks": [0, 1, 2, 3]}))
    r = run("arch", "show", str(p))
    assert r.returncode == 0, r.stderr
    assert "total params" in r.stdout


def test_arch_show_bad_spec_one_line_error(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text(json.dumps({"depths": [2, 2, 4], "widths": [32, 64, 128, 192],
                             "mlp_ratios": [3, 3, 4, 2], "attn_blocks": [0, 1, 2, 3]}))
    r = run("arch", "show", str(p))
    assert r.returncode == 2 and r.stdout == ""  # the error goes to stderr, nothing else
    assert r.stderr == (f"error: spec file {p}: depths=[2, 2, 4]: need exactly 4 values "
                        "(one per stage)\n")


def test_space_describe():
    r = run("space", "describe")
    assert r.returncode == 0, r.stderr
    assert "XS=yes, S=yes, L1=yes, L3=yes" in r.stdout and "size:" in r.stdout
