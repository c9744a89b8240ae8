"""ITCH decoder: whole ITCH messages -> book operations.

See :class:`ItchDecoder`. Every field offset and size comes from :data:`tickgate.wire.itch.LAYOUTS`.
"""

import functools
import operator

from amaranth.hdl import Cat, Const, Module, Signal, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..wire import itch
from .book_records import MAX_ITCH_LEN, TYPE_CODES, BookOp, BookOpKind, ItchMessage
from .counters import count

__all__ = ["ItchDecoder", "OPS", "TYPE_CODES", "LATENCY", "LATENCY_COMBINATIONAL", "REF_OFFSET",
           "NEW_REF_OFFSET"]

#: Cycles from an accepted input message to its BookOp on ``o_stream`` (valid high), registered decoder
#: (the default); :data:`LATENCY_COMBINATIONAL` with ``registered=False``. See :attr:`ItchDecoder.latency`.
LATENCY = 1
LATENCY_COMBINATIONAL = 0

# TYPE_CODES (from book_records): message type codes in the order of :attr:`ItchDecoder.counts` and of
# ItchMessage.type_ok (the specification's order).

#: What each message type becomes: ``code: (kind, {BookOp field: ITCH field})``. Types not listed are
#: ``OTHER``. ``buy`` is 1 when the named CHAR field is ``'B'``; every other field is the ITCH field's
#: big-endian value. BookOp fields not named are 0; ``seq`` and ``locate`` are always filled.
OPS = {
    "A": (BookOpKind.ADD, {"ref": "order_reference_number", "buy": "buy_sell_indicator",
                           "shares": "shares", "price": "price"}),
    "F": (BookOpKind.ADD, {"ref": "order_reference_number", "buy": "buy_sell_indicator",
                           "shares": "shares", "price": "price"}),
    "E": (BookOpKind.EXECUTE, {"ref": "order_reference_number", "shares": "executed_shares"}),
    "C": (BookOpKind.EXECUTE, {"ref": "order_reference_number", "shares": "executed_shares",
                               "price": "execution_price"}),
    "X": (BookOpKind.CANCEL, {"ref": "order_reference_number", "shares": "canceled_shares"}),
    "D": (BookOpKind.DELETE, {"ref": "order_reference_number"}),
    "U": (BookOpKind.REPLACE, {"ref": "original_order_reference_number",
                               "new_ref": "new_order_reference_number", "shares": "shares", "price": "price"}),
    "H": (BookOpKind.TRADING_STATE, {"code": "trading_state"}),
    "Y": (BookOpKind.REG_SHO, {"code": "reg_sho_action"}),
    "S": (BookOpKind.SYSTEM_EVENT, {"code": "event_code"}),
    "R": (BookOpKind.DIRECTORY, {}),
}


#: Where every order-referencing type keeps the order reference (``ref``): BookOp.ref is these 8 bytes
#: of *every* message, not gated by the type (see :class:`ItchDecoder`).
REF_OFFSET = itch.LAYOUTS["A"]["order_reference_number"].offset
#: Where U keeps its new order reference: BookOp.new_ref is these 8 bytes of every message.
NEW_REF_OFFSET = itch.LAYOUTS["U"]["new_order_reference_number"].offset


def _check_ops():
    widths = {name: field.width for name, field in data.Layout.cast(BookOp)}
    for code, (kind, fields) in OPS.items():
        layout = itch.LAYOUTS[code]
        for op_field, itch_field in fields.items():
            if op_field in ("kind", "seq", "locate") or op_field not in widths:
                raise TypeError(f"OPS[{code!r}]: {op_field!r} is not a BookOp field the table may set")
            size = layout[itch_field].size
            if op_field == "buy":
                if size != 1:
                    raise TypeError(f"OPS[{code!r}]: buy must come from a one-byte field")
            elif 8 * size > widths[op_field]:
                raise TypeError(f"OPS[{code!r}]: {itch_field} ({size} bytes) does not fit BookOp.{op_field}")
            if op_field == "ref" and (layout[itch_field].offset, size) != (REF_OFFSET, 8):
                raise TypeError(f"OPS[{code!r}]: ref must be the 8 bytes at offset {REF_OFFSET}")
            if op_field == "new_ref" and (layout[itch_field].offset, size) != (NEW_REF_OFFSET, 8):
                raise TypeError(f"OPS[{code!r}]: new_ref must be the 8 bytes at offset {NEW_REF_OFFSET}")


_check_ops()


def big_endian(msg_bytes, layout, name):
    """The value of field ``name`` of ``layout`` in ``msg_bytes`` (wire byte i = ``msg_bytes[i]``)."""
    f = layout[name]
    if f.offset + f.size > MAX_ITCH_LEN:
        raise TypeError(f"{layout.name}.{name} lies past byte {MAX_ITCH_LEN}")
    return Cat(*(msg_bytes[i] for i in reversed(range(f.offset, f.offset + f.size))))


class ItchDecoder(wiring.Component):
    """Decode whole ITCH messages into :class:`~tickgate.fpga.book_records.BookOp` records.

    One ``BookOp`` per ``ItchMessage``, in order, with the message's ``seq``; kind and fields per
    :data:`OPS`, ``locate`` from the message header. The type is the message's classification, not its
    byte 0: ``type_ok`` (one-hot, the well-formed type) and ``type_known``, which the splitter sets as
    :func:`~tickgate.fpga.book_records.classify` does. A message of a known type whose ``length`` is not
    its type's specification length (``type_known`` and no ``type_ok`` bit) is counted in ``malformed``;
    one whose type byte is unknown is counted in ``unknown``; both are emitted as ``OTHER`` (with ``seq``
    and ``locate``) so downstream numbering stays aligned. ``ref`` is bytes :data:`REF_OFFSET`..+7 and
    ``new_ref`` bytes :data:`NEW_REF_OFFSET`..+7 of every message whatever its type (the order references
    of A F E C X D U, where all of them keep them; don't-cares for other kinds): a consumer that hashes
    them, like the book's order-table read address, then has no type decode in front of the hash.
    ``counts[n]`` counts the well-formed messages of type :data:`TYPE_CODES`\\ ``[n]``.

    Latency (:attr:`latency`): with ``registered=True`` (the default) :data:`LATENCY` = 1 cycle, one
    register stage that holds while ``o_stream`` is not ready (``i_stream.ready = ~o_stream.valid |
    o_stream.ready``). With ``registered=False`` the decoder is combinational (latency 0: ``o_stream`` is
    ``i_stream`` decoded, ``i_stream.ready = o_stream.ready``), for a consumer that registers its input
    anyway: in :class:`~tickgate.fpga.market_data.MarketDataPipeline` the book's first stage is that
    register (the kind and each type-dependent field are AND-OR selects by the registered ``type_ok`` bits,
    and ``ref``/``new_ref`` are not selected at all). Rate: one message per cycle either way. The counter
    increments are registered (a counter lags its message's handshake by two cycles).
    """

    def __init__(self, *, counter_width: int = 32, registered: bool = True):
        if not isinstance(counter_width, int) or counter_width <= 0:
            raise TypeError(f"counter_width must be a positive integer, not {counter_width!r}")
        if not isinstance(registered, bool):
            raise TypeError(f"registered must be a bool, not {registered!r}")
        self.registered = registered
        super().__init__({
            "i_stream": In(stream.Signature(ItchMessage)),
            "o_stream": Out(stream.Signature(BookOp)),
            "counts": Out(data.ArrayLayout(counter_width, len(TYPE_CODES))),
            "unknown": Out(counter_width),
            "malformed": Out(counter_width),
        })

    @property
    def latency(self) -> int:
        """Cycles from an accepted message to its BookOp: :data:`LATENCY` registered, 0 combinational."""
        return LATENCY if self.registered else LATENCY_COMBINATIONAL

    def elaborate(self, platform):
        m = Module()
        i, o = self.i_stream, self.o_stream
        msg = i.payload.bytes

        # The splitter has classified the message (ItchMessage.type_ok / type_known, registered), so the kind
        # and every type-dependent field are AND-OR selects by those bits: one term per distinct source
        # (A and F share theirs), no type-byte compare in front of them.
        sel = i.payload.type_ok
        op = Signal(data.StructLayout({name: f.shape for name, f in data.Layout.cast(BookOp)
                                       if name not in ("seq", "locate", "ref", "new_ref")}))
        terms = {name: {} for name, _ in op.shape()}        # field -> source key -> (value, [type bits])
        for n, code in enumerate(TYPE_CODES):
            layout = itch.LAYOUTS[code]
            kind, fields = OPS.get(code, (BookOpKind.OTHER, {}))
            terms["kind"].setdefault(("kind", kind.value), (Const(kind.value, 4), []))[1].append(n)
            for op_field, itch_field in fields.items():
                if op_field in ("ref", "new_ref"):
                    continue                                # ungated, below
                f = layout[itch_field]
                value = big_endian(msg, layout, itch_field)
                if op_field == "buy":
                    value = value == ord("B")
                terms[op_field].setdefault((f.offset, f.size), (value, []))[1].append(n)
        for name, sources in terms.items():
            target = Value.cast(getattr(op, name))
            parts = [Value.cast(value) & Cat(*(sel[n] for n in bits)).any().replicate(len(target))
                     for value, bits in sources.values()]         # every field has a source in OPS
            m.d.comb += target.eq(functools.reduce(operator.or_, parts))
        known = i.payload.type_known
        well_formed = sel.any()
        # Unknown types keep kind OTHER (0) and the other fields 0.

        take = i.valid & i.ready
        fields = [o.payload.seq.eq(i.payload.seq), o.payload.locate.eq(big_endian(msg, itch.HEADER, "stock_locate")),
                  o.payload.ref.eq(big_endian(msg, itch.LAYOUTS["A"], "order_reference_number")),
                  o.payload.new_ref.eq(big_endian(msg, itch.LAYOUTS["U"], "new_order_reference_number"))]
        fields += [getattr(o.payload, name).eq(getattr(op, name)) for name, _ in op.shape()]
        if self.registered:
            with m.If(o.ready):
                m.d.sync += o.valid.eq(0)
            m.d.comb += i.ready.eq(~o.valid | o.ready)
            with m.If(take):
                m.d.sync += [o.valid.eq(1), *fields]
        else:
            m.d.comb += [o.valid.eq(i.valid), i.ready.eq(o.ready), *fields]

        # Counters: increments registered (only the BookOp register sits behind the type decode).
        count(m, self.unknown, take & ~known, name="inc_unknown")
        count(m, self.malformed, take & known & ~well_formed, name="inc_malformed")
        for n, code in enumerate(TYPE_CODES):
            count(m, self.counts[n], take & sel[n], name=f"inc_{code}")
        return m
