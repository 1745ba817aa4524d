"""The book's prose states no result by hand: chapter Markdown holds no result numbers (the
paper's own numbers, quoted as such, and configured settings excepted), findings and claim
sentences come from stored results, and text about a profile names only data its configuration has."""
import importlib
import json
import re
from pathlib import Path

import pytest

from gud import book
from gud.profiles import EXPERIMENTS, PROFILES, experiment_config

BOOK = Path(__file__).resolve().parents[1] / "book"
CHAPTERS = {"framework": "framework", "e3": "e3_forward_process", "toy": "toy_gaussian", "e1": "e1_pca_sweep",
            "e2": "e2_fourier_sweep", "e4": "e4_columns_extension", "e5": "e5_wavelet_columns"}
NUMBER = re.compile(r"(?<![\w.])\d+\.\d{2,}(?![\w.])")
MATH = re.compile(r"\$\$.*?\$\$|\$[^$\n]*\$", re.S)


def _markdown(page: str) -> list[str]:
    cells = json.loads((BOOK / f"{page}.ipynb").read_text())["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "markdown"]


def _numbers_in(obj) -> set[str]:
    """Every number of a configuration or constant, as the decimal strings a text would use."""
    out = set()
    if isinstance(obj, dict):
        for v in obj.values():
            out |= _numbers_in(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            out |= _numbers_in(v)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out |= {f"{obj:g}", f"{obj:.2f}", f"{obj:.3f}"}
    return out


def _allowed(exp: str) -> set[str]:
    mod = importlib.import_module(f"gud.experiments.{exp}")
    out = set()
    for profile in mod.CONFIGS:
        out |= _numbers_in(mod.CONFIGS[profile])
    for name in dir(mod):  # the paper's numbers, quoted as such (PAPER_BPD, PAPER_BEST_BPD, ...)
        if name.startswith("PAPER"):
            out |= _numbers_in(getattr(mod, name))
    return out


@pytest.mark.parametrize("exp", list(CHAPTERS))
def test_no_result_numbers_typed_in_chapter_prose(exp):
    allowed = _allowed(exp)
    typed = []
    for text in _markdown(CHAPTERS[exp]):
        for m in NUMBER.finditer(MATH.sub(" ", text)):
            if m.group() not in allowed:
                typed.append(m.group())
    assert not typed, f"{CHAPTERS[exp]}: numbers typed in Markdown (generate them from the result): {typed}"


@pytest.mark.parametrize("exp", list(CHAPTERS))
def test_text_about_a_profile_names_only_its_data(exp):
    """A sentence that speaks of the `gpu` (or `paper`) profile may name a data set only if that
    profile's configuration of the chapter uses it."""
    wrong = []
    for text in _markdown(CHAPTERS[exp]):
        for sentence in re.split(r"(?<=[.;:])\s+", text):
            for profile in ("gpu", "paper"):
                if f"`{profile}`" not in sentence:
                    continue
                keys = book.data_keys(exp, profile)
                for word, key in book.DATA_NAMES.items():
                    if re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", sentence) and key not in keys \
                            and "paper" not in sentence.lower().replace(f"`{profile}`", ""):
                        wrong.append(f"{profile}: {word} in {sentence[:120]!r}")
    assert not wrong, wrong


def test_profile_text_names_only_configured_data():
    for profile in ("gpu",):
        used = {k for e in EXPERIMENTS for k in book.data_keys(e, profile)}
        for word, key in book.DATA_NAMES.items():
            if word in book.PROFILE_TEXT[profile]:
                assert key in used, f"PROFILE_TEXT[{profile!r}] names {word}, which no {profile} configuration uses"


@pytest.mark.parametrize("exp", ["e1", "e2", "e4", "e5"])
def test_findings_and_claims_are_generated(exp):
    """The chapter shows its claims and findings through gud.book (from the stored result), and
    has no hand-typed verdict words about this book's results in its findings section."""
    cells = json.loads((BOOK / f"{CHAPTERS[exp]}.ipynb").read_text())["cells"]
    code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    assert any("book.claims_table(result" in c for c in code)
    assert any("book.findings(result" in c for c in code)
    md = _markdown(CHAPTERS[exp])
    k = next(i for i, t in enumerate(md) if "## What this shows" in t)
    assert not re.search(r"\b(holds|does not hold|inconclusive|beats|better|worse|lower|higher)\b", md[k])


def test_findings_markdown_from_a_result():
    class R:  # a stored result's interface
        profile = "ci"
        metrics = {"data_description": "digits", "claims": [
            {"dataset": "digits", "claim": "X", "paper": "yes", "test": "equivalence", "margin": "0.02 bits/dim",
             "evidence": "d = +0.001 ± 0.002", "verdict": "holds", "reason": "", "driver": ""},
            {"dataset": "digits", "claim": "Y", "paper": "yes", "test": "trend", "margin": "",
             "evidence": "flat", "verdict": "not assessable", "reason": "network at the cap", "driver": ""}]}
    R.metrics["claims"] += [
        {"dataset": "digits", "claim": "Z", "paper": "yes", "test": "trend", "margin": "", "evidence": "x",
         "verdict": "not assessable", "reason": "network at the cap; samples flagged: copies", "driver": ""},
        {"dataset": "digits", "claim": "W", "paper": "yes", "test": "superiority + equivalence", "margin": "",
         "evidence": "a [holds]; b [does not hold]", "verdict": "inconclusive", "reason": "", "driver": ""}]
    text = book.findings_markdown(R())
    assert "* Holds: **X** (equivalence test, margin 0.02 bits/dim)." in text
    assert "* Inconclusive: **W** (superiority + equivalence test; its legs: holds, does not hold)." in text
    # each missing piece of evidence named once, with every claim it blocks
    assert "  * network at the cap: **Y**, **Z**." in text and "  * samples flagged (copies): **Z**." in text
    assert "Does not hold" not in text  # no empty groups


def test_profiles_are_known():
    assert set(PROFILES) >= {"ci", "gpu"}
    for exp in CHAPTERS:
        experiment_config(exp, "gpu")


def test_sampler_findings_are_generated_from_the_table():
    rows = [{"prior": "w", "a": 1.0, "method": m, "kl": {"20": k20, "100": k100}, "nfe_to_reference": reach}
            for m, k20, k100, reach in (("heun", 0.01, 0.004, None), ("dpmpp_3m_sde", 0.3, 0.0001, 50),
                                        ("em", 0.1, 0.002, None))]
    rows.append({"prior": "w", "a": 1.0, "method": "em, 1000 steps (reference)", "nfe": 1001,
                 "kl_reference": 0.0002, "prior_kl": 0.009})
    text = book.sampler_findings({"sampler_table": rows}, {"w": "whitened prior"})
    assert "At 20 network evaluations the lowest KL is reached by heun in whitened prior, a = 1 (0.01 nats)." in text
    assert "At 100 network evaluations the lowest KL is reached by dpmpp_3m_sde" in text
    assert "heun 0.004 against 0.009" in text  # the best ODE sampler beside the prior mismatch
    assert "dpmpp_3m_sde in 1 of 1 settings (whitened prior, a = 1 at 50 evaluations)" in text
    assert "1000-step Euler–Maruyama reference" in text
