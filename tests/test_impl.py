"""The implementation choice, info() and the command line."""

import json
import os
import subprocess
import sys

import pytest

import fastio
from fastio import _impl

INFO_KEYS = {
    "implementation": str,
    "native_available": bool,
    "python": str,
    "python_implementation": str,
    "platform": str,
    "machine": str,
    "gil_enabled": bool,
    "sendfile": bool,
    "splice": bool,
    "copy_file_range": bool,
    "writev": bool,
    "iov_max": int,
    "poll": bool,
    "memfd": bool,
    "mirrored_ring": bool,
    "atomics": bool,
    "page_size": int,
}


def run_python(code, **env):
    environment = dict(os.environ)
    environment.pop("FASTIO_IMPL", None)
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=60
    )


def run_cli(*args, **env):
    environment = dict(os.environ)
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-m", "fastio", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
    )


def test_implementation_is_one_of_the_allowed():
    assert fastio.IMPLEMENTATION in _impl.ALLOWED


def test_python_requested():
    result = run_python("import fastio; print(fastio.IMPLEMENTATION)", FASTIO_IMPL="python")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "python"


def test_unset_prefers_native_when_it_imports():
    result = run_python("import fastio; print(fastio.IMPLEMENTATION)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ("c" if _impl.native_available() else "python")


def test_c_requested():
    result = run_python("import fastio; print(fastio.IMPLEMENTATION)", FASTIO_IMPL="c")
    if _impl.native_available():
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "c"
    else:
        assert result.returncode != 0
        assert "ImportError: FASTIO_IMPL=c but native module" in result.stderr


def test_c_requested_without_the_extension_fails_loudly():
    # A meta-path hook hides the native modules, as on a pure-Python install.
    code = (
        "import sys\n"
        "class Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.startswith('fastio._') and name.endswith('_c'):\n"
        "            raise ImportError('hidden for the test: ' + name)\n"
        "sys.meta_path.insert(0, Hide())\n"
        "import fastio\n"
    )
    result = run_python(code, FASTIO_IMPL="c")
    assert result.returncode != 0
    assert "ImportError: FASTIO_IMPL=c but native module fastio._sys_c" in result.stderr
    assert "hidden for the test" in result.stderr
    unset = run_python(code + "print(fastio.IMPLEMENTATION, fastio.info()['native_available'])")
    assert unset.returncode == 0, unset.stderr
    assert unset.stdout.split() == ["python", "False"]


@pytest.mark.parametrize("value", ["cython", "pypy", "native", "c,python"])
def test_unknown_implementation_is_a_value_error(value):
    result = run_python("import fastio", FASTIO_IMPL=value)
    assert result.returncode != 0
    assert "ValueError" in result.stderr
    assert "use one of c, python" in result.stderr


def test_info_keys_and_types():
    facts = fastio.info()
    for key, kind in INFO_KEYS.items():
        assert isinstance(facts[key], kind), (key, facts[key])
    assert facts["implementation"] == fastio.IMPLEMENTATION
    assert facts["iov_max"] >= 16
    assert facts["page_size"] >= 4096 and facts["page_size"] & (facts["page_size"] - 1) == 0
    assert facts["pipe_max_size"] is None or facts["pipe_max_size"] >= 4096


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux has every fast path")
def test_linux_has_every_fast_path(fio):
    facts = _impl.twin_module("sys", fio.IMPLEMENTATION).probe()
    assert facts["sendfile"] and facts["copy_file_range"] and facts["writev"] and facts["poll"]
    assert facts["splice"] == (fio.IMPLEMENTATION == "c" or hasattr(os, "splice"))
    if fio.IMPLEMENTATION == "c":
        assert facts["memfd"] and facts["mirrored_ring"] and facts["atomics"]


def test_both_twins_probe_the_same_kernel(fio):
    native_or_python = _impl.twin_module("sys", fio.IMPLEMENTATION).probe()
    assert set(native_or_python) >= {"sendfile", "splice", "copy_file_range", "iov_max"}
    assert native_or_python["iov_max"] == _impl.twin_module("sys", "python").probe()["iov_max"]


def test_cli_info_table():
    result = run_cli("info")
    assert result.returncode == 0, result.stderr
    assert "implementation" in result.stdout and "sendfile" in result.stdout


def test_cli_info_json():
    result = run_cli("info", "--json")
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    assert set(INFO_KEYS) <= set(facts)


@pytest.mark.parametrize("args", [["frobnicate"], [], ["info", "--bogus"]])
def test_cli_rejects_bad_arguments(args):
    result = run_cli(*args)
    assert result.returncode == 2
    assert "usage:" in result.stderr


def test_stats_is_a_dict_of_dicts():
    snapshot = fastio.stats()
    assert isinstance(snapshot, dict)
    for counters in snapshot.values():
        assert all(isinstance(v, int) for v in counters.values())
