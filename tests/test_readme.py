"""README's command blocks run as written, in order, on a fresh clone.

The fast tests read every ``bash`` block of README.md: each ``zoo`` command (also after ``|``
and under ``torchrun -m zoo``) must parse with the real parser, every file or run it reads must
be in the repository or made by an earlier line, and no ``zoo train`` may start a run where an
earlier line made one (without ``--resume``). The ``python`` blocks must compile. The slow test
runs every block, in order, in a copy of the repository (the python blocks as one session).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.scripts import load_script
from zoo.cli import build_parser
from zoo.cli.training import DEMO_NAMES
from zoo.config import load_recipe

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# blocks that set the project up rather than use it: not run by the as-written test
SETUP = ("pip ", "python -m pytest")


def blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced code block."""
    return re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.M | re.S)


def command_lines(text: str) -> list[str]:
    """The commands of README's bash blocks in order, comments dropped, setup lines left out."""
    lines = []
    for language, body in blocks(text):
        if language == "bash":
            lines += [line for line in body.splitlines() if line.strip()]
    return [line for line in lines if not line.startswith(SETUP)]


def zoo_args(words: list[str]) -> list[str] | None:
    """The arguments of ``zoo`` in one command of a pipeline, or None if it is not zoo."""
    if words[:1] == ["zoo"]:
        return words[1:]
    for start in range(len(words) - 1):
        if words[start : start + 2] == ["-m", "zoo"]:
            return words[start + 2 :]
    return None


class Checker:
    """Walks README's commands in order, keeping the paths that earlier lines made."""

    def __init__(self, root: Path) -> None:
        self.root, self.made, self.runs = root, set(), {}
        self.parser = build_parser()
        self.problems: list[str] = []

    def exists(self, path: str) -> bool:
        p = Path(path)
        return (self.root / p).exists() or any(p == m or m in p.parents for m in self.made)

    def need(self, line: str, *paths: str | None) -> None:
        for path in filter(None, paths):
            if not self.exists(path):
                self.problems.append(f"{line!r}: {path} is neither in the repository nor made "
                                     "by an earlier line")

    def line(self, line: str) -> None:
        for segment in line.split("|"):
            words = shlex.split(segment, comments=True)
            if words[:1] == ["cat"]:
                self.need(line, *words[1:])
            args = zoo_args(words)
            if args is not None:
                self.zoo(line, args)

    def zoo(self, line: str, args: list[str]) -> None:
        try:
            parsed = self.parser.parse_args(args)
        except SystemExit:
            self.problems.append(f"{line!r}: the zoo parser refuses it")
            return
        getattr(self, f"_{parsed.command.replace('-', '_')}", lambda *a: None)(line, parsed)

    def _train(self, line: str, a) -> None:
        self.need(line, a.recipe)
        if not (self.root / a.recipe).is_file():
            return
        recipe = load_recipe(self.root / a.recipe, a.overrides)  # the overrides are valid
        out = Path(a.out or recipe.out_dir or Path("runs") / Path(a.recipe).stem)
        if a.resume:
            self.need(line, str(out))
        elif out in self.runs:
            self.problems.append(f"{line!r}: {out} already holds the run of {self.runs[out]!r}")
        self.runs.setdefault(out, line)
        self.made.add(out)

    def _demo(self, line: str, a) -> None:
        if a.out:
            self.made |= {Path(a.out) / name for name in a.only or DEMO_NAMES}

    def _eval(self, line: str, a) -> None:
        self.need(line, a.run, *(a.ensemble or ()))

    def _plot(self, line: str, a) -> None:
        self.need(line, a.run)
        self.made.add(Path(a.run) / "curves.png")

    def _average(self, line: str, a) -> None:
        self.need(line, a.run)
        self.made.add(Path(a.out or Path(a.run) / "averaged"))

    def _classify(self, line: str, a) -> None:
        self.need(line, a.run, *a.images)

    def _translate(self, line: str, a) -> None:
        self.need(line, a.run, a.input)

    def _transcribe(self, line: str, a) -> None:
        self.need(line, a.run, *a.audio, *(a.ensemble or ()))

    def _generate(self, line: str, a) -> None:
        self.need(line, a.run)

    def _fill_mask(self, line: str, a) -> None:
        self.need(line, a.run)

    def _attention(self, line: str, a) -> None:
        # the inputs are files for vision and speech, sentences for translation
        self.need(line, a.run, *(i for i in a.inputs if Path(i).suffix in (".png", ".wav")))
        self.made.add(Path(a.out))

    def _heads(self, line: str, a) -> None:
        self.need(line, a.run)
        self.made.add(Path(a.out or Path(a.run) / f"heads_{a.split}.png"))

    def _prune(self, line: str, a) -> None:
        self.need(line, a.run)
        self.made.add(Path(a.out))

    def _extract(self, line: str, a) -> None:
        self.need(line, a.run)
        self.made.add(Path(a.out))

    def _synthesize(self, line: str, a) -> None:
        self.need(line, *a.texts)
        self.made.add(Path(a.out))


def check(text: str, root: Path = ROOT) -> list[str]:
    checker = Checker(root)
    for line in command_lines(text):
        checker.line(line)
    return checker.problems


def test_readme_commands_parse_and_name_what_exists_or_was_made() -> None:
    text = README.read_text(encoding="utf-8")
    assert len([c for c in command_lines(text) if "zoo" in c]) >= 15  # the blocks were found
    assert check(text) == []


def test_readme_python_blocks_compile() -> None:
    found = [body for language, body in blocks(README.read_text(encoding="utf-8"))
             if language == "python"]
    assert found
    for body in found:
        compile(body, "README.md", "exec")


def test_the_check_finds_what_breaks_a_run_in_order() -> None:
    text = """```bash
zoo train configs/demo/vision.yaml
zoo eval runs/mt --split test
zoo classify runs/vision shoe.png
zoo train configs/demo/vision.yaml --outt x
torchrun --nproc_per_node=2 -m zoo train configs/demo/vision.yaml
zoo train configs/demo/vision.yaml --out runs/vision --resume
```
"""
    assert check(text) == [
        "'zoo eval runs/mt --split test': runs/mt is neither in the repository nor made by an "
        "earlier line",
        "'zoo classify runs/vision shoe.png': shoe.png is neither in the repository nor made "
        "by an earlier line",
        "'zoo train configs/demo/vision.yaml --outt x': the zoo parser refuses it",
        "'torchrun --nproc_per_node=2 -m zoo train configs/demo/vision.yaml': runs/vision "
        "already holds the run of 'zoo train configs/demo/vision.yaml'",
    ]


def test_the_examples_are_what_their_script_makes(tmp_path: Path) -> None:
    script = load_script(ROOT / "examples" / "make_examples.py", "make_examples")
    made = sorted(p.name for p in script.main(tmp_path))
    assert made == sorted(p.name for p in (ROOT / "examples").iterdir() if p.suffix != ".py")
    for name in made:
        assert (tmp_path / name).read_bytes() == (ROOT / "examples" / name).read_bytes(), name


def _copy_of_the_repository(target: Path) -> Path:
    """The files a clone has: those git tracks, and new ones it does not ignore."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in listed.splitlines():
        if (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    return target


@pytest.mark.slow
def test_readme_blocks_run_as_written_in_order(tmp_path: Path) -> None:
    """Every block, as written, in a copy of the repository (minutes: it trains the demos)."""
    clone = _copy_of_the_repository(tmp_path / "clone")
    env = {**os.environ, "PYTHONPATH": str(clone),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    session = ""  # the python blocks read as one session: each runs after the earlier ones
    for language, body in blocks(README.read_text(encoding="utf-8")):
        if language == "bash":
            script = "\n".join(line for line in body.splitlines() if not line.startswith(SETUP))
            command = ["bash", "-e", "-o", "pipefail", "-c", script]
        elif language == "python":
            session += body
            command = [sys.executable, "-c", session]
        else:
            continue
        proc = subprocess.run(command, cwd=clone, env=env, capture_output=True, text=True,
                              timeout=3600)
        assert proc.returncode == 0, f"{body}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
