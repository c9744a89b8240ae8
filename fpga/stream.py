"""The project's byte stream, and AXI4-Stream naming for top levels.

A byte stream moves :data:`BYTES` bytes per beat. Its payload (:func:`byte_layout`) is

* ``data``: ``8 * BYTES`` bits; wire byte *i* of the beat is bits ``8*i .. 8*i+7`` (AXI byte-lane order,
  the same order :meth:`tickgate.wire.layout.Layout.amaranth_layout` uses);
* ``keep``: one bit per lane, a contiguous run of kept lanes per beat. At a block's external ports
  every beat but the last of a packet keeps all lanes and the last keeps lanes 0..n-1; inside the
  pipeline a block may say otherwise: no block realigns, so the UDP receiver forwards a payload's first
  beat from lane 2 (lane 6 with one VLAN tag), the MoldUDP64 receiver accepts that and forwards its first
  beat with the lanes below the message area cleared, and the ITCH splitter accepts a first beat starting
  at any lane;
* ``last``: set on the final beat of a packet;
* ``user`` (optional): side data, stable for a whole packet unless a block says otherwise.

:func:`ByteStream` builds the ``lib.stream.Signature`` of such a stream. :class:`AXIStreamTop` wraps a
component whose stream ports use it, exposing ``s_axis_t*`` / ``m_axis_t*`` ports so that cocotbext-axi's
``AxiStreamBus.from_prefix(dut, "s_axis")`` binds to the converted Verilog directly.
"""

from __future__ import annotations

import functools
import operator

from amaranth.hdl import Cat, Const, Module, Mux, Shape, ShapeCastable, Signal, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["BYTES", "byte_layout", "ByteStream", "AXIStreamTop", "SkidBuffer", "popcount_keep", "keep_mask",
           "length_prefixes", "onehot_pick"]

#: Bytes per beat of the market-data datapath (64-bit).
BYTES = 8


def byte_layout(width: int = BYTES, *, user=None) -> data.StructLayout:
    """The payload layout of a byte stream ``width`` bytes wide, with an optional ``user`` field."""
    if not isinstance(width, int) or width <= 0:
        raise TypeError(f"byte stream width must be a positive integer, not {width!r}")
    fields = {"data": 8 * width, "keep": width, "last": 1}
    if user is not None:
        if not isinstance(user, (int, Shape, ShapeCastable)):
            raise TypeError(f"user must be a shape-castable object or None, not {user!r}")
        fields["user"] = user
    return data.StructLayout(fields)


def ByteStream(width: int = BYTES, *, user=None) -> stream.Signature:
    """``lib.stream.Signature`` of a byte stream; see :func:`byte_layout`."""
    return stream.Signature(byte_layout(width, user=user))


def keep_mask(n, width: int = BYTES):
    """``keep`` for ``n`` valid bytes starting at lane 0 (``n`` a Value or int, 0..width)."""
    if isinstance(n, int):
        return Const((1 << n) - 1, width)
    return ((Const(1, 1) << n) - 1).as_unsigned()[:width]


def length_prefixes(data, keep, hi):
    """Every place a big-endian u16 length prefix may sit in a beat of ``data``/``keep`` (``BYTES`` lanes),
    for parsers that decode them all in parallel and pick one: a list of ``(length, body, here, whole)`` for
    candidate c = 0..BYTES. Candidates 0..BYTES-2: the prefix at lanes c, c+1; BYTES-1: its high byte at the
    last lane (``length`` meaningless, ``whole`` 0); BYTES: ``hi`` (a high byte saved from the previous beat)
    and lane 0. ``body`` is the lane after the prefix (an int), ``here`` whether its first byte is kept,
    ``whole`` whether both are."""
    width = len(keep)

    def lane(k):
        return data.word_select(k, 8)

    cands = []
    for c in range(width + 1):
        if c == width:
            cands.append((Cat(lane(0), hi), 1, 1, 1))
        elif c == width - 1:
            cands.append((Cat(lane(c), lane(c)), c + 2, keep[c], 0))
        else:
            cands.append((Cat(lane(c + 1), lane(c)), c + 2, keep[c], keep[c + 1]))
    return cands


def onehot_pick(sel, values, width: int = 1):
    """The value of ``values`` (Values or ints, ``width`` bits each) whose bit of ``sel`` is set, as an AND-OR
    (0 when none is; at most one may be)."""
    terms = []
    for c, v in enumerate(values):
        v = Const(v, width) if isinstance(v, int) else Value.cast(v)[:width]
        terms.append(v & sel[c].replicate(width))
    return functools.reduce(operator.or_, terms)


def popcount_keep(keep):
    """Number of valid lanes of a contiguous ``keep`` (a Value): the highest kept lane + 1, or 0."""
    result = Const(0, range(len(keep) + 1))
    for i in range(len(keep)):
        result = Mux(keep[i], i + 1, result)
    return result


def _payload_layout(member: wiring.Member):
    """The payload layout of a byte-stream port, or None when the port is not one."""
    if not member.is_signature:
        return None
    members = member.signature.members
    if set(members) != {"payload", "valid", "ready"} or not members["payload"].is_port:
        return None
    payload = members["payload"].shape
    if not isinstance(payload, data.StructLayout):
        return None
    names = {name for name, _ in payload}
    if not {"data", "keep", "last"} <= names <= {"data", "keep", "last", "user"}:
        return None
    return payload


class AXIStreamTop(wiring.Component):
    """Top-level wrapper that renames byte-stream ports to AXI4-Stream.

    Every byte-stream port of ``inner`` named in ``streams`` (``{port name: prefix}``) becomes the flat ports
    ``<prefix>_tdata``, ``_tkeep``, ``_tlast``, ``_tvalid``, ``_tready`` (and ``_tuser`` when the payload has a
    ``user`` field). Every other port of ``inner`` is passed through under its flattened name (path joined
    with ``__``), with the same direction, shape and initial value. Pure wiring: no latency, no logic.

    By default the input stream ``i_stream`` is ``s_axis`` and the output stream ``o_stream`` is ``m_axis``.
    """

    def __init__(self, inner: wiring.Component, streams: dict | None = None):
        if not isinstance(inner, wiring.Component):
            raise TypeError(f"inner must be a wiring.Component, not {inner!r}")
        if streams is None:
            streams = {name: prefix for name, prefix in (("i_stream", "s_axis"), ("o_stream", "m_axis"))
                       if name in inner.signature.members}
        if not isinstance(streams, dict):
            raise TypeError(f"streams must be a dict of port name to AXI prefix, not {streams!r}")
        self._inner = inner
        self._streams = {}
        members = {}
        for name, prefix in streams.items():
            if name not in inner.signature.members:
                raise TypeError(f"{inner!r} has no port {name!r}")
            member = inner.signature.members[name]
            layout = _payload_layout(member)
            if layout is None:
                raise TypeError(f"port {name!r} is not a byte stream (see tickgate.fpga.stream.ByteStream)")
            # In(stream.Signature) is a sink: valid/payload come in, ready goes out.
            sink = member.flow == In
            fwd, back = (In, Out) if sink else (Out, In)
            fields = dict(layout)
            members[f"{prefix}_tdata"] = fwd(fields["data"].shape)
            members[f"{prefix}_tkeep"] = fwd(fields["keep"].shape)
            members[f"{prefix}_tlast"] = fwd(1)
            if "user" in fields:
                members[f"{prefix}_tuser"] = fwd(fields["user"].shape)
            members[f"{prefix}_tvalid"] = fwd(1)
            members[f"{prefix}_tready"] = back(1)
            self._streams[name] = (prefix, sink, "user" in fields)
        self._passthrough = []
        for path, member, value in inner.signature.flatten(inner):
            flow = member.flow
            if path[0] in self._streams:
                continue
            flat = "__".join(str(p) for p in path)
            if flat in members:
                raise TypeError(f"port {flat!r} of {inner!r} clashes with an AXI port name")
            if isinstance(value, Signal):
                members[flat] = flow(value.shape(), init=value.init)
            else:
                value = Value.cast(value)
                members[flat] = flow(len(value))
            self._passthrough.append((path, flat, flow))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.inner = inner = self._inner
        for name, (prefix, sink, has_user) in self._streams.items():
            port = getattr(inner, name)
            p = lambda field: getattr(self, f"{prefix}_{field}")
            if sink:
                m.d.comb += [
                    port.payload.data.eq(p("tdata")),
                    port.payload.keep.eq(p("tkeep")),
                    port.payload.last.eq(p("tlast")),
                    port.valid.eq(p("tvalid")),
                    p("tready").eq(port.ready),
                ]
                if has_user:
                    m.d.comb += port.payload.user.eq(p("tuser"))
            else:
                m.d.comb += [
                    p("tdata").eq(port.payload.data),
                    p("tkeep").eq(port.payload.keep),
                    p("tlast").eq(port.payload.last),
                    p("tvalid").eq(port.valid),
                    port.ready.eq(p("tready")),
                ]
                if has_user:
                    m.d.comb += p("tuser").eq(port.payload.user)
        for path, flat, flow in self._passthrough:
            inner_port = inner
            for part in path:
                inner_port = inner_port[part] if isinstance(part, int) else getattr(inner_port, part)
            outer = getattr(self, flat)
            if flow == In:
                m.d.comb += inner_port.eq(outer)
            else:
                m.d.comb += outer.eq(inner_port)
        return m


class SkidBuffer(wiring.Component):
    """A stream slice that registers ``ready`` only: ``i_stream.ready`` is a flip-flop, so a consumer's
    combinational ready (and whatever it depends on) does not reach the producer.

    While empty it passes ``valid`` and the payload straight through (latency 0). A beat taken while the
    consumer is not ready is held in one register and offered first; ``i_stream.ready`` is low while it is
    held. Rate: one beat per cycle while the consumer takes every beat; each beat the consumer refuses
    costs the producer one cycle. Nothing is lost or reordered.

    Structure (for Fmax): the "held" state is kept in several flip-flops that follow the same rule, each
    from its own output (so synthesis keeps them apart): one drives ``i_stream.ready`` (the producer's
    logic), one ``o_stream.valid``, and one each ``chunk`` bits of the payload's bypass mux, so no single
    register fans out across both blocks and the whole payload. While empty, the held register loads every
    beat, taken or not, so the consumer's ready reaches only the state flip-flops, not the payload's enables.
    """

    def __init__(self, shape, *, chunk: int = 64):
        try:
            Shape.cast(shape)
        except TypeError:
            self._MustUse__silence = True       # not elaborated: no UnusedElaboratable warning
            raise TypeError(f"shape must be a shape-castable object, not {shape!r}") from None
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk <= 0:
            self._MustUse__silence = True
            raise TypeError(f"chunk must be a positive integer, not {chunk!r}")
        self._shape = shape
        self._chunk = chunk
        super().__init__({"i_stream": In(stream.Signature(shape)), "o_stream": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        i, o = self.i_stream, self.o_stream
        width = Shape.cast(self._shape).width
        held = Signal(self._shape)
        chunks = [(lo, min(lo + self._chunk, width)) for lo in range(0, width, self._chunk)]

        def full_copy(name):
            f = Signal(name=name)
            with m.If(f):
                with m.If(o.ready):
                    m.d.sync += f.eq(0)
            with m.Elif(i.valid & ~o.ready):
                m.d.sync += f.eq(1)
            return f
        full_rdy, full_v = full_copy("full_rdy"), full_copy("full")
        full_d = [full_copy(f"full_d{k}") for k in range(len(chunks))]
        # While empty, every chunk of `held` loads the input, taken or not (it is only read while full), so its
        # enable is that chunk's own copy of the state, not the consumer's ready.
        pin, phold = Value.cast(i.payload), Value.cast(held)
        for f, (lo, hi) in zip(full_d, chunks):
            with m.If(~f):
                m.d.sync += phold[lo:hi].eq(pin[lo:hi])
        m.d.comb += [
            i.ready.eq(~full_rdy),
            o.valid.eq(full_v | i.valid),
            o.payload.eq(Cat(*(Mux(f, phold[lo:hi], pin[lo:hi]) for f, (lo, hi) in zip(full_d, chunks)))),
        ]
        return m
