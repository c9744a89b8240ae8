"""Byte layouts of wire messages, declared once.

A :class:`Layout` is an ordered table of big-endian fields at fixed byte offsets. The Python codecs
(`pack`/`unpack`), the gateware (which slices the same offsets out of a byte vector, see
:meth:`Layout.amaranth_layout`) and the docs all derive from it, so a field is never written down twice.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterable

__all__ = ["Field", "Layout", "UINT", "PRICE4", "PRICE8", "ALPHA", "CHAR"]

# Field kinds. Integers are unsigned big-endian; prices are integers with 4 or 8 implied decimals;
# ALPHA is left-justified, space-padded ASCII; CHAR is a single ASCII byte.
UINT = "uint"
PRICE4 = "price4"
PRICE8 = "price8"
ALPHA = "alpha"
CHAR = "char"

_KINDS = (UINT, PRICE4, PRICE8, ALPHA, CHAR)
_INT_FMT = {1: "B", 2: "H", 4: "I", 8: "Q"}


@dataclass(frozen=True)
class Field:
    name: str
    offset: int
    size: int
    kind: str = UINT

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise TypeError(f"field name must be an identifier, not {self.name!r}")
        if self.kind not in _KINDS:
            raise TypeError(f"field {self.name}: kind must be one of {_KINDS}, not {self.kind!r}")
        if self.size <= 0 or self.offset < 0:
            raise ValueError(f"field {self.name}: bad offset/size {self.offset}/{self.size}")
        if self.kind == CHAR and self.size != 1:
            raise ValueError(f"field {self.name}: CHAR fields are one byte")
        if self.kind in (UINT, PRICE4, PRICE8) and self.size not in (1, 2, 4, 6, 8):
            raise ValueError(f"field {self.name}: integer size {self.size} not supported")

    @property
    def is_text(self) -> bool:
        return self.kind in (ALPHA, CHAR)


class Layout:
    """An ordered, gap-free table of fields. ``size`` is the total length in bytes."""

    def __init__(self, name: str, fields: Iterable[tuple]):
        self.name = name
        self.fields: tuple[Field, ...] = ()
        offset = 0
        out = []
        for spec in fields:
            fname, size, *kind = spec
            out.append(Field(fname, offset, size, *(kind or [UINT])))
            offset += size
        self.fields = tuple(out)
        self.size = offset
        self.names = tuple(f.name for f in self.fields)
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"layout {name}: duplicate field names")
        self._by_name = {f.name: f for f in self.fields}
        # struct format: 6-byte integers are split into a u16 and a u32 and joined in unpack.
        fmt = ">"
        self._six = []
        for i, f in enumerate(self.fields):
            if f.is_text:
                fmt += f"{f.size}s"
            elif f.size == 6:
                fmt += "HI"
                self._six.append(i)
            else:
                fmt += _INT_FMT[f.size]
        self._struct = struct.Struct(fmt)
        assert self._struct.size == self.size
        self._text = [i for i, f in enumerate(self.fields) if f.is_text]

    def __getitem__(self, name: str) -> Field:
        return self._by_name[name]

    def __iter__(self):
        return iter(self.fields)

    def __repr__(self):
        return f"Layout({self.name!r}, {self.size} bytes, {list(self.names)})"

    def unpack(self, buf, offset: int = 0) -> tuple:
        """Field values in order: ints for integer kinds, ``str`` (latin-1, unstripped) for text."""
        raw = self._struct.unpack_from(buf, offset)
        if not self._six and not self._text:
            return raw
        vals = []
        it = iter(raw)
        for f in self.fields:
            if f.is_text:
                vals.append(next(it).decode("latin-1"))
            elif f.size == 6:
                hi = next(it)
                vals.append((hi << 32) | next(it))
            else:
                vals.append(next(it))
        return tuple(vals)

    def pack(self, values) -> bytes:
        args = []
        for f, v in zip(self.fields, values, strict=True):
            if f.is_text:
                b = v.encode("latin-1") if isinstance(v, str) else bytes(v)
                if len(b) > f.size:
                    raise ValueError(f"{self.name}.{f.name}: {b!r} longer than {f.size} bytes")
                args.append(b.ljust(f.size, b" "))
            elif f.size == 6:
                if not 0 <= v < 1 << 48:
                    raise ValueError(f"{self.name}.{f.name}: {v} does not fit 6 bytes")
                args += [v >> 32, v & 0xFFFFFFFF]
            else:
                args.append(v)
        try:
            return self._struct.pack(*args)
        except struct.error as e:
            raise ValueError(f"{self.name}: {e}") from None

    def amaranth_layout(self):
        """An Amaranth ``data.StructLayout`` of the message as it sits in a byte vector whose byte 0
        is the first byte on the wire (bits 8*i..8*i+7 hold wire byte i). Multi-byte fields stay in
        network byte order (the ITCH decoder turns them into numbers with ``big_endian``)."""
        from amaranth.lib import data

        return data.StructLayout({f.name: data.ArrayLayout(8, f.size) for f in self.fields})
