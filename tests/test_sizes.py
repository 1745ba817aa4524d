"""Sizes that fit: what a GPU slice brings back and what travels to the GPU machine.

Limits (the device tool): at most 8 files of at most 16 MiB come back (we pack 15 MB parts and
60 MB in all, :mod:`.ci/gpu_pack.py`); the tracked tree plus the carried ``.gpu`` folder (data
and wheels) travel, 64 MiB in all (we keep 8 MiB spare: 56 MiB).

How the sizes are obtained: each ``gpu`` result of E1, E2, E4 and E5 is *built* at full size on
the CPU and stored with the real store (:class:`gud.results.ResultsStore`): its trained networks
are built at the gpu configuration's size, untrained, and written by the real weights writer
(:func:`gud.results.save_weights`, the configuration's ``weights_dtype``); its arrays are random
(incompressible: an upper bound) with the shapes and dtypes its ``compute`` stores, sized from
the gpu configuration (``_arrays_*`` mirror ``compute`` of each experiment: update them with it).
"""
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from gud.bases import PCABasis, make_basis
from gud.nets import EpsNet, build_net
from gud.prior import Prior
from gud.profiles import experiment_config
from gud.results import LOCAL_ONLY, ResultsStore, load_weights, save_weights

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / ".ci"))
import gpu_pack  # noqa: E402

MB, MiB = 1_000_000, 1 << 20
TRAVEL_LIMIT = 56 * MiB
#: what .ci/gpu-slice --prepare carries (bytes, measured 2026-12-04) where .gpu/ is not there to measure
CARRIED_DEFAULT = {"cifar10-jpeg.tar.gz": 19_639_056, "pywavelets-1.10.0 (cp312 wheel)": 4_466_610,
                   "denoising_diffusion_pytorch-2.3.4 wheel": 90_425, "ema_pytorch-0.8.3 wheel": 16_576}


# ----------------------------------------------------------------------------- weights: network only


def _pca_setup(shape=(1, 8, 8), n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, math.prod(shape), generator=g, dtype=torch.float64) @ torch.randn(
        math.prod(shape), math.prod(shape), generator=g, dtype=torch.float64) * 0.1
    basis = PCABasis.fit(x, shape)
    return x, basis


def test_pca_weights_hold_the_network_once_and_reload_exactly(tmp_path):
    x, basis = _pca_setup()
    shape, d = basis.shape, basis.dim
    models = {}
    for whitened in (True, False):
        prior = Prior.fit(basis, x, whitened=whitened)
        net = build_net("mlp", shape, seed=1, hidden=16, depth=1)
        for p in net.parameters():  # a non-zero output layer, so that the network matters
            torch.nn.init.normal_(p, std=0.1, generator=torch.Generator().manual_seed(2))
        model = EpsNet(net, basis.to(torch.float32), prior.log_var)
        name = f"net-{'w' if whitened else 'u'}"
        save_weights(tmp_path / "weights" / f"{name}.safetensors", model, prior, {"net": "mlp",
                     "net_kwargs": {"hidden": 16, "depth": 1}})
        models[name] = (model, prior)
    files = sorted(p.name for p in (tmp_path / "weights").iterdir())
    assert len([f for f in files if f.startswith("basis-pca-")]) == 1  # one basis for both networks
    from safetensors import safe_open

    for name, (model, prior) in models.items():
        path = tmp_path / "weights" / f"{name}.safetensors"
        with safe_open(str(path), framework="pt") as f:
            assert not any(k.startswith("basis.") for k in f.keys())
        params = sum(p.numel() for p in model.net.parameters())
        assert path.stat().st_size < params * 4 + 3 * d * 8 + 8192  # network, log_var, prior vectors, header
        lm = load_weights(path)
        y, gam = torch.randn(5, d, generator=torch.Generator().manual_seed(3)), torch.zeros(5, d)
        with torch.no_grad():
            assert torch.equal(lm.model(y, gam), model(y, gam))
        assert torch.equal(lm.prior.basis.components, basis.components.float().double())  # stored in float32
        assert torch.equal(lm.prior.mean, prior.mean) and lm.prior.whitened == prior.whitened


def test_fid_samples_and_weights_are_local_only(tmp_path):
    store = ResultsStore(tmp_path / "results")
    x, basis = _pca_setup()
    prior = Prior.fit(basis, x)
    model = EpsNet(build_net("mlp", basis.shape, hidden=8, depth=1), basis.to(torch.float32), prior.log_var)
    u8 = np.arange(64 * 3, dtype=np.uint8).reshape(3, 64)
    res = store.save("e1", "gpu", {"k": 1}, {"m": 1.0}, {"fid/a": u8, "kept": np.ones(2)},
                     weights={"n": (model, prior, {"net": "mlp", "net_kwargs": {"hidden": 8, "depth": 1}})})
    assert (res.path / "fid.npz").exists()
    with np.load(res.path / "arrays.npz") as f:
        assert "fid/a" not in f.files and "kept" in f.files
    assert np.array_equal(store.load("e1", "gpu", {"k": 1}).arrays["fid/a"], u8)
    # as committed (and as cloned): no weights, no fid.npz; the result still loads
    (res.path / "fid.npz").unlink()
    for p in (res.path / "weights").iterdir():
        p.unlink()
    loaded = store.load("e1", "gpu", {"k": 1})
    assert loaded.metrics["m"] == 1.0 and "fid/a" not in loaded.arrays and "kept" in loaded.arrays
    ignored = subprocess.run(["git", "check-ignore", "-q", "--no-index", "results/e1/gpu/abc/weights/x.safetensors"],
                             cwd=REPO, capture_output=True)
    if (REPO / ".git").exists():
        assert ignored.returncode == 0  # .gitignore keeps them out of the tree
        assert subprocess.run(["git", "check-ignore", "-q", "--no-index", "results/e1/gpu/abc/fid.npz"],
                              cwd=REPO).returncode == 0


# ----------------------------------------------------------------------------- full-size gpu results

rng = np.random.default_rng(0)


def _u8(*s):
    return rng.integers(0, 256, s, dtype=np.uint8)


def _f32(*s):
    return rng.standard_normal(s).astype(np.float32)


def _f64(*s):
    return rng.standard_normal(s)


def _per_image(arrays, n_evals, cfg, n_train=50000):
    n_test = cfg.get("test_limit") or 10000
    for i in range(n_evals):
        arrays[f"per_image/{i}"] = _f32(4, n_test)


def _curves(arrays, names, cfg):
    for n in names:
        arrays[f"curves/{n}/train"] = _f64(cfg["max_steps"] // 50 + 1, 2)
        arrays[f"curves/{n}/val"] = _f64(cfg["max_steps"] // cfg["eval_every"] + 1, 2)


def _arrays_e1(cfg, d=3072):
    a, priors, s = {}, cfg["priors"], cfg["show_samples"]
    a["real"], a["gaussian_samples"] = _f32(s, d), _f32(s, d)
    for p in priors:
        for x in cfg["a_eval"]:
            a[f"family/{p}/a{x:g}/samples"] = _f32(s, d)
        for x in cfg["show_a"]:
            a[f"fid/family-{p}-a{x:g}"] = _u8(cfg["fid_samples"], d)
        a[f"family/{p}/trajectory"] = _f32(len(cfg["trajectory_a"]), len(cfg["trajectory_times"]),
                                           cfg["trajectory_n"], d)
    if "pixel_sd" in cfg["baselines"]:
        a["fid/pixel_sd"] = _u8(cfg["fid_samples"], d)
    n_eval = (len(priors) * len(cfg["reference_conventions"]) * len(cfg["a_eval"])
              + len(priors) * len(cfg["a_eval"])  # the full-covariance Gaussian in the main convention
              + len(priors) * len(cfg["conventions"]) * len(cfg["a_eval"]) + len(cfg["baselines"]) + 1)
    _per_image(a, n_eval, cfg)
    return a, [f"family-{p}" for p in priors] + (["pixel_sd"] if "pixel_sd" in cfg["baselines"] else [])


def _arrays_e2(cfg, d=3072):
    a, s = {}, cfg["show_samples"]
    for x in cfg["a_eval"]:
        for r in cfg["r_eval"]:
            a[f"samples/a{x:g}/r{r:g}"] = _f32(s, d)
    for x, r in cfg["fid_points"]:
        a[f"fid/a{x:g}-r{r:g}"] = _u8(cfg["fid_samples"], d)
    a["real"], a["gaussian_samples"] = _f32(s, d), _f32(s, d)
    _per_image(a, 3 * len(cfg["a_eval"]) * len(cfg["r_eval"]) + 1, cfg)  # network, Gaussian, full Gaussian
    return a, ["family"]


def _arrays_e4(cfg):
    a = {}
    for ds in cfg["datasets"]:
        h, w, width = ds["height"], ds["width"], ds["extend_width"]
        for b in cfg["schedule_b_col"]:
            a[f"{ds['name']}/log_snr/bcol{b:g}"] = _f64(101, w)
        n_runs = 2 * len(cfg["extend"]["b_col"]) + 3 + len(cfg.get("sampler_checks", [])) + 2
        for i in range(n_runs):
            a[f"{ds['name']}/images/{i}"] = _f32(cfg["extend"]["show"], 1, h, width)
        _per_image(a, 3 * len(cfg["b_col_eval"]), {**cfg, "test_limit": ds["n_test"]})
    return a, ["columns"]


def _arrays_e5(cfg, d=3072):
    a, s = {}, cfg["show_samples"]
    a["real"], a["gaussian_samples"] = _f32(s, d), _f32(s, d)
    a["labels"], a["log_data_var"] = _f64(2, d), _f64(d)
    for ab in cfg["score_ab"]:
        a[f"family/{ab}/samples"] = _f32(s, d)
    a["standard/samples"] = _f32(s, d)
    for key in [str(ab) for ab in cfg["trajectory_ab"]] + ["standard"]:
        t = len(cfg["trajectory_times"])
        a[f"trajectory/{key}"] = _f32(t, cfg["trajectory_n"], d)
        a[f"trajectory/{key}/neg_log_snr"] = _f32(t, d)
        a[f"trajectory/{key}/paths"] = _f32(101, d)
    grid = len(cfg["a_eval"]) * len(cfg["b_eval"])
    for model in ("family", "gaussian"):
        for m in ("bpd", "prior_bpd", "diffusion_bpd", "reconstruction_bpd", "bpd_se"):
            a[f"grid/{model}/{m}"] = _f64(len(cfg["a_eval"]), len(cfg["b_eval"]))
    _per_image(a, 3 * grid + 3, cfg)  # family, Gaussian and full Gaussian per point; their standard trio
    return a, ["family", "standard"]


ARRAYS = {"e1": _arrays_e1, "e2": _arrays_e2, "e4": _arrays_e4, "e5": _arrays_e5}
BASIS = {"e1": "pca", "e2": "fourier", "e4": "pixel", "e5": "wavelet"}


def _build(store: ResultsStore, exp: str) -> Path:
    cfg = experiment_config(exp, "gpu")
    arrays, nets = ARRAYS[exp](cfg)
    shape = (1, 32, 32) if exp == "e4" else (3, 32, 32)
    d = math.prod(shape)
    if BASIS[exp] == "pca":  # the size of a fitted 3072-pixel PCA basis (orthogonality does not matter here)
        g = torch.Generator().manual_seed(0)
        basis = PCABasis(shape, torch.randn(d, d, generator=g, dtype=torch.float64), torch.ones(d))
    else:
        basis = make_basis(BASIS[exp], shape)
    prior = Prior(basis, torch.zeros(d, dtype=torch.float64), torch.ones(d, dtype=torch.float64), True)
    weights = {}
    for name in nets:
        net = build_net(cfg["net"], shape, **cfg["net_kwargs"])
        weights[name] = (EpsNet(net, basis, torch.zeros(d), image_shape=shape), prior,
                         {"net": cfg["net"], "net_kwargs": cfg["net_kwargs"]})
    if exp == "e1" and "pixel_sd" in nets:  # the pixel-space baseline has its own (pixel) prior
        pix = make_basis("pixel", shape)
        weights["pixel_sd"] = (weights["pixel_sd"][0], Prior(pix, prior.mean, prior.var, False), weights["pixel_sd"][2])
    res = store.save(exp, "gpu", cfg, {"rows": []}, arrays, weights=weights,
                     weights_dtype=cfg.get("weights_dtype", "float32"))
    return res.path


def _tracked_bytes() -> int:
    if not (REPO / ".git").exists():
        pytest.skip("needs the git checkout to measure the tracked tree")
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    return sum((REPO / f).stat().st_size for f in out.decode().split("\0") if f and (REPO / f).is_file())


def _carried() -> dict[str, int]:
    gpu = REPO / ".gpu"
    found = {p.name: p.stat().st_size for p in gpu.rglob("*") if p.is_file()} if gpu.is_dir() else {}
    return found or dict(CARRIED_DEFAULT)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("sizes")
    stamp = root / "stamp"
    stamp.touch()
    os.utime(stamp, (time.time() - 10, time.time() - 10))
    store = ResultsStore(root / "results")
    folders = {e: _build(store, e) for e in ARRAYS}
    return root, stamp, folders


def _committed(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*")
               if p.is_file() and not p.relative_to(folder).as_posix().startswith(LOCAL_ONLY))


def test_weights_files_are_networks_only_at_gpu_size(built):
    _, _, folders = built
    for exp, folder in folders.items():
        cfg = experiment_config(exp, "gpu")
        for f in (folder / "weights").iterdir():
            if f.name.startswith("basis-"):
                continue
            params = sum(p.numel() for p in build_net(cfg["net"], (3, 32, 32), **cfg["net_kwargs"]).parameters())
            assert f.stat().st_size < params * 2 * 1.02 + 200_000, (exp, f.name, f.stat().st_size)
            assert f.stat().st_size < 15 * MB


@pytest.mark.parametrize("pair", [("e1", "e5"), ("e2", "e4")])  # the two largest together; the others
def test_what_comes_back_fits(built, tmp_path, pair):
    """A slice completes at most two experiments (smoke + probe + two of <= 5 min in a 9-minute
    command): the results of any two come back whole, in at most 3 parts, beside the log,
    failures and bench files; networks follow while room is left; never more than 8 files of
    15 MB, 60 MB in all."""
    root, stamp, folders = built
    sub = tmp_path / "repo"
    for e in pair:  # the two results alone, as hard links (the packer selects by the stamp)
        for f in folders[e].rglob("*"):
            if f.is_file():
                dst = sub / f.relative_to(root)
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.link(f, dst)
    out = tmp_path / "out"
    out.mkdir()
    for name, size in (("log.txt", 200_000), ("failures.txt", 20_000), ("bench.json", 20_000)):
        (out / name).write_bytes(b"x" * size)
    state = gpu_pack.pack(sub, stamp, out, list(pair), log=lambda s: None)
    files = list(out.iterdir())
    assert len(files) <= 8 and all(f.stat().st_size <= 15 * MB for f in files)
    assert sum(f.stat().st_size for f in files) <= 60 * MB
    assert state["written"] and state["written"][0].startswith("results.tgz"), state
    assert len([f for f in files if f.name.startswith("results.tgz.")]) <= 3, state
    if "e1" in pair:  # E1's networks do not all fit beside the results: its PCA basis and some do
        assert any(w.startswith("weights-e1-basis-pca-") for w in state["written"]), state
        assert any(w.startswith("weights-e1-family") for w in state["written"]), state
    print(f"\ncomes back ({' + '.join(pair)}):", state["written"], "left out:", state["left_out"])


def test_what_travels_fits(built):
    """Tracked tree (now) + carried data and wheels + the committed part of all four gpu results
    (everything but the local-only weights and FID samples) <= 56 MiB."""
    _, _, folders = built
    tree, carried = _tracked_bytes(), _carried()
    results = {e: _committed(f) for e, f in folders.items()}
    total = tree + sum(carried.values()) + sum(results.values())
    print(f"\ntravels: tree {tree / MB:.1f} MB + carried {sum(carried.values()) / MB:.1f} MB "
          f"+ results {', '.join(f'{e} {b / MB:.1f} MB' for e, b in results.items())} = {total / MiB:.1f} MiB")
    assert total <= TRAVEL_LIMIT, f"{total / MiB:.1f} MiB travel (limit {TRAVEL_LIMIT / MiB:.0f} MiB)"
