"""The reports open in a real browser: headless Chromium renders a run's report.html and a
comparison's report.html; the rendered DOM holds every chart as an <svg> with its id and curves
or points inside, and the screenshot is not blank. Skipped only where no Chromium is installed.

    .venv/bin/pytest tests/reports/test_browser.py
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml
from tiny_runs import measured_raw, use_stand_in_replies

from deltatune.compare import compare

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary on PATH")


@pytest.fixture(scope="module")
def compared(tmp_path_factory, tiny_llama_dir):
    """A finished two-method comparison on the tiny Llama (its runs have report.html too)."""
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("browser")
    use_stand_in_replies(mp, root / "home")
    config = root / "base.yaml"
    config.write_text(yaml.safe_dump(measured_raw(root, tiny_llama_dir, root / "unused", steps=2)))
    try:
        compare(str(config), "lora,bitfit", out=str(root / "cmp"), on_progress=lambda line: None, isolate=False)
    finally:
        mp.undo()
    return root / "cmp"


def _chromium(*args: str) -> str:
    done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--window-size=1200,2000", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _rendered_svgs(page) -> dict[str, str]:
    dom = _chromium("--dump-dom", page.resolve().as_uri())
    return {m.group(1): m.group(0) for m in re.finditer(r'<svg[^>]*\bid="(chart-[^"]+)"[^>]*>.*?</svg>', dom, re.S)}


def _pixels_vary(png) -> None:
    from PIL import Image, ImageStat

    image = Image.open(png).convert("RGB")
    assert image.size == (1200, 2000)
    stat = ImageStat.Stat(image.convert("L"))
    assert stat.stddev[0] > 10, f"screenshot looks blank (grey-level std {stat.stddev[0]:.1f})"
    assert len(image.getcolors(maxcolors=1 << 20) or []) > 50  # text, curves, boxes: many colours


def test_the_comparison_page_renders_its_charts(compared, tmp_path):
    svgs = _rendered_svgs(compared / "report.html")
    assert {"chart-loss-curves", "chart-quality-cost", "chart-quality-forgetting"} <= set(svgs)
    loss = svgs["chart-loss-curves"]
    assert len(re.findall(r'<g id="chart-loss-curves-line2d_\d+">\s*<path', loss)) >= 4  # 2 methods x train+val
    for chart in ("chart-quality-cost", "chart-quality-forgetting"):
        assert "<path" in svgs[chart] and ">lora<" in svgs[chart] and ">bitfit<" in svgs[chart]  # labelled points
    shot = tmp_path / "compare.png"
    _chromium(f"--screenshot={shot}", (compared / "report.html").resolve().as_uri())
    _pixels_vary(shot)


def test_a_run_page_renders_its_charts(compared, tmp_path):
    page = compared / "runs" / "lora-seed0" / "report.html"
    svgs = _rendered_svgs(page)
    assert {"chart-loss", "chart-lr", "chart-throughput"} <= set(svgs)
    for chart, svg in svgs.items():
        assert re.search(rf'<g id="{chart}-line2d_\d+">\s*<path d="M', svg), f"{chart}: no curve rendered"
    shot = tmp_path / "run.png"
    _chromium(f"--screenshot={shot}", page.resolve().as_uri())
    _pixels_vary(shot)
