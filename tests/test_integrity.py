"""Stored files cannot silently go stale or corrupt (issue 16).

Results carry a ``manifest.json`` (sha256 per file) checked on load; checkpoints and memos a sidecar
checksum; a damaged file is named with the command that repairs it, and ``run`` recomputes it.
A result records the code it was computed with: ``status`` reports code drift apart from stale
configurations, the result is still loaded and used, and ``--recompute`` after a code change
recomputes for real (run folders are keyed by the code). The fake micro experiment of
``tests/fake_experiment.py`` stands in for a chapter (a fraction of a second per run).
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import fake_experiment
import gud.results as results
from gud.results import (CorruptFileError, CorruptResultError, ResultNotFoundError, ResultsStore, load_model,
                         verify_checked, write_checked)
from gud.runner import LockWaitExhausted, inspect, pending, run, run_dir
from gud.train import TrainConfig, train


def garble(path: Path, how: str) -> None:
    """4 KiB of junk in the middle of the file (or over all of a small one), or the file cut in half."""
    data = bytearray(path.read_bytes())
    if how == "junk":
        rng = np.random.default_rng(0)
        junk = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
        start = max(0, len(data) // 2 - 2048)
        data[start:start + 4096] = junk[:max(len(data) - start, 1)] if len(data) < 4096 else junk
    else:
        data = data[: len(data) // 2]
    path.write_bytes(bytes(data))


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """The fake experiments registered, a private store and run folder, and the log lines."""
    fake_experiment.register(monkeypatch)
    monkeypatch.setattr(fake_experiment, "FACTOR", 1.0)
    lines: list[str] = []
    where = dict(store=ResultsStore(tmp_path / "results"), runs_root=tmp_path / "runs", log=lines.append)
    return where, lines


def cfg(name: str = "fake") -> dict:
    from gud.profiles import experiment_config

    return experiment_config(name, "ci")


# ----------------------------------------------------------------------------- results


def test_manifest_is_deterministic_and_portable(tmp_path):
    """Same content, same manifest bytes (sorted relative paths, no times); a copy elsewhere (new
    mtimes, as a git clone) loads and verifies."""
    metrics, arrays = {"x": 1.5}, {"a": np.arange(4.0)}
    paths = [ResultsStore(tmp_path / d).save("e1", "ci", {"k": 1}, metrics, arrays).path for d in ("a", "b")]
    man = [json.loads((p / "manifest.json").read_text()) for p in paths]
    assert sorted(man[0]["files"]) == ["arrays.npz", "config.json", "info.json", "metrics.json"]
    for name in ("config.json", "metrics.json", "arrays.npz"):  # same numbers, same bytes (info.json: a time)
        assert man[0]["files"][name] == man[1]["files"][name]
    assert (paths[0] / "manifest.json").read_text() == json.dumps(man[0], indent=1, sort_keys=True) + "\n"
    shutil.copytree(paths[0].parent.parent.parent, tmp_path / "clone")
    res = ResultsStore(tmp_path / "clone").load("e1", "ci", {"k": 1})
    assert res.metrics == metrics and "unverified" not in res.info
    assert not any(str(tmp_path) in v for v in json.dumps(man[0]).split('"'))  # no absolute paths


@pytest.mark.parametrize("name", ["metrics.json", "arrays.npz", "info.json", "weights/net.safetensors"])
@pytest.mark.parametrize("how", ["junk", "truncate"])
def test_damaged_result_is_named_and_recomputed(fake, name, how):
    where, lines = fake
    first = run("fake", "ci", **where)
    garble(first.path / name, how)
    with pytest.raises(CorruptResultError) as err:
        where["store"].load("fake", "ci", cfg())
    msg = str(err.value)
    assert name in msg and "python -m gud run fake --profile ci --recompute" in msg and "\n" not in msg
    assert inspect("ci", where["store"])["fake"].state == "corrupt"
    assert "fake" in pending("ci", where["store"])
    again = run("fake", "ci", **where)  # recomputed, not used
    assert any("damaged" in line for line in lines)
    assert again.metrics == first.metrics  # checkpoint and memo of the same code reused
    assert where["store"].load("fake", "ci", cfg()).metrics == first.metrics


def test_result_without_manifest_still_loads(fake):
    """Results committed before manifests existed load (unverified), as the committed gpu ones do."""
    where, _ = fake
    res = run("fake", "ci", **where)
    (res.path / "manifest.json").unlink()
    again = where["store"].load("fake", "ci", cfg())
    assert again.metrics == res.metrics and "unverified" in again.info
    assert load_model("fake", "net", "ci", store=where["store"]).spec["net"] == "mlp"


def test_load_model_refuses_garbled_weights_and_says_what_is_missing(fake):
    where, _ = fake
    res = run("fake", "ci", **where)
    lm = load_model("fake", "net", "ci", store=where["store"])
    assert abs(float(sum(p.detach().double().sum() for p in lm.model.net.parameters())) - res.metrics["w"]) < 1e-3
    w = res.path / "weights" / "net.safetensors"
    garble(w, "junk")
    with pytest.raises(CorruptResultError, match="net.safetensors.*--recompute"):
        load_model("fake", "net", "ci", store=where["store"])
    (res.path / "manifest.json").unlink()  # without a manifest: the parse or the values give it away
    with pytest.raises(CorruptResultError, match="net.safetensors"):
        load_model("fake", "net", "ci", store=where["store"])
    with pytest.raises(ResultNotFoundError, match=r"'fake2', profile 'ci'.*python -m gud run fake2 --profile ci"):
        load_model("fake2", "net", "ci", store=where["store"])


def test_status_lists_everything_when_one_result_is_damaged(fake, monkeypatch, capsys):
    from gud.__main__ import main

    where, _ = fake
    monkeypatch.setenv("GUD_RESULTS", str(where["store"].root))
    monkeypatch.setenv("GUD_RUNS", str(where["runs_root"]))
    run("fake", "ci", **where)
    run("fake2", "ci", **where)
    assert main(["status", "--profile", "ci", "--check"]) == 0
    garble(where["store"].path("fake", "ci", cfg()) / "metrics.json", "truncate")
    assert main(["status", "--profile", "ci", "--check"]) == 1
    out = capsys.readouterr().out.splitlines()[-len(inspect("ci", where["store"])):]
    state = {line.split()[0]: line.split(None, 1)[1] for line in out}
    assert state["fake"].startswith("corrupt: ") and "metrics.json" in state["fake"] and "--recompute" in state["fake"]
    assert state["fake2"] == "stored" and state["e1"] == "missing"


# ----------------------------------------------------------------------------- freshness


def test_code_drift_is_reported_the_result_used_and_recompute_is_real(fake, monkeypatch):
    where, _ = fake
    first = run("fake", "ci", **where)
    assert first.info["code_hash"] == results.code_hash() and first.metrics["v"] == 1.0
    assert run("fake", "ci", recompute=True, **where).metrics["v"] == 1.0  # same code: the same numbers
    # a code change: the memoised step now computes 2x (as `summarize_bits(bits * 2)` would)
    monkeypatch.setattr(fake_experiment, "FACTOR", 2.0)
    monkeypatch.setattr(results, "code_hash", lambda: "feedfacefeedface")
    entry = inspect("ci", where["store"])["fake"]
    assert entry.state == "code drift" and "feedfacefeedface" in entry.detail
    assert "fake" not in pending("ci", where["store"])  # still loaded and used, only reported
    assert run("fake", "ci", **where).metrics["v"] == 1.0
    again = run("fake", "ci", recompute=True, **where)
    assert again.metrics["v"] == 2.0 and again.info["code_hash"] == "feedfacefeedface"
    assert inspect("ci", where["store"])["fake"].state == "stored"
    # the run folder of the old code (never reused) is gone, the new one kept
    assert [d.name for d in (where["runs_root"] / "fake" / "ci").iterdir()] == [run_dir("fake", "ci", cfg()).name]


def test_run_folder_is_keyed_by_code(monkeypatch, tmp_path):
    a = run_dir("fake", "ci", {"k": 1}, tmp_path)
    monkeypatch.setattr(results, "code_hash", lambda: "0" * 16)
    assert run_dir("fake", "ci", {"k": 1}, tmp_path) != a


def test_code_hash_is_deterministic_and_covers_the_package(tmp_path):
    pkg = tmp_path / "gud"
    (pkg / "experiments").mkdir(parents=True)
    (pkg / "a.py").write_text("x = 1\n")
    (pkg / "experiments" / "e.py").write_text("y = 2\n")
    (pkg / "book.py").write_text("z = 3\n")
    h = results._code_hash(str(pkg))
    (pkg / "book.py").write_text("z = 4\n")  # presentation only: no drift
    (pkg / "a.py").write_text("x = 1\r\n")  # line endings (a Windows checkout): no drift
    results._code_hash.cache_clear()
    assert results._code_hash(str(pkg)) == h
    (pkg / "experiments" / "e.py").write_text("y = 3\n")
    results._code_hash.cache_clear()
    assert results._code_hash(str(pkg)) != h


# ----------------------------------------------------------------------------- checkpoints and memos


def _tiny():
    torch.manual_seed(0)  # noqa: the test's own model initialisation
    model = torch.nn.Linear(4, 4)
    data = torch.randn(64, 4, generator=torch.Generator().manual_seed(1))
    loss = lambda m, b, g: ((m(b) - b) ** 2).mean(1)  # noqa: E731
    return model, loss, data


def test_damaged_checkpoint_is_discarded_and_training_restarts(tmp_path):
    model, loss, data = _tiny()
    config = TrainConfig(steps=20, batch_size=8, warmup=1, checkpoint_every=5)
    ref = train(model, loss, data, config, tmp_path / "ref.pt", progress=False)
    model, loss, data = _tiny()
    path = tmp_path / "a.pt"
    train(model, loss, data, TrainConfig(steps=10, batch_size=8, warmup=1, checkpoint_every=5), path, progress=False)
    garble(path, "junk")
    with pytest.raises(CorruptFileError, match="a.pt"):
        verify_checked(path)
    model, loss, data = _tiny()
    with pytest.warns(UserWarning, match="damaged checkpoint.*a.pt"):
        out = train(model, loss, data, config, path, progress=False)
    assert out.resumed_from == 0  # afresh, not from the damaged state
    for p, q in zip(out.model.parameters(), ref.model.parameters()):
        assert torch.equal(p, q)
    verify_checked(path)


def test_checksum_survives_a_crash_between_the_two_renames(tmp_path):
    path = tmp_path / "f.bin"
    write_checked(path, lambda p: p.write_bytes(b"old"))
    side = path.with_name("f.bin.sha256")
    old_side = side.read_text()
    write_checked(path, lambda p: p.write_bytes(b"new"))
    both = json.loads(side.read_text())["sha256"] + json.loads(old_side)["sha256"]
    side.write_text(json.dumps({"sha256": both}))  # the state between the file's rename and the sidecar's
    verify_checked(path)
    path.write_bytes(b"old")
    verify_checked(path)
    path.write_bytes(b"bad")
    with pytest.raises(CorruptFileError):
        verify_checked(path)


@pytest.mark.parametrize("target", ["value.json", "value.npz"])
def test_damaged_memo_is_recomputed(tmp_path, target):
    from gud.runner import Context

    ctx = Context("fake", "ci", {}, directory=tmp_path, log=lambda s: None)
    calls = []

    def step():
        calls.append(1)
        return {"v": 3.0, "a": np.arange(5.0)}

    first = ctx.cached("value", step)
    assert ctx.cached("value", step)["v"] == 3.0 and len(calls) == 1
    garble(tmp_path / target, "truncate")
    with pytest.warns(UserWarning, match="damaged memo 'value'"):
        again = ctx.cached("value", step)
    assert len(calls) == 2 and again["v"] == first["v"] and np.array_equal(again["a"], first["a"])


# ----------------------------------------------------------------------------- bookkeeping


def test_training_time_adds_up_across_resumes(tmp_path, monkeypatch):
    model, loss, data = _tiny()

    def slow(m, b, g):
        time.sleep(0.01)
        return loss(m, b, g)

    config = TrainConfig(steps=30, batch_size=8, warmup=1, checkpoint_every=1000)
    first = train(model, slow, data, config, tmp_path / "c.pt", progress=False, deadline=time.monotonic() + 0.15)
    assert not first.finished and first.step < 30
    model, _, _ = _tiny()
    second = train(model, slow, data, config, tmp_path / "c.pt", progress=False)
    assert second.finished and second.resumed_from == first.step
    # the total counts the first call's steps too (each step sleeps 10 ms)
    assert second.total_time >= 30 * 0.01 and second.total_time >= second.wall_time + first.step * 0.01
    assert torch.load(tmp_path / "c.pt", weights_only=True)["train_seconds"] == pytest.approx(second.total_time,
                                                                                            abs=0.05)


def test_runner_stores_the_cumulative_training_time_and_threads(fake, monkeypatch):
    where, lines = fake
    monkeypatch.setenv("GUD_THREADS", "2")
    res = run("fake", "ci", **where)
    ckpt = run_dir("fake", "ci", cfg(), where["runs_root"]) / "net.pt"
    assert res.info["trainings"]["net"]["train_s"] == torch.load(ckpt, weights_only=True)["train_seconds"]
    # the configuration fixes one thread: GUD_THREADS cannot change the stored numbers
    assert res.info["torch_threads"] == 1 and any("GUD_THREADS=2 ignored" in line for line in lines)


def test_waiting_for_the_lock_is_said_and_bounded_by_the_budget(fake):
    import fcntl
    import os

    where, lines = fake
    d = run_dir("fake", "ci", cfg(), where["runs_root"])
    d.mkdir(parents=True)
    fd = os.open(d / ".lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, b"4242\n")
        t = time.monotonic()
        with pytest.raises(LockWaitExhausted, match="budget ran out while waiting"):
            run("fake", "ci", budget_s=0.3, **where)
        assert time.monotonic() - t < 2.0
        assert any("pid 4242" in line and "waiting" in line for line in lines)
    finally:
        os.close(fd)
    assert run("fake", "ci", budget_s=60, **where).metrics["v"] == 1.0
