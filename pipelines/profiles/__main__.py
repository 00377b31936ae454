"""``python -m pipelines.profiles NAME [--benchmark-root DIR] [--params FILE] [--out FILE] [--print-set]``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pipelines.profiles import apply_profile, available_profiles, format_dvc_command, load_profile
from pipelines.stages._common import run_main


def _main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m pipelines.profiles",
        description="Apply a parameter profile (pipelines/profiles/NAME.yaml) to params.yaml.",
    )
    p.add_argument("profile", help=f"profile name ({', '.join(available_profiles())}) or a YAML file")
    p.add_argument("--benchmark-root", help="folder holding <dataset>/dof_stack|image stack|A,B (paper benchmarks)")
    p.add_argument("--params", default="params.yaml", help="params file to update")
    p.add_argument("--out", help="write the result here instead of updating --params")
    p.add_argument("--print-set", action="store_true", help="print the equivalent `dvc exp run -S ...` command only")
    a = p.parse_args(argv)
    overrides = load_profile(a.profile, benchmark_root=a.benchmark_root)
    if a.print_set:
        print(format_dvc_command(overrides, a.params))
        return 0
    path = apply_profile(overrides, a.params, out=a.out)
    print(
        f"{a.profile}: {len(overrides)} keys set in {path}; run `dvc status` to see what will re-run, then `dvc repro`"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    return run_main(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
