"""fnnet's benchmark suite: one command, a table and a JSON file.

    python -m benchmarks.run [--quick] [--json benchmarks/results.json] [--sections scaling]

Every time is the steady state after compilation (compile time reported apart),
measured interleaved with its rivals in one process, median over repeats.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def scaling(args):
    """Data-parallel W3 on meshes of 1, 2, 4 simulated CPU devices, in a process of its own."""
    command = [sys.executable, "-m", "benchmarks.scaling", "--devices", "4", "--repeats", str(args.repeats),
               "--workload", "W2" if args.smoke else "W3"]
    run = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600)
    if run.returncode:
        raise RuntimeError(f"benchmarks.scaling failed:\n{run.stderr[-3000:]}")
    result = json.loads(run.stdout)
    lines = [f"data-parallel {result['workload']} train_step (batch {result['batch']}) on simulated CPU devices "
             f"sharing {os.cpu_count()} cores",
             f"{'mesh':<22}{'µs/step':>10}{'q25–q75':>18}{'× 1-device mesh':>17}{'compile s':>11}{'rel. err':>10}"]
    for name, row in result["rows"].items():
        spread = f"{row['q25'] * 1e6:.0f}–{row['q75'] * 1e6:.0f}"
        lines.append(f"{name:<22}{row['median'] * 1e6:>10.0f}{spread:>18}{row['ratio_to_1_device_mesh']:>17.2f}"
                     f"{row['compile_s']:>11.2f}{row['max_rel_error_vs_one_device']:>10.1e}")
    return result, "\n".join(lines)


SECTIONS = {"scaling": scaling}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (under 2 minutes)")
    parser.add_argument("--smoke", action="store_true", help="smallest setting, for the test suite")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated: {', '.join(SECTIONS)}")
    parser.add_argument("--json", default=os.path.join(ROOT, "benchmarks", "results.json"), help="where to write")
    args = parser.parse_args(argv)
    args.repeats = 2 if args.smoke else 5 if args.quick else 15
    sections = args.sections.split(",")
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; expected some of {list(SECTIONS)}")

    import jax
    report = {"machine": {"python": platform.python_version(), "jax": jax.__version__,
                          "platform": platform.platform(), "cpus": os.cpu_count(),
                          "device": str(jax.devices()[0])},
              "settings": {"quick": args.quick, "smoke": args.smoke, "repeats": args.repeats}}
    started = time.perf_counter()
    for name in sections:
        result, table = SECTIONS[name](args)
        report[name] = result
        print(table, end="\n\n", flush=True)
    report["seconds"] = time.perf_counter() - started
    with open(args.json, "w") as f:
        json.dump(report, f, indent=1)
    print(f"{report['seconds']:.0f} s; results in {os.path.relpath(args.json)}")
    return report


if __name__ == "__main__":
    main()
