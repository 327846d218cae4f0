"""Docs that cannot rot: the site builds with warnings as errors and loads in a real headless
browser; every command and every Python block in the README and the guides runs, with small
settings, as written (as Pyro's ``test_examples.py`` runs its examples), and an excerpt of a file
matches the file; every CLI subcommand and every notebook is documented."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from aevb.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
#: the pages whose shell commands a user runs as written
PAGES = [ROOT / "README.md", DOCS / "getting-started.md", *sorted((DOCS / "guides").glob("*.md")),
         DOCS / "sweeps.md", DOCS / "uses.md", DOCS / "runs.md"]
#: commands run elsewhere, each with the test that runs it
ELSEWHERE = {
    "git clone": "CI itself (it runs on a fresh clone)",
    "make": "CI itself (.ci/run runs `make test`; a fresh clone runs `make train`)",
    "torchrun": "tests/test_distributed.py (the same launch through `aevb train --nproc 2`)",
    "--nproc": "tests/test_distributed.py::test_only_rank_zero_writes_one_run_folder",
    "mlflow ui": "MLflow's own command (tests/test_sweeps.py reads such a store back with "
                 "MLflow's client)",
    "--executor ray": "tests/test_sweeps.py::test_ray_cluster_retries_a_killed_run_which_"
                      "resumes_and_the_table_is_local_s (a real local Ray cluster)",
}
SMALL_TRAIN = ["train.epochs=1", "data.train_size=300", "data.test_size=40",
               "data.validation_size=40", "eval.num_samples=3", "train.tensorboard=false",
               "train.batch_size=50"]
SHARED_MNIST = ROOT.parent / "shared" / "data" / "mnist"


def _code_lines(text: str) -> list[str]:
    """The lines of a code block without blank lines, comment lines and trailing comments."""
    return [re.sub(r"\s+#\s.*$", "", line).strip() for line in text.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def documented_commands() -> list[tuple[str, str]]:
    """(page, command) for every shell command in a fenced bash block of :data:`PAGES`."""
    out = []
    for page in PAGES:
        for block in re.findall(r"```(?:bash|sh)\n(.*?)```", page.read_text(), re.S):
            out += [(page.relative_to(ROOT).as_posix(), line)
                    for line in _code_lines(block.replace("\\\n", " "))]
    return out


COMMANDS = sorted({c: p for p, c in reversed(documented_commands())}.items(),
                  key=lambda item: item[0])  # each command once (the first page that shows it)
COMMANDS = [(page, command) for command, page in COMMANDS]


def _elsewhere(command: str) -> str | None:
    return next((why for key, why in ELSEWHERE.items()
                 if command.startswith(key) or f" {key}" in command), None)


def small(argv: list[str], ws: Path) -> list[str]:
    """The documented ``aevb`` command with small settings in the workspace ``ws``: run
    folders under ``ws``, one epoch on 300 images, a few importance samples."""
    def run_path(arg: str) -> str:
        name = Path(arg).name
        target = ws / "runs" / name
        return str(target if target.exists() else ws / "runs" / (
            "m2-run" if "m2" in name else "first"))

    command, rest = argv[0], argv[1:]
    out: list[str] = [command]
    i = 0
    while i < len(rest):
        a = rest[i]
        nxt = rest[i + 1] if i + 1 < len(rest) else None
        if a in ("--run-dir", "--out") and nxt is not None:
            out += [a, str(ws / "out" / Path(nxt).name)]
            i += 2
            continue
        if a == "--resume" and nxt is not None:
            out += [a, run_path(nxt)]
            i += 2
            continue
        if a == "--device":
            out += [a, "cpu"]
            i += 2
            continue
        if a == "--data" and nxt is not None:
            out += [a, str(ws / nxt)]
            i += 2
            continue
        if a in ("--num-samples", "--repeats", "--refine", "--steps") and nxt is not None:
            out += [a, "3"]
            i += 2
            continue
        if a.startswith("--mlflow") and "sqlite:///" in (nxt or ""):
            out += [a, f"sqlite:///{ws / 'mlflow.db'}"]
            i += 2
            continue
        if command in ("experiment", "semisupervised") and a in ("--labels", "--seeds", "--epochs"):
            i += 2  # replaced below
            continue
        if a.startswith("model=") and a.endswith(".py:GMVAE"):
            a = f"model={ROOT / a.split('=', 1)[1]}"
        if a.startswith("model=my_models.py"):
            a = f"model={ws / 'my_models.py'}:{a.split(':')[1]}"
        if a.startswith("runs/") or a == "RUN_DIR":
            a = run_path(a)
        if re.match(r"^train\.epochs=\d+$", a):
            a = "train.epochs=2"
        out.append(a)
        i += 1
    if command == "train":
        resumed = "--resume" in out
        out += ["--no-progress"] + ([] if resumed else
                                    [s for s in SMALL_TRAIN if not any(
                                        o.startswith(s.split("=")[0] + "=") for o in out)])
        if "--run-dir" not in out and not resumed:
            out += ["--run-dir", str(ws / "out" / f"run-{abs(hash(tuple(argv)))}")]
    elif command == "evaluate":
        out += ["--test-size", "20", "--no-progress", "--out", str(ws / "out" / "ev.json")]
        if "--num-samples" not in out:
            out += ["--num-samples", "3"]
    elif command == "impute":
        out += ["--steps", "3", "--images", "4", "--out", str(ws / "out" / "impute.png")]
    elif command == "diagnose":
        out += ["--repeats", "3", "--batch-size", "20", "--out", str(ws / "out" / "d.json")]
    elif command == "experiment":
        out += ["--labels", "20", "--seeds", "1", "--epochs", "1", "--train-size", "300",
                "--test-size", "40", "--device", "cpu", "--no-progress"]
        if "mnist" in out and SHARED_MNIST.is_dir():
            out += ["--data-dir", str(SHARED_MNIST)]
    elif command == "sweep":
        out += [s for s in SMALL_TRAIN if s != "train.epochs=1"] + [
            "train.epochs=1", "--no-progress", "--device", "cpu", "model.hidden_sizes=[32]"]
        out = [re.sub(r"^seed=\d+:\d+$", "seed=0", o) for o in out]  # one seed per cell
        if "--workers" in out:
            out[out.index("--workers") + 1] = "2"
    return out


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A workspace: a trained tiny VAE (``runs/first``), a tiny M2 (``runs/m2-run``), an image
    folder (``my_images/``) and a model file registering ``my_vae`` (``my_models.py``)."""
    import numpy as np
    from PIL import Image

    from tests.conftest import _fashion_dir

    fashion_dir = _fashion_dir()
    if fashion_dir is None:
        pytest.skip("Fashion-MNIST not found")
    ws = tmp_path_factory.mktemp("docs-commands")
    for name, extra in (("first", ["--config", "vae_fashion"]), ("m2-run", ["--spec", "m2"])):
        assert main(["train", *extra, "--run-dir", str(ws / "runs" / name), "--no-progress",
                     "--device", "cpu", "--data-dir", str(fashion_dir), *SMALL_TRAIN]) == 0
    (ws / "my_images").mkdir()
    rng = np.random.default_rng(0)
    for i in range(60):
        Image.fromarray((rng.random((28, 28)) * 255).astype("uint8")).save(
            ws / "my_images" / f"{i}.png")
    (ws / "my_models.py").write_text(
        "from aevb.models import VAE, register_model\n\n\n"
        "@register_model(\"my_vae\")\nclass MyVAE(VAE):\n    \"\"\"The paper's VAE.\"\"\"\n")
    return ws


@pytest.mark.data
@pytest.mark.parametrize("page, command", COMMANDS, ids=[c for _, c in COMMANDS])
def test_every_documented_command_runs(page, command, ws, monkeypatch):
    why = _elsewhere(command)
    if why:
        pytest.skip(f"run by {why}")
    argv = shlex.split(command)
    if argv[0] != "aevb":
        pytest.fail(f"{page}: {command!r} is neither an aevb command nor listed in ELSEWHERE")
    if "mnist" in argv and "fashion-mnist" not in argv and not SHARED_MNIST.is_dir():
        pytest.skip("needs the full MNIST (../shared/data/mnist)")
    args = small(argv[1:], ws)
    monkeypatch.chdir(ws)
    if any("my_models.py" in a for a in args):  # registers a name: in a process of its own
        done = subprocess.run([sys.executable, "-m", "aevb.cli", *args], capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, f"{page}: {command}\n{done.stderr[-2000:]}"
        return
    assert main(args) == 0, f"{page}: {command} (run as aevb {' '.join(args)})"


#: Python blocks run elsewhere, each with the test that runs it (by the block's first line)
PY_ELSEWHERE = {
    "from mlflow": "tests/test_sweeps.py (reads a sweep's MLflow store back with MLflow's client)",
}
#: an excerpt block names its file on its first line (``class GMVAE(...):  # examples/gmvae.py``)
EXCERPT = re.compile(r"#\s*(\S+\.py)\s*$")


def python_blocks() -> list[tuple[str, str]]:
    """(page, code) for every fenced python block of :data:`PAGES`."""
    return [(page.relative_to(ROOT).as_posix(), block) for page in PAGES
            for block in re.findall(r"```python\n(.*?)```", page.read_text(), re.S)]


PY_BLOCKS = python_blocks()


def _excerpt_missing(block: str, source: Path) -> list[str]:
    """The excerpt's lines not in ``source`` (``def``/``class`` lines by their name only, since
    a page may drop the annotations)."""
    def head(line: str) -> str | None:
        found = re.match(r"(def|class) \w+", line)
        return found.group(0) if found else None

    lines = set(_code_lines(source.read_text()))
    heads = {head(line) for line in lines} - {None}
    return [line for line in _code_lines(block)
            if ((h not in heads) if (h := head(line)) else (line not in lines))]


@pytest.mark.data
@pytest.mark.parametrize("page, block", PY_BLOCKS,
                         ids=[f"{p}:{b.splitlines()[0][:40]}" for p, b in PY_BLOCKS])
def test_every_python_block_runs(page, block, ws, monkeypatch):
    """Each Python block of the README and the guides runs as written with small settings
    (``aevb.fit``/``aevb.sweep`` get one epoch on 300 images; evaluations a few samples), given
    the names a page takes as the reader's own (``MyModel``, ``x_train``, ``x_test``); an
    excerpt of a file must match that file."""
    import torch

    import aevb
    from aevb import api
    from aevb.models import VAE
    from tests.conftest import _fashion_dir

    first = block.splitlines()[0]
    why = next((w for key, w in PY_ELSEWHERE.items() if first.startswith(key)), None)
    if why:
        pytest.skip(f"run by {why}")
    excerpt = EXCERPT.search(first)
    if excerpt:
        missing = _excerpt_missing(block, ROOT / excerpt.group(1))
        assert not missing, f"{page}: not in {excerpt.group(1)}: {missing}"
        return
    data_dir = str(_fashion_dir())
    small = [*SMALL_TRAIN, f"data.data_dir={data_dir}"]
    fit, sweep, evaluate = api.fit, aevb.sweep, api.Run.evaluate

    def small_fit(model="vae", data=None, **kw):
        named = data is None or isinstance(data, str)
        kw.update(epochs=1, progress=False, num_samples=3,
                  overrides=[*kw.get("overrides", ()), *(small if named else [])])
        kw.setdefault("run_dir", tempfile.mkdtemp(prefix="fit-", dir=ws))
        return fit(model, data, **kw)

    def small_sweep(config, grid, **kw):
        grid = dict(grid) | {o.split("=", 1)[0]: o.split("=", 1)[1] for o in small}
        out = Path(tempfile.mkdtemp(prefix="sweep-", dir=ws)) / kw.pop("out")
        return sweep(config, grid, out=out, **kw | {"progress": False})

    def small_evaluate(self, data=None, num_samples=None, **kw):
        return evaluate(self, data, 3, **kw)

    monkeypatch.setattr(aevb, "fit", small_fit)
    monkeypatch.setattr(aevb, "sweep", small_sweep)
    monkeypatch.setattr(api.Run, "evaluate", small_evaluate)
    monkeypatch.chdir(ws)
    torch.manual_seed(0)
    given = {"MyModel": VAE, "x_train": (torch.rand(300, 1, 28, 28) > 0.5).float(),
             "x_test": (torch.rand(20, 1, 28, 28) > 0.5).float(), "__name__": "__docs__"}
    exec(compile(block, page, "exec"), given)


def test_every_subcommand_and_notebook_is_documented():
    documented = {shlex.split(c)[1] for _, c in COMMANDS if c.startswith("aevb ")}
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    missing = sorted(set(sub.choices) - documented)
    assert not missing, f"document these commands in the README or a guide: {missing}"
    index = (DOCS / "index.md").read_text()
    for notebook in (ROOT / "notebooks").glob("*.ipynb"):
        assert f"tutorials/{notebook.stem}" in index, f"list {notebook.name} in docs/index.md"


# -- the site --------------------------------------------------------------------------------
def _browser():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            driver = shutil.which("chromedriver")
            return path, driver
    return None, None


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site built as ``make docs`` builds it: warnings are errors, the notebooks run.

    It builds from a copy of ``docs/`` beside links to the rest of the checkout (which its
    pages, notebooks and ``conf.py`` read), so that the files the build generates in its source folder
    (autosummary's stubs, the notebooks' copies) are this build's own, whatever another build
    of the checkout does meanwhile."""
    pytest.importorskip("sphinx")
    source = tmp_path_factory.mktemp("site-source")
    shutil.copytree(DOCS, source / "docs",
                    ignore=shutil.ignore_patterns("_build", "_autosummary", "tutorials"))
    for entry in ROOT.iterdir():
        if entry.name != "docs" and not entry.name.startswith("."):
            (source / entry.name).symlink_to(entry)
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b",
                           "html", str(source / "docs"), str(out)], capture_output=True,
                          text=True, timeout=1200, env=os.environ | {"AEVB_SMALL": "1"})
    assert done.returncode == 0, done.stderr[-4000:]
    return out


@pytest.mark.data
def test_the_site_builds_and_loads_in_a_headless_browser(site):
    assert (site / "index.html").is_file() and (site / "api.html").is_file()
    assert (site / "tutorials" / "vae_quickstart.html").is_file()
    browser, driver = _browser()
    if browser is None or driver is None:
        msg = "Chromium not found (apt-get install chromium chromium-driver)"
        if os.environ.get("AEVB_REQUIRE_DATA") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    try:
        chrome.get((site / "index.html").as_uri())
        assert "aevb" in chrome.title
        assert "Getting started" in chrome.page_source
        chrome.get((site / "api.html").as_uri())
        assert "API reference" in chrome.title
        assert "aevb.models" in chrome.page_source and "aevb.inference" in chrome.page_source
        module_page = (site / "_autosummary" / "aevb.sweeps.engine.html").read_text()
        assert "TrainTask" in module_page, module_page[-3000:]
        # every picture of every results page: as many as its source shows, each one loaded
        pictures = {md.stem: md.read_text().count("![") for md in (DOCS / "results").glob("*.md")}
        assert sum(pictures.values()) >= 10, pictures
        for page, count in pictures.items():
            if not count:
                continue
            chrome.get((site / "results" / f"{page}.html").as_uri())
            # on a loaded machine the page may still be rendering: wait up to 30 s for them all
            deadline = time.monotonic() + 30
            while True:
                images = chrome.execute_script(
                    "return Array.from(document.images).filter(i => i.closest('article'))"
                    ".map(i => [i.src, i.complete && i.naturalWidth > 0]);")
                if (len(images) >= count and all(ok for _, ok in images)) \
                        or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert len(images) >= count, (page, images)
            assert all(ok for _, ok in images), (page, images)
    finally:
        chrome.quit()
