"""``hwprune demo`` (reduced: few epochs, few test images, no yosys) and ``hwprune report``.

One demo run is shared by the module; the full-size run is timed by hand (see the README).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from hwprune.cli import main
from hwprune.demo import STAGES, DemoOptions
from hwprune.report import REPORT_FILE, SUMMARY_FILE, load_summary, render_report
from hwprune.report.plots import pack_mask, unpack_mask

QUICK = ["--epochs", "3", "--finetune-epochs", "1", "--images", "32", "--no-stats"]


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "run"
    assert main(["demo", "--out", str(out), *QUICK]) == 0
    return out


def test_summary_has_every_stage_timed_and_exact(demo_dir):
    s = load_summary(demo_dir)
    assert [st["name"] for st in s["stages"]] == [name for name, _ in STAGES]
    assert all(st["seconds"] >= 0 and st["status"] == "done" and st["note"] for st in s["stages"])
    assert s["total_seconds"] == pytest.approx(sum(st["seconds"] for st in s["stages"]), abs=0.01)
    assert all(st["cpu_seconds"] >= 0 for st in s["stages"]) and s["total_cpu_seconds"] > 0
    # the plan fits the budget, as predicted by the cost model on the pruned model's real masks
    dense, plan = s["cost"]["dense"]["total"]["cycles"], s["cost"]["plan"]["total"]["cycles"]
    assert plan <= s["plan"]["budget"] * dense
    assert 0.5 < s["accuracy"]["fp32"] <= 1 and 0.5 < s["accuracy"]["pruned"] <= 1
    sim = s["simulation"]
    ran = [r for r in sim["layers"] if "skipped" not in r]
    assert ran and sim["all_bit_exact"] and sim["all_cycle_exact"] and sim["logits_bit_exact"]
    assert all(r["cycles"] == r["predicted_cycles"] and r["passes"] >= 1 for r in ran)
    # every conv/linear layer of the int8 model, over the requested test images
    assert [r["layer"] for r in ran] == ["conv1", "conv2", "fc1", "fc2"] and sim["images"] == 32
    assert ran[0]["M"] == 32 * 8 * 8 and ran[-1]["M"] == 32
    # the hardware's accuracy comes from simulated logits and equals the integer reference's
    assert s["accuracy"]["rtl"] == s["accuracy"]["int8_on_simulated_images"]
    assert 0.5 < s["accuracy"]["int8"] <= 1
    assert abs(s["accuracy"]["ort_qdq"] - s["accuracy"]["int8"]) <= 0.01  # onnxruntime on the QDQ file
    assert s["weight_bytes"]["plan"] < s["weight_bytes"]["dense"]


def test_masks_in_summary_match_the_plan(demo_dir):
    s = load_summary(demo_dir)
    assert set(s["masks"]) == set(s["plan"]["layers"])
    for name, m in s["masks"].items():
        mask = unpack_mask(m)
        layer = next(layer for layer in s["cost"]["plan"]["layers"] if layer["name"] == name)
        assert mask.shape == (layer["N"], layer["K"] // layer["groups"] if layer["groups"] > 1 else layer["K"])
        assert m["pattern"] == s["plan"]["layers"][name]
        if ":" in m["pattern"]:  # N:M: at most n kept in every group of m along K
            n, g = (int(v) for v in m["pattern"].split(":"))
            k = mask.shape[1] // g * g
            assert mask[:, :k].reshape(mask.shape[0], -1, g).sum(axis=2).max() <= n


def test_files_listed_with_their_hashes(demo_dir):
    s = load_summary(demo_dir)
    paths = {f["path"] for f in s["files"]}
    assert {"fp32.pt", "pruned.pt", "plan.json", "export/model.onnx", "export/model_qdq.onnx",
            "export/manifest.json"} <= paths
    assert any(p.startswith("export/conv2/") and p.endswith(".coe") for p in paths)
    assert any(p.startswith("rtl/") and p.endswith(".v") for p in paths)
    for f in s["files"]:
        data = (demo_dir / f["path"]).read_bytes()
        assert len(data) == f["bytes"] and hashlib.sha256(data).hexdigest() == f["sha256"]


def test_report_is_self_contained_and_rebuilt_from_summary_alone(demo_dir, tmp_path):
    page = (demo_dir / REPORT_FILE).read_text()
    assert page.count("data:image/svg+xml;base64,") >= 7  # diagram, cycles, util, energy, 4 masks, accuracy
    assert "http://" not in page.replace("http://www.w3.org", "") and "file:" not in page
    for section in ("Summary", "Stages", "Array", "Masks", "Accuracy by stage", "Exported files"):
        assert f"<h2>{section}</h2>" in page
    # only summary.json is needed: copy it alone elsewhere and rebuild the identical page
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(demo_dir / SUMMARY_FILE, alone / SUMMARY_FILE)
    assert main(["report", str(alone)]) == 0
    assert (alone / REPORT_FILE).read_text() == page


def test_report_refuses_overwrite_and_bad_summaries(demo_dir, tmp_path, capsys):
    assert main(["report", str(demo_dir)]) == 2
    assert "report.html exists" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert "summary.json not found" in capsys.readouterr().err
    (tmp_path / SUMMARY_FILE).write_text("{not json")
    assert main(["report", str(tmp_path)]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    (tmp_path / SUMMARY_FILE).write_text(json.dumps({"schema": "other/9"}))
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "schema 'other/9'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / REPORT_FILE).exists()


def test_report_says_when_a_stage_did_not_run(demo_dir):
    s = load_summary(demo_dir)
    s["search"] = None
    s["accuracy"]["rtl"] = None
    page = render_report(s)
    assert "No Pareto front" in page and "n/a" in page


def test_demo_refuses_a_nonempty_dir_and_bad_options(tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["demo", "--out", str(out), *QUICK]) == 2
    assert "not empty" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert main(["demo", "--out", str(tmp_path / "x"), "--budget", "1.5"]) == 2
    assert "budget" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    with pytest.raises(Exception, match="images"):
        DemoOptions(images=0)


def test_infeasible_budget_names_the_cheapest_plan(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "tight"), "--budget", "0.01", *QUICK]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bars: one error line
    assert last.startswith("hwprune: error: cycle budget") and "minimum feasible is" in last  # hwprune.search
    assert not any(tmp_path.iterdir())  # the temporary build directory is gone too


def test_mask_packing_round_trips():
    rng = np.random.default_rng(0)
    for shape in ((1, 1), (3, 7), (16, 9), (10, 64)):
        m = rng.random(shape) < 0.4
        assert np.array_equal(unpack_mask(json.loads(json.dumps(pack_mask(m)))), m)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian chromium not installed (.ci/run installs it)")
def test_report_renders_in_a_real_browser(demo_dir, tmp_path):
    from PIL import Image

    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,2000",
                    f"--screenshot={shot}", (demo_dir / REPORT_FILE).resolve().as_uri()],
                   check=True, capture_output=True, timeout=120)
    img = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert img.shape == (2000, 1280)
    # not blank: the dark header band, text and plots give many distinct, non-background pixels
    assert img.std() > 20
    assert (img < 100).mean() > 0.03 and len(np.unique(img)) > 50
