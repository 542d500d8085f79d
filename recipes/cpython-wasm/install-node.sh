# Install step of cpython-node (run from /build/work, build tree in ./build).
# $out/bin/python.js + python.wasm, $out/lib/python3.11 (stdlib incl. test/, with
# pycs compiled by the build python; SOURCE_DATE_EPOCH makes them hash-checked),
# $out/bin/python3: sh wrapper running node on python.js (relocatable).
emmake make -C build install
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
exec node --stack-size=4000 "$(dirname "$(readlink -f "$0")")/python.js" "$@"
EOS
chmod 755 "$out/bin/python3"
# smoke test from an unrelated cwd
cd /build/tmp
node "$out/bin/python.js" -c 'import zlib, bz2, json, decimal, hashlib, sys; print(1+1, sys.prefix)'
