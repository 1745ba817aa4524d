"""The GPU slice (.ci/gpu-slice) and its packer (.ci/gpu_pack.py), in copies without .git.

* The packer selects what the slice wrote by a stamp file (no git), packs whole result folders,
  results before weights, and never exceeds the return limits (files, part size, total); what it
  packs unpacks to the same bytes.
* The slice's stages run in order (smoke -> probe -> experiments -> pack), each command in its own
  guard: a failure (smoke or real run) is reported with its traceback in failures.txt and the
  other experiments still run, each at most once per stage, in the order given.  The stages'
  commands are stood in for by a fake interpreter (seconds); the real commands at micro size are
  rehearsed by hand (CONTRIBUTING.md, "A GPU slice, from zero to committed").
"""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / ".ci"))
import gpu_pack  # noqa: E402


def _result(root: Path, exp: str, h: str, sizes: dict[str, int], seed: int = 0) -> Path:
    folder = root / "results" / exp / "gpu" / h
    rng = __import__("random").Random(seed)
    for rel, n in sizes.items():
        p = folder / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(rng.randbytes(n))
    return folder


def test_pack_selects_by_stamp_and_respects_limits(tmp_path):
    root, out = tmp_path / "repo", tmp_path / "out"
    old = _result(root, "e3", "old", {"metrics.json": 100, "arrays.npz": 1000})
    past = time.time() - 100
    for p in old.rglob("*"):
        os.utime(p, (past, past))
    stamp = tmp_path / "stamp"
    stamp.touch()
    os.utime(stamp, (past + 50, past + 50))
    assert not (root / ".git").exists()
    _result(root, "e2", "h2", {"metrics.json": 200, "arrays.npz": 30_000, "weights/net.safetensors": 50_000}, 1)
    _result(root, "e1", "h1", {"metrics.json": 200, "arrays.npz": 40_000, "weights/a.safetensors": 90_000,
                               "weights/b.safetensors": 90_000, ".tmp-x/junk": 10}, 2)
    out.mkdir()
    (out / "log.txt").write_text("x" * 1000)
    state = gpu_pack.pack(root, stamp, out, ["e2", "e1"], max_files=6, part_bytes=30_000, max_bytes=200_000,
                          log=lambda s: None)
    files = sorted(p.name for p in out.iterdir())
    sizes = [p.stat().st_size for p in out.iterdir()]
    assert len(files) <= 6 and max(sizes) <= 30_000 and sum(sizes) <= 200_000
    assert any(f.startswith("results.tgz.") for f in files)  # the results came back first, whole
    assert "weights-e2.tgz.0" in files and not any(f.startswith("weights-e1") for f in files)
    assert any("weights-e1" in s for s in state["left_out"])
    # unpack into a fresh tree: the new results, byte for byte, without the old one or temp files
    fresh = tmp_path / "fresh"
    gpu_pack.unpack(out, fresh, log=lambda s: None)
    got = sorted(p.relative_to(fresh).as_posix() for p in fresh.rglob("*") if p.is_file())
    assert got == ["results/e1/gpu/h1/arrays.npz", "results/e1/gpu/h1/metrics.json",
                   "results/e2/gpu/h2/arrays.npz", "results/e2/gpu/h2/metrics.json",
                   "results/e2/gpu/h2/weights/net.safetensors"]
    for rel in got:
        assert (fresh / rel).read_bytes() == (root / rel).read_bytes()


def test_pack_falls_back_to_one_archive_per_experiment(tmp_path):
    root, out = tmp_path / "repo", tmp_path / "out"
    stamp = tmp_path / "stamp"
    stamp.touch()
    os.utime(stamp, (time.time() - 10, time.time() - 10))
    _result(root, "e4", "h4", {"arrays.npz": 30_000}, 3)
    _result(root, "e5", "h5", {"arrays.npz": 30_000}, 4)
    state = gpu_pack.pack(root, stamp, out, ["e4", "e5"], max_files=8, part_bytes=100_000, max_bytes=45_000,
                          log=lambda s: None)
    assert [s.split(" ")[0] for s in state["written"]] == ["results-e4.tgz"]
    assert state["bytes"] <= 45_000


def test_unpack_refuses_members_outside_results(tmp_path):
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("gud/evil.py")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    d = tmp_path / "back"
    d.mkdir()
    (d / "results.tgz.0").write_bytes(buf.getvalue())
    with pytest.raises(ValueError, match="only files under results/"):
        gpu_pack.unpack(d, tmp_path / "repo", log=lambda s: None)


FAKE = r"""#!/usr/bin/env bash
# stands in for python: records each gud command, fails where asked, writes a result otherwise
echo "$*" >> "$CALLS"
if [ "$1" = "-m" ] && [ "$2" = "gud" ] && [ "$3" = "run" ]; then
  exp="$4"; micro=0; case " $* " in *" --micro "*) micro=1;; esac
  stage=real; [ $micro = 1 ] && [ "${GUD_MICRO_ROOT:-}" != "$PWD/runs/slice-rehearsal" ] && stage=smoke
  if [ "$stage:$exp" = "smoke:${FAIL_SMOKE:-}" ] || [ "$stage:$exp" = "real:${FAIL_REAL:-}" ]; then
    echo "Traceback (most recent call last):" >&2; echo "RuntimeError: $exp broke in the $stage stage" >&2; exit 1
  fi
  root="$PWD"; [ $micro = 1 ] && root="$GUD_MICRO_ROOT"
  mkdir -p "$root/results/$exp/gpu/h$exp/weights"
  echo '{"ok": 1}' > "$root/results/$exp/gpu/h$exp/metrics.json"
  head -c 2000 /dev/urandom > "$root/results/$exp/gpu/h$exp/weights/net.safetensors"
  exit 0
fi
if [ "$1" = "-m" ] && [ "$2" = "gud" ] && [ "$3" = "bench" ]; then
  while [ $# -gt 0 ]; do [ "$1" = "--json" ] && echo '{"probe": []}' > "$2"; shift; done; exit 0
fi
if [ "$1" = "-m" ] && [ "$2" = "gud" ]; then exit 0; fi   # status
exec "$REAL_PY" "$@"
"""


def _copy_without_git(dst: Path, keep: tuple[str, ...] = ()) -> Path:
    """The tracked tree (and the slice scripts) in ``dst``, without .git, and without the stored
    ``gpu`` results of E1, E2, E4 and E5 but those in ``keep`` (the others pending, whatever is
    committed)."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for rel in files.decode().split("\0"):
        parts = rel.split("/")
        if parts[0] == "results" and parts[1:2] and parts[1] in ("e1", "e2", "e4", "e5") and parts[2:3] == ["gpu"] \
                and parts[1] not in keep:
            continue
        if rel and (REPO / rel).is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dst / rel)
    for rel in (".ci/gpu-slice", ".ci/gpu_pack.py"):
        shutil.copy2(REPO / rel, dst / rel)
    assert not (dst / ".git").exists()
    return dst


def _fake_slice(tmp_path: Path, keep: tuple[str, ...] = (), **extra: str) -> tuple[Path, Path, Path, dict]:
    """A copy of the tree without .git, the fake interpreter, and the environment of a slice run
    with it: (repo, out, calls, env)."""
    repo = _copy_without_git(tmp_path / "repo", keep)
    fake = tmp_path / "fakepy"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    out, calls = tmp_path / "out", tmp_path / "calls.txt"
    env = dict(os.environ, PYTHON=str(fake), REAL_PY=sys.executable, CALLS=str(calls), OUT=str(out),
               GUD_DATA=str(tmp_path / "data"), **extra)
    env.pop("GUD_GPU_SLICE_MICRO", None)
    return repo, out, calls, env


@pytest.mark.parametrize("micro", [False, True])
def test_slice_stages_isolate_failures_without_git(tmp_path, micro):
    repo, out, calls, env = _fake_slice(tmp_path, FAIL_SMOKE="e4", FAIL_REAL="e2", SMOKE_S="60")
    if micro:
        env["GUD_GPU_SLICE_MICRO"] = "1"
    r = subprocess.run(["bash", ".ci/gpu-slice", "200", "e2", "e4", "e5", "e1"], cwd=repo, env=env,
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    log = (out / "log.txt").read_text()
    runs = [c.split()[3] for c in calls.read_text().splitlines() if c.startswith("-m gud run")]
    # smoke: each once (all at once); e4 fails there and is never run for real
    assert sorted(runs[:4]) == ["e1", "e2", "e4", "e5"]
    assert runs[4:] == ["e2", "e5", "e1"]  # real runs of those that passed, each once
    assert "smoke e4: FAIL" in log and "e2: FAILED" in log and "e5: done" in log and "e1: done" in log
    fails = (out / "failures.txt").read_text()
    assert "RuntimeError: e4 broke in the smoke stage" in fails and "RuntimeError: e2 broke in the real stage" in fails
    assert log.index("smoke e2: pass") < log.index("probe: done") < log.index("e2: start") < log.index("pack:")
    assert json.loads((out / "bench.json").read_text()) == {"probe": []}
    back = tmp_path / "back"
    subprocess.run([sys.executable, str(repo / ".ci" / "gpu_pack.py"), "--unpack", str(out), "--root", str(back)],
                   check=True, capture_output=True)
    got = sorted(p.relative_to(back).as_posix() for p in back.rglob("*") if p.is_file())
    assert got == [f"results/{e}/gpu/h{e}/{f}" for e in ("e1", "e5") for f in ("metrics.json", "weights/net.safetensors")]
    names = [p.name for p in out.iterdir()]
    assert len(names) <= 8 and all(p.stat().st_size <= 15_000_000 for p in out.iterdir())


def test_second_command_skips_smoke_and_probe(tmp_path):
    """NO_SMOKE=1 NO_PROBE=1 (a second command on the same warm machine): the real runs only, in
    the order given, then the pack."""
    repo, out, calls, env = _fake_slice(tmp_path, NO_SMOKE="1", NO_PROBE="1")
    r = subprocess.run(["bash", ".ci/gpu-slice", "200", "e5", "e4"], cwd=repo, env=env,
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    lines = calls.read_text().splitlines()
    assert not any("--micro" in c or c.startswith("-m gud bench") for c in lines)
    assert [c.split()[3] for c in lines if c.startswith("-m gud run")] == ["e5", "e4", "e1", "e2"]
    log = (out / "log.txt").read_text()
    assert "smoke: skipped (NO_SMOKE)" in log and "probe: skipped (NO_PROBE)" in log and "pack:" in log


def test_a_named_result_of_earlier_code_is_recomputed(tmp_path):
    """A stored gpu result computed by earlier code is used by the book, not pending; named in the
    order, the slice smokes it and recomputes it (``--recompute``) in its place; not named, it is
    left alone."""
    from gud.results import ResultsStore
    from gud.runner import status

    if not any((REPO / "results" / "e2" / "gpu").glob("*/metrics.json")):
        pytest.skip("no stored e2 gpu result to stand for one of earlier code")
    repo, out, calls, env = _fake_slice(tmp_path, keep=("e2",), NO_PROBE="1", SMOKE_S="60")
    drift = status("gpu", ResultsStore(repo / "results"))["e2"]
    if drift != "code drift":
        pytest.skip(f"the stored e2 gpu result is {drift!r}, not of earlier code")
    r = subprocess.run(["bash", ".ci/gpu-slice", "200", "e5", "e2"], cwd=repo, env=env,
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    real = [c for c in calls.read_text().splitlines() if c.startswith("-m gud run") and "--micro" not in c]
    assert [c.split()[3] for c in real] == ["e5", "e2", "e1", "e4"]  # named first, then the pending in book order
    assert ["--recompute" in c.split() for c in real] == [False, True, False, False]
    assert "recomputed if in this order: e2" in (out / "log.txt").read_text()
    calls.unlink()
    r = subprocess.run(["bash", ".ci/gpu-slice", "200", "e5"], cwd=repo, env=dict(env, NO_SMOKE="1"),
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert [c.split()[3] for c in calls.read_text().splitlines() if c.startswith("-m gud run")] == ["e5", "e1", "e4"]


def test_peer_sizes_replace_the_probe_by_the_peer_comparison_at_those_sizes(tmp_path):
    repo, out, calls, env = _fake_slice(tmp_path, NO_SMOKE="1", PEER_SIZES="mnist-layout cifar-layout")
    r = subprocess.run(["bash", ".ci/gpu-slice", "200", "e5"], cwd=repo, env=env,
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    bench = [c for c in calls.read_text().splitlines() if c.startswith("-m gud bench")]
    assert len(bench) == 1 and "--peer-only --peer-sizes mnist-layout cifar-layout --seconds 10" in bench[0]
    log = (out / "log.txt").read_text()
    assert log.index("probe (peer comparison, mnist-layout cifar-layout): done") < log.index("e5: start")
    assert json.loads((out / "bench.json").read_text()) == {"probe": []}


def test_probe_writes_json_with_the_peer_on_the_real_training_path(tmp_path, monkeypatch):
    """``python -m gud bench --json``: our networks per precision, the faster precision per network,
    ours beside the peer at equal parameters; ours runs with the loss generator on the training
    device and the schedule moved there once (the fast path of gud.train)."""
    from gud import bench

    seen = []
    real = bench.TrainStep

    class Spy(real):
        def __init__(self, model, loss_fn, config):
            seen.append((config.loss_generator_device, config.device, getattr(loss_fn, "schedule", None)))
            super().__init__(model, loss_fn, config)

    monkeypatch.setattr(bench, "TrainStep", Spy)
    out = tmp_path / "bench.json"
    assert bench.main(quick=True, profile="ci", seconds=1.0, device="cpu", json_path=str(out)) == 0
    data = json.loads(out.read_text())
    assert data["machine"]["device"] == "cpu" and data["probe"] and set(data["faster"].values()) <= {"fp32", "bf16"}
    assert all(dev == gen for gen, dev, _ in seen)  # the loss generator lives where training runs
    peer = data["peer"]
    if peer.get("rows"):
        r = peer["rows"][0]
        assert r["size"] == "small" and abs(r["ours_params"] / r["peer_params"] - 1) <= 0.05 and r["ratio"] > 0
        assert peer["ratio_vs_best"]["small"] > 0
    else:
        assert "error" in peer  # the peer is not installed: said, not raised


def test_peer_comparison_uses_the_device_generator_and_a_moved_schedule(monkeypatch):
    """Asked for another device ("meta" stands in for CUDA here), ours is set up as gud.train's
    fast path: the loss generator on that device and the schedule's tensors moved there once (a
    CPU generator or schedule would cost a host sync per step)."""
    import torch

    from gud import bench

    class Stop(Exception):
        pass

    seen = {}

    def spy(model, loss_fn, config):
        seen.update(gen=config.loss_generator_device, device=config.device,
                    sched=[v.device.type for v in vars(loss_fn.schedule).values() if torch.is_tensor(v)])
        raise Stop

    monkeypatch.setattr(bench, "TrainStep", spy)
    with pytest.raises(Stop):
        bench.compare_peer("small", "fp32", "meta", 0.1, peer_classes=(object, object))
    assert seen["gen"] == seen["device"] == "meta" and seen["sched"] and set(seen["sched"]) == {"meta"}


def test_run_pending_takes_the_named_order_and_goes_on_after_a_failure(monkeypatch, capsys):
    """``python -m gud run --pending e4 e2 e1``: the named ones still missing, in that order, each
    once; one that fails is reported with its traceback and the others still run (exit 1)."""
    import signal

    from gud import __main__ as cli
    from gud import runner

    calls = []

    def fake_run(exp, profile, **kw):
        calls.append(exp)
        if exp == "e4":
            raise RuntimeError("e4 broke")

    monkeypatch.setattr(runner, "run", fake_run)
    monkeypatch.setattr(runner, "pending", lambda profile, store=None: ["e1", "e2", "e4", "e5"])
    monkeypatch.setattr(signal, "signal", lambda *a, **k: None)
    rc = cli.main(["run", "--pending", "e4", "e2", "e3", "e1", "--profile", "gpu", "--quiet"])
    err = capsys.readouterr().err
    assert calls == ["e4", "e2", "e1"]  # e3 is stored (not pending); e5 not named
    assert rc == 1 and "RuntimeError: e4 broke" in err and "failed: e4" in err
    calls.clear()
    assert cli.main(["run", "--pending", "--profile", "gpu", "--quiet"]) == 1
    assert calls == ["e1", "e2", "e4", "e5"]  # without names: the book's order


def test_prepare_refuses_an_interpreter_without_the_package(tmp_path):
    """A prepare with an interpreter that cannot import gud once carried no data and said nothing
    (the GPU run then had no CIFAR-10); now it stops with one line naming the interpreter."""
    (tmp_path / ".ci").mkdir()
    shutil.copy(REPO / ".ci" / "gpu-slice", tmp_path / ".ci" / "gpu-slice")
    proc = subprocess.run(["bash", ".ci/gpu-slice", "--prepare"], cwd=tmp_path, capture_output=True, text=True,
                          env=dict(os.environ, PYTHON="/bin/false"), timeout=60)
    assert proc.returncode == 1
    assert "cannot list the pending gpu experiments with /bin/false" in proc.stderr
    assert not any((tmp_path / ".gpu" / "data").iterdir())
