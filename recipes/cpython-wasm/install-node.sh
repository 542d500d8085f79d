# Install step of cpython-node (run from /build/work, build tree in ./build).
# $out/bin/python.js + python.wasm, $out/lib/python3.11 (stdlib incl. test/, with
# pycs compiled by the build python; SOURCE_DATE_EPOCH makes them hash-checked),
# $out/bin/python3: sh wrapper running node on python.js (relocatable).
emmake make -C build install
# The recipe lists its build tools in remove-references-to, which pybake applies after the
# build. The sysconfig data names them too, and its pycs record a hash of that source: blanked
# afterwards, the pycs would no longer match it (Python would recompile the module at every
# import, and write the pyc into the store when run as root). So blank it here the same way
# (each tool's 32-digit hash part becomes 32 `e`s) and compile its pycs again.
"$DEP_BUILD_PYTHON/bin/python3.11" - "$out" <<'PY'
import compileall, glob, os, sys
lib = os.path.join(sys.argv[1], "lib", "python3.11")
tools = [os.path.basename(os.environ[v])[:32] for v in ("DEP_EMSDK", "DEP_BUILD_PYTHON", "DEP_ZLIB", "DEP_BZIP2")]
for path in glob.glob(os.path.join(lib, "_sysconfigdata_*.py")):
    with open(path) as f:
        text = f.read()
    for h in tools:
        text = text.replace(h, "e" * 32)
    with open(path, "w") as f:
        f.write(text)
    for level in (0, 1, 2):
        assert compileall.compile_file(path, ddir=lib, force=True, quiet=1, optimize=level)
PY
rm -f "$out/bin/python3.11.js" "$out/bin/python3.js" "$out/bin/python3.11-config" "$out/bin/python3-config" \
      "$out/bin/idle3" "$out/bin/idle3.11" "$out/bin/pydoc3" "$out/bin/pydoc3.11" "$out/bin/2to3" "$out/bin/2to3-3.11"
cp build/python.js build/python.wasm "$out/bin/"
[ ! -e build/python.worker.js ] || cp build/python.worker.js "$out/bin/"
cat > "$out/bin/python3" <<'EOS'
#!/bin/sh
# python.js finds its stdlib relative to itself (argv[0] is the script path under node).
# --stack-size: with -sSTACK_SIZE=5MB deep recursion hits V8's own ~1 MB JS stack limit
# first ("RangeError: Maximum call stack size exceeded", e.g. test_io); 4000 KB stays
# below the default 8 MB thread stack.
# PYTHONDONTWRITEBYTECODE: every pyc is installed; run as root, Python must not write any into
# the store.
PYTHONDONTWRITEBYTECODE=1 exec node --stack-size=4000 "$(dirname "$(readlink -f "$0")")/python.js" "$@"
EOS
chmod 755 "$out/bin/python3"
# smoke test from an unrelated cwd
cd /build/tmp
node "$out/bin/python.js" -c 'import zlib, bz2, json, decimal, hashlib, sys; print(1+1, sys.prefix)'
