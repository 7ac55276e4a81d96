"""``hwprune prune``: JSON output, checkpoint written, bad input → one line and exit 2."""

from __future__ import annotations

import json

from hwprune.checkpoint import load_checkpoint
from hwprune.cli import main


def test_prune_cli_json_and_checkpoint(tmp_path, capsys):
    out = tmp_path / "g.pt"
    rc = main(["prune", "gcn", "--pattern", "2:4", "--criterion", "taylor", "--schedule", "iterative",
               "--steps", "2", "--finetune-epochs", "4", "--train-epochs", "30", "--out", str(out), "--json"])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert data["task"] == "gcn" and data["prune"]["schedule"] == "iterative"
    assert data["after"]["macs_effective"] < data["before"]["macs_effective"]
    assert data["after"]["cycles"] <= data["before"]["cycles"]
    ck = load_checkpoint(out)
    assert ck.task == "gcn" and str(ck.patterns["lin1"]) == "2:4"
    # a checkpoint is a valid source, and the table mode prints the comparison
    rc = main(["prune", str(out), "--pattern", "1:4", "--finetune-epochs", "1", "--out", str(tmp_path / "h.pt")])
    assert rc == 0
    text = capsys.readouterr().out
    assert "cycles" in text and "wrote" in text


def test_prune_cli_rescore(tmp_path, capsys):
    """--rescore sets the scorings; taylor/hessian under global scope re-score 16 times by default."""
    base = ["prune", "gcn", "--pattern", "unstructured:0.1", "--scope", "global", "--criterion", "hessian",
            "--finetune-epochs", "0", "--train-epochs", "5"]
    assert main(base + ["--rescore", "3", "--out", str(tmp_path / "a.pt"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["prune"]["scorings"] == 3 and data["prune"]["history"][0]["scorings"] == 3
    assert main(base + ["--out", str(tmp_path / "b.pt")]) == 0
    assert "16 scorings" in capsys.readouterr().out


def test_prune_cli_bad_input_is_one_line_exit_2(tmp_path, capsys):
    out = tmp_path / "x.pt"
    cases = [(["prune", "lenet300100", "--pattern", "5:4", "--out", str(out)], "5:4"),
             (["prune", "lenet300100", "--pattern", "2:4", "--criterion", "fisher", "--out", str(out)], "fisher"),
             (["prune", "cifar", "--pattern", "2:4", "--out", str(out)], "cifar"),
             (["prune", "lenet300100", "--out", str(out)], "exactly one"),
             (["prune", "lenet300100", "--pattern", "2:4", "--array", "os3x3", "--out", str(out)], "os3x3")]
    for argv, needle in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("hwprune: error:") and needle in err and "\n" not in err
    out.write_bytes(b"x")
    assert main(["prune", "lenet300100", "--pattern", "2:4", "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    plan = tmp_path / "p.json"
    plan.write_text('{"array": "os16x16", "layers": {"fc9": "2:4"}}')
    assert main(["prune", "lenet300100", "--plan", str(plan), "--out", str(tmp_path / "y.pt")]) == 2
    assert "fc9" in capsys.readouterr().err
