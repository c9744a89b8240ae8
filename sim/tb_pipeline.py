"""cocotb testbench: MarketDataTop end to end (frames in, TopOfBook records out), against the model.

Run by tests/test_pipeline.py on Verilator and Icarus. Frames are built with scapy
(:func:`tickgate.wire.net.udp_frame`); the expected rows come from :class:`tickgate.model.replay.ModelReplay`
over the messages the chip's front end is documented to deliver.
"""

from __future__ import annotations

import logging
import os
import struct

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import AxiStreamBus, AxiStreamFrame, AxiStreamSource

from tickgate.fpga.market_data import LATENCY
from tickgate.model.replay import ModelReplay
from tickgate.wire import moldudp64, net

from .tb import idle_pattern, random_pattern
from .tb_udp_rx import udp_frame

#: VLAN tags of the frames, in turn: untagged, one 802.1Q tag (as the live captures), 802.1ad + 802.1Q.
VLANS = ((), (141,), (100, 142))

TOB_FIELDS = (("seq", 0, 32), ("locate", 32, 16), ("bid_px", 48, 32), ("bid_sz", 80, 32), ("ask_px", 112, 32),
              ("ask_sz", 144, 32))
SESSION = "TBSESSION1"


def _messages(n, seed, symbols=4):
    from tickgate.feed.synth import synth_bytes
    return list(synth_bytes(messages=n, symbols=symbols, seed=seed))


def frames_for(messages, first_seq=1, max_payload=300):
    """(frames, [(frame index, frame offset of last byte, VLAN tags)] per message) via MoldUDP64 + scapy; the
    frames take the VLAN tag counts of VLANS in turn."""
    frames, where = [], []
    for packet in moldudp64.pack_messages(messages, SESSION, first_seq, max_payload=max_payload):
        fi = len(frames)
        vlans = VLANS[fi % len(VLANS)]
        off = 42 + 4 * len(vlans) + 20
        for m in packet.messages:
            off += 2 + len(m)
            where.append((fi, off - 1, len(vlans)))
        frames.append(udp_frame(packet.encode(), vlans=vlans))
    return frames, where


def model_rows(messages):
    rows = []
    for line in ModelReplay().run(messages):
        rows.append(tuple(int(x) for x in line.split(",")))
    return rows


class PipelineTB:
    def __init__(self, dut):
        self.dut = dut
        self.log = logging.getLogger("cocotb.tb")
        cocotb.start_soon(Clock(dut.clk, 4, unit="ns").start())
        self.source = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis"), dut.clk, dut.rst)
        self.source.log.setLevel(logging.WARNING)
        self.cycle = 0
        self.beats_in: list[int] = []          # accept cycle of every input beat
        self.rows: list[tuple] = []            # (cycle, seq, locate, bid_px, bid_sz, ask_px, ask_sz)
        self.applied: dict[int, int] = {}      # seq -> cycle
        self.bp = None
        dut.m_axis_tready.value = 1
        dut.s_axis_tvalid.value = 0                # driven from time 0 (undriven is X on Icarus)
        dut.lookup__valid.value = 0
        dut.lookup__locate.value = 0
        dut.gap_clear.value = 0
        for item in filter(None, os.environ.get("TB_REGS", "").split(",")):     # register reset values
            name, value = item.split("=")
            getattr(dut, name).value = int(value)
        cocotb.start_soon(self._monitor())

    async def _monitor(self):
        dut = self.dut
        has_applied = hasattr(dut, "applied")
        while True:
            await RisingEdge(dut.clk)
            self.cycle += 1
            if dut.s_axis_tvalid.value == 1 and dut.s_axis_tready.value == 1:
                self.beats_in.append(self.cycle)
            if dut.m_axis_tvalid.value == 1 and dut.m_axis_tready.value == 1:
                raw = dut.m_axis_tdata.value
                assert raw.is_resolvable, f"cycle {self.cycle}: m_axis_tvalid with X/Z in m_axis_tdata ({raw})"
                v = int(raw)
                self.rows.append((self.cycle, *((v >> off) & ((1 << w) - 1) for _n, off, w in TOB_FIELDS)))
            if has_applied and dut.applied.value == 1:
                self.applied[int(dut.applied_seq.value)] = self.cycle
            if self.bp is not None:
                dut.m_axis_tready.value = 0 if next(self.bp) else 1

    async def reset(self):
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 4)
        self.dut.rst.value = 0
        # the book sweeps its memories after reset
        for _ in range(200_000):
            await RisingEdge(self.dut.clk)
            if self.dut.s_axis_tready.value == 1 and self._book_ready():
                break
        await ClockCycles(self.dut.clk, 2)

    def _book_ready(self):
        # the front end accepts beats while the book sweeps; wait for the sweep by a generous fixed time
        return self.cycle > self.sweep

    async def send(self, frames, idle=False, seed=1):
        self.source.set_pause_generator(random_pattern(seed) if idle else None)
        for f in frames:
            await self.source.send(AxiStreamFrame(f))
        await self.source.wait()

    async def drain(self, n=300):
        await ClockCycles(self.dut.clk, n)


def _rows_only(rows):
    """Chip rows as CSV tuples, dropping flag-only rows (same BBO as the locate's previous row)."""
    out, last = [], {}
    for r in rows:
        bbo = tuple(r[3:7])
        if last.get(r[2], (0, 0, 0, 0)) != bbo:
            last[r[2]] = bbo
            out.append(tuple(r[1:7]))
    return out


async def _start(dut):
    tb = PipelineTB(dut)
    tb.sweep = int(os.environ.get("TB_SWEEP", "0")) + 8     # the book's clear_cycles
    await tb.reset()
    return tb


def _counters(dut):
    out = {}
    for name in ("udp__ok", "udp__truncated", "udp__bad_checksum", "udp__bad_length", "udp__not_udp",
                 "mold__accepted", "mold__duplicate", "mold__gap", "mold__missed", "mold__count_error",
                 "split__zero_length", "split__truncated", "split__unflagged_runt", "decode__unknown", "decode__malformed"):
        out[name] = int(getattr(dut, f"counters__{name}").value)
    return out


async def _run_clean(dut, idle, backpressure, seed):
    tb = await _start(dut)
    if backpressure:
        tb.bp = idle_pattern()
    messages = _messages(400, seed)
    frames, where = frames_for(messages)
    beats_before = len(tb.beats_in)
    await tb.send(frames, idle=idle, seed=seed)
    await tb.drain()
    unknown = [n for n in dir(dut) if n.startswith(("counters__", "status__")) and "$" not in n
               and not getattr(dut, n).value.is_resolvable]
    assert not unknown, f"X/Z in {sorted(unknown)}"
    flags = {n: int(getattr(dut, f"counters__book__{n}").value) for n in ("table_full", "no_slot", "out_of_range")
             if hasattr(dut, f"counters__book__{n}")}
    assert not any(flags.values()), f"the test feed overflows the small book: {flags}"
    got, want = _rows_only(tb.rows), model_rows(messages)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g == w, f"row {i}: chip {g}, model {w}"
    assert len(got) == len(want), f"{len(got)} rows, model {len(want)}; {len(tb.applied)} applied; {_counters(dut)}"
    assert int(dut.counters__udp__ok.value) == len(frames)
    # exact latency with no idle cycles and no backpressure
    first_beat, base = [], beats_before
    for f in frames:
        first_beat.append(base)
        base += (len(f) + 7) // 8
    if not idle and not backpressure:
        assert tb.applied, "the book has no applied strobe"
        seen, wrong = set(), []
        for seq, (fi, end, tags) in enumerate(where, 1):
            accept = tb.beats_in[first_beat[fi] + end // 8]
            got = tb.applied[seq] - accept
            if got != LATENCY:
                wrong.append(f"message {seq} ({chr(messages[seq - 1][0])}, {tags} tags, frame byte {end}): {got}")
            seen.add((tags, end % 8))
        assert not wrong, f"{len(wrong)} messages not at latency {LATENCY}: {wrong[:20]}"
        assert seen == {(len(v), lane) for v in VLANS for lane in range(8)}, "a tag count / lane not exercised"
        for r in tb.rows:
            assert tb.applied[r[1]] == r[0], "TopOfBook and applied disagree"
    return tb


@cocotb.test()
async def clean(dut):
    await _run_clean(dut, False, False, 1)


@cocotb.test()
async def idle_cycles(dut):
    await _run_clean(dut, True, False, 2)


@cocotb.test()
async def backpressure(dut):
    await _run_clean(dut, False, True, 3)


@cocotb.test()
async def idle_and_backpressure(dut):
    await _run_clean(dut, True, True, 4)


def _bad_ip_checksum(frame):
    f = bytearray(frame)
    f[24] ^= 0x01
    return bytes(f)


def _packet(seq, messages, count=None):
    p = moldudp64.Packet(SESSION, seq, list(messages)).encode()
    if count is not None:
        p = p[:18] + struct.pack(">H", count) + p[20:]
    return p


@cocotb.test()
async def bad_input(dut):
    """Truncated frames, a bad IPv4 checksum, a count mismatch, unknown types, zero-length messages, a gap
    and a duplicate: the chip neither hangs nor corrupts the book, and its counters say what happened."""
    tb = await _start(dut)
    good = _messages(300, 9)
    a, b, c = good[:100], good[100:200], good[200:]
    delivered = []                      # what the chip's splitter emits, in order
    frames = []
    seq = 1
    # a good start
    for p in moldudp64.pack_messages(a, SESSION, seq, max_payload=300):
        frames.append(net.udp_frame(p.encode()))
    delivered += a
    seq += len(a)
    # truncated inside the headers: dropped by the UDP filter
    frames.append(net.udp_frame(_packet(seq, b[:3]))[:30])
    # bad IPv4 checksum: dropped
    frames.append(_bad_ip_checksum(net.udp_frame(_packet(seq, b[:3]))))
    # count mismatch (header says 5, packet holds 3): forwarded, counted, expected sequence += 5
    frames.append(net.udp_frame(_packet(seq, b[:3], count=5)))
    delivered += b[:3]
    seq += 5
    # an unknown message type and a message of a known type with a bad length: decoded as OTHER
    unknown = b"Z" + bytes(19)
    frames.append(net.udp_frame(_packet(seq, [unknown])))
    delivered.append(unknown)
    seq += 1
    # a zero-length message block (count 2: the zero block and one message)
    z = moldudp64.Packet(SESSION, seq, [b[3]]).encode()
    z = z[:18] + struct.pack(">H", 2) + b"\x00\x00" + z[20:]
    frames.append(net.udp_frame(z))
    delivered.append(b[3])
    seq += 2
    # a gap of 10, then a duplicate of the gap packet
    seq += 10
    gp = _packet(seq, b[4:8])
    frames.append(net.udp_frame(gp))
    frames.append(net.udp_frame(gp))
    delivered += b[4:8]
    seq += 4
    # truncated inside the payload (the IPv4 total length says more): partial payload forwarded
    tp = net.udp_frame(_packet(seq, b[8:11]))
    cut = 42 + 20 + 2 + len(b[8]) + 2 + len(b[9]) + 3
    frames.append(tp[:cut])
    delivered += b[8:10]
    seq += 3
    # then a known good sequence
    for p in moldudp64.pack_messages(c, SESSION, seq, max_payload=300):
        frames.append(net.udp_frame(p.encode()))
    delivered += c
    await tb.send(frames)
    await tb.drain()
    assert _rows_only(tb.rows) == model_rows(delivered), "rows differ from the model"
    cnt = _counters(dut)
    tb.log.info("counters after bad input: %s", cnt)
    assert cnt["udp__truncated"] == 1
    assert cnt["udp__bad_checksum"] == 1
    assert cnt["udp__bad_length"] == 1
    assert cnt["mold__count_error"] >= 2          # count mismatch, zero-length block, truncated payload
    assert cnt["mold__gap"] == 1 and cnt["mold__missed"] == 10
    assert cnt["mold__duplicate"] == 1
    assert cnt["split__zero_length"] == 1
    assert cnt["split__truncated"] == 1
    assert cnt["split__unflagged_runt"] == 0      # the MoldUDP64 walker flagged the zero-length block's beats
    assert cnt["decode__unknown"] == 1
    assert int(dut.status__gap.value) == 1
    # stale is the sticky gap: rows after the gap carry it; gap_clear clears it
    assert int(dut.s_axis_tready.value) == 1, "the chip hangs"
    dut.gap_clear.value = 1
    await RisingEdge(dut.clk)
    dut.gap_clear.value = 0
    await RisingEdge(dut.clk)
    assert int(dut.status__gap.value) == 0
