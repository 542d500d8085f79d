#!/usr/bin/env python3
"""Input generators for bench/run.

  gen.py graph N DIR   write one DAG of N trivial nodes three ways:
                         DIR/recipes/rNNNN.toml  (pybake)
                         DIR/Makefile            (make; targets are dirs under DIR/out)
                         DIR/graph.nix           (nix-build; plain `derivation`s, no nixpkgs)
                       and print a one-line summary (nodes, edges, depth).
  gen.py tree DIR      write a 1 GiB tree of 2000 files of random bytes into DIR/tree,
                       unless DIR/tree.ok says an identical tree is already there.

The graph is deterministic (fixed seed): node i > 0 depends on 1..3 distinct nodes chosen
among the 64 before it; the last node is a sink that depends on every node nothing else
depends on, so realizing it realizes the whole graph. Every node's build is the same trivial
step, `mkdir -p OUT && echo NAME > OUT/x`, in all three tools.
"""
import os
import random
import sys

WINDOW = 64  # a node's deps are among the WINDOW nodes before it: a DAG with depth and width


def dag(n):
    """Return deps[i] (sorted list of indices < i) for an n-node DAG whose node n-1 is the sink."""
    rng = random.Random(20240601 + n)
    deps = [[] for _ in range(n)]
    for i in range(1, n - 1):
        k = rng.randint(1, min(3, i))
        deps[i] = sorted(rng.sample(range(max(0, i - WINDOW), i), k))
    if n > 1:
        used = {d for ds in deps[: n - 1] for d in ds}
        deps[n - 1] = [i for i in range(n - 1) if i not in used]
    return deps


def depth(deps):
    lvl = []
    for ds in deps:
        lvl.append(1 + max((lvl[d] for d in ds), default=0))
    return max(lvl)


def name(i):
    return f"r{i:04d}"


def graph(n, root):
    deps = dag(n)
    rdir = os.path.join(root, "recipes")
    os.makedirs(rdir, exist_ok=True)
    mk = [f"O := {os.path.join(os.path.abspath(root), 'out')}", ".PHONY: all", f"all: $(O)/{name(n - 1)}", ""]
    nix = ["let", "  sys = builtins.currentSystem;", '  path = "/usr/bin:/bin";']
    for i, ds in enumerate(deps):
        nm = name(i)
        step = f"mkdir -p $out && echo {nm} > $out/x"
        with open(os.path.join(rdir, nm + ".toml"), "w") as f:
            f.write(f'name = "{nm}"\nversion = "1"\n')
            f.write("deps = [" + ", ".join(f'"{name(d)}"' for d in ds) + "]\n")
            f.write(f'steps = ["{step}"]\n')
        mk.append(f"$(O)/{nm}:" + "".join(f" $(O)/{name(d)}" for d in ds))
        mk.append(f"\tmkdir -p $@ && echo {nm} > $@/x")
        nix.append(
            f'  {nm} = derivation {{ name = "{nm}"; system = sys; builder = "/bin/sh"; PATH = path;'
            f' args = [ "-c" "{step}" ]; deps = [' + "".join(f" {name(d)}" for d in ds) + " ]; };"
        )
    nix.append(f"in {name(n - 1)}")
    with open(os.path.join(root, "Makefile"), "w") as f:
        f.write("\n".join(mk) + "\n")
    with open(os.path.join(root, "graph.nix"), "w") as f:
        f.write("\n".join(nix) + "\n")
    edges = sum(len(ds) for ds in deps)
    print(f"{n} nodes, {edges} edges, depth {depth(deps)}, target {name(n - 1)}")


TREE_FILES = 2000
TREE_BYTES = 1 << 30
TREE_STAMP = f"v1 files={TREE_FILES} bytes={TREE_BYTES}\n"


def tree(root):
    top = os.path.join(root, "tree")
    ok = os.path.join(root, "tree.ok")
    if os.path.exists(ok) and open(ok).read() == TREE_STAMP:
        print(f"reusing {top}")
        return
    if os.path.exists(ok):
        os.unlink(ok)
    os.system(f"rm -rf '{top}'")
    rng = random.Random(7)
    # Sizes from ~0 to ~2x the mean, scaled so they add up to exactly TREE_BYTES.
    w = [rng.random() ** 2 for _ in range(TREE_FILES)]
    s = sum(w)
    sizes = [int(x / s * TREE_BYTES) for x in w]
    sizes[-1] += TREE_BYTES - sum(sizes)
    chunk = os.urandom(8 << 20)
    for i, size in enumerate(sizes):
        d = os.path.join(top, f"d{i // 100:02d}", f"e{(i // 20) % 5}")
        os.makedirs(d, exist_ok=True)
        p = os.path.join(d, f"f{i:04d}.bin")
        with open(p, "wb") as f:
            # Random-ish, not compressible or deduplicable: fresh random bytes at a random
            # offset per file, then a slice of a shared random chunk.
            head = os.urandom(min(size, 4096))
            f.write(head)
            left = size - len(head)
            while left > 0:
                off = rng.randrange(0, len(chunk) // 2)
                n = min(left, len(chunk) - off)
                f.write(chunk[off : off + n])
                left -= n
        if i % 50 == 0:
            os.chmod(p, 0o755)
    with open(ok, "w") as f:
        f.write(TREE_STAMP)
    print(f"wrote {top}")


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "graph":
        graph(int(sys.argv[2]), sys.argv[3])
    elif len(sys.argv) == 3 and sys.argv[1] == "tree":
        tree(sys.argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
