"""``python -m fastio bench``: the machine header, scenario selection, the run, JSON and chart.

JSON written by ``--json FILE`` (one object):

- ``machine``: ``cpu``, ``cores`` (``os.cpu_count()``), ``usable_cores`` (this process's CPU
  affinity), ``system``, ``kernel``, ``arch``, ``python``, ``python_implementation``,
  ``fastio_version``, ``implementation`` (the live twin), ``native_available``;
- ``mode``: ``"quick"`` or ``"full"``; ``rounds``: the ``--rounds`` override or null;
- ``started`` (UTC, ISO 8601), ``duration_s``, ``interrupted`` (Ctrl-C stopped the run);
- ``scenarios``: one ``ScenarioResult.as_dict()`` per finished scenario: ``name``, ``title``,
  ``primitive``, ``per_op``, ``notes``, ``baseline`` (label of the best standard-library
  variant), ``seconds`` (wall time of the scenario), ``variants`` (each: ``label``, ``kind``
  ("fastio", "stdlib" or "c"), ``times``, ``cpu_times``, ``units``, ``unit_name``, ``median``,
  ``spread``, ``throughput``, and ``ratio`` = baseline median / variant median, >1 is faster);
- ``errors``: ``{"name", "primitive", "error"}`` for each scenario that raised (or scenario
  module that failed to import); the exit status is then 1.
"""

import datetime
import importlib
import importlib.util
import os
import platform
import sys
import time
import traceback

from . import _harness

__all__ = ["BUILTIN", "load_scenarios", "machine", "plot", "run", "select"]

#: Scenario modules that are not a primitive's: ``fastio.bench.<name>``.
BUILTIN = ("overhead", "aio")


def _cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Hardware", "Processor", "cpu model"):
                    if value.strip():
                        return value.strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            import subprocess

            return (
                subprocess.run(
                    ["sysctl", "-n", "machdep.cpu.brand_string"],
                    capture_output=True,
                    text=True,
                    timeout=5,
                ).stdout.strip()
                or platform.machine()
            )
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "unknown"


def machine():
    """Facts about this machine and process, for the header and the JSON."""
    import fastio
    from fastio import _impl

    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "system": platform.system(),
        "kernel": platform.release(),
        "arch": platform.machine(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "fastio_version": fastio.__version__,
        "implementation": _impl.IMPLEMENTATION,
        "native_available": _impl.native_available(),
    }


def format_machine(facts, mode):
    twins = "native + Python twins" if facts["native_available"] else "Python twin only"
    return "\n".join(
        [
            f"fastio {facts['fastio_version']} bench ({mode}): implementation "
            f"{facts['implementation']} ({twins})",
            f"  cpu     {facts['cpu']}, {facts['cores']} cores ({facts['usable_cores']} usable)",
            f"  system  {facts['system']} {facts['kernel']} {facts['arch']}",
            f"  python  {facts['python_implementation']} {facts['python']}",
        ]
    )


#: Scenario modules that exist but failed to import: ``{"name", "primitive", "error"}``.
IMPORT_ERRORS = []


def load_scenarios(err=None):
    """Import every scenario module that exists; returns the registry (name -> (prim, fn)).

    A module that fails to import is reported (traceback on ``err``, entry in
    ``IMPORT_ERRORS``) and the others still run.
    """
    from fastio import _impl

    for name in (*_impl.PRIMITIVES, *BUILTIN):
        module = f"fastio.bench.{name}"
        if importlib.util.find_spec(module) is None:
            continue  # a primitive without benchmarks (yet)
        try:
            importlib.import_module(module)
        except Exception as exc:
            traceback.print_exc(file=err or sys.stderr)
            IMPORT_ERRORS.append(
                {"name": module, "primitive": name, "error": f"{type(exc).__name__}: {exc}"}
            )
    return _harness.SCENARIOS


def select(names):
    """Scenario names for ``--only`` (scenario or primitive names); ValueError if unknown."""
    registry = _harness.SCENARIOS
    if not names:
        return list(registry)
    chosen = []
    for name in names:
        if name in registry:
            matches = [name]
        else:
            matches = [s for s, (primitive, _) in registry.items() if primitive == name]
        if not matches:
            known = sorted({*registry, *(p for p, _ in registry.values())})
            raise ValueError(f"unknown scenario or primitive {name!r} (known: {', '.join(known)})")
        chosen += [m for m in matches if m not in chosen]
    return chosen


def _primitive_scenarios(results):
    """The scenarios of the primitives and of fastio.aio (not the profile-overhead check); all
    if none is."""
    from fastio import _impl

    chosen = [data for data in results if data["primitive"] in (*_impl.PRIMITIVES, "aio")]
    return chosen or list(results)


def _summary(results):
    lines = ["summary: ratio against the best standard-library way (>1: fastio is faster)"]
    for data in _primitive_scenarios(results):
        fastio = [v for v in data["variants"] if v["kind"] == "fastio" and "ratio" in v]
        cells = "   ".join(f"{v['label']} {v['ratio']:.2f}x" for v in fastio)
        lines.append(f"  {data['name']:<24} {cells or '-'}   (vs {data['baseline']})")
    return "\n".join(lines)


def run(names, full, out=sys.stdout, err=sys.stderr):
    """Run the scenarios ``names``; prints each table as it finishes. Returns the JSON dict."""
    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.perf_counter()
    facts = machine()
    mode = "full" if full else "quick"
    print(format_machine(facts, mode), file=out, flush=True)
    report = {
        "machine": facts,
        "mode": mode,
        "rounds": _harness.ROUNDS_OVERRIDE,
        "started": started.isoformat(timespec="seconds"),
        "duration_s": 0.0,
        "interrupted": False,
        "scenarios": [],
        "errors": list(IMPORT_ERRORS),
    }
    try:
        for index, name in enumerate(names, 1):
            primitive, function = _harness.SCENARIOS[name]
            print(f"\n[{index}/{len(names)}] {name} ({primitive}) ...", file=out, flush=True)
            begin = time.perf_counter()
            try:
                result = function(full)
            except Exception as exc:
                traceback.print_exc(file=err)
                report["errors"].append(
                    {"name": name, "primitive": primitive, "error": f"{type(exc).__name__}: {exc}"}
                )
                continue
            seconds = time.perf_counter() - begin
            data = result.as_dict()
            data.update(primitive=primitive, seconds=seconds)
            report["scenarios"].append(data)
            print(result.format(), file=out)
            print(f"  ({seconds:.1f} s)", file=out, flush=True)
    except KeyboardInterrupt:
        report["interrupted"] = True
        print("\ninterrupted: reporting the scenarios that finished", file=err, flush=True)
    report["duration_s"] = time.perf_counter() - t0
    if report["scenarios"]:
        print("\n" + _summary(report["scenarios"]), file=out)
    print(f"\ntotal {report['duration_s']:.1f} s", file=out, flush=True)
    return report


MATPLOTLIB_MISSING = (
    "--plot needs matplotlib, which is not installed: "
    "python -m pip install 'fastio[bench]' (or: python -m pip install matplotlib)"
)


def plot_backend():
    """pyplot with a file-only backend, or None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as pyplot
    except ImportError:
        return None
    return pyplot


def plot(report, path, pyplot):
    """A horizontal bar chart of every fastio variant's ratio (and the C reference loops'),
    grouped by scenario; the profile-overhead check is left out when primitives ran."""
    rows = []
    for data in _primitive_scenarios(report["scenarios"]):
        for variant in data["variants"]:
            if variant["kind"] in ("fastio", "c") and "ratio" in variant:
                rows.append((f"{data['name']}: {variant['label']}", variant["ratio"], variant))
    figure, axes = pyplot.subplots(figsize=(9, 1.2 + 0.32 * max(len(rows), 1)))
    labels = [label for label, _, _ in rows][::-1]
    ratios = [ratio for _, ratio, _ in rows][::-1]
    # C reference loops in grey; fastio green where faster than the standard library, else red.
    colors = [
        "tab:gray" if v["kind"] == "c" else "tab:green" if r >= 1.0 else "tab:red"
        for _, r, v in rows[::-1]
    ]
    axes.barh(range(len(rows)), ratios, color=colors)
    axes.set_yticks(range(len(rows)))
    axes.set_yticklabels(labels, fontsize=8)
    axes.axvline(1.0, color="black", linewidth=0.8)
    for y, ratio in enumerate(ratios):
        axes.text(ratio, y, f" {ratio:.2f}x", va="center", fontsize=7)
    facts = report["machine"]
    axes.set_xlabel("speed vs the best standard-library way (x, >1 is faster)")
    axes.set_title(
        f"fastio {facts['fastio_version']} ({report['mode']}): {facts['cpu']}, "
        f"{facts['cores']} cores, {facts['system']} {facts['kernel']}, Python {facts['python']}",
        fontsize=8,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)
