"""The remote runner against a real sshd on loopback (Debian's openssh-server), started by the test."""
from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import tiny_model
from search import families
from search.backends.onnxruntime import OnnxRuntime
from search.candidate import QuantParams
from search.errors import ConfigError
from search.measure.latency import Runner
from search.target import load_target

ORT = OnnxRuntime()
SSHD = "/usr/sbin/sshd"
if not os.path.exists(SSHD):
    pytestmark = pytest.mark.skipif(os.environ.get("SEARCH_REQUIRE_SSHD") != "1",
                                    reason="openssh-server not installed (make setup installs it as root)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    d = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
    shutil.copy(d / "client_key.pub", d / "authorized_keys")
    port = _free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\nAuthorizedKeysFile {d / 'authorized_keys'}\n"
        f"PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
        f"StrictModes no\nUsePAM no\nPidFile {d / 'sshd.pid'}\n")
    Path("/run/sshd").mkdir(exist_ok=True)  # privilege-separation directory sshd insists on
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stderr=subprocess.PIPE)
    for _ in range(100):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    command = (f"ssh -p {port} -i {d / 'client_key'} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
               f"-o BatchMode=yes -o LogLevel=ERROR {getpass.getuser()}@127.0.0.1")
    yield command, d
    proc.terminate()
    proc.wait(timeout=10)


def test_measures_on_the_device_through_ssh(sshd, tmp_path):
    command, d = sshd
    model = tiny_model()
    artifact = ORT.build(model, QuantParams(8, None, "dynamic_int8"), tmp_path / "a")
    workdir = d / "remote"
    lat = ORT.measure_latency(artifact, families.of(model).shape_of(model), 1, 16, 1, rounds=2, runs_per_round=10,
                              runner=Runner(command=command, python=sys.executable, workdir=str(workdir)))
    assert lat.source == "measured" and lat.p50_ms > 0 and lat.p99_ms >= lat.p50_ms
    assert lat.peak_rss_mb is not None and lat.peak_rss_mb > 0
    assert command in lat.detail
    # the artifact really went over the connection, byte for byte: the remote probe hashes what it loaded
    # (from_probe refuses a checksum that differs); each measurement had a folder of its own, removed after
    assert workdir.is_dir() and list(workdir.iterdir()) == []


def test_a_changed_file_on_the_device_is_caught(sshd, tmp_path, monkeypatch):
    from search.errors import CandidateError
    from search.measure import latency

    command, d = sshd
    model = tiny_model()
    artifact = ORT.build(model, QuantParams(32), tmp_path / "a")
    real = latency.run_probe

    def tampered(probe, path, args, runner=None):  # the device runs a different file than was sent
        answer, where = real(probe, path, args, runner)
        return {**answer, "model_sha256": "0" * 64}, where

    monkeypatch.setattr("search.backends.onnxruntime.run_probe", tampered)
    with pytest.raises(CandidateError, match="measured another file"):
        ORT.measure_latency(artifact, families.of(model).shape_of(model), 1, 16, 1, rounds=1, runs_per_round=2,
                            runner=Runner(command=command, python=sys.executable, workdir=str(d / "remote2")))


def test_unreachable_device_is_a_candidate_error(sshd, tmp_path):
    from search.errors import CandidateError

    command, _ = sshd
    model = tiny_model()
    artifact = ORT.build(model, QuantParams(32), tmp_path / "a")
    bad = command.replace("-p ", "-p 1").rsplit(" ", 1)[0] + " nobody@127.0.0.1"
    with pytest.raises(CandidateError, match="runner .* failed"):
        ORT.measure_latency(artifact, families.of(model).shape_of(model), 1, 16, 1, rounds=1, runs_per_round=2,
                            runner=Runner(command=bad))


def test_target_runner_keys(tmp_path):
    good = tmp_path / "t.yaml"
    good.write_text("device:\n  latency: measured\n  memory_mb: 8000\n  runner:\n    command: ssh pi@pi5\n"
                    "    python: /opt/venv/bin/python\nworkload: {batch_size: 1, sequence_length: 64}\n"
                    "budget: {memory_mb: 30, p99_latency_ms: 20, accuracy_floor: {max_drop: 0.01}}\n")
    assert load_target(str(good)).device.runner == Runner("ssh pi@pi5", "/opt/venv/bin/python")
    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text().replace("latency: measured", "latency: estimated\n  memory_bandwidth_gbps: 17\n"
                                                                "  peak_tops: {fp32: 0.15}"))
    with pytest.raises(ConfigError, match="device.runner: a runner measures on the device"):
        load_target(str(bad))
