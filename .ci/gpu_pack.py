#!/usr/bin/env python3
"""Pack what a GPU slice produced into files the device tool brings back (stdlib only, no git).

    python3 .ci/gpu_pack.py --stamp STAMP --out OUT [--root .] [--order e4 e5 e2 e1]
    python3 .ci/gpu_pack.py --unpack DIR [--root .]        # here: unpack what came back

Selection needs no ``.git``: every file under ``results/`` modified after the stamp file (written
when the slice started; the same test as ``find results -newer STAMP``), temporary files of the
store (names starting with ``.``) left out.  Result folders are packed whole (``config.json``,
``metrics.json``, ``info.json``, ``manifest.json``, ``arrays.npz``), so that their manifests match.

What comes back is limited (``--max-files`` files of at most ``--part-bytes``, ``--max-bytes`` in
all, the files already in ``OUT`` counted).  Archives are made in priority order and kept only
whole (every part fits), else left out and named in the log:

1. ``results.tgz.N``: the new results without their weights (what the book reads), or, if that
   does not fit, one ``results-<exp>.tgz.N`` per experiment in ``--order``;
2. ``weights-<exp>.tgz.N``: the trained networks (``weights/`` of each new result), in
   ``--order``, while room is left; where an experiment's networks do not fit together, one
   archive per file (``weights-<exp>-<name>.tgz.N``; a PCA basis before the networks needing it).

Checkpoints (``runs/``) are never packed: a 4.9M-parameter U-Net's checkpoint is ~80 MB, more
than a slice can bring back or carry in; experiments are sized to finish within one slice.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tarfile
from pathlib import Path

MAX_FILES = 8
PART_BYTES = 15_000_000
MAX_BYTES = 60_000_000


def new_files(root: Path, stamp: Path) -> list[Path]:
    """Files under ``root/results`` newer than ``stamp`` (``find results -newer STAMP -type f``),
    as paths relative to ``root``; names starting with '.' (temporary, old) are skipped."""
    since = stamp.stat().st_mtime_ns
    out = []
    base = root / "results"
    if not base.is_dir():
        return out
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if not name.startswith(".") and p.stat().st_mtime_ns > since:
                out.append(p.relative_to(root))
    return out


def result_folders(files: list[Path]) -> dict[str, list[Path]]:
    """``{experiment: [results/<exp>/<profile>/<hash>, ...]}`` of the new files."""
    out: dict[str, list[Path]] = {}
    for f in files:
        if len(f.parts) >= 5:  # results/<exp>/<profile>/<hash>/<file...>
            folder = Path(*f.parts[:4])
            out.setdefault(f.parts[1], [])
            if folder not in out[f.parts[1]]:
                out[f.parts[1]].append(folder)
    return out


def _members(root: Path, folders: list[Path], weights: bool) -> list[Path]:
    """Every file of ``folders`` (whole result folders), with or only with ``weights/``."""
    out = []
    for folder in folders:
        for p in sorted((root / folder).rglob("*")):
            rel = p.relative_to(root)
            if not p.is_file() or any(s.startswith(".") for s in rel.parts):
                continue
            if ("weights" in rel.parts[4:]) == weights:
                out.append(rel)
    return out


def _tgz(root: Path, members: list[Path]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
        for m in members:
            tar.add(root / m, arcname=m.as_posix(), recursive=False)
    return buf.getvalue()


def pack(root: Path, stamp: Path, out: Path, order: list[str] | None = None, *, max_files: int = MAX_FILES,
         part_bytes: int = PART_BYTES, max_bytes: int = MAX_BYTES, log=print) -> dict:
    """Write the archives into ``out``; returns ``{"written": [...], "left_out": [...], "files": n, "bytes": b}``."""
    out.mkdir(parents=True, exist_ok=True)
    folders = result_folders(new_files(root, stamp))
    exps = [e for e in (order or []) if e in folders] + sorted(e for e in folders if e not in (order or []))
    used_files = [p for p in out.iterdir() if p.is_file()]
    state = {"files": len(used_files), "bytes": sum(p.stat().st_size for p in used_files),
             "written": [], "left_out": []}

    def emit(name: str, data: bytes, quiet: bool = False) -> bool:
        parts = [data[i:i + part_bytes] for i in range(0, len(data), part_bytes)] or [b""]
        if state["files"] + len(parts) > max_files or state["bytes"] + len(data) > max_bytes:
            if not quiet:
                state["left_out"].append(f"{name} ({len(data) / 1e6:.1f} MB in {len(parts)} part(s): no room)")
                log(f"pack: left out {state['left_out'][-1]}")
            return False
        for i, part in enumerate(parts):
            (out / f"{name}.{i}").write_bytes(part)
        state["files"] += len(parts)
        state["bytes"] += len(data)
        state["written"].append(f"{name} ({len(data) / 1e6:.1f} MB, {len(parts)} part(s))")
        log(f"pack: {state['written'][-1]}")
        return True

    if not exps:
        log("pack: no new results")
        return state
    every = [f for e in exps for f in folders[e]]
    if not emit("results.tgz", _tgz(root, _members(root, every, weights=False))):
        for e in exps:
            emit(f"results-{e}.tgz", _tgz(root, _members(root, folders[e], weights=False)))
    for e in exps:
        members = _members(root, folders[e], weights=True)
        if not members or emit(f"weights-{e}.tgz", _tgz(root, members), quiet=True):
            continue
        # not all of them: each network alone (a PCA basis file before the networks that need it)
        bases = [m for m in members if m.name.startswith("basis-")]
        have = {m.name for m in bases if emit(f"weights-{e}-{m.stem}.tgz", _tgz(root, [m]))}
        for m in members:
            if m in bases:
                continue
            need = _basis_file(root / m)
            if need is not None and need not in have:
                state["left_out"].append(f"{m.name} (its basis {need} did not fit)")
                continue
            emit(f"weights-{e}-{m.stem}.tgz", _tgz(root, [m]))
    log(f"pack: {state['files']} files, {state['bytes'] / 1e6:.1f} MB in {out}")
    return state


def _basis_file(path: Path) -> str | None:
    """The PCA basis file a network's weights file names (``spec.basis.file`` in its safetensors
    metadata), or None."""
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 0 < n <= 100_000_000:
                return None
            meta = json.loads(f.read(n)).get("__metadata__", {})
        return json.loads(meta.get("spec", "{}")).get("basis", {}).get("file")
    except (OSError, ValueError, AttributeError, TypeError):
        return None


def unpack(directory: Path, root: Path, log=print) -> list[str]:
    """Join the parts of every archive in ``directory`` and extract it under ``root`` (results only:
    members must lie under ``results/``)."""
    names = sorted({p.name.rsplit(".", 1)[0] for p in directory.glob("*.tgz.*") if p.name.rsplit(".", 1)[1].isdigit()})
    done = []
    for name in names:
        parts = sorted(directory.glob(f"{name}.*"), key=lambda p: int(p.name.rsplit(".", 1)[1]))
        data = b"".join(p.read_bytes() for p in parts)
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for m in tar.getmembers():
                path = Path(m.name)
                if not m.isfile() or path.is_absolute() or ".." in path.parts or path.parts[0] != "results":
                    raise ValueError(f"{name}: refusing member {m.name!r} (only files under results/)")
            tar.extractall(root, filter="data") if sys.version_info >= (3, 12) else tar.extractall(root)
        done.append(name)
        log(f"unpacked {name} ({len(parts)} part(s))")
    return done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=".", type=Path)
    ap.add_argument("--stamp", type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--order", nargs="*", default=[])
    ap.add_argument("--max-files", type=int, default=MAX_FILES)
    ap.add_argument("--part-bytes", type=int, default=PART_BYTES)
    ap.add_argument("--max-bytes", type=int, default=MAX_BYTES)
    ap.add_argument("--unpack", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None, help="write the outcome as JSON here")
    a = ap.parse_args(argv)
    if a.unpack is not None:
        unpack(a.unpack, a.root)
        return 0
    if a.stamp is None or a.out is None:
        ap.error("give --stamp and --out (or --unpack DIR)")
    state = pack(a.root, a.stamp, a.out, a.order, max_files=a.max_files, part_bytes=a.part_bytes,
                 max_bytes=a.max_bytes)
    if a.json is not None:
        a.json.write_text(json.dumps(state, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
