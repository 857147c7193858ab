"""Every op's backward() against central differences.

For each case of minitl.check.op_cases(), L(x) = Σ r · f(x) for a fixed random r,
and each element of the gradient is compared with

    ∂L/∂x_i ≈ (L(x + ε e_i) − L(x − ε e_i)) / 2ε        (float64, ε = 1e-6)

The error printed is max|analytic − numeric| / max|numeric|. The last lines list any
op in minitl.Function.registry that has no case (the test suite fails on those).
"""
import argparse
import time

import minitl
from minitl.check import minitl_ops, op_cases, unchecked_ops


def run(cases):
    """(op, description, error or None, message) for each case."""
    rows = []
    for name, desc, fn, inputs in cases:
        try:
            rows.append((name, desc, minitl.gradcheck(fn, *inputs), ""))
        except minitl.GradcheckError as e:
            rows.append((name, desc, None, str(e)))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="only the smallest case of each op")
    args = parser.parse_args(argv)

    cases = op_cases()
    if args.quick:  # the case with the fewest input elements, per op
        smallest = {}
        for case in cases:
            size = sum(x.size for x in case[3])
            if case[0] not in smallest or size < smallest[case[0]][0]:
                smallest[case[0]] = (size, case)
        cases = [case for _, case in smallest.values()]

    start = time.perf_counter()
    rows = run(cases)
    width = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
    print(f"{'op':<{width[0]}}  {'shapes':<{width[1]}}  {'max rel. error':>14}  result")
    print("-" * (sum(width) + 26))
    for name, desc, err, _ in rows:
        shown = f"{err:14.2e}" if err is not None else f"{'—':>14}"
        print(f"{name:<{width[0]}}  {desc:<{width[1]}}  {shown}  {'PASS' if err is not None else 'FAIL'}")
    failed = [r for r in rows if r[2] is None]
    for name, desc, _, message in failed:
        print(f"\n{name} ({desc}): {message}")
    print(f"\n{len(rows) - len(failed)} of {len(rows)} cases passed in {time.perf_counter() - start:.1f} s")

    missing = unchecked_ops()
    print(f"{len(minitl_ops())} ops registered; without a case in op_cases(): {', '.join(missing) or 'none'}")
    return 1 if failed or missing else 0


if __name__ == "__main__":
    raise SystemExit(main())
