#!/usr/bin/env python3
"""Print bench/run's table from the hyperfine JSON files in RESULTS_DIR.

usage: report.py RESULTS_DIR [--check]

Times are hyperfine medians (± standard deviation when there are 2+ runs). A ratio is
pybake's median time / the baseline's median time: below 1x pybake is faster. With --check
the exit status is 1 when a goal was missed.
"""
import json
import os
import sys


def load(results, key):
    path = os.path.join(results, key + ".json")
    if not os.path.exists(path):
        return None
    r = json.load(open(path))["results"][0]
    return {"median": r["median"], "stddev": r.get("stddev"), "runs": len(r["times"])}


def fmt(r):
    if r is None:
        return "-"
    t, sd = r["median"], r["stddev"]
    unit, k = ("ms", 1e3) if t < 1 else ("s", 1.0)
    digits = 1 if unit == "ms" or t >= 10 else 2
    s = f"{t * k:.{digits}f} {unit}"
    if sd and r["runs"] > 1:
        s += f" ±{sd * k:.{digits}f}"
    return s


def ratio(p, b):
    return p["median"] / b["median"]


def main():
    args = sys.argv[1:]
    check = "--check" in args
    args = [a for a in args if a != "--check"]
    if len(args) != 1:
        sys.exit(__doc__)
    res = args[0]
    R = lambda k: load(res, k)  # noqa: E731

    rows = []  # (what, pybake, baselines, ratios, goal, result)

    def verdict(ok):
        return "pass" if ok else "MISS"

    for n, goal in ((6, 0.005), (1000, 0.008)):
        p, m, x = R(f"noop{n}-pybake"), R(f"noop{n}-make"), R(f"noop{n}-nix")
        if not (p and m and x):
            continue
        rows.append((
            f"no-op realize, {n} recipes",
            fmt(p),
            f"make -q {fmt(m)}; nix {fmt(x)}",
            f"{ratio(p, m):.1f}x make; {ratio(p, x):.2f}x nix",
            f"<= {goal * 1000:.0f} ms",
            verdict(p["median"] <= goal),
        ))
    p = R("noop-real-pybake")
    if p:
        rows.append((
            "no-op realize, the real graph",
            fmt(p),
            "-",
            "-",
            "< 5 ms",
            verdict(p["median"] < 0.005),
        ))

    m, x, b = R("scratch-make"), R("scratch-nix"), R("scratch-bwrap-alone")
    for key, what, goal in (("scratch-pybake", "1000 from scratch, -j2, no sandbox", 1.5),
                            ("scratch-pybake-sandbox", "1000 from scratch, -j2, sandbox", 3.0),
                            ("scratch-pybake-bwrap", "1000 from scratch, -j2, bwrap", None)):
        p = R(key)
        if not (p and m and x):
            continue
        bases = f"make -j2 {fmt(m)}; nix -j2 {fmt(x)}"
        ratios = f"{ratio(p, m):.2f}x make; {ratio(p, x):.2f}x nix"
        if key != "scratch-pybake" and b:
            bases += f"; bwrap alone {fmt(b)}"
            ratios += f"; {ratio(p, b):.2f}x bwrap alone"
        rows.append((
            what,
            fmt(p),
            bases,
            ratios,
            f"<= {goal:g}x make" if goal else "(info)",
            verdict(ratio(p, m) <= goal) if goal else "-",
        ))

    p, m = R("scratch-pybake-rm"), R("scratch-make-rm")
    if p and m:
        rows.append((
            "1000 from scratch, no sandbox, rm -rf first",
            fmt(p),
            f"make -j2 {fmt(m)}",
            f"{ratio(p, m):.2f}x make",
            "(info)",
            "-",
        ))

    p, x = R("hash-pybake"), R("hash-nix")
    if p and x:
        rows.append((
            "hash 1 GiB tree, 2000 files",
            fmt(p),
            f"nix-hash {fmt(x)}",
            f"{ratio(p, x):.2f}x nix-hash ({ratio(x, p):.2f}x faster)",
            ">= 1.5x faster",
            verdict(ratio(x, p) >= 1.5),
        ))

    p, c = R("fetch-pybake"), R("fetch-curl")
    if p and c:
        rows.append((
            "download + verify 200 MB, loopback",
            fmt(p),
            f"curl -o + sha256sum {fmt(c)}",
            f"{ratio(p, c):.2f}x curl+sha256sum",
            "<= 1.0x",
            verdict(ratio(p, c) <= 1.0),
        ))

    p, h, g = R("scan-pybake"), R("scan-hash"), R("scan-grep")
    if p and h and g:
        rows.append((
            "reference scan, cpython-node output",
            fmt(p),
            f"hash alone {fmt(h)}; grep -rlF {fmt(g)}",
            f"{ratio(p, h):.2f}x hash alone; {ratio(p, g):.2f}x grep",
            "(info)",
            "-",
        ))

    head = ("what", "pybake", "baselines", "ratio pybake/baseline", "goal", "result")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    print(line(head))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(line(r))
    missed = [r[0] for r in rows if r[5] == "MISS"]
    print()
    print("times: hyperfine median ±stddev; ratio < 1x means pybake is faster")
    print(f"goals: {len(rows) - sum(r[5] == '-' for r in rows) - len(missed)} pass, {len(missed)} missed"
          + (f" ({'; '.join(missed)})" if missed else ""))
    sys.exit(1 if check and missed else 0)


if __name__ == "__main__":
    main()
