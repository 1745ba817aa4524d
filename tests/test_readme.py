"""The README's ten-line example runs as written."""
import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs():
    text = README.read_text()
    block = re.search(r"## Ten-line example.*?```python\n(.*?)```", text, re.S)
    assert block, "README has no ten-line example"
    code = block.group(1)
    assert len(code.strip().splitlines()) <= 12
    namespace: dict = {}
    threads = torch.get_num_threads()
    try:
        exec(compile(code, str(README), "exec"), namespace)
    finally:
        torch.set_num_threads(threads)
    images = namespace["images"]
    assert images.shape == (16, 64) and images.abs().max() <= 1
