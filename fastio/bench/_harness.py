"""Side-by-side benchmark harness shared by ``python -m fastio bench`` and ``benchmarks/``.

A scenario is a set of *variants* that do the same work (fastio native, fastio Python twin, the
standard-library ways). ``compare`` runs them in alternating rounds in one process (the order
rotates every round so no variant always runs first) and reports, per variant, the median time
of a round, its spread, throughput, and the ratio against the best standard-library variant.
Absolute times on shared machines are noise; the ratios are the figures.
"""

import ctypes
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

__all__ = [
    "SCENARIOS",
    "Result",
    "ScenarioResult",
    "Variant",
    "compare",
    "compile_c",
    "cpu_time",
    "format_results",
    "scenario",
    "twin_variants",
]


@dataclass
class Variant:
    """One way of doing a scenario's work.

    ``run()`` does one round and may return the number of bytes (or items) it moved, which
    overrides ``units`` for that round. ``kind`` is "fastio" or "stdlib" (or "c" for a C
    reference loop); ratios are taken against the best "stdlib" variant.
    """

    label: str
    run: object
    kind: str = "stdlib"


@dataclass
class Result:
    label: str
    kind: str
    times: list = field(default_factory=list)
    cpu_times: list = field(default_factory=list)
    units: int = 0
    unit_name: str = "B"

    @property
    def median(self):
        return statistics.median(self.times)

    @property
    def spread(self):
        """Relative interquartile spread of the round times (0.05 is +-5%)."""
        if len(self.times) < 4:
            return (max(self.times) - min(self.times)) / self.median if self.times else 0.0
        q = statistics.quantiles(self.times, n=4)
        return (q[2] - q[0]) / self.median

    @property
    def throughput(self):
        return self.units / self.median if self.median > 0 else float("inf")

    def as_dict(self, baseline=None):
        data = asdict(self)
        data.update(median=self.median, spread=self.spread, throughput=self.throughput)
        if baseline is not None:
            data["ratio"] = baseline.median / self.median
        return data


def cpu_time():
    """CPU seconds of this process (all threads), user plus system.

    ``time.process_time`` (CLOCK_PROCESS_CPUTIME_ID): nanoseconds, where ``os.times`` counts in
    clock ticks (10 ms), too coarse for a round of a few hundred milliseconds.
    """
    return time.process_time()


#: Rounds of every ``compare`` when set (``python -m fastio bench --rounds N``); None: each
#: scenario's own count.
ROUNDS_OVERRIDE = None


def compare(variants, rounds=7, warmup=1, units=0, unit_name="B", progress=None):
    """Run ``variants`` in alternating rounds; returns {label: Result}."""
    if ROUNDS_OVERRIDE is not None:
        rounds = ROUNDS_OVERRIDE
    results = {v.label: Result(v.label, v.kind, units=units, unit_name=unit_name) for v in variants}
    for _ in range(warmup):
        for v in variants:
            v.run()
    order = list(variants)
    for round_index in range(rounds):
        shift = round_index % len(order)
        for v in order[shift:] + order[:shift]:
            c0 = cpu_time()
            t0 = time.perf_counter()
            moved = v.run()
            elapsed = time.perf_counter() - t0
            results[v.label].times.append(elapsed)
            results[v.label].cpu_times.append(cpu_time() - c0)
            if moved:
                results[v.label].units = moved
        if progress:
            progress(round_index + 1, rounds)
    return results


def best_baseline(results):
    stdlib = [r for r in results.values() if r.kind == "stdlib"]
    return min(stdlib, key=lambda r: r.median) if stdlib else None


def _human(value, unit):
    if unit == "B":
        for scale, name in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
            if value >= scale:
                return f"{value / scale:.1f} {name}"
        return f"{value:.0f} B"
    if value >= 1e6:
        return f"{value / 1e6:.2f} M{unit}"
    if value >= 1e3:
        return f"{value / 1e3:.1f} k{unit}"
    return f"{value:.0f} {unit}"


def format_results(title, results, per_op=None):
    """A table: median, spread, throughput and ratio against the best standard-library way.

    ``per_op`` (a count) adds a per-operation time column.
    """
    baseline = best_baseline(results)
    lines = [title]
    header = f"  {'variant':<34} {'median':>10} {'spread':>7} {'throughput':>14} {'ratio':>7}"
    if per_op:
        header += f" {'per op':>9}"
    lines.append(header)
    for r in sorted(results.values(), key=lambda r: r.median):
        ratio = f"{baseline.median / r.median:6.2f}x" if baseline else "      -"
        row = (
            f"  {r.label:<34} {r.median * 1e3:8.1f}ms {r.spread * 100:6.1f}% "
            f"{_human(r.throughput, r.unit_name) + '/s':>14} {ratio:>7}"
        )
        if per_op:
            row += f" {r.median / per_op * 1e9:7.0f}ns"
        lines.append(row)
    if baseline:
        lines.append(f"  (ratio: time of '{baseline.label}' / time of the variant; >1 is faster)")
    return "\n".join(lines)


def compile_c(source, name, *, cflags=("-O2",)):
    """Compile C ``source`` into a shared library and load it with ctypes; None without cc.

    Used for the C reference loops that "near the limit" claims are measured against. ctypes
    releases the GIL around each call, as fastio's own loops do.
    """
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None or sys.platform == "win32":
        return None
    directory = tempfile.mkdtemp(prefix="fastio-bench-")
    c_path = os.path.join(directory, f"{name}.c")
    so_path = os.path.join(directory, f"{name}.so")
    with open(c_path, "w") as f:
        f.write(source)
    try:
        subprocess.run(
            [cc, *cflags, "-shared", "-fPIC", "-o", so_path, c_path],
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return ctypes.CDLL(so_path)


@dataclass
class ScenarioResult:
    """What one scenario measured: its table, and notes (targets met, counters seen)."""

    name: str
    title: str
    results: dict
    per_op: int = 0
    notes: list = field(default_factory=list)

    def format(self):
        text = format_results(self.title, self.results, self.per_op or None)
        return "\n".join([text, *("  " + note for note in self.notes)])

    def as_dict(self):
        baseline = best_baseline(self.results)
        return {
            "name": self.name,
            "title": self.title,
            "per_op": self.per_op,
            "notes": list(self.notes),
            "baseline": baseline.label if baseline else None,
            "variants": [r.as_dict(baseline) for r in self.results.values()],
        }


#: name -> (primitive, function(full: bool) -> ScenarioResult); filled by ``@scenario``.
SCENARIOS = {}


def scenario(name, primitive):
    """Register a benchmark scenario: ``fn(full=False) -> ScenarioResult``.

    ``full=False`` is the quick form (a few seconds); ``full=True`` the issue's full sizes.
    """

    def register(function):
        SCENARIOS[name] = (primitive, function)
        return function

    return register


def twin_variants(make_run):
    """Variants for both fastio twins: ``make_run(twin_namespace)`` returns a round function.

    The native twin is left out (with no error) where it did not build.
    """
    from fastio import _impl

    variants = []
    implementations = ("c", "python") if _impl.native_available() else ("python",)
    for implementation in implementations:
        run = make_run(_impl.twin(implementation))
        variants.append(Variant(f"fastio ({implementation})", run, kind="fastio"))
    return variants
