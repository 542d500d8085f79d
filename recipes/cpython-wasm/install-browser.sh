# Install step of cpython-browser (run from /build/work, build tree in ./build).
# $out: python.html python.js python.wasm python.data python.worker.js xterm/ serve.py
mkdir -p "$out"  # pybake, like Nix, does not create $out
cd build
cp python.html python.js python.wasm python.data python.worker.js "$out/"
mkdir -p "$out/xterm/lib" "$out/xterm/css"
cp "$src/xterm/lib/xterm.js" "$out/xterm/lib/"
cp "$src/xterm/css/xterm.css" "$out/xterm/css/"
cp "$src/xterm/LICENSE" "$out/xterm/"
# offline: load xterm from ./xterm/ instead of the CDN (integrity values still match)
sed -i 's#https://unpkg.com/xterm@4.18.0/#xterm/#g' "$out/python.html"
! grep -n 'https\?://' "$out/python.html"
# the page needs COOP/COEP headers (SharedArrayBuffer): CPython's own dev server
cp "$src/python/Tools/wasm/wasm_webserver.py" "$out/serve.py"
