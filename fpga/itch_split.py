"""ITCH splitter: MoldUDP64 message blocks (a byte stream) -> whole ITCH messages.

See :class:`ItchSplitter`.
"""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from .book_records import MAX_ITCH_LEN, ItchMessage
from .stream import BYTES, ByteStream, popcount_keep

__all__ = ["ItchSplitter", "LATENCY"]

#: Cycles from the input beat carrying a message's last byte to the message on ``o_stream`` (see the class).
LATENCY = 1

# Body bytes can start at any lane, so a message spans at most this many words.
_SLOTS = (BYTES - 1 + MAX_ITCH_LEN + BYTES - 1) // BYTES


class _Phase(enum.Enum, shape=2):
    LEN_HI = 0   # next byte is the high byte of a length prefix
    LEN_LO = 1   # high byte saved in `hi`, next byte is the low byte
    BODY = 2     # `rem` bytes of a message remain, from lane `lane` of the current word
    SKIP = 3     # `rem` bytes of an over-long message remain, to be dropped


class ItchSplitter(wiring.Component):
    """Split MoldUDP64 message blocks into ITCH messages.

    ``i_stream`` is a 64-bit byte stream (:func:`tickgate.fpga.stream.ByteStream`) carrying, per packet,
    the MoldUDP64 message blocks: a big-endian u16 length, then that many message bytes, repeated. A
    packet starts at lane 0; ``last`` marks its final beat, whose ``keep`` marks the valid lanes. A message
    and its length prefix may start at any lane and span words.

    ``o_stream`` carries one :class:`~tickgate.fpga.book_records.ItchMessage` per message: its bytes
    (wire byte *i* in ``bytes[i]``, bytes past ``length`` zero), its length and ``seq``, which counts the
    emitted messages from 1 since reset.

    Latency: :data:`LATENCY` = 1 cycle. When every length is 7 or more (any well-formed ITCH feed: the
    shortest message is 12 bytes), each message is valid on ``o_stream`` exactly one cycle after the input
    beat carrying its last byte is accepted.

    Rate: one input beat per cycle while ``o_stream`` is ready, at any alignment, when every length is 7
    or more: at most one message then ends in a beat, and the next one's body always reaches past it.
    Otherwise each message of 1..6 bytes lying wholly in one beat, and each zero length followed by more
    bytes of its beat, holds that beat one extra cycle (the rest of the beat is parsed in the next cycle;
    a message ending in a held beat is emitted the cycle after the cycle that parses its end).
    ``i_stream.ready`` falls whenever ``o_stream`` holds a message that is not being taken (a
    combinational path from ``o_stream.ready``): nothing is lost under backpressure.

    Malformed input is counted, dropped, and never stops the stream:

    * ``zero_length``: a length prefix of 0 (the two prefix bytes are skipped);
    * ``oversize``: a length above 50 (the message's bytes are skipped);
    * ``truncated``: a packet that ends inside a length prefix or a message (including a skipped
      over-long one); the partial message is discarded and parsing restarts with the next packet.
    """

    def __init__(self, *, counter_width: int = 32):
        if not isinstance(counter_width, int) or counter_width <= 0:
            raise TypeError(f"counter_width must be a positive integer, not {counter_width!r}")
        super().__init__({
            "i_stream": In(ByteStream(BYTES)),
            "o_stream": Out(stream.Signature(ItchMessage)),
            "zero_length": Out(counter_width),
            "oversize": Out(counter_width),
            "truncated": Out(counter_width),
        })

    def elaborate(self, platform):
        m = Module()
        i, o = self.i_stream, self.o_stream

        word = i.payload.data
        last = i.payload.last
        nvalid = Signal(range(BYTES + 1))            # valid lanes of this beat
        m.d.comb += nvalid.eq(Mux(last, popcount_keep(i.payload.keep), BYTES))

        phase = Signal(_Phase)
        lane = Signal(range(BYTES))                  # first unconsumed lane of the current beat
        rem = Signal(16)                             # BODY/SKIP: bytes left, counted from `lane`
        hi = Signal(8)                               # LEN_LO: the saved high length byte
        length = Signal(range(MAX_ITCH_LEN + 1))     # BODY: message length
        first = Signal(range(BYTES))                 # BODY: lane of the message's first byte in slot 0
        slot = Signal(range(_SLOTS))                 # BODY: slot the current beat goes into
        buf = Signal(data.ArrayLayout(8 * BYTES, _SLOTS))

        # The message's words as they stand with the current beat in its slot.
        view = Signal(8 * BYTES * _SLOTS)
        m.d.comb += view.eq(Cat(Mux(slot == n, word, buf[n]) for n in range(_SLOTS)))
        # Rotate the first body byte to byte 0 and zero the bytes past the length.
        body = Signal(8 * MAX_ITCH_LEN)
        with m.Switch(first):
            for n in range(BYTES):
                with m.Case(n):
                    m.d.comb += body.eq(view[8 * n: 8 * (n + MAX_ITCH_LEN)])
        masked = Cat(Mux(n < length, body[8 * n: 8 * n + 8], 0) for n in range(MAX_ITCH_LEN))

        def lane_byte(index):
            return word.word_select(index[:3], 8)

        # Where the current message (or skip) ends, if it ends in this beat.
        in_msg = (phase == _Phase.BODY) | (phase == _Phase.SKIP)
        avail = Signal(range(BYTES + 1))
        ends = Signal()
        q = Signal(range(BYTES + 1))                 # lane after the end: where a length prefix may start
        m.d.comb += avail.eq(nvalid - lane)
        with m.If(in_msg):
            m.d.comb += [ends.eq(rem <= avail), q.eq(lane + rem[:4])]
        with m.Else():
            m.d.comb += q.eq(lane)

        # A length prefix starting at lane q (or completing at lane q in LEN_LO).
        have_len = Signal()
        new_len = Signal(16)
        start = Signal(range(BYTES + 2))             # lane of the new message's first byte (may be 8)
        q1 = Signal(range(BYTES + 2))
        m.d.comb += q1.eq(q + 1)
        with m.If(phase == _Phase.LEN_LO):
            m.d.comb += [have_len.eq(q < nvalid), new_len.eq(Cat(lane_byte(q), hi)), start.eq(q1)]
        with m.Else():
            m.d.comb += [have_len.eq(q1 < nvalid),
                         new_len.eq(Cat(lane_byte(q1), lane_byte(q))),
                         start.eq(q + 2)]
        left = Signal(range(BYTES + 1))              # bytes of the beat after the prefix
        m.d.comb += left.eq(nvalid - start)
        is_zero = new_len == 0
        is_long = new_len > MAX_ITCH_LEN

        parse = ~in_msg | ends
        # The next message (or another zero-length one) also ends in this beat: hold the beat.
        stall = Signal()
        m.d.comb += stall.eq(parse & have_len & ~is_long &
                             Mux(is_zero, left != 0, new_len <= left))

        can_out = ~o.valid | o.ready
        go = i.valid & can_out
        m.d.comb += i.ready.eq(can_out & ~stall)

        with m.If(o.ready):
            m.d.sync += o.valid.eq(0)

        with m.If(go):
            with m.If(~parse):
                # The message (or skip) runs past this beat.
                m.d.sync += [rem.eq(rem - avail), lane.eq(0)]
                with m.If(phase == _Phase.BODY):
                    m.d.sync += [buf[slot].eq(word), slot.eq(slot + 1)]
                with m.If(last):
                    m.d.sync += [phase.eq(_Phase.LEN_HI), self.truncated.eq(self.truncated + 1)]
            with m.Else():
                with m.If(in_msg & (phase == _Phase.BODY)):
                    m.d.sync += [
                        o.valid.eq(1),
                        o.payload.bytes.as_value().eq(masked),
                        o.payload.length.eq(length),
                        o.payload.seq.eq(o.payload.seq + 1),   # the previous message's seq
                    ]
                with m.If(have_len):
                    with m.If(is_zero):
                        m.d.sync += [phase.eq(_Phase.LEN_HI), self.zero_length.eq(self.zero_length + 1)]
                        m.d.sync += lane.eq(Mux(stall, start, 0))
                    with m.Elif(is_long):
                        m.d.sync += [phase.eq(_Phase.SKIP), rem.eq(new_len - left), lane.eq(0),
                                     self.oversize.eq(self.oversize + 1)]
                        with m.If(last):
                            m.d.sync += [phase.eq(_Phase.LEN_HI), self.truncated.eq(self.truncated + 1)]
                    with m.Else():
                        m.d.sync += [phase.eq(_Phase.BODY), length.eq(new_len), first.eq(start[:3])]
                        with m.If(stall):
                            # The whole message is in this beat: take it next cycle from lane `start`.
                            m.d.sync += [rem.eq(new_len), lane.eq(start), slot.eq(0)]
                        with m.Else():
                            m.d.sync += [rem.eq(new_len - left), lane.eq(0)]
                            with m.If(start < BYTES):
                                m.d.sync += [buf[0].eq(word), slot.eq(1)]
                            with m.Else():
                                m.d.sync += slot.eq(0)
                            with m.If(last):
                                m.d.sync += [phase.eq(_Phase.LEN_HI),
                                             self.truncated.eq(self.truncated + 1)]
                with m.Elif(q < nvalid):
                    # Only the high byte of the prefix is in this beat.
                    m.d.sync += [phase.eq(_Phase.LEN_LO), hi.eq(lane_byte(q)), lane.eq(0)]
                    with m.If(last):
                        m.d.sync += [phase.eq(_Phase.LEN_HI), self.truncated.eq(self.truncated + 1)]
                with m.Else():
                    # The beat ends exactly at a message boundary.
                    m.d.sync += [phase.eq(_Phase.LEN_HI), lane.eq(0)]

        return m
