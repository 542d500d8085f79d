"""zip-normalize.py ZIP: rewrite ZIP in place with every entry's timestamp set to
SOURCE_DATE_EPOCH (clamped to 1980-01-01, the zip format's minimum) and fixed
permissions. CPython's Tools/wasm/wasm_assets.py stores freshly compiled .pyc files
with their file mtime, which made python.data differ between two builds."""
import os, sys, time, zipfile

path = sys.argv[1]
epoch = max(int(os.environ.get("SOURCE_DATE_EPOCH", "315532800")), 315532800)
stamp = time.gmtime(epoch)[:6]
with zipfile.ZipFile(path) as src:
    entries = [(info, src.read(info)) for info in src.infolist()]
tmp = path + ".tmp"
with zipfile.ZipFile(tmp, "w") as dst:
    for old, data in entries:
        info = zipfile.ZipInfo(old.filename, date_time=stamp)
        info.compress_type = old.compress_type
        info.external_attr = 0o644 << 16
        dst.writestr(info, data)
os.replace(tmp, path)
