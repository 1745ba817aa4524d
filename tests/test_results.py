"""Tests of gud.results and gud.profiles: round trips, hash stability, no pickle, atomic writes."""

import json

import numpy as np
import pytest

from gud.profiles import EXPERIMENTS, current_profile, describe, device, experiment_config
from gud.results import ResultNotFoundError, ResultsStore, canonical_json, config_hash, save_figure

CONFIG = {"dataset": "digits", "steps": 100, "a": [0.4, 1.0, 1.6], "net": {"width": 64, "depth": 2}}


@pytest.fixture
def store(tmp_path):
    return ResultsStore(tmp_path / "results")


def test_round_trip(store):
    arrays = {"fid": np.linspace(0, 1, 5), "samples": np.arange(12, dtype=np.uint8).reshape(3, 4)}
    saved = store.save("e1", "ci", CONFIG, {"nll_bpd": 3.21, "steps": np.int64(100)}, arrays)
    loaded = store.load("e1", "ci", CONFIG)
    assert loaded is not None and loaded.path == saved.path
    assert loaded.config == CONFIG and loaded.metrics == {"nll_bpd": 3.21, "steps": 100}
    assert loaded["nll_bpd"] == 3.21
    for k, v in arrays.items():
        np.testing.assert_array_equal(loaded.arrays[k], v)
        assert loaded.arrays[k].dtype == v.dtype
    assert loaded.info["profile"] == "ci" and loaded.info["hash"] == saved.path.name
    assert {p.name for p in saved.path.iterdir()} == {"config.json", "metrics.json", "info.json", "arrays.npz", "manifest.json"}
    assert saved.path.relative_to(store.root).parts == ("e1", "ci", config_hash(CONFIG))


def test_hash_is_stable_and_canonical(store):
    reordered = {"net": {"depth": 2, "width": 64}, "a": (0.4, 1.0, 1.6), "steps": 100, "dataset": "digits"}
    assert config_hash(reordered) == config_hash(CONFIG)
    assert store.key("e1", "ci", CONFIG) == config_hash(CONFIG)
    assert len(config_hash(CONFIG)) == 12
    # a fixed value: the hash must not change between versions, or stored results are lost
    assert canonical_json({"b": 1, "a": [1, 2]}) == '{"a":[1,2],"b":1}'
    assert config_hash({"b": 1, "a": [1, 2]}) == "94a786c3662b"  # sha256 of the string above
    assert config_hash({**CONFIG, "steps": 101}) != config_hash(CONFIG)
    with pytest.raises(ValueError):
        config_hash({"x": float("nan")})
    with pytest.raises(TypeError):
        config_hash({"x": object()})


def test_missing_result(store):
    assert store.load("e1", "gpu", CONFIG) is None
    with pytest.raises(ResultNotFoundError, match="python -m gud run e1 --profile gpu") as info:
        store.require("e1", "gpu", CONFIG)
    assert isinstance(info.value, FileNotFoundError)


def test_no_pickle(store):
    with pytest.raises(TypeError, match="pickle"):
        store.save("e1", "ci", CONFIG, {}, {"bad": np.array([{"a": 1}], dtype=object)})
    assert not (store.root / "e1" / "ci").exists() or not any((store.root / "e1" / "ci").iterdir())
    saved = store.save("e1", "ci", CONFIG, {}, {"ok": np.ones(3)})
    # an object array smuggled into the file is refused on load
    np.savez(saved.path / "arrays.npz", ok=np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="pickle"):
        store.load("e1", "ci", CONFIG)


def test_atomic_write_leaves_nothing_on_error(store):
    class Boom:
        def savefig(self, *args, **kwargs):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        store.save("e1", "ci", CONFIG, {"x": 1.0}, {"a": np.ones(2)}, figures={"fig": Boom()})
    folder = store.root / "e1" / "ci"
    assert list(folder.iterdir()) == []
    assert store.load("e1", "ci", CONFIG) is None
    # a failed overwrite keeps the old result
    store.save("e1", "ci", CONFIG, {"x": 1.0})
    with pytest.raises(RuntimeError):
        store.save("e1", "ci", CONFIG, {"x": 2.0}, figures={"fig": Boom()})
    assert store.load("e1", "ci", CONFIG).metrics == {"x": 1.0}
    assert [p.name for p in folder.iterdir()] == [config_hash(CONFIG)]
    # a successful overwrite replaces it
    store.save("e1", "ci", CONFIG, {"x": 3.0})
    assert store.load("e1", "ci", CONFIG).metrics == {"x": 3.0}
    assert [p.name for p in folder.iterdir()] == [config_hash(CONFIG)]


def test_cached(store, capsys):
    calls = []

    def compute():
        calls.append(1)
        return {"loss": 0.5}, {"curve": np.arange(4.0)}

    first = store.cached("e2", "ci", CONFIG, compute)
    assert "computed and stored result" in capsys.readouterr().out
    second = store.cached("e2", "ci", CONFIG, compute)
    assert f"loaded stored result results/e2/ci/{config_hash(CONFIG)}" in capsys.readouterr().out
    assert len(calls) == 1 and second.metrics == first.metrics == {"loss": 0.5}
    np.testing.assert_array_equal(second.arrays["curve"], np.arange(4.0))
    store.cached("e2", "ci", CONFIG, compute, recompute=True)
    assert len(calls) == 2
    with pytest.raises(ResultNotFoundError):
        store.cached("e2", "gpu", CONFIG, compute, allow_compute=False)
    assert json.loads((first.path / "config.json").read_text()) == CONFIG


def test_save_figure(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    png = save_figure(fig, "test-figure", directory=tmp_path)
    plt.close(fig)
    assert png == tmp_path / "test-figure.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "test-figure.pdf").read_bytes()[:5] == b"%PDF-"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test-figure.pdf", "test-figure.png"]
    with pytest.raises(ValueError):
        save_figure(fig, "../escape", directory=tmp_path)


def test_profiles(monkeypatch):
    monkeypatch.delenv("GUD_PROFILE", raising=False)
    assert current_profile() == "ci"
    monkeypatch.setenv("GUD_PROFILE", "gpu")
    assert current_profile() == "gpu" and describe().startswith("gpu:")
    monkeypatch.setenv("GUD_PROFILE", "laptop")
    with pytest.raises(ValueError, match="ci"):
        current_profile()
    assert set(EXPERIMENTS) == {"framework", "e1", "e2", "e3", "e4", "e5", "toy"}
    for exp in EXPERIMENTS:
        for profile in ("ci", "gpu", "paper"):
            config = experiment_config(exp, profile)
            canonical_json(config)  # every configuration can be hashed
    cfg = experiment_config("e1", "ci")
    cfg["__probe__"] = -1
    assert "__probe__" not in experiment_config("e1", "ci")  # a deep copy
    with pytest.raises(ValueError):
        experiment_config("e9", "ci")
    assert device().type in ("cpu", "cuda")
