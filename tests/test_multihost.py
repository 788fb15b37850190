"""A real 2-process (multi-host) run on CPU with gloo equals the single-process run."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
from toy import linear_apply, linear_env

from jaxinv.attacks import mi_face
from jaxinv.core.driver import run_chains

HERE = Path(__file__).parent


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one(tmp_path):
    port = _free_port()
    flags = os.environ["XLA_FLAGS"].replace("device_count=8", "device_count=4")  # same level
    env = dict(os.environ, XLA_FLAGS=flags)
    jobs = [subprocess.Popen([sys.executable, str(HERE / "multihost_job.py"), str(port), str(i),
                              str(tmp_path / f"p{i}.npz"), str(tmp_path / "ckpt")],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            for i in range(2)]
    for job in jobs:
        out, _ = job.communicate(timeout=300)
        assert job.returncode == 0, out.decode()[-3000:]
    attack = mi_face(linear_apply, (8, 8, 1), loss="neg_log_p", init="random", lr=0.5, beta=1000)
    ref = run_chains(attack, np.arange(10), linear_env(), chains=8, steps=30, segment=10,
                     chunk=2, progress=False)
    for i in range(2):
        got = np.load(tmp_path / f"p{i}.npz")
        assert got["devices"] == 8
        np.testing.assert_array_equal(got["best_x"], ref.best_x)
        np.testing.assert_array_equal(got["info_loss"], ref.info.loss)
    assert sorted(p.name for p in (tmp_path / "ckpt" / "ckpt").iterdir()) == ["10", "20", "30"]
