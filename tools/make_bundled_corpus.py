"""Rebuild refract's bundled corpus (src/refract/data/*.txt.xz) from Debian's r-cran-janeaustenr.

The bundled corpus is two public-domain novels by Jane Austen (1775-1817): "Pride and
Prejudice" (1813, the KLD corpus) and "Persuasion" (1817, the R-NIAH haystack), taken from
the texts that Debian's ``r-cran-janeaustenr`` package ships (CRAN ``janeaustenr`` 1.0.0 by
Julia Silge, which took them from Project Gutenberg). The package stores them as R
character vectors (one element per printed line) in a lazy-load database
(``data/Rdata.rdb`` + ``Rdata.rdx``). This script reads that database with the standard
library only (a minimal reader of R's XDR serialization, enough for character vectors) and
needs no R installation.

Usage:
    apt-get download r-cran-janeaustenr && dpkg-deb -x r-cran-janeaustenr_*.deb pkg
    python tools/make_bundled_corpus.py pkg/usr/lib/R/site-library/janeaustenr src/refract/data

What it writes, per book: the lines joined with "\\n" and a final newline (an empty
element is a blank line, as in the package), UTF-8, xz-compressed (preset 9e, CRC64), and a
JSON manifest with the SHA-256 and size of each decompressed text.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import lzma
import struct
import zlib
from pathlib import Path
from typing import Any

BOOKS = {
    # split -> (R object name in janeaustenr, title, year, bundled name)
    "test": ("prideprejudice", "Pride and Prejudice", 1813, "austen-pride-and-prejudice"),
    "train": ("persuasion", "Persuasion", 1817, "austen-persuasion"),
}
SOURCE = "Debian package r-cran-janeaustenr 1.0.0-1 (CRAN janeaustenr 1.0.0)"


class _XDR:
    """A reader of R's XDR serialization ("X\\n" format), for the types the data uses."""

    def __init__(self, data: bytes) -> None:
        if data[:2] != b"X\n":
            raise ValueError("not an R XDR serialization")
        self.d = data
        self.p = 2
        self.refs: list[Any] = []
        version = self.int()
        self.int()  # R version that wrote it
        self.int()  # minimal R version to read it
        if version == 3:
            n = self.int()
            self.p += n  # native encoding name

    def int(self) -> int:
        (v,) = struct.unpack_from(">i", self.d, self.p)
        self.p += 4
        return v

    def item(self) -> Any:
        flags = self.int()
        kind = flags & 0xFF
        has_attr, has_tag = bool(flags & (1 << 9)), bool(flags & (1 << 10))
        if kind in (254, 242, 253, 251):  # NULL, empty env, global env, missing arg
            return None
        if kind == 255:  # reference to an earlier symbol
            idx = flags >> 8 or self.int()
            return self.refs[idx - 1]
        if kind == 1:  # symbol
            sym = self.item()
            self.refs.append(sym)
            return sym
        if kind == 9:  # CHARSXP
            n = self.int()
            if n == -1:
                return None
            s = self.d[self.p : self.p + n].decode("utf-8")
            self.p += n
            return s
        if kind == 2:  # pairlist: attributes of a vector, or a list
            out = {}
            while kind == 2:
                if has_attr:
                    self.item()
                tag = self.item() if has_tag else None
                out[tag] = self.item()
                flags = self.int()
                kind = flags & 0xFF
                has_attr, has_tag = bool(flags & (1 << 9)), bool(flags & (1 << 10))
            if kind != 254:
                raise ValueError(f"unexpected pairlist end {kind}")
            return out
        if kind in (10, 13, 14, 16, 19):  # logical, integer, double, character, list
            n = self.int()
            if n == -1:
                n = (self.int() << 32) | self.int()
            if kind in (10, 13):
                vals: Any = list(struct.unpack_from(f">{n}i", self.d, self.p))
                self.p += 4 * n
            elif kind == 14:
                vals = list(struct.unpack_from(f">{n}d", self.d, self.p))
                self.p += 8 * n
            else:
                vals = [self.item() for _ in range(n)]
            attrs = self.item() if has_attr else None
            return (vals, attrs) if attrs else vals
        raise ValueError(f"unsupported R type {kind}")


def _unpack_block(block: bytes) -> bytes:
    """One lazy-load database entry: 4-byte length, then zlib (or typed bz2/xz/none) data."""
    (n,) = struct.unpack_from(">I", block, 0)
    tag = block[4:5]
    if tag == b"Z":
        out = zlib.decompress(block[5:])
    elif tag == b"X":
        out = lzma.decompress(block[5:])
    elif tag == b"2":
        import bz2

        out = bz2.decompress(block[5:])
    elif tag == b"0":
        out = block[5:]
    else:
        out = zlib.decompress(block[4:])
    if len(out) != n:
        raise ValueError("lazy-load block has the wrong length")
    return out


def read_books(pkg: Path) -> dict[str, list[str]]:
    rdx = (pkg / "data" / "Rdata.rdx").read_bytes()
    # the index is gzip-compressed (R >= 4.1), or a length-prefixed zlib block (older R)
    index = _XDR(gzip.decompress(rdx) if rdx[:2] == b"\x1f\x8b" else _unpack_block(rdx)).item()
    vals, attrs = index
    names = attrs["names"]
    variables = dict(zip(names, vals, strict=True))["variables"]
    var_vals, var_attrs = variables
    where = dict(zip(var_attrs["names"], var_vals, strict=True))
    rdb = (pkg / "data" / "Rdata.rdb").read_bytes()
    out = {}
    for obj, _title, _year, _name in BOOKS.values():
        off, length = where[obj]
        lines = _XDR(_unpack_block(rdb[off : off + length])).item()
        if not isinstance(lines, list) or not all(isinstance(s, str) for s in lines):
            raise ValueError(f"{obj} is not a character vector")
        out[obj] = lines
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pkg", type=Path, help="the installed janeaustenr directory")
    ap.add_argument("out", type=Path, help="where to write the .txt.xz files")
    args = ap.parse_args()
    books = read_books(args.pkg)
    manifest: dict[str, Any] = {
        "source": SOURCE, "licence": "public domain (texts); see README.md", "texts": {},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    for split, (obj, title, year, name) in BOOKS.items():
        text = "\n".join(books[obj]).strip("\n") + "\n"
        raw = text.encode("utf-8")
        (args.out / f"{name}.txt.xz").write_bytes(
            lzma.compress(raw, preset=9 | lzma.PRESET_EXTREME, check=lzma.CHECK_CRC64))
        manifest["texts"][split] = {
            "name": name, "file": f"{name}.txt.xz", "title": title, "author": "Jane Austen",
            "year": year, "r_object": obj, "bytes": len(raw),
            "sha256": hashlib.sha256(raw).hexdigest(),
        }
        print(f"{split}: {title} -> {name}.txt.xz ({len(raw):,} bytes)")
    (args.out / "bundled-corpus.json").write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main()
