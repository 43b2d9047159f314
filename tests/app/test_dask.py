"""The ``dask`` executor: a local cluster of 2 worker processes writes the same bytes as the threads executor (and as
llama-quantize, for the golden synthetic runs), survives a worker killed mid-run, and fails in one line, leaving
nothing behind, when the scheduler is lost or no worker is left."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time

import pytest
from golden_e2e import parse_command, quant_cases

import qf
from model_factory import write_model
from paths import GOLDEN_E2E
from qf.errors import QfError

distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.slow

#: one golden llama-quantize run per synthetic architecture (ftype mixes, MoE, MLA, imatrix types)
GOLDEN = [("llama", "Q4_K_M"), ("qwen3moe", "Q3_K_M"), ("glm4moe", "MXFP4_MOE"), ("deepseek2", "Q2_K")]


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@pytest.fixture(scope="module")
def cluster():
    """2 worker processes of 1 thread on localhost, shared by the tests of this module (started once: ~5 s)."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=40) as c, Client(c, set_as_default=False) as client:
        yield c, client


def golden(arch: str, case: str) -> dict:
    manifest = {name: m for name, _folder, m in quant_cases(f"synthetic/{arch}")}.get(case)
    if manifest is None:
        pytest.skip("golden-e2e synthetic data absent (QF_SHARED)")
    return manifest


@pytest.mark.parametrize("arch,case", GOLDEN)
def test_golden_synthetic(cluster, tmp_path, monkeypatch, arch, case):
    """llama-quantize's bytes, on the cluster (a mix per architecture: dense, MoE, MoE + MTP, MLA)."""
    c, _client = cluster
    manifest = golden(arch, case)
    opts, pos = parse_command(manifest["command"])
    monkeypatch.chdir(GOLDEN_E2E / manifest["cwd"])
    out = tmp_path / "out.gguf"
    qf.quantize_file(pos[0], out, pos[2], scheduler=c.scheduler_address, **opts)
    assert sha256(out) == manifest["output_sha256"]


def test_imatrix_experts(cluster, tmp_path, monkeypatch):
    """An imatrix with per-expert rows (deepseek2's MoE): each task ships its expert's row; same bytes as threads."""
    c, _client = cluster
    golden("deepseek2", "Q2_K")
    monkeypatch.chdir(GOLDEN_E2E / "synthetic" / "deepseek2")
    args = ("synthetic-deepseek2-F32.gguf",)
    opts = {"imatrix": "imatrix.gguf", "tensor_types": ["exps=Q4_0"]}
    qf.quantize_file(*args, tmp_path / "threads.gguf", "Q4_0", threads=2, **opts)
    qf.quantize_file(*args, tmp_path / "dask.gguf", "Q4_0", scheduler=c.scheduler_address, **opts)
    assert sha256(tmp_path / "dask.gguf") == sha256(tmp_path / "threads.gguf")


@pytest.mark.parametrize("ftype,options", [
    ("Q4_K_M", {}),
    ("Q3_K_S", {"strategy": "gradient"}),
    ("IQ4_NL", {"tensor_types": ["ffn_down=Q6_K", "attn_v=Q8_0"]}),
])
def test_same_bytes_as_threads(cluster, tmp_path, ftype, options):
    c, _client = cluster
    src = write_model(tmp_path / "in.gguf", dtype="BF16", seed=3)
    qf.quantize_file(src, tmp_path / "threads.gguf", ftype, threads=2, **options)
    qf.quantize_file(src, tmp_path / "dask.gguf", ftype, executor="dask",
                     executor_options=[f"scheduler={c.scheduler_address}"], **options)
    assert sha256(tmp_path / "dask.gguf") == sha256(tmp_path / "threads.gguf")


def test_smollm2(cluster, tmp_path):
    from llama_ref import need_smollm2

    need_smollm2()
    c, _client = cluster
    qf.quantize_file("@smollm2", tmp_path / "threads.gguf", "Q4_0", threads=2, allow_requantize=True)
    qf.quantize_file("@smollm2", tmp_path / "dask.gguf", "Q4_0", scheduler=c.scheduler_address,
                     allow_requantize=True)
    assert sha256(tmp_path / "dask.gguf") == sha256(tmp_path / "threads.gguf")


def test_worker_killed_mid_run(cluster, tmp_path, monkeypatch):
    """SIGKILL a worker process while its units run: the scheduler reruns them on the other worker (the nanny
    restarts the dead one), and the file is the same bytes."""
    c, client = cluster
    manifest = golden("deepseek2", "Q2_K")
    opts, pos = parse_command(manifest["command"])
    monkeypatch.chdir(GOLDEN_E2E / manifest["cwd"])
    pids = client.run(os.getpid)
    killed: dict = {}

    def killer():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "at" not in killed:
            busy = {w: ts for w, ts in client.processing().items() if ts}
            if busy:
                worker = sorted(busy)[0]
                os.kill(pids[worker], signal.SIGKILL)
                killed["at"] = time.monotonic()
                killed["worker"] = worker
                return
            time.sleep(0.05)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    qf.quantize_file(pos[0], tmp_path / "dask.gguf", pos[2], scheduler=c.scheduler_address, **opts)
    done = time.monotonic()
    thread.join()
    assert "at" in killed and killed["at"] < done, "the worker was not killed during the run"
    assert sha256(tmp_path / "dask.gguf") == manifest["output_sha256"]
    client.wait_for_workers(2, timeout=60)  # the nanny brings it back for the next test


def test_no_workers_fails_in_one_line(tmp_path):
    """A scheduler with no worker at all: a QfError after no_worker_timeout, and no output file."""
    from distributed import LocalCluster

    src = write_model(tmp_path / "in.gguf")
    out = tmp_path / "out.gguf"
    with LocalCluster(n_workers=0, processes=False, dashboard_address=None, silence_logs=40) as c:
        with pytest.raises(QfError, match="no workers for 2 s") as info:
            qf.quantize_file(src, out, "Q4_0", executor="dask",
                             executor_options=[f"scheduler={c.scheduler_address}", "no_worker_timeout=2"])
    assert "\n" not in str(info.value) and info.value.exit_code != 0
    assert not out.exists() and list(tmp_path.iterdir()) == [src]


def test_scheduler_lost_fails_in_one_line(tmp_path):
    from distributed import LocalCluster

    src = write_model(tmp_path / "in.gguf")
    out = tmp_path / "out.gguf"
    c = LocalCluster(n_workers=0, processes=False, dashboard_address=None, silence_logs=40)
    timer = threading.Timer(2.0, c.close)
    timer.start()
    try:
        with pytest.raises(QfError, match="scheduler") as info:
            qf.quantize_file(src, out, "Q4_0", executor="dask",
                             executor_options=[f"scheduler={c.scheduler_address}", "connect_timeout=3"])
    finally:
        timer.join()
        c.close()
    assert "\n" not in str(info.value)
    assert not out.exists() and list(tmp_path.iterdir()) == [src]


def test_unreachable_scheduler(tmp_path):
    src = write_model(tmp_path / "in.gguf")
    with pytest.raises(QfError, match="cannot connect"):
        qf.quantize_file(src, tmp_path / "out.gguf", "Q4_0", executor="dask",
                         executor_options=["scheduler=tcp://127.0.0.1:9", "connect_timeout=2"])
    assert not (tmp_path / "out.gguf").exists()


def test_dry_run_describes_the_cluster(cluster, tmp_path, capsys):
    c, _client = cluster
    src = write_model(tmp_path / "in.gguf")
    qf.quantize_file(src, None, "Q4_0", dry_run=True, quiet=False, scheduler=c.scheduler_address)
    err = capsys.readouterr().err
    assert f"dask: scheduler {c.scheduler_address}, 2 worker(s), 2 thread(s)" in err


def test_scheduler_option_needs_dask(tmp_path):
    src = write_model(tmp_path / "in.gguf")
    with pytest.raises(QfError, match="--scheduler is for the dask executor"):
        qf.quantize_file(src, tmp_path / "out.gguf", "Q4_0", executor="threads", scheduler="tcp://127.0.0.1:9")


def test_estimate_header_only_deepseek_v3(tmp_path, capsys):
    """--dry-run --estimate on a header-only DeepSeek-V3 (benchmarks/estimate.py --make-header: a sparse file)."""
    import importlib.util

    from paths import REPO

    spec = importlib.util.spec_from_file_location("bench_estimate", REPO / "benchmarks" / "estimate.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    path = bench.make_header("deepseek-v3", tmp_path / "dsv3.gguf")
    assert path.stat().st_size > 1.3e12 and path.stat().st_blocks * 512 < 16 << 20
    plan = qf.quantize_file(path, None, "Q4_K_M", dry_run=True, estimate=True, quiet=False)
    err = capsys.readouterr().err
    assert len(plan.entries) == 1086 and 671e9 < plan.n_elements < 672e9
    assert "blk.*.ffn_up_exps.weight" in err and "total:" in err
    for n in (1, 8, 64):
        assert f"{n:3d} worker(s) x" in err
