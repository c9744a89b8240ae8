"""The market-data receive pipeline: Ethernet frames in, top-of-book changes out.

See :class:`MarketDataPipeline` (the chain) and :class:`MarketDataTop` (its AXI4-Stream-named top level
for simulation and for a board top).
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .book_records import TopOfBook
from .itch_decode import LATENCY_COMBINATIONAL as DECODE_LATENCY
from .itch_decode import ItchDecoder
from .itch_split import LATENCY as SPLIT_LATENCY
from .itch_split import SPLIT_COUNTERS, ItchSplitter
from .moldudp64_rx import LATENCY as MOLD_LATENCY
from .moldudp64_rx import MOLD_COUNTERS, MoldUDP64Receiver
from .order_book import COUNTERS as BOOK_COUNTERS
from .order_book import LookupSignature, MarketBook
from .stream import AXIStreamTop, ByteStream, SkidBuffer
from .udp_rx import DEFAULT_GROUP, DEFAULT_PORT, UDP_COUNTERS, UDPReceiver
from .udp_rx import LATENCY as UDP_LATENCY

__all__ = ["MarketDataPipeline", "MarketDataTop", "LATENCY", "LATENCY_BY_LANE"]

#: End-to-end latency (cycles, no stalls) from the cycle the input beat carrying a message's last byte is
#: accepted to the cycle its TopOfBook record (or ``applied`` strobe) leaves the book, for every message,
#: every frame lane of that byte and 0, 1 or 2 VLAN tags: the sum of the blocks' latencies, UDP 1 +
#: MoldUDP64 1 + splitter 1 + decoder 0 (combinational here: the book's input stage registers its BookOp)
#: + book (``MarketBook.LATENCY``, 7): 10 in all. Asserted on every message by ``tests/test_pipeline.py``
#: and measured by ``tickgate.sim.rtl_replay``.
LATENCY = UDP_LATENCY + MOLD_LATENCY + SPLIT_LATENCY + DECODE_LATENCY + MarketBook.LATENCY
#: The same by frame lane 0..7 (one figure: no block realigns its stream any more), for callers that index it.
LATENCY_BY_LANE = (LATENCY,) * 8


class MarketDataPipeline(wiring.Component):
    """UDPReceiver -> MoldUDP64Receiver -> ItchSplitter -> ItchDecoder -> MarketBook, one component.

    ``i_stream`` takes whole Ethernet II frames (no FCS), 8 bytes a beat (:func:`~.stream.ByteStream`);
    ``o_stream`` carries one :class:`~.book_records.TopOfBook` per message that changes its symbol's best
    bid or ask (in feed order; ``seq`` is the 1-based index of the message among those the MoldUDP64
    receiver forwarded, i.e. the ``seq`` column of ``tickgate replay``'s CSV).

    Wiring: stream ports are joined with ``wiring.connect`` where their signatures agree (UDP ->
    MoldUDP64, splitter -> decoder -> book); the MoldUDP64 output's ``user`` carries the packet's first
    sequence number and the block walker's ``runt`` flag, of which the splitter takes only the flag, so
    that hop is joined field by field. The splitter's ``ready`` is made from registers (see
    :class:`~.itch_split.ItchSplitter`), so it runs back into the MoldUDP64 receiver's output enables and
    stops at a :class:`~.stream.SkidBuffer` between the UDP and MoldUDP64 receivers; a second skid
    between the decoder and the book ends the book's ready (which depends on the op's type), so no ready
    path crosses more than two blocks. Empty, a skid adds no cycle; at line rate the book never refuses
    an op, so none fills. The MoldUDP64 receiver's sticky ``status.gap`` drives the
    book's ``stale`` input (so every TopOfBook row and lookup answer after a gap carries ``flags.stale``
    until the host strobes ``gap_clear``).

    Registers (plain inputs, for a CSR bank): every register input of the UDP filter under its own name
    (``dst_ip``, ``dst_port``, ``dst_mac``, ``vlan_id``, ``match_ip``, ``match_port``, ``match_mac``,
    ``match_vlan``, ``zero_checksum_ok``, same initial values), and ``gap_clear``. Status and counters (outputs): ``status`` (the MoldUDP64 session, expected
    sequence, gap, first missing), ``counters.udp``/``mold``/``split``/``decode``/``book`` (every counter
    of every block). ``lookup``: the book's BBO/state lookup port
    (2-cycle latency). When the book has ``applied``/``applied_seq`` outputs (one strobe per message the
    book has finished), they are passed through.

    Rate: one 8-byte beat per cycle. Every front-end block takes one beat or one message per cycle (the
    splitter takes two or more cycles only for the beats the MoldUDP64 receiver flags ``runt``: from a
    message shorter than 7 bytes or a zero length to its packet's end, none in ITCH 5.0). The
    book takes a book-changing op (A F E C X D U) every 2 cycles and any other message every cycle; since
    every book-changing message is at least 21 bytes with its length prefix, two of them end at least two
    8-byte beats apart, so at line rate the book never holds the input off (MarketBook's test_line_rate).

    End-to-end latency, no stalls (``i_stream`` beats back to back, ``o_stream`` ready), from the cycle the
    input beat carrying a message's last byte is accepted to the cycle its TopOfBook (and ``applied``) is
    out: front end (UDP 1, MoldUDP64 1, splitter 1, decoder 0) + book (7) = :data:`LATENCY` = **10 cycles**
    for every message type (REPLACE included), every frame lane of that byte and 0, 1 or 2 VLAN tags, the
    last message of a packet included; asserted on every message by tests/test_pipeline.py. No block
    realigns its stream: the UDP receiver forwards the frame's beats with ``keep`` cleared outside the
    payload (first beat from lane 2, or lane 6 with one tag), the MoldUDP64 receiver likewise below its
    message area, and the splitter takes a packet starting at any lane.

    Members
    -------
    i_stream : ``In(ByteStream())``
    o_stream : ``Out(stream.Signature(TopOfBook))``
    dst_ip, dst_port, dst_mac, match_mac, gap_clear : inputs
    lookup : ``In(LookupSignature(book lookup_depth))``
    status : MoldUDP64 receiver status
    counters : every block's counters
    applied, applied_seq : only when the book has them
    """

    def __init__(self, *, dst_ip: int = DEFAULT_GROUP, dst_port: int = DEFAULT_PORT, dst_mac: int | None = None,
                 book: dict | None = None, counter_width: int = 32):
        self.udp = UDPReceiver(dst_ip=dst_ip, dst_port=dst_port, dst_mac=dst_mac, counter_width=counter_width)
        self.mold = MoldUDP64Receiver(counter_width=counter_width)
        self.split = ItchSplitter(counter_width=counter_width)
        self.decode = ItchDecoder(counter_width=counter_width, registered=False)
        self.book = MarketBook(**(book or {}))
        members = {
            "i_stream": In(ByteStream()),
            "o_stream": Out(stream.Signature(TopOfBook)),
        }
        # Every register input of the UDP filter (dst_ip, dst_port, dst_mac, match_*, vlan_id,
        # zero_checksum_ok, ...), same shape and initial value.
        self._udp_regs = []
        for name, member in self.udp.signature.members.items():
            if member.is_port and member.flow == In:
                members[name] = In(member.shape, init=member.init)
                self._udp_regs.append(name)
        members.update({
            "gap_clear": In(1),
            "lookup": In(LookupSignature(self.book.lookup_depth)),
            "status": Out(self.mold.signature.members["status"].signature),
            "counters": Out(wiring.Signature({
                "udp": Out(self.udp.signature.members["counters"].signature),
                "mold": Out(self.mold.signature.members["counters"].signature),
                "split": Out(wiring.Signature({n: Out(counter_width) for n in SPLIT_COUNTERS})),
                "decode": Out(wiring.Signature({
                    "unknown": Out(counter_width), "malformed": Out(counter_width),
                    "counts": Out(self.decode.signature.members["counts"].shape),
                })),
                "book": Out(self.book.signature.members["counters"].signature),
            })),
        })
        self.has_applied = "applied" in self.book.signature.members
        if self.has_applied:
            members["applied"] = Out(1)
            if "applied_seq" in self.book.signature.members:
                members["applied_seq"] = Out(self.book.signature.members["applied_seq"].shape)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        udp, mold, split, dec, book = self.udp, self.mold, self.split, self.decode, self.book
        m.submodules.udp = udp
        m.submodules.mold = mold
        m.submodules.split = split
        m.submodules.decode = dec
        m.submodules.book = book

        wiring.connect(m, wiring.flipped(self.i_stream), udp.i_stream)
        # UDP -> skid -> MoldUDP64: the MoldUDP64 receiver's ready (and the splitter's, which runs into it)
        # ends here instead of running on into the UDP receiver's header state.
        udp_skid = m.submodules.udp_skid = SkidBuffer(mold.i_stream.payload.shape())
        wiring.connect(m, udp.o_stream, udp_skid.i_stream)
        wiring.connect(m, udp_skid.o_stream, mold.i_stream)
        # MoldUDP64 -> splitter: the same byte stream; of `user` the splitter takes the walker's `runt` flag
        # (not the sequence). The splitter's ready is made from registers (its `done`, its output's valid,
        # the book skid's ready), never from the beat's bytes, so no skid is needed here.
        m.d.comb += [
            split.i_stream.payload.data.eq(mold.o_stream.payload.data),
            split.i_stream.payload.keep.eq(mold.o_stream.payload.keep),
            split.i_stream.payload.last.eq(mold.o_stream.payload.last),
            split.i_stream.payload.user.runt.eq(mold.o_stream.payload.user.runt),
            split.i_stream.valid.eq(mold.o_stream.valid),
            mold.o_stream.ready.eq(split.i_stream.ready),
        ]
        wiring.connect(m, split.o_stream, dec.i_stream)
        # decoder -> skid -> book: the book's ready (a book op is not taken in the cycle after another, so it
        # depends on the op's type) ends here instead of fanning out into the splitter's state.
        book_skid = m.submodules.book_skid = SkidBuffer(book.i_stream.payload.shape())
        wiring.connect(m, dec.o_stream, book_skid.i_stream)
        wiring.connect(m, book_skid.o_stream, book.i_stream)
        wiring.connect(m, book.o_stream, wiring.flipped(self.o_stream))
        wiring.connect(m, wiring.flipped(self.lookup), book.lookup)

        m.d.comb += [getattr(udp, name).eq(getattr(self, name)) for name in self._udp_regs]
        m.d.comb += [
            mold.gap_clear.eq(self.gap_clear),
            book.stale.eq(mold.status.gap),
        ]
        st = self.status
        m.d.comb += [
            st.has_session.eq(mold.status.has_session), st.session.eq(mold.status.session),
            st.expected.eq(mold.status.expected), st.gap.eq(mold.status.gap),
            st.first_missing.eq(mold.status.first_missing),
        ]
        c = self.counters
        for blk, group, names in ((udp.counters, c.udp, UDP_COUNTERS), (mold.counters, c.mold, MOLD_COUNTERS),
                                  (book.counters, c.book, BOOK_COUNTERS)):
            for n in names:
                m.d.comb += getattr(group, n).eq(getattr(blk, n))
        for n in SPLIT_COUNTERS:
            m.d.comb += getattr(c.split, n).eq(getattr(split, n))
        m.d.comb += [c.decode.unknown.eq(dec.unknown), c.decode.malformed.eq(dec.malformed),
                     c.decode.counts.eq(dec.counts)]
        if self.has_applied:
            m.d.comb += self.applied.eq(book.applied)
            if "applied_seq" in self.signature.members:
                m.d.comb += self.applied_seq.eq(book.applied_seq)
        return m


class MarketDataTop(wiring.Component):
    """AXI4-Stream-named top of :class:`MarketDataPipeline`, for simulation (cocotb, the bulk replay).

    ``s_axis_tdata/tkeep/tlast/tvalid/tready``: the frame input (via :class:`~.stream.AXIStreamTop`).
    ``m_axis_tdata`` (the :class:`TopOfBook` bits, ``TopOfBook`` field order from bit 0), ``m_axis_tvalid``,
    ``m_axis_tready``, ``m_axis_tlast`` (always 1: one record per transfer). Every other pipeline port
    under its flattened name (``counters__udp__ok``, ``lookup__locate``, ``dst_ip``...). Pure wiring.
    """

    def __init__(self, pipeline: MarketDataPipeline | None = None, **kwargs):
        self.pipeline = pipeline if pipeline is not None else MarketDataPipeline(**kwargs)
        self.axi = AXIStreamTop(self.pipeline, streams={"i_stream": "s_axis"})
        members = {}
        self._pass = []
        for name, member in self.axi.signature.members.items():
            if name.startswith("o_stream__"):
                continue
            members[name] = member.flow(member.shape, init=member.init) if member.is_port else member
            self._pass.append((name, member.flow))
        width = TopOfBook.as_shape().size
        members.update({"m_axis_tdata": Out(width), "m_axis_tvalid": Out(1), "m_axis_tready": In(1),
                        "m_axis_tlast": Out(1)})
        super().__init__(members)

    @property
    def book(self) -> MarketBook:
        return self.pipeline.book

    def elaborate(self, platform):
        m = Module()
        m.submodules.axi = axi = self.axi
        for name, flow in self._pass:
            if flow == In:
                m.d.comb += getattr(axi, name).eq(getattr(self, name))
            else:
                m.d.comb += getattr(self, name).eq(getattr(axi, name))
        m.d.comb += [
            self.m_axis_tdata.eq(axi.o_stream__payload),
            self.m_axis_tvalid.eq(axi.o_stream__valid),
            axi.o_stream__ready.eq(self.m_axis_tready),
            self.m_axis_tlast.eq(1),
        ]
        return m
