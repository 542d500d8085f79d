#!/usr/bin/env python3
"""Writes fuzz/seeds/ (the checked-in seed corpora). Run from anywhere; deterministic output.

The seeds are committed; run this again only to change them (see docs/fuzzing.md).
"""

import bz2
import gzip
import io
import json
import lzma
import pathlib
import shutil
import tarfile

FUZZ = pathlib.Path(__file__).resolve().parent
REPO = FUZZ.parent
SEEDS = FUZZ / "seeds"

# The archive target's mode byte (fuzz_targets/archive.rs).
RAW, GZIP, XZ, BZIP2 = 0, 1, 2, 3
POPULATED = 4

# No padding to 10 KiB records: the end-of-archive blocks are enough, and small seeds fuzz faster.
tarfile.RECORDSIZE = tarfile.BLOCKSIZE


def tar(entries, fmt=tarfile.GNU_FORMAT):
    """entries: (name, kind, extra) with kind file/dir/symlink/hardlink/chr/fifo."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for name, kind, extra in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1700000000
            info.uname = info.gname = "root"
            data = None
            if kind == "file":
                data = extra.encode() if isinstance(extra, str) else extra
                info.size = len(data)
                info.mode = 0o644
            elif kind == "exe":
                data = extra.encode()
                info.size = len(data)
                info.mode = 0o4755  # set-uid: must not survive
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                info.mode = 0o777
            elif kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = extra
            elif kind == "hardlink":
                info.type = tarfile.LNKTYPE
                info.linkname = extra
            elif kind == "chr":
                info.type = tarfile.CHRTYPE
                info.devmajor, info.devminor = 1, 3
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def sparse_tar():
    """One GNU sparse entry ('S'): 512 bytes of data at offset 512 of a 1024-byte file."""
    h = bytearray(512)

    def put(off, width, value):
        h[off:off + len(value)] = value

    def octal(n, width):
        return (b"%0*o" % (width - 1, n)) + b"\0"

    put(0, 100, b"sparse.bin")
    put(100, 8, octal(0o644, 8))
    put(108, 8, octal(0, 8))
    put(116, 8, octal(0, 8))
    put(124, 12, octal(512, 12))  # bytes stored in the archive
    put(136, 12, octal(1700000000, 12))
    h[156] = ord("S")
    put(257, 8, b"ustar  \0")
    put(386, 12, octal(512, 12))  # sparse[0].offset
    put(398, 12, octal(512, 12))  # sparse[0].numbytes
    h[482] = 0  # not extended
    put(483, 12, octal(1024, 12))  # real size
    h[148:156] = b" " * 8
    put(148, 8, b"%06o\0 " % sum(h))
    return bytes(h) + b"x" * 512 + b"\0" * 1024


def ar(members):
    out = bytearray(b"!<arch>\n")
    for name, data in members:
        out += b"%-16s%-12d%-6d%-6d%-8s%-10d`\n" % (
            name.encode(), 1700000000, 0, 0, b"100644", len(data))
        out += data
        if len(data) % 2:
            out += b"\n"
    return bytes(out)


def gz(data):
    return gzip.compress(data, mtime=0)


def deb():
    control = tar([
        ("./", "dir", None),
        ("./control", "file", "Package: seed\nVersion: 1.0\nArchitecture: all\n"
         "Maintainer: pybake <pybake@example.org>\nDescription: a fuzz seed\n"),
    ])
    data = tar([
        ("./", "dir", None),
        ("./usr/", "dir", None),
        ("./usr/bin/", "dir", None),
        ("./usr/bin/seed", "file", "#!/bin/sh\necho seed\n"),
        ("./usr/share/", "dir", None),
        ("./usr/share/seed/", "dir", None),
        ("./usr/share/seed/link", "symlink", "../../bin/seed"),
    ])
    return ar([("debian-binary", b"2.0\n"), ("control.tar.gz", gz(control)),
               ("data.tar.gz", gz(data))])


def write(target, name, data):
    d = SEEDS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def archive_seeds():
    release = tar([
        ("pkg-1.0/", "dir", None),
        ("pkg-1.0/README", "file", "hello\n"),
        ("pkg-1.0/configure", "exe", "#!/bin/sh\n"),
        ("pkg-1.0/lib/", "dir", None),
        ("pkg-1.0/lib/link", "symlink", "../README"),
        ("pkg-1.0/lib/hard", "hardlink", "pkg-1.0/README"),
        ("pkg-1.0/lib/deep/dir/file.c", "file", "int x;\n"),
    ])
    a = lambda name, mode, data: write("archive", name, bytes([mode]) + data)
    a("release.tar", RAW, release)
    a("release.tar.gz", RAW, gz(release))
    a("release.tar.xz", RAW, lzma.compress(release, preset=0))
    a("release.tar.bz2", RAW, bz2.compress(release, 1))
    a("release-wrapped-gz", GZIP, release)
    a("release-wrapped-xz", XZ, release)
    a("release-wrapped-bz2", BZIP2, release)
    a("mixed-top.tar", RAW, tar([
        ("a.txt", "file", "a\n"), ("b/", "dir", None), ("b/c.txt", "file", "c\n"),
        ("./", "dir", None), ("d", "symlink", "b/c.txt")]))
    a("pax-long-names.tar", GZIP, tar([
        ("top/" + "x" * 150 + "/" + "y" * 120, "file", "long\n"),
        ("top/l", "symlink", "z" * 120)], fmt=tarfile.PAX_FORMAT))
    a("gnu-long-names.tar", RAW, tar([("top/" + "g" * 200, "file", "long\n")]))
    a("sparse.tar", RAW, sparse_tar())
    a("seed.deb", RAW, deb())
    # Refused, each for one reason of UnsafeReason.
    a("dotdot.tar", RAW, tar([("ok.txt", "file", "x"), ("../escape.txt", "file", "x")]))
    a("absolute.tar", RAW, tar([("/tmp/pybake-fuzz-absolute", "file", "x")]))
    a("symlink-escape.tar", RAW, tar([("a/up", "symlink", "../../outside/secret.txt")]))
    a("symlink-absolute.tar", RAW, tar([("a/etc", "symlink", "/etc")]))
    a("write-through-symlink.tar", RAW, tar([
        ("lnk", "symlink", "."), ("lnk2", "symlink", "../outside"), ("lnk2/pwned", "file", "x")]))
    a("symlink-dotdot-trick.tar", XZ, tar([
        ("d/", "dir", None), ("d/self", "symlink", "."), ("d/l", "symlink", "self/.."),
        ("d/x", "symlink", "l/../../outside")]))
    a("hardlink-outside.tar", RAW, tar([
        ("a", "hardlink", "../outside/secret.txt"), ("b", "hardlink", "/etc/passwd")]))
    a("hardlink-to-symlink.tar", RAW, tar([("s", "symlink", "x"), ("h", "hardlink", "s")]))
    a("devices.tar", RAW, tar([("null", "chr", None), ("pipe", "fifo", None)]))
    a("dir-file-conflict.tar", BZIP2, tar([
        ("t/x/", "dir", None), ("t/x", "file", "x"), ("t/y", "file", "y"), ("t/y/z", "file", "z")]))
    a("replace-file.tar", RAW, tar([("t/x", "file", "1"), ("t/x", "symlink", "y"),
                                   ("t/x", "file", "2")]))
    # Into a dest that already holds pre/, pre.txt and lnk -> ../outside.
    a("merge-into-populated.tar", RAW | POPULATED, tar([
        ("pre/", "dir", None), ("pre/new.txt", "file", "new\n"), ("other.txt", "file", "o\n")]))
    a("through-populated-link.tar", GZIP | POPULATED, tar([("lnk/pwned", "file", "x")]))
    a("over-populated-file.tar", RAW | POPULATED, tar([("pre.txt", "file", "x")]))


def recipe_seeds():
    recipes = sorted((REPO / "recipes").glob("*.toml"))
    for r in recipes:
        write("recipe", r.name, r.read_bytes())
    # The whole project at once: deps, extends, provides/requires all resolve.
    write("recipe", "all-recipes", b"\0".join(r.read_bytes() for r in recipes))
    write("recipe", "path-sources-and-extends", b"\0".join([
        b'name = "base"\nversion = "1.0"\nsteps = ["cc $src/hello.c -o $out/hello"]\n'
        b'[env]\nCFLAGS = "-O2"\n[[sources]]\npath = "hello.c"\n'
        b'[[sources]]\npath = "files"\ndest = "sub/files"\n',
        b'name = "child"\nextends = "base"\ndeps = ["tool"]\n[env]\nCFLAGS = "-O0"\n'
        b'[requires]\ncc = { version = ">= 1.2", reason = "needs it" }\n',
        b'name = "tool"\nversion = "1.2.3"\nrun = "$out/bin/tool"\n[provides]\ncc = "1.2"\n'
        b'[[sources]]\nurl = "https://example.org/tool-1.2.3.tar.gz"\n'
        b'sha256 = "71feb7947e3c00ef125f83b79a4e529bde31171e5babe48b391f06758d1ab0a1"\n'
        b'mirrors = ["mirror://debian/tool.tar.gz"]\nunpack = true\ndest = "t"\n',
    ]))


def lockfile_seeds():
    write("lockfile", "lockfile.json", (REPO / "lockfile.json").read_bytes())
    write("lockfile", "minimal.json",
          b'{"format": 1, "platform": "x86_64-linux", "recipes": {}, "toolchains": {}}\n')
    h = "sha256:" + "ab" * 32
    small = {
        "format": 1,
        "platform": "x86_64-linux",
        "recipes": {"hello": {"drv_hash": h, "version": "1.0", "sources": [
            {"path": "hello.c", "sha256": h, "size": 29},
            {"sha256": h, "urls": ["https://example.org/a.tar.gz", "mirror://debian/a"]}]}},
        "toolchains": {"cc": [{"provided_by": "gcc", "version": "12.2.0", "constraints": [
            {"reason": "C11", "required_by": "hello", "version": ">=12"}]}]},
    }
    write("lockfile", "small.json", json.dumps(small, indent=1).encode())


if __name__ == "__main__":
    shutil.rmtree(SEEDS, ignore_errors=True)
    archive_seeds()
    recipe_seeds()
    lockfile_seeds()
