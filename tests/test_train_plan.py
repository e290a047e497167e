"""``imgclass train --time``: the plan from measured speeds, within the budget, said and followed."""
import csv

import pytest
import torch

from imgclass.cli import main
from imgclass.errors import ImgclassError
from imgclass.train import load_checkpoint, plan
from imgclass.train.plan import Rates, choose_plan, predict

from test_train import TINY, make_dataset

FAST = {"efficientnet-lite2": Rates(start=2, trunk=400, tail=5000, step=2000, fit=5e7),
        "efficientnet-lite1": Rates(start=2, trunk=700, tail=8000, step=3000, fit=5e7),
        "efficientnet-lite0": Rates(start=2, trunk=1000, tail=10000, step=4000, fit=5e7)}
SLOW = {"efficientnet-lite2": Rates(start=4, trunk=25, tail=300, step=100, fit=2e6),
        "efficientnet-lite1": Rates(start=4, trunk=45, tail=500, step=180, fit=2e6),
        "efficientnet-lite0": Rates(start=3, trunk=85, tail=900, step=300, fit=2e6)}


def test_two_machines_get_different_plans_within_the_budget():
    fast, slow = (choose_plan(240, 4000, 1000, rates, epochs=4) for rates in (FAST, SLOW))
    assert (fast.arch, fast.epochs) == ("efficientnet-lite2", 4)
    assert slow.arch == "efficientnet-lite0" and 0 < slow.epochs <= 4
    for chosen, rates in ((fast, FAST), (slow, SLOW)):
        assert chosen.seconds == predict(rates[chosen.arch], 4000, 1000, chosen.epochs) <= 240
    # one more epoch, or the next larger network, would not have fit the slow machine's budget
    assert slow.epochs == 4 or predict(SLOW["efficientnet-lite0"], 4000, 1000, slow.epochs + 1) > 240
    assert predict(SLOW["efficientnet-lite1"], 4000, 1000, 2) > 240


def test_a_budget_too_short_for_anything_is_one_line():
    with pytest.raises(ImgclassError, match=r"--time 30 s: too short for 5000 images .* takes about 2 min 5 s"):
        choose_plan(30, 4000, 1000, SLOW, epochs=4)


def test_the_run_follows_the_plan_timed_by_a_fake_clock(tmp_path, monkeypatch, capsys):
    ticks = iter(range(10**6))
    monkeypatch.setattr(plan, "clock", lambda: next(ticks) * 0.05)  # every timed part takes 50 ms
    dataset = make_dataset(tmp_path / "ds")
    model_dir = tmp_path / "run"
    assert main(["train", str(dataset), "--model-dir", str(model_dir), *TINY, "--no-pretrained", "--time", "20m",
                 "--epochs", "3", "--patience", "9"]) == 0
    out = capsys.readouterr()
    said = [line for line in out.err.splitlines() if line.startswith("imgclass: --time 20 min: ")]
    assert len(said) == 1 and "fine-tune epochs: about" in said[0], out.err
    arch = said[0].split(": ")[2].split(",")[0]
    epochs = int(said[0].split(", ")[2].split()[0])
    assert f"imgclass: planned --time 20 min: {arch}" in out.out
    # the plan's own prediction, from the measured (fake-clock) speeds, is within the budget
    rates = plan.machine_rates(plan.TrainConfig(str(dataset), resolution=64, pretrained=False), [], torch.device("cpu"))
    assert predict(rates[arch], 16, 6, epochs) <= 20 * 60
    assert load_checkpoint(model_dir / "checkpoint.pth.tar")["arch"] == arch
    with open(model_dir / "results.csv") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == [str(e) for e in range(epochs + 1)]
