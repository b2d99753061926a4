"""Reports read results files only: comparison table and figures on generated results, the sweep's expansion."""

import csv
import io
import os
import subprocess
import sys

import numpy as np
import pytest

from rethink_tf import paper, results
from rethink_tf.reporting import compare as report
from rethink_tf.reporting import figures as plots
from rethink_tf.config import DataConfig, TrainConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fake_train_result(workdir, model="mlp_1x512", corrupt="none", p=None, fit_epoch=10, test_acc=0.5, seed=0,
                      dataset="cifar10", train_examples=None, epochs=None, random_crop=False, noise_std=None,
                      **cfg_kw):
    cfg = TrainConfig(model=model, data=DataConfig(dataset=dataset, corrupt=corrupt, corrupt_prob=p,
                                                   train_examples=train_examples, random_crop=random_crop,
                                                   noise_std=noise_std),
                      seed=seed, **cfg_kw).resolved()
    n_epochs = epochs or (fit_epoch or 20)
    history = [{"epoch": e, "step": e * 390, "train_loss": 2.3 / e, "train_accuracy": min(1.0, e / (fit_epoch or 1e9)),
                "test_accuracy": test_acc * min(1.0, e / 5), "lr": 0.01} for e in range(1, n_epochs + 1)]
    r = {"schema_version": 1, "kind": "train", "status": "completed", "config": cfg.to_dict(), "history": history,
         "metrics": {"train_accuracy": 1.0 if fit_epoch else 0.5, "test_accuracy": test_acc,
                     "epochs_to_fit": fit_epoch, "steps_to_fit": fit_epoch and fit_epoch * 390,
                     "best_test_accuracy": test_acc, "epochs_trained": n_epochs}}
    run_dir = os.path.join(workdir, cfg.name())
    results.write_json(os.path.join(run_dir, "results.json"), r)
    return run_dir


def fake_kernel_result(workdir, corrupt="none", ridge=0.0):
    from rethink_tf.config import KernelConfig

    cfg = KernelConfig(dataset="mnist", corrupt=corrupt, ridge=ridge, train_examples=1000)
    r = {"schema_version": 1, "kind": "kernel", "config": cfg.to_dict(),
         "metrics": {"train_error": 0.0, "test_error": 0.03, "norm": 50.0, "residual": 1e-12}}
    results.write_json(os.path.join(workdir, cfg.name(), "results.json"), r)


@pytest.fixture
def sweep_dir(tmp_path):
    for p, fit, acc in ((0.0, 10, 0.5), (0.4, 15, 0.33), (1.0, 25, 0.1)):
        fake_train_result(str(tmp_path), corrupt="labels", p=p, fit_epoch=fit, test_acc=acc)
    fake_train_result(str(tmp_path), corrupt="random_labels", fit_epoch=24, test_acc=0.1)
    fake_train_result(str(tmp_path), corrupt="shuffled_pixels", fit_epoch=12)
    fake_train_result(str(tmp_path), corrupt="none", weight_decay=5e-4, fit_epoch=9, test_acc=0.52)
    fake_train_result(str(tmp_path), model="small_alexnet", corrupt="random_labels", weight_decay=5e-4,
                      fit_epoch=None, test_acc=0.1, epochs=30)
    fake_kernel_result(str(tmp_path))
    fake_kernel_result(str(tmp_path), corrupt="random_labels")
    os.makedirs(tmp_path / "partial-run")  # a killed run: config but no results
    results.write_json(str(tmp_path / "partial-run" / "config.json"), {})
    return str(tmp_path)


def find(**criteria):
    """The paper Results whose fields equal all of `criteria`."""
    return [r for r in paper.RESULTS if all(getattr(r, k) == v for k, v in criteria.items())]


def test_paper_data_has_provenance_and_table1():
    assert all(r.tag in ("P", "S", "R") for r in paper.RESULTS)
    t1 = find(table="table1", model="small_inception", corrupt="none", random_crop=True, weight_decay=True)
    assert {r.metric: r.value for r in t1} == {"train_accuracy": 100.0, "test_accuracy": 89.05}
    assert find(table="table4", model="small_alexnet")[0].value is None  # "failed to converge"
    mlp = {r.corrupt: r.value for r in find(table="table1", model="mlp_1x512", metric="test_accuracy",
                                            random_crop=False, weight_decay=False)}
    assert mlp == {"none": 50.51, "random_labels": 10.61}  # Table 1: 1x512 MLP, test accuracy


def test_comparison_matches_like_with_like(sweep_dir):
    rows = report.comparison_rows(results.load_all(sweep_dir))
    by = {(r["model"], r["corrupt"], r["p"], r["metric"], r["table"]): r for r in rows
          if "wd 0.0005" not in r["differences"] or r["model"] == "small_alexnet"}
    clean = by[("mlp_1x512", "none", 0.0, "test_accuracy", "table1")]  # p = 0 is the true-label Table 1 row
    assert clean["paper"] == 50.51 and clean["measured"] == 50.0 and clean["difference"] == pytest.approx(-0.51)
    rand = by[("mlp_1x512", "random_labels", 1.0, "test_accuracy", "table1")]
    assert rand["paper"] == 10.61 and rand["tag"] == "P"
    wd = [r for r in rows if r["model"] == "mlp_1x512" and "wd 0.0005" in r["differences"]]
    assert wd and all(r["paper"] in (99.80, 50.39) for r in wd)  # the weight-decay row, not the plain one
    alex = by[("small_alexnet", "random_labels", 1.0, "train_accuracy", "table4")]
    assert alex["paper"] == "failed to converge"
    partial = by[("mlp_1x512", "labels", 0.4, "test_accuracy", "")]
    assert partial["paper"] is None  # no paper number for p = 0.4: listed, not forced onto another row
    assert "dataset" not in partial["differences"]  # CIFAR-10 run: nothing to flag about the dataset
    kern = [r for r in rows if r["model"] == "kernel/none"]
    assert {r["paper"] for r in kern if r["corrupt"] == "none"} == {1.2, 220.0}
    assert all(r["paper"] is None for r in kern if r["corrupt"] == "random_labels")
    md = report.to_markdown(rows)
    assert md.count("\n") == len(rows) + 2 and "differences from the paper's setup" in md
    parsed = list(csv.DictReader(io.StringIO(report.to_csv(rows))))
    assert len(parsed) == len(rows)


def test_differences_name_the_dataset_and_subset(tmp_path):
    fake_train_result(str(tmp_path), dataset="fashion_mnist", train_examples=5000)
    fake_train_result(str(tmp_path), dataset="fashion_mnist", train_examples=5000, corrupt="labels", p=0.3)
    rows = report.comparison_rows(results.load_all(str(tmp_path)))
    row = next(r for r in rows if r["corrupt"] == "none")
    assert "dataset fashion_mnist (paper: cifar10)" in row["differences"]
    unmatched = next(r for r in rows if r["corrupt"] == "labels")
    assert unmatched["paper"] is None and "dataset fashion_mnist (not used in the paper)" in unmatched["differences"]
    assert "5,000 train examples" in row["differences"]


def test_scripts_on_generated_results(sweep_dir, tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = tmp_path / "figs"
    proc = subprocess.run([sys.executable, "scripts/make_figures.py", f"--results={sweep_dir}", f"--out={out}"],
                          cwd=REPO, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("figure1a", "figure1bc", "figure2"):
        for ext in ("png", "pdf"):
            assert (out / f"{name}.{ext}").stat().st_size > 5000
    cmp_out = tmp_path / "cmp" / "comparison"
    proc = subprocess.run([sys.executable, "scripts/compare_to_paper.py", f"--results={sweep_dir}",
                           f"--out={cmp_out}"], cwd=REPO, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| table1 | mlp_1x512 |" in open(str(cmp_out) + ".md").read()
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run([sys.executable, "scripts/make_figures.py", f"--results={empty}"], cwd=REPO,
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and "no training or kernel results.json" in proc.stderr


def test_figure1bc_uses_relative_time_to_fit(sweep_dir):
    from rethink_tf.reporting import figures as plots

    groups = plots._corruption_curves(results.load_all(sweep_dir))
    (by_p,) = [v for k, v in groups.items() if k[0].startswith("mlp_1x512") and "wd" not in k[0]]
    assert sorted(by_p) == [0.0, 0.4, 1.0] and len(by_p[1.0]) == 2  # random_labels counts as p = 1
    (run,) = by_p[0.4]  # train accuracy e/15 in epoch e: 100% at epoch 15, >= 0.6 at epoch 9
    assert plots.steps_to_accuracy(run) == run["metrics"]["steps_to_fit"] == 15 * 390
    assert plots.steps_to_accuracy(run, 0.6) == 9 * 390


def test_figures_never_merge_runs_of_different_protocols(tmp_path):
    from rethink_tf.reporting import figures as plots

    # Figure 1 sweep: stopped at fit. A Table 1 run: 100 epochs, same model, true labels. Another lr.
    for p, fit in ((0.0, 10), (0.5, 15), (1.0, 25)):
        fake_train_result(str(tmp_path), corrupt="labels", p=p, fit_epoch=fit, stop_at_train_accuracy=1.0)
    fake_train_result(str(tmp_path), corrupt="none", fit_epoch=30, epochs=100, test_acc=0.9)
    fake_train_result(str(tmp_path), corrupt="random_labels", fit_epoch=40, epochs=100, test_acc=0.1)
    fake_train_result(str(tmp_path), corrupt="none", fit_epoch=12, stop_at_train_accuracy=1.0, learning_rate=0.05)
    groups = plots._corruption_curves(results.load_all(str(tmp_path)))
    assert len(groups) == 2  # the lone lr-0.05 run forms no curve; the other two protocols stay apart
    sizes = sorted(sorted(len(v) for v in by_p.values()) for by_p in groups.values())
    assert sizes == [[1, 1], [1, 1, 1]]
    for by_p in groups.values():
        stops = {r["config"]["stop_at_train_accuracy"] for runs in by_p.values() for r in runs}
        assert len(stops) == 1
        assert {r["config"]["learning_rate"] for runs in by_p.values() for r in runs} == {0.01}


def test_figure1b_falls_back_to_a_reached_threshold_instead_of_dropping_a_point(tmp_path):
    from rethink_tf.reporting import figures as plots

    fake_train_result(str(tmp_path), corrupt="labels", p=0.0, fit_epoch=10)
    late = fake_train_result(str(tmp_path), corrupt="labels", p=1.0, fit_epoch=None, epochs=30)
    r = results.read_json(os.path.join(late, "results.json"))  # ends at 99.82%: reached 99% at epoch 20
    for h in r["history"]:
        h["train_accuracy"] = min(0.9982, h["epoch"] / 20 * 0.99)
    results.write_json(os.path.join(late, "results.json"), r)
    runs = results.load_all(str(tmp_path))
    assert plots._fit_threshold_of(runs, 1.0) == 0.99
    assert plots.steps_to_accuracy(runs[0] if runs[0]["config"]["corrupt_prob"] == 1.0 else runs[1], 0.99) == 20 * 390
    assert plots.figure1bc(runs, str(tmp_path / "figs"))


def test_sweep_expands_skips_done_and_runs(tmp_path):
    from conftest import write_cifar_binary

    data = tmp_path / "data"
    data.mkdir()
    write_cifar_binary(str(data), per_batch=8, test=8)
    work = tmp_path / "work"
    cmd = [sys.executable, "scripts/sweep.py", "--models=mlp_1x512", "--corruptions=none,labels",
           "--probs=0.5", f"--workdir={work}", "--", f"--data_dir={data}", "--epochs=1", "--batch_size=8",
           "--notensorboard"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    dry = subprocess.run(cmd[:2] + ["--dry_run"] + cmd[2:], cwd=REPO, capture_output=True, text=True, env=env)
    assert dry.stdout.count("--model=mlp_1x512") == 2 and "--corrupt_prob=0.5" in dry.stdout
    first = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    assert first.returncode == 0, first.stdout + first.stderr[-2000:]
    assert len(results.load_all(str(work))) == 2
    # progress per run, then one row per run and the count
    assert "2 run(s) planned: 0 done, 2 to do" in first.stdout and first.stdout.count("done   [") == 2
    assert "2 of 2 finished, 0 to go" in first.stdout and "2 of 2 runs finished, 0 failed" in first.stdout
    assert first.stdout.count("mlp_1x512  cifar10") == 2  # the table's rows
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    assert "2 run(s) planned: 2 done, 0 to do" in again.stdout and "start" not in again.stdout
    bad = subprocess.run(cmd[:-1] + ["--corrupt_prob=7"], cwd=REPO, capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "--corrupt_prob=7" in bad.stderr


def test_inception_v3_default_dropout_is_never_paired_with_a_no_dropout_row(tmp_path):
    # dropout None resolves to the builder's 0.2. Table 2 has no "dropout only" row, so this run has no paper
    # counterpart (it used to be paired with the "dropout: no" row).
    kw = dict(model="inception_v3", dataset="imagenet2012", epochs=2, fit_epoch=None)
    fake_train_result(str(tmp_path), run_name="default", **kw)
    fake_train_result(str(tmp_path), dropout=0.0, label_smoothing=0.0, run_name="nodrop", **kw)
    fake_train_result(str(tmp_path), corrupt="random_labels", weight_decay=4e-5, run_name="drop_wd", **kw)
    rows = report.comparison_rows(results.load_all(str(tmp_path)))
    by_run = lambda name: [r for r in rows if r["run"] == name]
    assert by_run("default") and all(r["table"] == "" for r in by_run("default"))
    nodrop = {r["metric"]: r for r in by_run("nodrop")}
    assert nodrop["test_accuracy"]["paper"] == 59.80  # the (aug no, dropout no, wd no) row
    drop_wd = {r["metric"]: r for r in by_run("drop_wd")}
    assert drop_wd["train_accuracy"]["paper"] == 91.18  # random labels, (aug no, dropout yes, wd yes)
    # "no regularizer" rows had no label smoothing; rows with a regularizer keep the TF recipe's 0.1
    assert all("label smoothing" not in r["differences"] for r in by_run("nodrop") + by_run("drop_wd"))


def test_differences_list_the_recipe_fields_that_differ(tmp_path):
    fake_train_result(str(tmp_path), learning_rate=0.05, lr_decay=0.9, optimizer="rmsprop", label_smoothing=0.1,
                      dtype_policy="mixed_bfloat16", batch_size=256)
    r = results.load_all(str(tmp_path))[0]
    r["env"] = {"replicas": 4}  # 256 over 4 GPUs: 64 per replica
    rows = report.comparison_rows([r])
    d = next(x for x in rows if x["table"] == "table1")["differences"]
    for text in ("learning rate 0.05 (paper: 0.01)", "lr decay 0.9 (paper: 0.95)", "optimizer rmsprop (paper: sgd)",
                 "label smoothing 0.1 (paper: 0)", "dtype policy mixed_bfloat16 (paper: float32)",
                 "per replica batch 64 (paper: 128)"):
        assert text in d


def test_table4_crop_and_augmentation_rows_are_compared_at_their_own_lr_decay(tmp_path):
    # Table 4's crop and augmentation rows were trained with lr decay 0.999 per epoch (Appendix E), as our
    # flagfiles are: the comparison must not report that as a difference; a 0.95 run of the same row must.
    for decay in (0.999, 0.95):
        fake_train_result(str(tmp_path / str(decay)), model="small_inception", corrupt="random_labels",
                          random_crop=True, lr_decay=decay)
    for decay, expected in ((0.999, False), (0.95, True)):
        rows = [r for r in report.comparison_rows(results.load_all(str(tmp_path / str(decay))))
                if r["table"] == "table4"]
        assert rows, decay
        assert all(("lr decay" in r["differences"]) == expected for r in rows), (decay, rows)


@pytest.fixture
def drawn(monkeypatch):
    """The figures' matplotlib Figure objects, kept (not only saved) so that tests can read what was drawn."""
    kept = {}
    real = plots._save

    def keep(fig, out_dir, name):
        kept[name] = fig
        return real(fig, out_dir, name)

    monkeypatch.setattr(plots, "_save", keep)
    monkeypatch.setattr(plots.plt, "close", lambda fig=None: None)
    return kept


def test_figure1b_never_plots_an_unmeasured_value_and_names_what_did_not_fit(tmp_path, drawn):
    """p = 0.6 never fitted within its budget: no 1b point at 0.6 (not a marker at 1.0 or at the edge), and the
    panel says "not fitted within budget"; 1c keeps every measured test error; two seeds give mean and ± std."""
    for seed in (0, 1):
        for p, fit, acc in ((0.0, 10, 0.5), (0.3, 12 + seed, 0.4), (0.6, None, 0.3), (1.0, 20 + 2 * seed, 0.1)):
            fake_train_result(str(tmp_path), corrupt="labels", p=p, fit_epoch=fit, test_acc=acc, seed=seed,
                              epochs=30, fit_threshold=1.0, stop_at_train_accuracy=1.0)
    plots.figure1bc(results.load_all(str(tmp_path)), str(tmp_path / "figs"))
    ax_b, ax_c = drawn["figure1bc"].axes[:2]
    xs = sorted(float(x) for line in ax_b.get_lines() for x in line.get_xdata()
                if line.get_label() and not line.get_label().startswith("paper"))
    assert 0.6 not in xs and {0.0, 0.3, 1.0} <= set(xs), xs
    texts = " ".join(t.get_text() for t in ax_b.texts)
    assert "not fitted within budget" in texts and "p = 0.6" in texts
    (curve,) = [c for c in ax_b.containers if "seeds" in (c.get_label() or "")]
    ys = curve.lines[0].get_ydata()
    assert ys[-1] == pytest.approx(np.mean([20, 22]) / 10)  # mean of the seeds, relative to p = 0
    assert "n = 2 seeds, mean ± std" in curve.get_label() and curve.has_yerr
    c_xs = sorted(float(x) for c in ax_c.containers for x in c.lines[0].get_xdata())
    assert c_xs == [0.0, 0.3, 0.6, 1.0]
    labels = [h.get_label() for h in ax_b.get_legend_handles_labels()[0]]
    assert any(label.startswith("paper (CIFAR-10") for label in labels)  # the paper's 1b range, marked as such
    assert any("paper, mlp_1x512" in t for t in ax_c.get_legend_handles_labels()[1])  # 1c's Table 1 end points
    assert any(t.startswith("chance (90% error)") for t in ax_c.get_legend_handles_labels()[1])
    assert "≤ 100 epochs, stopped at the first epoch with ≥ 100% train acc." in labels[0]  # the stop rule in words
    assert "fit = the first epoch with ≥ 100% training accuracy" in ax_b.get_title()  # the fit criterion


def test_two_p_values_are_points_not_a_trend_line(tmp_path, drawn):
    for p, fit, acc in ((0.0, 10, 0.5), (1.0, 20, 0.1)):
        fake_train_result(str(tmp_path), corrupt="labels", p=p, fit_epoch=fit, test_acc=acc)
    plots.figure1bc(results.load_all(str(tmp_path)), str(tmp_path / "figs"))
    for ax in drawn["figure1bc"].axes[:2]:
        for c in ax.containers:
            if not (c.get_label() or "").startswith("paper"):
                assert c.lines[0].get_linestyle() in ("None", "none", ""), c.get_label()


def test_figure2_has_one_panel_per_protocol_and_distinct_legends(tmp_path, drawn):
    for seed in (0, 1):
        fake_train_result(str(tmp_path), seed=seed, test_acc=0.5 + 0.01 * seed)
    fake_train_result(str(tmp_path), weight_decay=5e-4, test_acc=0.55)  # another protocol
    plots.figure2(results.load_all(str(tmp_path)), str(tmp_path / "figs"))
    axes = [ax for ax in drawn["figure2"].axes if ax.lines]
    assert len(axes) == 2
    for ax in axes:
        labels = ax.get_legend_handles_labels()[1]
        assert len(labels) == len(set(labels)) == len(ax.lines)
    bottom, top = axes[0].get_ylim()
    assert bottom > 0 and top < 100  # zoomed to the plateau, not 0-100


def test_figure1a_says_when_curves_coincide_and_keeps_each_visible(tmp_path, drawn):
    fake_train_result(str(tmp_path), corrupt="none")
    fake_train_result(str(tmp_path), corrupt="shuffled_pixels")  # the same fake loss curve
    fake_train_result(str(tmp_path), corrupt="random_labels", fit_epoch=25)
    plots.figure1a(results.load_all(str(tmp_path)), str(tmp_path / "figs"))
    (ax,) = drawn["figure1a"].axes
    labels = ax.get_legend_handles_labels()[1]
    assert any(label.startswith("shuffled pixels (coincides with true labels") for label in labels)
    markers = {line.get_marker() for line in ax.lines}
    assert len(markers) == 3  # distinct markers per series


def test_seeds_are_one_row_with_mean_std_and_n_and_figure1b_rows_say_what_did_not_fit(tmp_path):
    # seeds that differ in how they ran or what else they recorded (not what they trained) are one experiment
    for seed, acc, extra in ((0, 0.50, {}), (1, 0.54, {"device_data": True}), (2, 0.52, {"measures": True})):
        fake_train_result(str(tmp_path), seed=seed, test_acc=acc, fit_epoch=10, **extra)
    fake_train_result(str(tmp_path), corrupt="random_labels", test_acc=0.1, fit_epoch=25)
    fake_train_result(str(tmp_path), corrupt="labels", p=0.5, test_acc=0.3, fit_epoch=None, epochs=40)
    rows = report.comparison_rows(results.load_all(str(tmp_path)))
    (true_test,) = [r for r in rows if r["corrupt"] == "none" and r["metric"] == "test_accuracy"]
    assert true_test["n"] == 3 and true_test["measured"] == pytest.approx(52.0)
    assert true_test["std"] == pytest.approx(np.std([50.0, 54.0, 52.0]))
    assert "52.00 ± 1.63 (n = 3)" in report.to_markdown(rows)
    b = {r["p"]: r for r in rows if r["table"] == "figure1b"}
    assert b[1.0]["measured"] == pytest.approx(25 / 10) and b[1.0]["paper"].startswith("1.5-3.5")
    assert b[0.5]["measured"] is None and "not fitted within budget" in b[0.5]["differences"]
    assert "| not fitted |" in report.to_markdown(rows)
    c = {r["p"]: r for r in rows if r["table"] == "figure1c"}  # test error vs p, each seed group combined
    assert sorted(c) == [0.0, 0.5, 1.0] and c[0.0]["n"] == 3 and c[0.0]["measured"] == pytest.approx(48.0)
    assert c[0.5]["measured"] == pytest.approx(70.0) and c[1.0]["measured"] == pytest.approx(90.0)


CHROMIUM = next((p for p in ("chromium", "chromium-browser", "google-chrome") if __import__("shutil").which(p)), None)


@pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium (Debian: apt-get install chromium)")
def test_html_report_renders_its_tables_and_figures_in_a_headless_browser(sweep_dir, tmp_path):
    """python -m rethink_tf.runs --html: one self-contained file; loaded in headless Chromium every embedded figure
    renders (the page's own load script counts images with pixels), the runs and comparison tables are there, and
    a screenshot is not blank."""
    page = tmp_path / "report.html"
    proc = subprocess.run([sys.executable, "-m", "rethink_tf.runs", f"--results={sweep_dir}", f"--html={page}"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0 and f"report: {page}" in proc.stdout, proc.stderr[-2000:]
    text = page.read_text()
    assert "src='data:image/png;base64," in text and "http" not in text.split("<body>", 1)[1]  # self-contained
    browser = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run(browser + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    import re

    rendered = re.search(r'data-images-rendered="(\d+)/(\d+)"', dom)
    assert rendered and int(rendered.group(1)) == int(rendered.group(2)) >= 2, dom[:500]
    assert dom.count("<table>") == 2 and "<h2>Runs</h2>" in dom and "Measured beside the paper" in dom
    assert dom.count("<tr>") >= 1 + 11  # the runs table: header + the 11 run folders of the fixture
    shot = tmp_path / "shot.png"
    subprocess.run(browser + ["--window-size=1200,1600", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=120)
    import matplotlib.image

    pixels = matplotlib.image.imread(str(shot))
    assert pixels.shape[0] >= 1600 and pixels[..., :3].std() > 0.05  # a page, not a blank canvas


def test_pixel_noise_figure_puts_mixtures_and_additive_noise_on_their_own_axes(tmp_path):
    w = str(tmp_path)
    fake_train_result(w, fit_epoch=10, test_acc=0.5)  # the clean run: x = 0 of both series
    fake_train_result(w, corrupt="random_pixels", p=0.5, fit_epoch=14, test_acc=0.3)
    fake_train_result(w, corrupt="random_pixels", fit_epoch=20, test_acc=0.1)  # every image: x = 1
    fake_train_result(w, corrupt="additive_gaussian", noise_std=0.1, fit_epoch=11, test_acc=0.45)
    fake_train_result(w, corrupt="additive_gaussian", noise_std=0.3, fit_epoch=None, test_acc=0.35, epochs=30)
    fake_train_result(w, corrupt="labels", p=0.4, fit_epoch=15, test_acc=0.33)  # a label series: not here
    runs = results.load_all(w)
    series = plots._pixel_series(runs)
    by_name = {k[1]: {x: [r["metrics"]["test_accuracy"] for r in v] for x, v in by_x.items()}
               for k, by_x in series.items()}
    # σ = 0.1 and 0.3 on every image are points of the σ row; no mixture series of theirs without a partial run
    assert by_name == {"random pixels": {0.0: [0.5], 0.5: [0.3], 1.0: [0.1]},
                       "additive Gaussian": {0.0: [0.5], 0.1: [0.45], 0.3: [0.35]}}
    fake_train_result(w, corrupt="additive_gaussian", p=0.5, noise_std=0.1, fit_epoch=10, test_acc=0.48)
    runs = results.load_all(w)
    mixture = {k[1]: sorted(v) for k, v in plots._pixel_series(runs).items() if k[1].startswith("additive gaussian")}
    assert mixture == {"additive gaussian σ = 0.1": [0.0, 0.5, 1.0]}  # its half-noised run joins the mixtures
    paths = plots.pixel_noise(runs, str(tmp_path / "figs"))
    assert [os.path.basename(p) for p in paths] == ["pixel_noise.png", "pixel_noise.pdf"]
    assert plots.pixel_noise([r for r in runs if r["config"]["corrupt"] != "none"][:1], str(tmp_path / "f2")) == []


def test_readme_holds_the_benchmark_tables_generated_from_the_committed_outputs():
    proc = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "tables.py"), "--check",
                           os.path.join(REPO, "README.md")], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-1000:]
