"""What a new user meets first, on a fresh clone with no ../shared beside it: the README's first
command on the sample photos the repository ships, tests that skip rather than fail without the
real data, and ``--help`` pages that show each default once."""
import re
from importlib import import_module
from pathlib import Path

import pytest

import conftest
from conftest import EXAMPLES, ROOT, data_dir, run_cli
from imgclass.cli import VERBS, build_parser

README = (ROOT / "README.md").read_text()


def readme_first_command() -> str:
    """The first line of the README's first code block: install, then ``imgclass classify IMAGE``."""
    block = re.search(r"```bash\n(.*?)```", README, re.S).group(1)
    return block.splitlines()[0]


def test_readme_first_command_classifies_a_shipped_photo_as_stated():
    image = re.search(r"imgclass classify (\S+)$", readme_first_command()).group(1)
    assert (ROOT / image).is_file() and (ROOT / image).resolve().parent == EXAMPLES
    # the output line the README quotes for it: `IMAGE:  83.81% class #950 (orange)`
    stated = re.search(rf"`{re.escape(image)}:\s+[\d.]+% (class #\d+ \([^)`]+\))`", README)
    assert stated, f"the README quotes no output line for {image}"
    out = run_cli("classify", image, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert re.fullmatch(rf"{re.escape(image)}:\s+[\d.]+% {re.escape(stated.group(1))}", out.stdout.strip())


def test_every_sample_photo_gets_the_class_its_name_says(classifier):
    photos = sorted(EXAMPLES.glob("*.jpg"))
    assert len(photos) >= 4
    for path, predictions, error in classifier.classify_files(photos):
        assert error is None
        # black_bear.jpg -> "American black bear, black bear, ..."
        assert Path(path).stem.replace("_", " ") in predictions[0].label.lower(), (path, predictions[0])


def test_examples_stay_small():
    assert sum(f.stat().st_size for f in (ROOT / "examples").rglob("*") if f.is_file()) < 1_000_000


def test_without_the_shared_data_a_test_skips_saying_what_it_needs(monkeypatch, tmp_path):
    monkeypatch.setattr(conftest, "DATA", tmp_path / "absent")
    with pytest.raises(pytest.skip.Exception, match=r"needs \.\./shared/data \(hymenoptera\).*IMGCLASS_DATA"):
        data_dir("hymenoptera")


def test_tests_reach_the_shared_data_only_through_data_dir():
    # a direct path (conftest's DATA, a "../shared/..." literal) fails on a fresh clone instead of skipping
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        if path != Path(__file__):  # this file tests the gate itself
            code = path.read_text()
            assert not re.search(r"\bDATA\b|[\"']\.\./shared", code), f"{path.name}: use conftest.data_dir"


def help_pages() -> dict[str, str]:
    """``--help`` of every verb and of the jetson aliases (imagenet, camera-capture, onnx_export.py)."""
    verbs = next(a for a in build_parser()._actions if a.choices and set(a.choices) == set(VERBS)).choices
    pages = {f"imgclass {verb}": parser.format_help() for verb, parser in verbs.items()}
    for module, alias in [("classify", "imagenet"), ("capture", "camera-capture"), ("export", "onnx_export.py")]:
        pages[alias] = import_module(f"imgclass.cli.{module}").jetson_parser().format_help()
    return pages


def help_entries(page: str) -> list[str]:
    """Each argument's entry in a help page: its line (indented two spaces) and the wrapped lines after it."""
    entries, current = [], None
    for line in page.splitlines():
        if re.match(r"  \S", line):
            current = [line.strip()]
            entries.append(current)
        elif line.startswith("   ") and current is not None:
            current.append(line.strip())
        else:  # a heading or a blank line ends an entry
            current = None
    return [" ".join(e) for e in entries]


@pytest.mark.parametrize("command", list(help_pages()))
def test_help_shows_each_default_once(command):
    entries = help_entries(help_pages()[command])
    assert any("--help" in e for e in entries)
    for entry in entries:
        assert len(re.findall(r"\bdefault\b", entry)) <= 1 and "(default: None)" not in entry, f"{command}: {entry}"
