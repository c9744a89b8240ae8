"""cocotb tests of :class:`tickgate.fpga.itch_decode.ItchDecoder` (top: the component itself).

ItchMessage in on ``i_stream__*``, BookOp out on ``o_stream__*`` through the Amaranth stream source and
sink of :mod:`tickgate.sim.streams`. Every test runs with and without idle cycles on the source
and with and without backpressure on the sink; outputs are compared message by message with
:func:`expected_op`, written from :func:`tickgate.wire.itch.decode` independently of the gateware's table,
and every message's latency is checked. Run by ``tests/test_itch_decode.py``.
"""

from __future__ import annotations

import os
import random

import cocotb

from tickgate.fpga.book_records import MAX_ITCH_LEN, BookOp, BookOpKind, ItchMessage, classify
from tickgate.fpga.itch_decode import LATENCY as REGISTERED_LATENCY
from tickgate.fpga.itch_decode import LATENCY_COMBINATIONAL
from tickgate.fpga.itch_decode import NEW_REF_OFFSET, REF_OFFSET, TYPE_CODES
from tickgate.sim.streams import StreamSink, StreamSource, pack_fields, unpack_fields
from tickgate.sim.tb import MODES, ClockedTB
from tickgate.sim.tb_itch_split import itch_files
from tickgate.wire import itch

K = BookOpKind
#: The build under test: ``ItchDecoder(registered=...)`` as tests/test_itch_decode.py says in the environment.
REGISTERED = os.environ.get("TICKGATE_DECODE_REGISTERED", "1") == "1"
LATENCY = REGISTERED_LATENCY if REGISTERED else LATENCY_COMBINATIONAL


def expected_op(msg: bytes, seq: int, padding: bytes | None = None) -> tuple[dict, str]:
    """The BookOp (as a dict of ints) for one message, and the counter it goes to (a type code,
    ``"unknown"`` or ``"malformed"``). ``padding`` fills the 50-byte vector past the message."""
    vector = msg + (padding if padding is not None else bytes(MAX_ITCH_LEN - len(msg)))
    op = dict(kind=K.OTHER.value, seq=seq, locate=int.from_bytes(vector[1:3], "big"),
              ref=int.from_bytes(vector[REF_OFFSET:REF_OFFSET + 8], "big"),
              new_ref=int.from_bytes(vector[NEW_REF_OFFSET:NEW_REF_OFFSET + 8], "big"),
              buy=0, shares=0, price=0, code=0)
    code = chr(vector[0])
    if code not in itch.BY_CODE:
        return op, "unknown"
    try:
        m = itch.decode(msg)
    except itch.ItchFormatError:
        return op, "malformed"
    if code in "AF":
        op.update(kind=K.ADD.value, ref=m.order_reference_number, buy=int(m.buy_sell_indicator == "B"),
                  shares=m.shares, price=m.price)
    elif code == "E":
        op.update(kind=K.EXECUTE.value, ref=m.order_reference_number, shares=m.executed_shares)
    elif code == "C":
        op.update(kind=K.EXECUTE.value, ref=m.order_reference_number, shares=m.executed_shares,
                  price=m.execution_price)
    elif code == "X":
        op.update(kind=K.CANCEL.value, ref=m.order_reference_number, shares=m.canceled_shares)
    elif code == "D":
        op.update(kind=K.DELETE.value, ref=m.order_reference_number)
    elif code == "U":
        op.update(kind=K.REPLACE.value, ref=m.original_order_reference_number,
                  new_ref=m.new_order_reference_number, shares=m.shares, price=m.price)
    elif code == "H":
        op.update(kind=K.TRADING_STATE.value, code=ord(m.trading_state))
    elif code == "Y":
        op.update(kind=K.REG_SHO.value, code=ord(m.reg_sho_action))
    elif code == "S":
        op.update(kind=K.SYSTEM_EVENT.value, code=ord(m.event_code))
    elif code == "R":
        op.update(kind=K.DIRECTORY.value)
    return op, code


class DecodeTB(ClockedTB):
    """ItchMessage source on ``i_stream``, BookOp sink on ``o_stream``, counters."""

    def __init__(self, dut):
        super().__init__(dut)
        self.source = StreamSource(dut, "i_stream", self.clk)
        self.sink = StreamSink(dut, "o_stream", self.clk)
        self.width = len(dut.unknown)

    def clear_log(self):
        self.source.accepted.clear()
        self.sink.clear()

    def counters(self) -> dict:
        counts = self.dut.counts.value.to_unsigned()
        mask = (1 << self.width) - 1
        out = {code: (counts >> (n * self.width)) & mask for n, code in enumerate(TYPE_CODES)}
        out["unknown"] = self.dut.unknown.value.to_unsigned()
        out["malformed"] = self.dut.malformed.value.to_unsigned()
        return out

    async def run(self, messages, paddings=None, timeout: int = 200_000):
        """Send ``messages`` (bytes, seq 1..) and check every BookOp, its latency and the counters."""
        paddings = paddings or [None] * len(messages)
        expected, counts = [], {name: 0 for name in (*TYPE_CODES, "unknown", "malformed")}
        items = []
        for seq, (msg, pad) in enumerate(zip(messages, paddings), 1):
            op, counter = expected_op(msg, seq, pad)
            expected.append(op)
            counts[counter] += 1
            vector = msg + (pad if pad is not None else bytes(MAX_ITCH_LEN - len(msg)))
            type_ok, type_known = classify(msg)
            items.append(pack_fields(ItchMessage, bytes=vector, length=len(msg), seq=seq, type_ok=type_ok,
                                     type_known=type_known))
        self.source.send(items)
        await self.wait_for(lambda: len(self.sink.items) >= len(expected), timeout)
        await self.cycles(5)
        got = [unpack_fields(BookOp, value) for _, _, value in self.sink.items]
        assert len(got) == len(expected), f"{len(got)} BookOps, expected {len(expected)}"
        for n, (g, e) in enumerate(zip(got, expected)):
            assert g == e, f"message {n + 1} ({messages[n].hex()}): got {g}, expected {e}"
        for n, ((first_valid, taken, _), accepted) in enumerate(zip(self.sink.items, self.source.accepted)):
            if LATENCY:
                assert first_valid - accepted == LATENCY, \
                    f"message {n + 1}: taken at cycle {accepted}, BookOp valid at {first_valid}"
            else:       # combinational: both handshakes in the same cycle
                assert taken == accepted, f"message {n + 1}: taken at cycle {accepted}, BookOp taken at {taken}"
        assert self.counters() == counts


@cocotb.test(skip=not itch_files())
@cocotb.parametrize(**MODES)
async def test_itch_files(dut, idle, backpressure):
    """Every message of the recorded ITCH files. Skipped when the recorded feeds are absent."""
    from tickgate.feed.binaryfile import read_messages
    tb = DecodeTB(dut)
    tb.configure(idle, backpressure)
    for path in itch_files():
        await tb.reset()
        await tb.run(list(read_messages(path)))


def _random_messages(rng: random.Random, n: int):
    msgs, pads = [], []
    for _ in range(n):
        r = rng.random()
        code = rng.choice(TYPE_CODES)
        size = itch.LAYOUTS[code].size
        if r < 0.75:                                   # well formed, side B/S or other
            body = bytearray(code.encode() + rng.randbytes(size - 1))
            if "buy_sell_indicator" in itch.LAYOUTS[code].names:
                body[itch.LAYOUTS[code]["buy_sell_indicator"].offset] = ord(rng.choice("BBSSx"))
            msg = bytes(body)
        elif r < 0.88:                                 # known type, wrong length
            length = rng.choice([n for n in range(1, MAX_ITCH_LEN + 1) if n != size])
            msg = code.encode() + rng.randbytes(length - 1)
        else:                                          # unknown type byte
            length = rng.randint(1, MAX_ITCH_LEN)
            first = rng.choice([b for b in range(256) if chr(b) not in itch.BY_CODE])
            msg = bytes([first]) + rng.randbytes(length - 1)
        msgs.append(msg)
        # Bytes past the message: zero as the splitter sends them, or garbage (must not matter but for
        # the header fields of a message shorter than its header, which the model reads from the vector).
        pads.append(rng.randbytes(MAX_ITCH_LEN - len(msg)) if rng.random() < 0.5 else None)
    return msgs, pads


@cocotb.test()
@cocotb.parametrize(**MODES)
async def test_random(dut, idle, backpressure):
    """Random messages of every type, wrong lengths and unknown type bytes."""
    tb = await DecodeTB.start(dut, idle, backpressure, seed=4)
    await tb.run(*_random_messages(random.Random(21), 3000))


@cocotb.test()
async def test_full_rate(dut):
    """Without idle cycles or backpressure: one message in and one BookOp out every cycle."""
    tb = await DecodeTB.start(dut)
    msgs, _ = _random_messages(random.Random(22), 500)
    await tb.run(msgs)
    start = tb.source.accepted[0]
    assert tb.source.accepted == list(range(start, start + len(msgs)))
    assert [accept for _, accept, _ in tb.sink.items] == list(range(start + LATENCY, start + LATENCY + len(msgs)))
