"""The GitHub Actions workflows (``.github/workflows/*.yml``) lint clean and do what CI must.

Linters, each skipped with its reason when not installed:

* ``zizmor`` (PyPI, one wheel, in the ``test`` extra): parses the workflows into GitHub's model
  (unknown keys and wrong types are errors) and audits them (permissions, credentials,
  template injection, unpinned actions, ...). Run offline. Policy: GitHub's own ``actions/*``
  are pinned to a major version (``actions/checkout@v4``), anything else to a commit hash.
* ``check-jsonschema --builtin-schema vendor.github-workflows``: SchemaStore's workflow schema.
* ``actionlint`` (a binary on PATH): expressions, contexts, job and step syntax.

Any finding fails. ``test_book_workflow`` checks, without a linter, that ``book.yml`` runs
``.ci/run``, uploads ``_build/html`` and deploys only on pushes to main, and that README.md and
``_config.yml`` name no Pages address other than the one ``repository.url`` implies.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.y*ml"))
BOOK = REPO / ".github" / "workflows" / "book.yml"

ZIZMOR_CONFIG = """\
rules:
  unpinned-uses:
    config:
      policies:
        "actions/*": ref-pin
        "*": hash-pin
"""


def _tool(name: str) -> str | None:
    """``name`` next to this interpreter (the virtualenv's bin/), else on PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.is_file() else shutil.which(name)


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)


def _report(done: subprocess.CompletedProcess) -> str:
    return f"exit {done.returncode}\n{done.stdout[-6000:]}\n{done.stderr[-3000:]}"


def test_workflows_present():
    assert BOOK in WORKFLOWS, "no .github/workflows/book.yml"


def test_zizmor(tmp_path):
    zizmor = _tool("zizmor")
    if zizmor is None:
        pytest.skip("zizmor not installed (pip install zizmor, or the `test` extra)")
    config = tmp_path / "zizmor.yml"
    config.write_text(ZIZMOR_CONFIG)
    done = _run([zizmor, "--offline", "--no-progress", "--config", str(config), *map(str, WORKFLOWS)])
    # 0: no findings; 10-14: findings (by highest severity); anything else: zizmor failed
    assert done.returncode == 0, "zizmor findings:\n" + _report(done)


def test_workflow_schema():
    check = _tool("check-jsonschema")
    if check is None:
        pytest.skip("check-jsonschema not installed (pip install check-jsonschema)")
    done = _run([check, "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS)])
    assert done.returncode == 0, "workflow schema violations:\n" + _report(done)


def test_actionlint():
    actionlint = _tool("actionlint")
    if actionlint is None:
        pytest.skip("actionlint not on PATH (a Go binary: https://github.com/rhysd/actionlint)")
    done = _run([actionlint, "-no-color", *map(str, WORKFLOWS)])
    assert done.returncode == 0, "actionlint findings:\n" + _report(done)


def _steps_using(job: dict, action: str) -> list[dict]:
    return [s for s in job.get("steps", []) if str(s.get("uses", "")).split("@")[0] == action]


def test_book_workflow():
    wf = yaml.safe_load(BOOK.read_text())
    on = wf.get("on", wf.get(True))  # YAML 1.1 reads the key `on` as True
    assert {"push", "pull_request"} <= set(on), f"book.yml must run on push and pull_request, not {on}"
    jobs = wf["jobs"]
    build, deploy = jobs["build"], jobs["deploy"]

    runs = [s.get("run", "") for s in build["steps"]]
    assert any(re.fullmatch(r"\s*bash \.ci/run\s*", r) for r in runs), "build must run `bash .ci/run`"
    (py,) = _steps_using(build, "actions/setup-python")
    assert str(py["with"]["python-version"]) == "3.11"
    (upload,) = _steps_using(build, "actions/upload-pages-artifact")
    assert upload["with"]["path"] == "_build/html"

    assert deploy["needs"] in ("build", ["build"])
    assert "refs/heads/main" in deploy["if"] and "push" in deploy["if"], "deploy only on pushes to main"
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert deploy["environment"]["name"] == "github-pages"
    assert deploy.get("concurrency") or wf.get("concurrency"), "Pages deployments need a concurrency group"
    assert _steps_using(deploy, "actions/deploy-pages")
    assert wf.get("permissions") == {"contents": "read"}, "least privilege outside the deploy job"

    pins = {"actions/checkout": "v4", "actions/setup-python": "v5",
            "actions/upload-pages-artifact": "v3", "actions/deploy-pages": "v4"}  # fmt: skip
    for job in jobs.values():
        for step in job.get("steps", []):
            name, _, ref = str(step.get("uses", "")).partition("@")
            if name in pins:
                assert ref == pins[name], f"{name}@{ref}: expected @{pins[name]}"


def test_pages_url_matches_repository():
    config = yaml.safe_load((REPO / "_config.yml").read_text())
    url = config["repository"]["url"].rstrip("/")
    m = re.fullmatch(r"https://github\.com/([^/]+)/([^/]+)", url)
    assert m, f"repository.url {url!r} is not https://github.com/OWNER/REPO"
    owner, name = m.groups()
    pages = f"https://{owner.lower()}.github.io/{name}/"
    baseurl = (config.get("html") or {}).get("baseurl")
    assert baseurl in (None, pages), f"_config.yml html.baseurl {baseurl!r} is not {pages}"
    readme = (REPO / "README.md").read_text()
    # the book is published only once the repository is on GitHub with Pages enabled: the README
    # says where it will appear and how to build it locally, and names no Pages site as existing
    linked = set(re.findall(r"https://[\w.-]+\.github\.io/[\w./-]*", readme))
    assert not linked - {pages}, f"README.md links other Pages addresses: {sorted(linked - {pages})}"
    assert "https://<owner>.github.io/<repository>/" in readme and "_build/html/index.html" in readme, (
        "README.md should say where the book will be published and how to open a local build")
