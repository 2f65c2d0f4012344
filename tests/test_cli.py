"""python -m fastio bench | profile: argument checking, end-to-end runs, JSON, chart."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from fastio import _impl

TWINS = ["c", "python"] if _impl.native_available() else ["python"]

try:
    import matplotlib  # noqa: F401

    HAVE_MATPLOTLIB = True
except ImportError:
    HAVE_MATPLOTLIB = False


def environment(**extra):
    env = dict(os.environ)
    env.pop("FASTIO_IMPL", None)
    env.update(extra)
    return env


def run_cli(*args, cwd=None, **env):
    return subprocess.run(
        [sys.executable, "-m", "fastio", *args],
        capture_output=True,
        text=True,
        env=environment(**env),
        cwd=cwd,
        timeout=120,
    )


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["frobnicate"],
        ["bench", "--only", "no-such-scenario"],
        ["bench", "--only", ","],
        ["bench", "--quick", "--full"],
        ["bench", "--rounds", "0"],
        ["bench", "--rounds", "many"],
        ["bench", "--bogus"],
        ["bench", "--json"],
        ["profile"],
        ["profile", "--json"],
        ["profile", "no/such/script.py"],
    ],
)
def test_bad_arguments_exit_2_with_usage(args):
    result = run_cli(*args)
    assert result.returncode == 2, (args, result.stdout, result.stderr)
    assert "usage: python -m fastio" in result.stderr
    assert "Traceback" not in result.stderr


def test_bench_list_names_the_builtin_scenario():
    result = run_cli("bench", "--list")
    assert result.returncode == 0, result.stderr
    assert "profile-overhead" in result.stdout


def check_bench_json(path, names):
    data = json.loads(path.read_text())
    assert {"machine", "mode", "rounds", "started", "duration_s", "interrupted"} <= set(data)
    assert {"scenarios", "errors"} <= set(data)
    assert data["mode"] == "quick" and data["errors"] == [] and not data["interrupted"]
    machine = data["machine"]
    for key in ("cpu", "cores", "kernel", "python", "implementation", "fastio_version"):
        assert machine[key], key
    assert [s["name"] for s in data["scenarios"]] == names
    for scenario in data["scenarios"]:
        assert {"title", "primitive", "baseline", "variants", "notes", "seconds"} <= set(scenario)
        labels = {v["label"] for v in scenario["variants"]}
        assert scenario["baseline"] in labels
        for variant in scenario["variants"]:
            assert variant["kind"] in ("fastio", "stdlib", "c")
            assert variant["median"] > 0 and variant["ratio"] > 0
            assert len(variant["times"]) == data["rounds"]
    return data


def test_bench_quick_only_end_to_end(tmp_path):
    out = tmp_path / "bench.json"
    result = run_cli(
        "bench", "--quick", "--only", "profile-overhead", "--rounds", "2", "--json", str(out)
    )
    assert result.returncode == 0, result.stderr
    # header naming the machine, progress line, the table, the summary
    for text in ("cpu", "cores", "python", "implementation", "[1/1] profile-overhead"):
        assert text in result.stdout, text
    assert "os.write" in result.stdout and "ratio" in result.stdout
    data = check_bench_json(out, ["profile-overhead"])
    labels = {v["label"] for v in data["scenarios"][0]["variants"]}
    assert {"os.write", "python table, profile off"} <= labels
    if _impl.native_available():
        assert "C loop, fio_write, profile off" in labels


def test_bench_only_takes_primitive_names(tmp_path):
    out = tmp_path / "bench.json"
    result = run_cli("bench", "--only", "profile", "--rounds", "1", "--json", str(out))
    assert result.returncode == 0, result.stderr
    check_bench_json(out, ["profile-overhead"])


@pytest.mark.skipif(not HAVE_MATPLOTLIB, reason="matplotlib (the 'bench' extra) is not installed")
def test_bench_plot_writes_a_png(tmp_path):
    png = tmp_path / "ratios.png"
    result = run_cli("bench", "--only", "profile-overhead", "--rounds", "1", "--plot", str(png))
    assert result.returncode == 0, result.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_plot_without_matplotlib_says_so(tmp_path):
    png = tmp_path / "ratios.png"
    code = textwrap.dedent(
        f"""
        import sys

        class Hide:
            def find_spec(self, name, path=None, target=None):
                if name == "matplotlib" or name.startswith("matplotlib."):
                    raise ModuleNotFoundError("No module named " + repr(name), name=name)

        sys.meta_path.insert(0, Hide())
        from fastio.__main__ import main
        sys.exit(main(["bench", "--only", "profile-overhead", "--plot", {str(png)!r}]))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=environment(),
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert "--plot needs matplotlib" in result.stderr and "pip install" in result.stderr
    assert "Traceback" not in result.stderr
    assert "[1/1]" not in result.stdout  # refused before running anything
    assert not png.exists()


def test_bench_reports_a_failing_scenario_and_runs_the_others(tmp_path):
    out = tmp_path / "bench.json"
    code = textwrap.dedent(
        f"""
        import sys
        from fastio.bench._harness import scenario

        @scenario("always-fails", "test")
        def always_fails(full=False):
            raise RuntimeError("scenario broke")

        from fastio.__main__ import main
        sys.exit(main(["bench", "--only", "always-fails,profile-overhead", "--rounds", "1",
                       "--json", {str(out)!r}]))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environment(), timeout=60
    )
    assert result.returncode == 1, result.stderr
    assert "RuntimeError: scenario broke" in result.stderr
    assert "[1/2] always-fails" in result.stdout and "[2/2] profile-overhead" in result.stdout
    data = json.loads(out.read_text())
    assert data["errors"] == [
        {"name": "always-fails", "primitive": "test", "error": "RuntimeError: scenario broke"}
    ]
    assert [s["name"] for s in data["scenarios"]] == ["profile-overhead"]


SCRIPT = """
import sys
import fastio

print("argv", sys.argv[1:])
fastio.info()  # the sys twin probes sendfile, splice and copy_file_range
{ending}
"""


def write_script(tmp_path, ending="", name="program.py"):
    path = tmp_path / name
    path.write_text(SCRIPT.format(ending=ending))
    return path


def profile_rows(path):
    return {(row["primitive"], row["call"]): row for row in json.loads(path.read_text())["calls"]}


@pytest.mark.parametrize("impl", TWINS)
def test_profile_reports_the_calls_of_a_script(tmp_path, impl):
    script = write_script(tmp_path)
    out = tmp_path / "profile.json"
    result = run_cli(
        "profile", "--json", str(out), str(script), "-v", "x", cwd=tmp_path, FASTIO_IMPL=impl
    )
    assert result.returncode == 0, result.stderr
    assert "argv ['-v', 'x']" in result.stdout
    assert "fastio profile:" in result.stderr and "sendfile" in result.stderr
    row = profile_rows(out)[("sys", "sendfile")]
    assert row["layer"] == impl and row["count"] == 1 and row["errors"] == 1


@pytest.mark.parametrize("impl", TWINS)
def test_profile_reports_when_the_script_raises(tmp_path, impl):
    script = write_script(tmp_path, 'raise RuntimeError("boom")')
    out = tmp_path / "profile.json"
    result = run_cli("profile", "--json", str(out), str(script), FASTIO_IMPL=impl)
    assert result.returncode == 1
    assert "RuntimeError: boom" in result.stderr
    assert result.stderr.index("RuntimeError: boom") < result.stderr.index("fastio profile:")
    assert profile_rows(out)[("sys", "sendfile")]["count"] == 1


@pytest.mark.parametrize(
    ("ending", "status", "message"),
    [
        ("sys.exit(3)", 3, None),
        ("sys.exit('bad input')", 1, "bad input"),
        ("sys.exit()", 0, None),
        ("raise KeyboardInterrupt", 130, "KeyboardInterrupt"),
    ],
)
def test_profile_keeps_the_exit_status(tmp_path, ending, status, message):
    result = run_cli("profile", str(write_script(tmp_path, ending)))
    assert result.returncode == status, result.stderr
    assert "fastio profile:" in result.stderr
    if message:
        assert message in result.stderr


def test_profile_reports_on_a_real_sigint(tmp_path):
    ending = "import os, signal, time\nos.kill(os.getpid(), signal.SIGINT)\ntime.sleep(30)"
    result = run_cli("profile", str(write_script(tmp_path, ending)))
    assert result.returncode == 130, result.stderr
    assert "fastio profile:" in result.stderr and "sendfile" in result.stderr


def test_profile_runs_a_module_with_its_arguments(tmp_path):
    write_script(tmp_path, name="profiled_module.py")
    out = tmp_path / "profile.json"
    result = run_cli(
        "profile", "--json", str(out), "-m", "profiled_module", "a", "--b", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "argv ['a', '--b']" in result.stdout
    assert ("sys", "sendfile") in profile_rows(out)
