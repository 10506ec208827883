"""The serving commands bound OpenMP's spin before torch loads, and never over the user's setting."""

import os
import subprocess
import sys

import pytest

from senet.cli.openmp import SERVING_SPINCOUNT, bound_openmp_spin


@pytest.mark.parametrize("command", ["predict", "eval", "tune"])
def test_a_serving_command_bounds_the_spin_before_torch_loads(command):
    env = {}
    assert bound_openmp_spin(command, env, modules={}) and env == {"GOMP_SPINCOUNT": SERVING_SPINCOUNT}


@pytest.mark.parametrize("command,env,modules", [
    ("train", {}, {}),  # training keeps libgomp's own spin
    ("benchmark", {}, {}),  # it times training steps too
    ("predict", {"GOMP_SPINCOUNT": "300000"}, {}),  # the user's choice wins
    ("predict", {"OMP_WAIT_POLICY": "ACTIVE"}, {}),
    ("predict", {}, {"torch": object()}),  # too late: libgomp has read its settings
])
def test_nothing_is_set_where_it_must_not_be(command, env, modules):
    before = dict(env)
    assert not bound_openmp_spin(command, env, modules) and env == before


def test_the_cli_sets_it_before_the_command_imports_torch():
    code = ("import os, sys; from senet.cli import main; main(['eval', '/nonexistent-run']); "
            "print(os.environ.get('GOMP_SPINCOUNT'), 'torch' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.stdout.split()[-2:] == [SERVING_SPINCOUNT, "True"], out.stderr
