"""Results store keyed by experiment, profile and a hash of the configuration.

A result lives in ``results/<experiment>/<profile>/<hash>/`` as ``config.json``,
``metrics.json``, ``info.json`` (versions, time), ``arrays.npz`` (never pickled), optional
``<figure>.png`` files and ``weights/<name>.safetensors``: trained networks with everything
needed to rebuild them (:func:`load_model`; safetensors cannot run code). ``<hash>`` is the first 12 hex digits of the sha256 of the
canonical JSON of the configuration (sorted keys, no spaces). Writes go to a temporary
folder that is renamed into place, so a failed save leaves nothing behind.

Integrity and freshness: every file of a result is listed with its sha256 and size in the
folder's ``manifest.json`` (relative paths, sorted keys: deterministic and portable, no mtimes),
checked on every load; a damaged or unreadable file raises :class:`CorruptResultError` naming
the file and the command that recomputes it. ``info.json`` records ``code_hash``
(:func:`code_hash`, the sha256 of the package source), so that ``python -m gud status --check``
tells a result computed by other code ("code drift") from one of another configuration
("stale"); the code is not part of the folder's key. Loose files of a run (checkpoints,
memoised steps) carry a sidecar ``<file>.sha256`` (:func:`write_checked`,
:func:`verify_checked`). Results stored before manifests existed load unverified.

Results of every profile may be committed; a book built with ``GUD_PROFILE=gpu`` reads them with
:meth:`ResultsStore.require` or :meth:`ResultsStore.cached`.
"""

from __future__ import annotations

import hashlib
import functools
import json
import os
import platform
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CorruptFileError",
    "CorruptResultError",
    "LoadedModel",
    "code_hash",
    "file_sha256",
    "remove_checked",
    "repair_command",
    "verify_checked",
    "verify_result",
    "write_checked",
    "write_manifest",
    "load_model",
    "load_weights",
    "save_weights",
    "Result",
    "ResultNotFoundError",
    "atomic_write",
    "ResultsStore",
    "canonical_json",
    "config_hash",
    "save_figure",
]

REPO = Path(__file__).resolve().parents[1]
HASH_LEN = 12


class ResultNotFoundError(FileNotFoundError):
    """No stored result matches the experiment, profile and configuration."""


class CorruptFileError(ValueError):
    """A stored file is damaged: its checksum does not match, or it cannot be read.

    ``path`` is the file, ``repair`` the command (or action) that recomputes it."""

    def __init__(self, path: str | os.PathLike, reason: str, repair: str | None = None):
        self.path, self.reason, self.repair = Path(path), reason, repair
        msg = f"{path} is corrupt ({reason})"
        super().__init__(msg + (f"; recompute it with `{repair}`" if repair else ""))


class CorruptResultError(CorruptFileError):
    """A file of a stored result is damaged (``python -m gud run <exp> --profile <p> --recompute``)."""


MANIFEST = "manifest.json"

#: Files of a result folder that are kept where they were made and not committed (.gitignore):
#: trained networks (``weights/``) and the 8-bit samples of a later FID (``fid.npz``, the arrays
#: named ``fid/...``).  A committed tree travels to a GPU machine whole (64 MiB with the data);
#: 8 networks of 4.9M parameters alone are 78 MB.  A manifest lists them; they are checked when
#: present and their absence is not damage.
LOCAL_ONLY = ("weights/", "fid.npz")
LOCAL_ARRAYS = "fid/"
MANIFEST_FORMAT = 1
SIDECAR = ".sha256"

#: Modules that compute no stored number (presentation, command line, throughput probe): edits to
#: them are not code drift.
CODE_EXCLUDE = ("__main__.py", "bench.py", "book.py", "plotting.py", "verify.py")


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@functools.lru_cache(maxsize=None)
def _code_hash(package: str) -> str:
    root = Path(package)
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py"), key=lambda q: q.relative_to(root).as_posix()):
        rel = f.relative_to(root).as_posix()
        if "__pycache__" in rel or rel in CODE_EXCLUDE:
            continue
        h.update(rel.encode() + b"\0" + f.read_bytes().replace(b"\r\n", b"\n") + b"\0")
    return h.hexdigest()[:16]


def code_hash() -> str:
    """The code a result is computed with: the first 16 hex digits of the sha256 over the package's
    ``gud/**/*.py`` (sorted relative paths and contents, line endings normalised; the modules of
    :data:`CODE_EXCLUDE` left out). Computed once per process (~1 ms): the code that runs."""
    return _code_hash(str(Path(__file__).resolve().parent))


def _read_sidecar(path: Path) -> list[str]:
    side = path.with_name(path.name + SIDECAR)
    try:
        digests = json.loads(side.read_text())["sha256"]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [d for d in digests if isinstance(d, str)] if isinstance(digests, list) else []


def write_checked(path: str | os.PathLike, write: Callable[[Path], None], suffix: str = ".tmp") -> Path:
    """:func:`atomic_write` with a sidecar ``<path>.sha256`` holding the file's sha256.

    The sidecar first lists the new and the current digest, then (after the rename) the new one
    only: a crash at any point leaves a file that :func:`verify_checked` accepts (the old or the
    new content), while damage to the file's bytes is always detected."""
    path = Path(path)
    side = path.with_name(path.name + SIDECAR)
    digest: list[str] = []

    def write_and_hash(tmp: Path) -> None:
        write(tmp)
        digest.append(file_sha256(tmp))
        old = [d for d in _read_sidecar(path) if path.exists()][:1]
        atomic_write(side, lambda t: t.write_text(json.dumps({"sha256": digest + old}) + "\n"))

    atomic_write(path, write_and_hash, suffix=suffix)
    atomic_write(side, lambda t: t.write_text(json.dumps({"sha256": digest}) + "\n"))
    return path


def verify_checked(path: str | os.PathLike, repair: str | None = None) -> None:
    """Raise :class:`CorruptFileError` unless ``path`` matches its sidecar ``<path>.sha256``."""
    path = Path(path)
    accepted = _read_sidecar(path)
    if not accepted:
        raise CorruptFileError(path, f"its checksum file {path.name}{SIDECAR} is missing or unreadable", repair)
    try:
        digest = file_sha256(path)
    except OSError as exc:
        raise CorruptFileError(path, f"unreadable: {exc.strerror or exc}", repair) from exc
    if digest not in accepted:
        raise CorruptFileError(path, "sha256 does not match the one recorded when it was written", repair)


def remove_checked(path: str | os.PathLike) -> None:
    """Delete ``path`` and its sidecar (missing ones are fine)."""
    path = Path(path)
    for p in (path, path.with_name(path.name + SIDECAR)):
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def _manifest(folder: Path) -> dict[str, Any]:
    files = {}
    for f in sorted(folder.rglob("*"), key=lambda q: q.relative_to(folder).as_posix()):
        rel = f.relative_to(folder).as_posix()
        if not f.is_file() or rel == MANIFEST or any(part.startswith(".") for part in rel.split("/")):
            continue
        files[rel] = {"sha256": file_sha256(f), "size": f.stat().st_size}
    return {"format": MANIFEST_FORMAT, "files": files}


def write_manifest(folder: str | os.PathLike) -> Path:
    """Write ``manifest.json`` (sha256 and size of every file of a result folder) atomically."""
    folder = Path(folder)
    text = json.dumps(_manifest(folder), indent=1, sort_keys=True) + "\n"
    return atomic_write(folder / MANIFEST, lambda tmp: tmp.write_text(text))


def repair_command(experiment: str, profile: str) -> str:
    return f"python -m gud run {experiment} --profile {profile} --recompute"


def verify_result(folder: str | os.PathLike, repair: str | None = None) -> bool:
    """Check every file of a result folder against its ``manifest.json``: raise
    :class:`CorruptResultError` (naming the file) on a mismatch or a missing file.
    Returns False for a result stored before manifests existed (nothing to check), else True."""
    folder = Path(folder)
    man = folder / MANIFEST
    if not man.exists():
        return False
    try:
        files = json.loads(man.read_text())["files"]
        if not isinstance(files, dict):
            raise TypeError("'files' is not a mapping")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CorruptResultError(man, f"unreadable manifest: {exc}", repair) from exc
    for rel, want in sorted(files.items()):
        f = folder / rel
        if not f.is_file():
            if rel.startswith(LOCAL_ONLY):  # not committed (too large to travel); checked when present
                continue
            raise CorruptResultError(f, "listed in manifest.json but missing", repair)
        try:
            size, digest = f.stat().st_size, file_sha256(f)
        except OSError as exc:
            raise CorruptResultError(f, f"unreadable: {exc.strerror or exc}", repair) from exc
        if size != want.get("size") or digest != want.get("sha256"):
            raise CorruptResultError(f, "sha256 does not match manifest.json", repair)
    return True


def _plain(obj: Any) -> Any:
    """Turn numpy / torch scalars and arrays, tuples and paths into JSON-able Python values."""
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(f"configuration keys must be strings, got {k!r}")
            out[k] = _plain(v)
        return out
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (str, bool, int, float)) or obj is None:
        return obj
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if hasattr(obj, "detach") and hasattr(obj, "tolist"):  # torch.Tensor without importing torch
        return obj.detach().cpu().tolist()
    raise TypeError(f"cannot store {type(obj).__name__} {obj!r} as JSON")


def canonical_json(config: Mapping[str, Any]) -> str:
    """Canonical JSON of a configuration: sorted keys, compact separators, ASCII, no NaN."""
    return json.dumps(_plain(config), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def config_hash(config: Mapping[str, Any]) -> str:
    """Short (12 hex digits) sha256 of :func:`canonical_json`."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:HASH_LEN]


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], suffix: str = ".tmp",
                 mode: int = 0o644) -> Path:
    """Call ``write(tmp)`` on a temporary file next to ``path``, then rename it into place: a
    failed or interrupted write never leaves a partial file at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=suffix)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def _dump(obj: Any, path: Path) -> None:
    with open(path, "w") as f:
        json.dump(_plain(obj), f, indent=2, sort_keys=True, allow_nan=True)
        f.write("\n")


def _git_commit() -> str | None:
    head = REPO / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            return (REPO / ".git" / ref[5:]).read_text().strip()
        return ref
    except OSError:
        return None


@dataclass
class Result:
    """A stored result: configuration, scalar metrics and named arrays."""

    experiment: str
    profile: str
    config: dict[str, Any]
    metrics: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def __getitem__(self, name: str) -> Any:
        """A metric, else an array, by name."""
        if name in self.metrics:
            return self.metrics[name]
        return self.arrays[name]


class ResultsStore:
    """Results under ``root`` (default ``<repo>/results``, or env ``GUD_RESULTS``)."""

    def __init__(self, root: str | os.PathLike | None = None):
        env = os.environ.get("GUD_RESULTS")
        self.root = Path(root) if root is not None else Path(env) if env else REPO / "results"

    def key(self, experiment: str, profile: str, config: Mapping[str, Any]) -> str:
        """The configuration hash that names the result's folder."""
        return config_hash(config)

    def path(self, experiment: str, profile: str, config: Mapping[str, Any]) -> Path:
        return self.root / experiment / profile / self.key(experiment, profile, config)

    def _show(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root.parent))
        except ValueError:
            return str(path)

    def save(
        self,
        experiment: str,
        profile: str,
        config: Mapping[str, Any],
        metrics: Mapping[str, Any],
        arrays: Mapping[str, Any] | None = None,
        figures: Mapping[str, Any] | None = None,
        info: Mapping[str, Any] | None = None,
        weights: Mapping[str, Any] | None = None,
        weights_dtype: str = "float32",
    ) -> Result:
        """Store a result atomically (temporary folder, then rename), replacing an older one.

        ``weights`` maps names to ``(model, prior, spec)`` triples written by :func:`save_weights`
        in ``weights_dtype`` (``"float16"``/``"bfloat16"`` halves the size of committed weights)."""
        final = self.path(experiment, profile, config)
        final.parent.mkdir(parents=True, exist_ok=True)
        plain_arrays: dict[str, np.ndarray] = {}
        for name, a in (arrays or {}).items():
            a = a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)
            if a.dtype.hasobject:
                raise TypeError(f"array {name!r} has dtype object: it cannot be stored without pickle")
            plain_arrays[name] = a
        full_info = {
            "experiment": experiment,
            "profile": profile,
            "hash": final.name,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "git_commit": _git_commit(),
            "code_hash": code_hash(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "platform": platform.platform(),
            **dict(info or {}),
        }
        try:
            import torch

            full_info.setdefault("torch", torch.__version__)
        except ImportError:  # pragma: no cover
            pass
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".tmp-{final.name}-"))
        try:
            (tmp / "config.json").write_text(canonical_json(config) + "\n")
            _dump(metrics, tmp / "metrics.json")
            _dump(full_info, tmp / "info.json")
            local = {k: v for k, v in plain_arrays.items() if k.startswith(LOCAL_ARRAYS)}
            with open(tmp / "arrays.npz", "wb") as f:
                np.savez_compressed(f, **{k: v for k, v in plain_arrays.items() if k not in local})
            if local:  # 8-bit samples for a FID computed later: a file of their own, not committed
                with open(tmp / "fid.npz", "wb") as f:
                    np.savez_compressed(f, **local)
            for name, fig in (figures or {}).items():
                fig.savefig(tmp / f"{name}.png", dpi=120, bbox_inches="tight")
            for name, (model, prior, spec) in (weights or {}).items():
                save_weights(tmp / "weights" / f"{name}.safetensors", model, prior, spec, dtype=weights_dtype)
            write_manifest(tmp)
            os.chmod(tmp, 0o755)
            old = None
            if final.exists():
                old = final.with_name(f".old-{final.name}-{os.getpid()}")
                os.replace(final, old)
            os.replace(tmp, final)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return Result(
            experiment, profile, json.loads(canonical_json(config)), json.loads(json.dumps(_plain(metrics))),
            plain_arrays, full_info, final,
        )  # fmt: skip

    def load(self, experiment: str, profile: str, config: Mapping[str, Any]) -> Result | None:
        """The stored result for this configuration, or None. Never unpickles.

        Every file is checked against the folder's ``manifest.json`` first; a damaged or
        unreadable one raises :class:`CorruptResultError` naming it and the command that
        recomputes it."""
        path = self.path(experiment, profile, config)
        if not (path / "config.json").exists():
            return None
        repair = repair_command(experiment, profile)
        verified = verify_result(path, repair)

        def read(name: str, parse: Callable[[Path], Any]) -> Any:
            try:
                return parse(path / name)
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
                raise CorruptResultError(path / name, f"unreadable: {type(exc).__name__}: {exc}", repair) from exc

        def npz(f: Path) -> dict[str, np.ndarray]:
            with np.load(f, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}

        stored = read("config.json", lambda f: json.loads(f.read_text()))
        if canonical_json(stored) != canonical_json(config):  # hash collision or hand-edited
            return None
        metrics = read("metrics.json", lambda f: json.loads(f.read_text()))
        info = read("info.json", lambda f: json.loads(f.read_text())) if (path / "info.json").exists() else {}
        arrays = read("arrays.npz", npz) if (path / "arrays.npz").exists() else {}
        if (path / "fid.npz").exists():
            arrays.update(read("fid.npz", npz))
        if not isinstance(metrics, dict) or not isinstance(info, dict):
            raise CorruptResultError(path / "metrics.json", "not a JSON object", repair)
        if not verified:
            info = {**info, "unverified": "stored before checksums were recorded (no manifest.json)"}
        return Result(experiment, profile, stored, metrics, arrays, info, path)

    def update_metrics(self, experiment: str, profile: str, config: Mapping[str, Any],
                       extra: Mapping[str, Any]) -> Result:
        """Add ``extra`` to the metrics of a stored result (e.g. scores computed later from its
        arrays), rewriting ``metrics.json`` atomically; arrays and weights stay as they are."""
        res = self.require(experiment, profile, config)
        metrics = {**res.metrics, **_plain(dict(extra))}
        path = atomic_write(res.path / "metrics.json", lambda tmp: _dump(metrics, tmp))
        if (res.path / MANIFEST).exists():
            write_manifest(res.path)
        res.metrics = json.loads(path.read_text())
        return res

    def require(self, experiment: str, profile: str, config: Mapping[str, Any]) -> Result:
        """Like :meth:`load`, but a missing result raises :class:`ResultNotFoundError`."""
        result = self.load(experiment, profile, config)
        if result is None:
            path = self.path(experiment, profile, config)
            raise ResultNotFoundError(
                f"no stored result for experiment {experiment!r}, profile {profile!r}, "
                f"configuration hash {path.name} (looked in {path}). Compute it with "
                f"`python -m gud run {experiment} --profile {profile}` on a machine that can (a GPU "
                "for 'gpu' and 'paper'), then commit the folder."
            )
        return result

    def cached(
        self,
        experiment: str,
        profile: str,
        config: Mapping[str, Any],
        compute_fn: Callable[[], Any],
        *,
        recompute: bool = False,
        allow_compute: bool = True,
    ) -> Result:
        """Load the matching result if stored, else run ``compute_fn()``, save and return it.

        Prints ``loaded stored result <path>`` or ``computed and stored result <path>``
        (``book/sanitize.cfg`` makes the two compare equal under nbval).

        ``compute_fn`` returns a metrics dict, or ``(metrics, arrays)``, or
        ``(metrics, arrays, figures)``. ``allow_compute=False`` turns a miss into
        :class:`ResultNotFoundError` (for books built from committed results).
        """
        if not recompute:
            result = self.load(experiment, profile, config)
            if result is not None:
                print(f"loaded stored result {self._show(result.path)}")
                return result
        if not allow_compute:
            return self.require(experiment, profile, config)
        out = compute_fn()
        parts = out if isinstance(out, tuple) else (out,)
        if not 1 <= len(parts) <= 3 or not isinstance(parts[0], Mapping):
            raise TypeError("compute_fn must return metrics, (metrics, arrays) or (metrics, arrays, figures)")
        result = self.save(experiment, profile, config, *parts)
        print(f"computed and stored result {self._show(result.path)}")
        return result


def save_figure(fig: Any, name: str, directory: str | os.PathLike | None = None, dpi: int = 150,
                profile: str | None = None) -> Path:
    """Save ``fig`` as ``book/figures/<profile>/<name>.png`` and ``.pdf`` (stable, citable names).

    One folder per run profile, so that a ``gpu`` run never overwrites the ``ci`` figures
    (``book/figures/ci/`` is recomputed by CI and not committed; the others are).
    Returns the PNG path. The PDF carries no creation date, so reruns are byte-stable.
    """
    if not name or any(c in name for c in "/\\") or name.startswith("."):
        raise ValueError(f"figure name {name!r} must be a plain file stem")
    if directory is None:
        from .profiles import current_profile

        directory = REPO / "book" / "figures" / (profile or current_profile())
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    png, pdf = out / f"{name}.png", out / f"{name}.pdf"
    for path, kwargs in (
        (png, {"dpi": dpi, "metadata": {"Software": None}}),
        (pdf, {"metadata": {"CreationDate": None, "Creator": None, "Producer": None}}),
    ):
        atomic_write(path, lambda tmp: fig.savefig(tmp, bbox_inches="tight", format=path.suffix[1:], **kwargs),
                     suffix=path.suffix)
    return png



# ----------------------------------------------------------------------------- trained networks


@dataclass
class LoadedModel:
    """A trained denoiser rebuilt from its weights file, with the prior it works in."""

    model: Any  # gud.nets.EpsNet, eval mode
    prior: Any  # gud.prior.Prior
    spec: dict[str, Any]  # network kind and arguments, basis, data shape, ...


def _basis_spec(basis) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": basis.name, "shape": list(basis.shape), "kwargs": {}}
    if basis.name == "wavelet":
        spec["kwargs"] = {"wavelet": basis.wavelet, "levels": basis.levels}
    return spec


def save_weights(path: str | os.PathLike, model: Any, prior: Any, spec: Mapping[str, Any],
                 dtype: str = "float32") -> Path:
    """Write a :class:`gud.nets.EpsNet`'s network weights (in ``dtype``), its ``log_var`` and
    the prior (mean, variances, whitening, basis name) as one safetensors file.

    A PCA basis (a ``D x D`` matrix: 28 MB of a 3072-pixel basis in bf16, more than the network)
    is not repeated in every network's file: it is written once per fitted basis, beside the
    network, as ``basis-pca-<sha256 of its float64 components, 12 digits>.safetensors`` (in
    ``dtype``), and the network's file names it.  ``spec`` must name the network (``net``,
    ``net_kwargs``; :func:`gud.nets.build_net`).  Files are written atomically.
    """
    import torch
    from safetensors.torch import save_file

    if "net" not in spec:
        raise ValueError("spec must name the network kind ('net') and its arguments ('net_kwargs')")
    cast = getattr(torch, dtype)
    tensors = {f"net.{k}": v.detach().to("cpu", cast).contiguous() for k, v in model.net.state_dict().items()}
    tensors["log_var"] = model.log_var.detach().cpu().float().contiguous()
    tensors["prior.mean"] = prior.mean.detach().cpu().double().contiguous()
    tensors["prior.var"] = prior.var.detach().cpu().double().contiguous()
    basis = prior.basis
    basis_spec = _basis_spec(basis)
    if basis.name == "pca":
        comps = basis.components.detach().cpu().double().contiguous()
        digest = hashlib.sha256(comps.numpy().tobytes()).hexdigest()[:HASH_LEN]
        basis_spec["file"] = f"basis-pca-{digest}.safetensors"
        basis_path = Path(path).parent / basis_spec["file"]
        if not basis_path.exists():  # one file per fitted basis, shared by the networks beside it
            btensors = {"basis.components": comps.to(cast).contiguous(),
                        "basis.variance": basis.meta["variance"].double().contiguous(),
                        "basis.channel": basis.meta["channel"].long().contiguous()}
            atomic_write(basis_path, lambda tmp: save_file(btensors, str(tmp), metadata={"sha256_float64": digest}))
    meta = {"spec": canonical_json({**dict(spec), "basis": basis_spec, "whitened": bool(prior.whitened),
                                    "image_input": model.image_shape is not None, "dtype": dtype})}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def _weights_check(path: Path, repair: str | None) -> None:
    """Check a weights file against the ``manifest.json`` of the result folder it lies in (if any)."""
    folder = path.parent.parent if path.parent.name == "weights" else path.parent
    man = folder / MANIFEST
    if not man.exists():
        return
    try:
        want = json.loads(man.read_text())["files"].get(path.relative_to(folder).as_posix())
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptResultError(man, f"unreadable manifest: {exc}", repair) from exc
    if want is None:
        raise CorruptResultError(path, "not listed in the result's manifest.json", repair)
    if path.stat().st_size != want.get("size") or file_sha256(path) != want.get("sha256"):
        raise CorruptResultError(path, "sha256 does not match manifest.json", repair)


def load_weights(path: str | os.PathLike, device: str = "cpu", repair: str | None = None) -> LoadedModel:
    """Rebuild the network and prior written by :func:`save_weights` (float32, eval mode).

    A file inside a result folder is first checked against its ``manifest.json``; a damaged file
    raises :class:`CorruptResultError` (``repair``: the command that recomputes it)."""
    from safetensors import SafetensorError, safe_open

    from .bases import PCABasis, make_basis
    from .nets import EpsNet, build_net
    from .prior import Prior

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no weights file {path}")
    _weights_check(path, repair)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            spec = json.loads(f.metadata()["spec"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as exc:
        raise CorruptResultError(path, f"unreadable safetensors file: {type(exc).__name__}: {exc}", repair) from exc
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(v.isfinite().all())]
    if bad:
        raise CorruptResultError(path, f"non-finite values in {', '.join(sorted(bad)[:3])}", repair)
    b = spec["basis"]
    if b["name"] == "pca" and "file" in b:  # the PCA basis stored once beside the networks
        bpath = path.parent / b["file"]
        if not bpath.exists():
            raise FileNotFoundError(f"{path.name} needs its PCA basis {b['file']} beside it in {path.parent}")
        _weights_check(bpath, repair)
        try:
            with safe_open(str(bpath), framework="pt", device="cpu") as f:
                tensors.update({k: f.get_tensor(k) for k in f.keys()})
        except (SafetensorError, OSError, ValueError) as exc:
            raise CorruptResultError(bpath, f"unreadable safetensors file: {type(exc).__name__}: {exc}", repair) from exc
    if b["name"] == "pca":
        basis = PCABasis(b["shape"], tensors["basis.components"].double(), tensors["basis.variance"],
                         tensors["basis.channel"])
    else:
        basis = make_basis(b["name"], b["shape"], **b["kwargs"])
    prior = Prior(basis, tensors["prior.mean"], tensors["prior.var"], spec["whitened"])
    net = build_net(spec["net"], b["shape"], **spec.get("net_kwargs", {}))
    net.load_state_dict({k[4:]: v.float() for k, v in tensors.items() if k.startswith("net.")})
    float_basis = make_basis(b["name"], b["shape"], **b["kwargs"]) if b["name"] != "pca" else \
        PCABasis(b["shape"], tensors["basis.components"].float(), tensors["basis.variance"], tensors["basis.channel"])
    model = EpsNet(net, float_basis, tensors["log_var"], image_shape=b["shape"] if spec["image_input"] else None)
    return LoadedModel(model.to(device).eval(), prior, spec)


def load_model(experiment: str, name: str, profile: str | None = None, config: Mapping[str, Any] | None = None,
               store: "ResultsStore | None" = None, device: str = "cpu") -> LoadedModel:
    """The trained network ``name`` of the stored result of ``experiment`` (current configuration
    of ``profile`` unless ``config`` is given), rebuilt on ``device`` with its prior."""
    from .profiles import current_profile, experiment_config

    profile = current_profile() if profile is None else profile
    config = experiment_config(experiment, profile) if config is None else config
    store = store or ResultsStore()
    folder = store.path(experiment, profile, config)
    path = folder / "weights" / f"{name}.safetensors"
    if not (folder / "config.json").exists():
        raise ResultNotFoundError(
            f"no stored result of experiment {experiment!r}, profile {profile!r}, configuration hash "
            f"{folder.name} (looked in {store._show(folder)}): compute it with "
            f"`python -m gud run {experiment} --profile {profile}`")
    if not path.exists():
        have = sorted(p.stem for p in path.parent.glob("*.safetensors")) if path.parent.exists() else []
        raise FileNotFoundError(f"the stored result of {experiment}/{profile} ({store._show(folder)}) has no "
                                f"trained network {name!r}; stored networks: {', '.join(have) or 'none'}")
    return load_weights(path, device, repair=repair_command(experiment, profile))
