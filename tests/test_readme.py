"""The README's ten-line example runs as written, and is reproducible: run twice in one process,
with the global RNG disturbed in between, it prints the same bits/dim."""
import contextlib
import io
import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def _example() -> str:
    block = re.search(r"## Ten-line example.*?```python\n(.*?)```", README.read_text(), re.S)
    assert block, "README has no ten-line example"
    return block.group(1)


def _run(code: str) -> tuple[str, dict]:
    namespace: dict = {}
    out = io.StringIO()
    threads = torch.get_num_threads()
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(code, str(README), "exec"), namespace)
    finally:
        torch.set_num_threads(threads)
    return out.getvalue(), namespace


def test_readme_example_runs_and_is_reproducible():
    code = _example()
    assert len([ln for ln in code.strip().splitlines() if ln.strip()]) <= 12
    first, ns = _run(code)
    images = ns["images"]
    assert images.shape == (16, 64) and images.abs().max() <= 1
    bpd = float(first.strip())
    assert 2.0 < bpd < 3.0  # beats the Gaussian model (about 3.0) and the uniform model (4.09)
    torch.manual_seed(1234)
    torch.rand(1000)  # disturb the global RNG: nothing in the example may depend on it
    second, ns2 = _run(code)
    assert second == first
    assert torch.equal(ns2["images"], images)
