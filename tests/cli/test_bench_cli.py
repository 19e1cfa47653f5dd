"""The benchmark runner (``python -m bench`` / ``fastnn bench``) and its report builder
(``bench/report.py``), on synthetic pytest-benchmark JSON, plus one short end-to-end
run of the real suites."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import report, runner  # noqa: E402

from fastnn import cli  # noqa: E402

US = 1e-6


def case(family, group, backend, median_us, **info):
    """One entry of pytest-benchmark's JSON ``benchmarks`` list, minimal."""
    return {"group": group, "name": f"test_x[{backend}]",
            "fullname": f"bench/bench_{family}.py::test_x[{backend}]",
            "params": {"backend": backend}, "param": backend,
            "extra_info": dict(info, family=family, backend=backend),
            "options": {"min_rounds": 3, "max_time": 0.05},
            "stats": {"median": median_us * US, "min": median_us * US, "iqr": 0.0,
                      "rounds": 5}}


def train(batch, opt, arch="784-512-256-10"):
    return f"train_step {arch} B={batch} {opt}"


def synthetic(torch=True):
    """A run with every target's group; ``torch=False``: as without PyTorch."""
    b = []
    # (group, cpu, torch, numpy, gemms, cpu_train_step) in µs; the step targets judge
    # torch / cpu_train_step
    for group, cpu, tch, npy, gemms, one in [
            (train(32, "sgd"), 300, 900, 1200, 280, 250),        # 3.60x: met
            (train(128, "sgd"), 1200, 1500, 2000, 1000, 1150),   # 1.30x: not met;
            #                                                      cpu/gemms 1.2 > 1.15
            (train(128, "adam"), 1300, 2600, 2500, 1000, 600),   # 4.33x: met
            (train(32, "sgd", "64-128-10"), 25, 250, 60, 15, 20),  # 12.5x: not met;
            #                                                        20 µs <= 22: met
            (train(256, "adam", "64-128-10"), 100, 300, 200, 70, 45)]:  # 6.67x: met
        b.append(case("train", group, "numpy", npy, flops=1e6))
        b.append(case("train", group, "cpu", cpu, flops=1e6))
        b.append(case("train", group, "cpu_train_step", one, flops=1e6))
        if torch:
            b.append(case("train", group, "torch", tch, flops=1e6))
        b.append(case("train", group, "gemms", gemms, flops=1e6))
    # elementwise: the kernel moves 6 MiB, the copy 6 MiB -> floor = copy time
    sig = "activation_backward sigmoid 1024x512"
    b += [case("activations", sig, "cpu", 140, bytes=6 << 20),
          case("activations", sig, "numpy", 900, bytes=6 << 20),
          case("activations", sig, "copy", 100, bytes=6 << 20)]
    if torch:
        b.append(case("activations", sig, "torch", 120, bytes=6 << 20))
    # the copy moves half the bytes: floor = 2 x copy time = 100 µs -> 2.5x: not met
    ce = "loss cross_entropy 1024x512"
    b += [case("losses", ce, "cpu", 250, bytes=4 << 20),
          case("losses", ce, "copy", 50, bytes=2 << 20)]
    # against torch (two threads): gelu 150 / 160 met, BCE 800 / 900 met, MSE 250 / 200
    # not met; MSE's floor: the copy of as many bytes, 220 µs -> 1.14x: met
    for group, cpu, tch, copy in [("activation_forward gelu 1024x512", 150, 160, 40),
                                  ("loss bce_with_logits 1024x512", 800, 900, 60),
                                  ("loss mse 1024x512", 250, 200, 220)]:
        family = "activations" if group.startswith("activation") else "losses"
        b += [case(family, group, "cpu", cpu, bytes=6 << 20),
              case(family, group, "copy", copy, bytes=6 << 20)]
        if torch:
            b.append(case(family, group, "torch", tch, bytes=6 << 20))
    fit = "fit digits 64-128-10 adam B=200 200 epochs"
    b += [case("sklearn", fit, "cpu", 80_000, test_accuracy=0.9833, epochs=200,
               n_iter=200, steps=1600),
          case("sklearn", fit, "sklearn", 960_000, test_accuracy=0.9861, epochs=200,
               n_iter=187, steps=1496, dtype="float64")]
    # fastnn.sklearn: adam 12x faster, 0.3 points below sklearn (met, met); lbfgs 3x
    # (not met), 0.8 points below (not met)
    for group, sk_us, cpu_us, sk_acc, cpu_acc in [
            ("estimator digits 64-128-10 adam 200 epochs", 600_000, 50_000, 0.986,
             0.983),
            ("estimator digits 64-128-10 lbfgs max_iter 200", 300_000, 100_000, 0.98,
             0.972)]:
        b += [case("estimators", group, "sklearn", sk_us, test_accuracy=sk_acc,
                   epochs=200, dtype="float64"),
              case("estimators", group, "cpu", cpu_us, test_accuracy=cpu_acc,
                   epochs=200, dtype="float64")]
    return {"benchmarks": b, "datetime": "2026-11-22T12:00:00+00:00",
            "machine_info": {"fastnn": {"cpu_model": "Test CPU", "cpus_available": 2,
                                        "threads": 2, "blas_kernels": ["Haswell"],
                                        "OPENBLAS_CORETYPE": "Haswell",
                                        "versions": {"fastnn": "0.1.0", "torch": None}}}}


def verdicts(data):
    groups = {g: c for fam in report.collect(data).values() for g, c in fam.items()}
    return {label: (shown, verdict)
            for label, shown, _, verdict in report.evaluate_targets(groups)}


def row(text, first_cell):
    lines = [ln for ln in text.splitlines() if ln.startswith(f"| {first_cell} |")]
    assert lines, f"no table row starting with {first_cell!r}"
    return [c.strip() for c in lines[0].strip("|").split("|")]


def test_ratios_and_targets():
    data = synthetic()
    v = verdicts(data)
    assert v["784-512-256-10, B=32, SGD: torch / cpu train_step"] == ("3.60×", "met")
    assert v["784-512-256-10, B=128, SGD: torch / cpu train_step"] == ("1.30×",
                                                                        "**not met**")
    assert v["784-512-256-10, B=128, SGD: cpu / its GEMMs alone"] == ("1.20×",
                                                                       "**not met**")
    assert v["784-512-256-10, B=128, Adam: torch / cpu train_step"] == ("4.33×", "met")
    assert v["64-128-10, B=32, SGD: torch / cpu train_step"] == ("12.50×", "**not met**")
    assert v["64-128-10, B=32, SGD: cpu train_step per step"] == ("20.0 µs", "met")
    assert v["64-128-10, B=256, Adam: torch / cpu train_step"] == ("6.67×", "met")
    assert v["gelu forward 1024x512: cpu / torch"] == ("0.94×", "met")
    assert v["BCE-with-logits value + gradient 1024x512: cpu / torch"] == ("0.89×", "met")
    assert v["MSE value + gradient 1024x512: cpu / torch"] == ("1.25×", "**not met**")
    assert v["MSE value + gradient 1024x512: cpu / memory floor"] == ("1.14×", "met")
    sig = v["sigmoid gradient (activation_backward) 1024x512: cpu / memory floor"]
    assert sig == ("1.40×", "met")
    ce = v["softmax-CE value + gradient 1024x512: cpu / memory floor"]
    assert ce == ("2.50×", "**not met**")     # copy scaled by the bytes: floor 100 µs
    assert v["digits 64-128-10 fit, Adam, batch 200, 200 epochs: sklearn / cpu"] == \
        ("12.00×", "met")
    shown, verdict = v["digits fit: fastnn (cpu) test accuracy"]
    assert shown.startswith("98.33%") and "sklearn 98.61%" in shown
    assert verdict == "met"
    assert v["MLPClassifier, digits, adam, 200 epochs: sklearn / fastnn.sklearn"] == \
        ("12.00×", "met")
    assert v["MLPClassifier, digits, adam: test accuracy, points below sklearn's"] == \
        ("+0.30 (98.30% vs 98.60%)", "met")
    assert v["MLPClassifier, digits, lbfgs, max_iter 200: sklearn / fastnn.sklearn"] == \
        ("3.00×", "**not met**")
    assert v["MLPClassifier, digits, lbfgs: test accuracy, points below sklearn's"] == \
        ("+0.80 (97.20% vs 98.00%)", "**not met**")


def test_markdown_tables():
    text = report.build_markdown(synthetic(), chart="cpu.png", command="python -m bench")
    assert "Test CPU" in text and "Haswell" in text and "torch not installed" in text
    assert "![time per training step](cpu.png)" in text
    header = row(text, "case")        # the first table with a "case" column: training
    r = row(text, train(32, "sgd"))
    cells = dict(zip(header, r))
    assert cells["cpu (µs)"] == "300" and cells["torch (µs)"] == "900"
    assert cells["numpy/cpu"] == "4.00" and cells["torch/cpu"] == "3.00"
    assert cells["cpu/floor"] == "1.07"                       # 300 / 280
    assert cells["cpu rate"] == "3 GFLOP/s"                   # 1e6 flops / 300 µs
    r = row(text, "activation_backward sigmoid 1024x512")
    assert "1.40" in r and "0.86" in r                         # cpu/floor, torch/cpu
    assert "## Whole fit against scikit-learn" in text
    fit = [ln for ln in text.splitlines() if "| sklearn | 98.61%" in ln]
    assert fit and "187 of 200" in fit[0] and "| 642 |" in fit[0]   # 960 ms / 1496


def test_missing_torch_is_a_dash_not_a_crash(tmp_path):
    data = synthetic(torch=False)
    v = verdicts(data)
    assert v["784-512-256-10, B=32, SGD: torch / cpu train_step"] == (None,
                                                                       "– (not measured)")
    assert v["784-512-256-10, B=128, SGD: cpu / its GEMMs alone"][1] == "**not met**"
    md, png, text = report.write_report(data, tmp_path)
    assert md.is_file() and png is not None and png.read_bytes()[:4] == b"\x89PNG"
    r = row(text, "784-512-256-10, B=32, SGD: torch / cpu train_step")
    assert r[1] == "–" and "not measured" in r[3]
    assert "torch (µs)" not in text                 # no empty torch column at all
    # a group where some peer is missing within a family that has it elsewhere
    data["benchmarks"] = [b for b in synthetic()["benchmarks"]
                          if not (b["group"] == train(32, "sgd")
                                  and b["extra_info"]["backend"] == "torch")]
    text = report.build_markdown(data)
    cells = dict(zip(row(text, "case"), row(text, train(32, "sgd"))))
    assert cells["torch (µs)"] == "–" and cells["torch/cpu"] == "–"


def test_empty_and_partial_runs(tmp_path):
    md, png, text = report.write_report({"benchmarks": []}, tmp_path)
    assert png is None and "not measured" in text and "Chart: skipped" in text
    assert not (tmp_path / "cpu.png").exists()


def test_chart_skipped_without_matplotlib(tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m.split(".")[0] == "matplotlib"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)      # import raises ImportError
    (tmp_path / "cpu.png").write_bytes(b"stale")
    md, png, text = report.write_report(synthetic(), tmp_path)
    assert png is None and not (tmp_path / "cpu.png").exists()
    assert "skipped: matplotlib is not installed" in md.read_text()


def test_runner_from_json_and_cli(tmp_path, capsys):
    src = tmp_path / "run.json"
    src.write_text(json.dumps(synthetic()))
    out = tmp_path / "out"
    assert runner.main(["--from-json", str(src), "--out", str(out)]) == 0
    assert (out / "cpu.md").is_file() and (out / "cpu.png").is_file()
    # fastnn bench hands its arguments to the runner of this checkout
    out2 = tmp_path / "out2"
    assert cli.main(["bench", "--from-json", str(src), "--out", str(out2)]) == 0
    assert "## Targets" in (out2 / "cpu.md").read_text()
    assert runner.main(["--from-json", str(tmp_path / "missing.json")]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_bench_default_out_never_the_committed_results(tmp_path, monkeypatch, capsys):
    """Without --out, only a full run started inside the source tree writes into its
    bench/results (the committed report); `fastnn bench` from elsewhere, or a --quick
    run, writes ./fastnn-bench-results in the current directory and says so."""
    tree = tmp_path / "checkout"                       # a stand-in for the source tree
    committed = tree / "bench" / "results"
    committed.mkdir(parents=True)
    (committed / "cpu.md").write_text("committed\n")
    monkeypatch.setattr(runner, "ROOT", tree)
    monkeypatch.setattr(runner, "DEFAULT_OUT", committed)
    assert runner.default_out(cwd=tree) == committed
    assert runner.default_out(cwd=tree / "bench") == committed
    assert runner.default_out(quick=True, cwd=tree) == tree / "fastnn-bench-results"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert runner.default_out(cwd=elsewhere) == elsewhere / "fastnn-bench-results"

    src = tmp_path / "run.json"
    src.write_text(json.dumps(synthetic()))
    monkeypatch.chdir(elsewhere)
    assert cli.main(["bench", "--from-json", str(src)]) == 0
    out = capsys.readouterr().out
    assert (committed / "cpu.md").read_text() == "committed\n"      # untouched
    assert sorted(p.name for p in committed.iterdir()) == ["cpu.md"]
    mine = elsewhere / "fastnn-bench-results"
    assert (mine / "cpu.md").is_file() and "## Targets" in (mine / "cpu.md").read_text()
    assert f"writing the report into {mine}" in out and f"wrote {mine}" in out

    # --out naming a file, not a folder: refused at once, naming it
    (elsewhere / "afile").write_text("x")
    assert runner.main(["--from-json", str(src), "--out", "afile"]) == 1
    err = capsys.readouterr().err
    assert "afile" in err and err.count("\n") == 1


def quick(data):
    data["fastnn_bench_quick"] = True                 # as the runner records --quick
    return data


def test_quick_run_judges_no_target(tmp_path, capsys):
    """A --quick run's report says its timings are not for quoting and marks no target
    met (nor not met): "– (quick run)"; the same numbers from a full run are judged."""
    data = quick(synthetic())
    groups = {g: c for fam in report.collect(data).values() for g, c in fam.items()}
    rows = report.evaluate_targets(groups, quick=True)
    assert {verdict for *_, verdict in rows} == {"– (quick run)"}
    assert [shown for _, shown, _, _ in rows] == [
        shown for _, shown, _, _ in report.evaluate_targets(groups)]   # still shown
    text = report.build_markdown(data, chart="cpu.png")
    assert "Quick run" in text.split("## Targets")[0]
    assert "not for quoting" in text.split("## Targets")[0]
    targets = text.split("## Targets")[1].split("##")[0]
    verdicts = [ln.strip("|").split("|")[-1].strip() for ln in targets.splitlines()
                if ln.startswith("| ") and not ln.startswith("| target |")]
    assert len(verdicts) == len(report.TARGETS)
    assert set(verdicts) == {"– (quick run)"}
    assert "met" not in targets
    r = row(text, "784-512-256-10, B=32, SGD: torch / cpu train_step")
    assert r[1] == "3.60×" and r[3] == "– (quick run)"
    gpu = report.build_gpu_markdown(with_cuda(quick(synthetic())))
    assert "not for quoting" in gpu
    # the runner: rebuilt from a quick run's JSON, still a quick report, and it says so
    src = tmp_path / "quick.json"
    src.write_text(json.dumps(data))
    assert runner.main(["--from-json", str(src), "--out", str(tmp_path / "out")]) == 0
    assert "not for quoting" in capsys.readouterr().out
    md = (tmp_path / "out" / "cpu.md").read_text()
    assert "not for quoting" in md and "| met |" not in md
    # a full run's report is unchanged: no note, verdicts judged
    full = report.build_markdown(synthetic(), chart="cpu.png")
    assert "Quick run" not in full and "| met |" in full


def test_cli_bench_outside_a_checkout(monkeypatch, capsys):
    monkeypatch.setattr(cli, "bench_dir", lambda: None)
    assert cli.main(["bench", "--quick"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "source checkout" in err


H100 = "NVIDIA H100 80GB HBM3"


def with_cuda(data, gpu=H100):
    """``data`` plus cuda cases (and the GPU peers on some groups), as a run on a GPU
    machine records them: the GPU in machine_info["fastnn"]["gpu"]."""
    b = data["benchmarks"]
    # (group, family, cuda, torch_cuda or None, cupy or None) in µs
    for group, family, cuda, tcuda, cupy in [
            (train(32, "sgd"), "train", 120, 240, 48),       # cpu 300: 2.50x
            (train(128, "adam"), "train", 130, None, None),   # cpu 1300: 10.00x
            (train(32, "sgd", "64-128-10"), "train", 50, 75, None),   # cpu 25: 0.50x
            ("activation_backward sigmoid 1024x512", "activations", 7, 14, None)]:
        b.append(case(family, group, "cuda", cuda))
        if tcuda:
            b.append(case(family, group, "torch_cuda", tcuda))
        if cupy:
            b.append(case(family, group, "cupy", cupy))
    data["machine_info"]["fastnn"]["gpu"] = {
        "name": gpu, "compute_capability": "9.0", "multiprocessors": 132,
        "memory_bytes": 80 * 2 ** 30, "nvidia_driver": "550.54.15",
        "cuda_driver_api": "12.4", "cuda_runtime": "12.4",
        "versions": {"numba": "0.68.1", "numba-cuda": "0.30.4", "torch": "2.13.0",
                     "torch_cuda": "12.4", "cupy": None}}
    return data


def test_gpu_report(tmp_path):
    """The CPU-vs-CUDA report of a run with cuda cases: its file names, rows, speed-ups
    and ratios to the GPU peers; none without cuda cases (and cpu.md unchanged)."""
    assert report.gpu_slug(H100) == "nvidia-h100-80gb-hbm3"
    assert report.gpu_slug("Tesla V100-SXM2-16GB") == "tesla-v100-sxm2-16gb"
    plain = synthetic()
    assert not report.has_cuda(plain)
    assert report.write_gpu_report(plain, tmp_path / "none") is None
    assert not (tmp_path / "none").exists()

    data = with_cuda(synthetic())
    assert report.has_cuda(data)
    md, png, text = report.write_gpu_report(data, tmp_path, command="python -m bench")
    assert md == tmp_path / "nvidia-h100-80gb-hbm3.md" and md.read_text() == text + "\n"
    assert png == tmp_path / "nvidia-h100-80gb-hbm3.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert f"cuda backend on {H100}" in text.splitlines()[0]
    assert "2026-11-22" in text and "550.54.15" in text and "CUDA runtime 12.4" in text
    assert "numba-cuda 0.30.4" in text and "torch 2.13.0 (CUDA 12.4)" in text
    assert "cupy not installed" in text

    header = row(text, "case")                  # the first table: training steps
    assert header == ["case", "cpu (µs)", "cuda (µs)", "torch_cuda (µs)", "cupy (µs)",
                      "cuda speed-up (cpu/cuda)", "torch_cuda/cuda", "cupy/cuda"]
    cells = dict(zip(header, row(text, train(32, "sgd"))))
    assert cells["cpu (µs)"] == "300" and cells["cuda (µs)"] == "120"
    assert cells["cuda speed-up (cpu/cuda)"] == "2.50"
    assert cells["torch_cuda/cuda"] == "2.00" and cells["cupy/cuda"] == "0.40"
    cells = dict(zip(header, row(text, train(128, "adam"))))
    assert cells["cuda speed-up (cpu/cuda)"] == "10.00" and cells["cupy/cuda"] == "–"
    cells = dict(zip(header, row(text, train(32, "sgd", "64-128-10"))))
    assert cells["cuda speed-up (cpu/cuda)"] == "0.50"      # the GPU slower: below 1
    assert train(128, "sgd") not in text                      # no cuda case: no row
    act = text.split("## Activations")[1]
    assert "cupy" not in act.split("##")[0]                   # no empty peer column
    cells = dict(zip(row(act, "case"), row(act, "activation_backward sigmoid 1024x512")))
    assert cells["cuda speed-up (cpu/cuda)"] == "20.00"      # 140 / 7
    assert cells["torch_cuda/cuda"] == "2.00"
    assert "## Losses" not in text                            # no cuda case there

    # the runner writes both reports; cpu.md is the same report as without a GPU
    src = tmp_path / "run.json"
    src.write_text(json.dumps(data))
    out = tmp_path / "out"
    assert runner.main(["--from-json", str(src), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "cpu.md", "cpu.png", "nvidia-h100-80gb-hbm3.md", "nvidia-h100-80gb-hbm3.png"]
    assert "## Targets" in (out / "cpu.md").read_text()


def test_cpu_report_unchanged_without_cuda():
    """Runs without cuda cases give the same cpu.md whether or not their JSON records a
    GPU (machine_info["fastnn"]["gpu"] is None there)."""
    data = synthetic()
    text = report.build_markdown(data, chart="cpu.png")
    data["machine_info"]["fastnn"].update(gpu=None, backends={"timed": ["numpy", "cpu"],
                                                               "left_out": {}})
    assert report.build_markdown(data, chart="cpu.png") == text


def test_runner_command_line():
    args = runner.build_parser().parse_args(["--quick", "-k", "train", "--min-rounds", "7"])
    cmd = runner.pytest_command(args, "/tmp/x.json")
    assert "--benchmark-only" in cmd and "--benchmark-json=/tmp/x.json" in cmd
    assert "--benchmark-max-time=0.05" in cmd and "--benchmark-min-rounds=7" in cmd
    assert cmd[cmd.index("-k") + 1] == "train"
    with pytest.raises(SystemExit):
        runner.build_parser().parse_args(["--min-rounds", "0"])


def test_slow_end_to_end_quick_run(tmp_path):
    """``python -m bench --quick -k 64-128-10``: the real suites, short timings."""
    out = tmp_path / "results"
    env = dict(os.environ)
    env.pop("PYTEST_ADDOPTS", None)
    done = subprocess.run([sys.executable, "-m", "bench", "--quick", "-k", "64-128-10",
                           "--out", str(out)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = (out / "cpu.md").read_text()
    assert (out / "cpu.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "cpu.json").read_text())["benchmarks"]
    assert json.loads((out / "cpu.json").read_text())["fastnn_bench_quick"] is True
    assert "not for quoting" in text and "not for quoting" in done.stdout
    assert "| met |" not in text and "**not met**" not in text   # a quick run judges none
    cells = row(text, "train_step 64-128-10 B=32 sgd")
    assert cells[2] != "–"                       # the cpu column (after numpy) measured
    assert "784-512-256-10" not in text.split("## Training steps")[1]   # -k left it out
    target = row(text, "64-128-10, B=32, SGD: torch / cpu train_step")
    has_torch = importlib.util.find_spec("torch") is not None
    assert target[1].endswith("×") if has_torch else target[1] == "–"
    # every timed case records how busy the rest of the machine was, and the header
    # names the BLAS core type and the load
    data = json.loads((out / "cpu.json").read_text())
    for b in data["benchmarks"]:
        info = b["extra_info"]
        assert {"other_load", "other_load_window_s", "other_load_resolution",
                "contended"} <= set(info), b["name"]
        assert info["other_load_window_s"] > 0
    assert "other_load" in data["fastnn_bench_other_load"]
    head = text.split("## Targets")[0]
    assert "core type" in head and "OPENBLAS_CORETYPE" in head
    assert "- machine load" in head and "core type" in done.stdout


# ---- contention and the BLAS core type ---------------------------------------------
def contend(data, group, peer, load, resolution=0.02):
    """Mark one case of ``data`` as run beside other processes using ``load`` cores
    (as bench/conftest.py records it); every other case quiet."""
    for b in data["benchmarks"]:
        info = b["extra_info"]
        info.setdefault("other_load", 0.01)
        info.setdefault("other_load_resolution", resolution)
        info.setdefault("contended", False)
        if b["group"] == group and info["backend"] == peer:
            info.update(other_load=load, other_load_resolution=resolution,
                        contended=load - resolution > report.CONTENDED_CORES)
    return data


def test_contended_case_is_flagged_and_its_targets_not_judged():
    data = contend(synthetic(), train(32, "sgd"), "torch", 0.9)
    v = verdicts(data)
    assert v["784-512-256-10, B=32, SGD: torch / cpu train_step"] == (
        "3.60×", "– (contended: other processes used 0.90 cores)")
    # the other targets, and the same group's target without torch, are still judged
    assert v["784-512-256-10, B=128, SGD: torch / cpu train_step"] == ("1.30×",
                                                                        "**not met**")
    assert v["64-128-10, B=32, SGD: torch / cpu train_step"] == ("12.50×", "**not met**")
    assert v["64-128-10, B=32, SGD: cpu train_step per step"] == ("20.0 µs", "met")
    text = report.build_markdown(data, chart="cpu.png")
    header = row(text, "case")
    assert header[-1] == "contended"                  # only where a case was contended
    cells = dict(zip(header, row(text, train(32, "sgd"))))
    assert cells["contended"] == "**yes**: torch 0.90 cores"
    assert cells["torch (µs)"] == "900"                # the timings are still shown
    assert dict(zip(header, row(text, train(128, "sgd"))))["contended"] == ""
    # families without a contended case keep their table as it was
    assert "contended" not in row(text, "activation_backward sigmoid 1024x512")
    assert "1 of 46 cases contended" in text.split("## Targets")[0]
    # a floor peer (gemms, copy) contended: its floor targets are not judged
    data = contend(synthetic(), "loss cross_entropy 1024x512", "copy", 0.5)
    ce = verdicts(data)["softmax-CE value + gradient 1024x512: cpu / memory floor"]
    assert ce == ("2.50×", "– (contended: other processes used 0.50 cores)")
    # quick runs stay "quick run"
    rows = report.evaluate_targets(
        {g: c for fam in report.collect(contend(synthetic(), train(32, "sgd"), "cpu", 2.0))
         .values() for g, c in fam.items()}, quick=True)
    assert {verdict for *_, verdict in rows} == {"– (quick run)"}


def test_tick_noise_of_a_short_window_is_not_contention():
    """0.6 cores measured over a window whose resolution is 0.5: within the tick
    rounding of the threshold, so not flagged (a JSON without the recorded flag is
    judged the same way)."""
    data = contend(synthetic(), train(32, "sgd"), "torch", 0.6, resolution=0.5)
    for b in data["benchmarks"]:
        b["extra_info"].pop("contended")
    assert verdicts(data)["784-512-256-10, B=32, SGD: torch / cpu train_step"] == (
        "3.60×", "met")
    data = contend(synthetic(), train(32, "sgd"), "torch", 0.8, resolution=0.5)
    for b in data["benchmarks"]:
        b["extra_info"].pop("contended")
    assert verdicts(data)["784-512-256-10, B=32, SGD: torch / cpu train_step"][
        1].startswith(
        "– (contended")


def test_report_header_blas_core_type_and_load():
    data = synthetic()
    fi = data["machine_info"]["fastnn"]
    text = report.build_markdown(data)
    assert "OpenBLAS kernels Haswell" in text and "OPENBLAS_CORETYPE=Haswell (set)" in text
    assert "per case: not recorded by this run" in text      # an older run's JSON
    fi["blas_libraries"] = [
        {"internal_api": "openblas", "version": "0.3.30", "architecture": "SkylakeX",
         "num_threads": 2, "file": "libscipy_openblas-6cdc3b4a.so"},
        {"internal_api": "openblas", "version": "0.3.31", "architecture": "Haswell",
         "num_threads": 1, "file": "libopenblas64_.so"}]
    fi["OPENBLAS_CORETYPE"] = None
    data["fastnn_bench_other_load"] = {"other_load": 0.04}
    contend(data, train(32, "sgd"), "cpu", 0.01)            # all quiet
    head = report.build_markdown(data).split("## Targets")[0]
    blas = [ln for ln in head.splitlines() if ln.startswith("- BLAS")]
    assert blas == ["- BLAS (threadpoolctl): openblas 0.3.30 "
                    "(`libscipy_openblas-6cdc3b4a.so`, 2 threads): core type SkylakeX; "
                    "openblas 0.3.31 (`libopenblas64_.so`, 1 threads): core type "
                    "Haswell; OPENBLAS_CORETYPE not set"]
    assert "other processes used 0.04 cores over the whole run" in head
    assert "0 of 46 cases contended" in head and "0.01–0.01 cores" in head
    # not Linux: every case's load unknown
    for b in data["benchmarks"]:
        b["extra_info"].update(other_load=None, other_load_resolution=None,
                               contended=None)
    data["fastnn_bench_other_load"] = {"other_load": None}
    head = report.build_markdown(data).split("## Targets")[0]
    assert "per case: unknown (no /proc/stat)" in head
    assert "unknown CPU time (no /proc/stat)" in head
    assert verdicts(data)["784-512-256-10, B=32, SGD: torch / cpu train_step"] == (
        "3.60×", "met")
    # threadpoolctl failed: why, in place of the libraries
    fi["blas_libraries"] = "unknown (RuntimeError: boom)"
    assert "- BLAS: unknown (RuntimeError: boom); OPENBLAS_CORETYPE not set" in \
        report.build_markdown(data)


def test_runner_warns_of_contended_rows(tmp_path, capsys):
    src = tmp_path / "busy.json"
    src.write_text(json.dumps(contend(synthetic(), train(128, "adam"), "cpu_train_step",
                                      1.5)))
    assert runner.main(["--from-json", str(src), "--out", str(tmp_path / "out")]) == 0
    out, err = capsys.readouterr()
    assert "OpenBLAS kernels Haswell" in out and "1 of 46 cases contended" in out
    assert "1 table rows ran while other processes were busy" in err
    assert train(128, "adam") in err
    md = (tmp_path / "out" / "cpu.md").read_text()
    assert "– (contended: other processes used 1.50 cores)" in md


# ---- --alternate: one process per contender, interleaved ----------------------------
def one_round(medians_us, loads, contended):
    """A run of one contender process: the 64-128-10 B=32 SGD group, ``medians_us``
    {peer: µs}, ``loads`` {peer: other_load}, ``contended`` the set of peers flagged."""
    data = synthetic()
    group = train(32, "sgd", "64-128-10")
    data["benchmarks"] = [case("train", group, p, us, other_load=loads[p],
                               other_load_resolution=0.02, contended=p in contended)
                          for p, us in medians_us.items()]
    for b in data["benchmarks"]:
        b["fullname"] = f"bench/bench_train.py::test_train_step[{b['params']['backend']}]"
    return data


def test_merge_rounds_takes_the_median_of_quiet_rounds():
    runs = [one_round({"cpu": 30}, {"cpu": 0.0}, set()),
            one_round({"torch": 900}, {"torch": 0.0}, set()),
            one_round({"cpu": 90}, {"cpu": 1.2}, {"cpu"}),           # contended: left out
            one_round({"torch": 250}, {"torch": 0.0}, set()),
            one_round({"cpu": 25}, {"cpu": 0.1}, set()),
            one_round({"torch": 260}, {"torch": 0.05}, set())]
    runs[1]["machine_info"]["fastnn"]["blas_libraries"] = [
        {"file": "libtorch_blas.so", "architecture": "Haswell"}]
    merged = runner.merge_rounds(runs)
    got = {b["extra_info"]["backend"]: b for b in merged["benchmarks"]}
    assert set(got) == {"cpu", "torch"}
    assert got["cpu"]["stats"]["median"] == pytest.approx(25 * US)   # lower of 25, 30
    assert got["torch"]["stats"]["median"] == pytest.approx(260 * US)  # of 250, 260, 900
    alt = got["cpu"]["extra_info"]["alternate"]
    assert alt["rounds"] == 3 and alt["quiet_rounds"] == 2
    assert alt["other_loads"] == [0.0, 1.2, 0.1]
    assert merged["machine_info"]["fastnn"]["blas_libraries"] == [
        {"file": "libtorch_blas.so", "architecture": "Haswell"}]
    # every round contended: the median of them all, still flagged
    merged = runner.merge_rounds([one_round({"cpu": us}, {"cpu": 1.0}, {"cpu"})
                                  for us in (40, 10, 30)])
    only = merged["benchmarks"][0]
    assert only["stats"]["median"] == pytest.approx(30 * US)
    assert only["extra_info"]["contended"] is True
    assert only["extra_info"]["alternate"]["quiet_rounds"] == 0
    assert runner.rotations(["a", "b", "c"], 4) == [
        ["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]


def test_runner_alternate_interleaves_contender_processes(tmp_path, monkeypatch, capsys):
    calls = []
    medians = {"cpu": iter([30, 28, 90]), "torch": iter([900, 300, 310])}

    def fake_run_once(args, json_path, extra=()):
        name = extra[extra.index("--fastnn-contender") + 1]
        calls.append(name)
        return 0, one_round({name: next(medians[name])}, {name: 0.0}, set()), None

    monkeypatch.setattr(runner, "contenders", lambda args, tmp: ["cpu", "torch"])
    monkeypatch.setattr(runner, "_run_once", fake_run_once)
    assert runner.main(["--alternate", "3", "--out", str(tmp_path)]) == 0
    assert calls == ["cpu", "torch", "torch", "cpu", "cpu", "torch"]
    data = json.loads((tmp_path / "cpu.json").read_text())
    assert data["fastnn_bench_alternate"] == {"rounds": 3, "contenders": ["cpu", "torch"],
                                              "processes": 6}
    text = (tmp_path / "cpu.md").read_text()
    cells = dict(zip(row(text, "case"), row(text, train(32, "sgd", "64-128-10"))))
    assert cells["cpu (µs)"] == "30.0" and cells["torch (µs)"] == "310"
    assert "alternated (`--alternate 3`)" in text and "(3–3 quiet rounds of 3)" in text


def test_contender_selection_in_the_suites(tmp_path):
    """bench/conftest.py's --fastnn-contender keeps only that backend's or peer's
    cases; --fastnn-contenders-file lists the selected cases' contenders."""
    listing = tmp_path / "contenders.txt"
    env = dict(os.environ)
    env.pop("PYTEST_ADDOPTS", None)
    done = subprocess.run([sys.executable, "-m", "pytest", "bench", "-q", "-p",
                           "no:cacheprovider", "--collect-only", "-k", "64-128-10",
                           "--fastnn-contender", "gemms",
                           f"--fastnn-contenders-file={listing}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    ids = [ln for ln in done.stdout.splitlines() if "::" in ln]
    assert ids and all(i.endswith("-gemms]") for i in ids)
    assert listing.read_text().split() == ["gemms"]
