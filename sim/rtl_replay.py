"""Bulk RTL replay: a whole feed through the verilated :class:`~tickgate.fpga.market_data.MarketDataTop`.

No Python in the per-cycle loop. Python (numpy) turns frames into input beats in one go; a small C++
harness (``sim/replay_harness.cpp``, compiled with the model by ``verilator --cc --exe --build``) plays
them one per cycle (optionally with random idle cycles and output backpressure from a seed), and writes
every TopOfBook transfer with its cycle, every ``applied`` strobe (when the book has one), the cycle each
input beat was accepted, and the final counters; Python parses those files in bulk.

API::

    result = RtlReplay(RtlParams()).run(frames, messages=info)   # frames: list of Ethernet frames (bytes)
    result.rows          # numpy structured array: cycle, seq, locate, bid_px, bid_sz, ask_px, ask_sz, flags
    result.counters      # {"udp.ok": n, "mold.gap": n, "book.table_full": n, ...}
    result.latency       # {type letter: (min, max, n)} from the last byte's input beat to its TopOfBook

    res = RtlReplay(RtlParams(book=parse_book("capacity=65536,ways=8"), lookup=True)).run(feed)
    depth_lines(res, 3)  # the model's --depth 3 CSV lines, from a lookup of each book message's locate
                         # issued in the cycle of its ``applied`` strobe (sees exactly that message)

    feed = frames_for_feed(path)   # frames (+ per-message info) for a pcap/pcapng or an ITCH BinaryFILE

Builds are cached by content hash under ``build/replay/`` (beside :data:`tickgate.sim.runner.BUILD_ROOT`),
under the same file lock and PATH/MAKEFLAGS handling as :mod:`tickgate.sim.runner`.
"""

from __future__ import annotations

import bisect
import hashlib
import inspect
import logging
import math
import os
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from . import runner

__all__ = ["RtlParams", "RtlReplay", "RtlResult", "FeedFrames", "fast_udp_frames", "frames_from_messages",
           "frames_for_feed", "frames_to_beats", "CAPTURE_REGISTERS", "csv_lines", "model_rows", "rows_may_differ", "book_sizing", "parse_book", "build", "Directory", "chip_flag_counts",
           "BEAT_DTYPE", "DEFAULT_SESSION", "HARNESS", "lookup_locates", "lookup_dtype", "check_depth",
           "depth_lines", "depth_snapshots", "depth_incomplete", "depth_flag_counts"]

log = logging.getLogger(__name__)

HARNESS = Path(__file__).resolve().parent / "replay_harness.cpp"
REPLAY_ROOT = Path(os.environ.get("TICKGATE_REPLAY_BUILD", runner.BUILD_ROOT.parent / "replay"))
TOPLEVEL = "market_data"
DEFAULT_SESSION = "TICKGATE01"

#: One input beat as the harness reads it (little endian, packed, 12 bytes).
BEAT_DTYPE = np.dtype([("data", "<u8"), ("keep", "u1"), ("last", "u1"), ("idle", "<u2")])

# C++ optimisation of the replay model (it runs millions of cycles, unlike the cocotb builds).
REPLAY_MAKEFLAGS = "CFG_CXXFLAGS_PCH_I=-include OPT_FAST=-O2 OPT_SLOW=-O1 OPT_GLOBAL=-O2"


# --------------------------------------------------------------------------------------------- framing

def _mac_bytes(mac: str) -> bytes:
    parts = mac.split(":")
    if len(parts) != 6:
        raise ValueError(f"bad MAC address {mac!r}")
    return bytes(int(p, 16) for p in parts)


def _ones_sum_np(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = int(np.frombuffer(data, ">u2").sum(dtype=np.uint64))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def fast_udp_frames(payloads: Iterable[bytes], *, dst_ip: str | None = None, dport: int | None = None,
                    src_ip: str | None = None, sport: int | None = None, src_mac: str | None = None,
                    dst_mac: str | None = None, ttl: int = 64, ip_id: int = 0) -> list[bytes]:
    """Ethernet/IPv4/UDP frames carrying ``payloads``: byte for byte what :func:`tickgate.wire.net.udp_frame`
    builds with the same arguments (DF set, UDP checksum, padded to 60 bytes), without scapy."""
    from ..wire import net

    dst_ip = net.DEFAULT_GROUP if dst_ip is None else dst_ip
    dport = net.DEFAULT_PORT if dport is None else dport
    sport = net.DEFAULT_PORT if sport is None else sport
    src_ip = net.DEFAULT_SRC_IP if src_ip is None else src_ip
    src_mac = net.DEFAULT_SRC_MAC if src_mac is None else src_mac
    if dst_mac is None:
        dst_mac = net.multicast_mac(dst_ip)
    src = int(net._ip(src_ip, "src_ip"))
    dst = int(net._ip(dst_ip, "dst_ip"))
    eth = _mac_bytes(dst_mac) + _mac_bytes(src_mac) + b"\x08\x00"
    pseudo_base = (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF) + net.IPPROTO_UDP
    out = []
    pack_ip = struct.Struct(">BBHHHBBHII").pack
    pack_udp = struct.Struct(">HHHH").pack
    for payload in payloads:
        payload = bytes(payload)
        ulen = 8 + len(payload)
        ip = pack_ip(0x45, 0, 20 + ulen, ip_id, 0x4000, ttl, net.IPPROTO_UDP, 0, src, dst)
        ip = ip[:10] + struct.pack(">H", net.ipv4_checksum(ip)) + ip[12:]
        total = pseudo_base + ulen + sport + dport + ulen + _ones_sum_np(payload)
        while total >> 16:
            total = (total & 0xFFFF) + (total >> 16)
        csum = (~total & 0xFFFF) or 0xFFFF
        frame = eth + ip + pack_udp(sport, dport, ulen, csum) + payload
        if len(frame) < net.MIN_FRAME:
            frame = frame.ljust(net.MIN_FRAME, b"\0")
        out.append(frame)
    return out


@dataclass
class FeedFrames:
    """Frames for the chip, and what Python knows of the messages the chip should forward.

    ``registers``: register inputs for this feed (e.g. the capture policy). ``msg_frame``/``msg_end``: per
    forwarded message (in chip order, i.e. chip ``seq`` - 1), the index of its frame and the frame offset
    of its last byte; ``msg_type``: its type byte. ``None`` when unknown."""
    frames: list[bytes]
    registers: dict = field(default_factory=dict)
    msg_frame: np.ndarray | None = None
    msg_end: np.ndarray | None = None
    msg_type: np.ndarray | None = None
    messages: list[bytes] | None = None        # the messages in feed order (model view), when at hand
    format: str = ""


def frames_from_messages(messages: Sequence[bytes], *, session: str = DEFAULT_SESSION, first_sequence: int = 1,
                         max_payload: int = 1400) -> FeedFrames:
    """Pack ITCH messages into MoldUDP64 packets (:func:`tickgate.wire.moldudp64.pack_messages`) and fast
    Ethernet/IPv4/UDP frames to the default group and port (the chip's default filter)."""
    from ..wire import moldudp64

    payloads, frame_idx, ends = [], [], []
    for fi, packet in enumerate(moldudp64.pack_messages(messages, session, first_sequence,
                                                        max_payload=max_payload)):
        payloads.append(packet.encode())
        off = 42 + 20
        for m in packet.messages:
            off += 2 + len(m)
            frame_idx.append(fi)
            ends.append(off - 1)
    frames = fast_udp_frames(payloads)
    types = np.frombuffer(b"".join(m[:1] or b"\0" for m in messages), np.uint8) if messages else np.zeros(0, np.uint8)
    return FeedFrames(frames, {}, np.asarray(frame_idx, np.int64), np.asarray(ends, np.int64), types,
                      list(messages), "binaryfile")


#: Register settings for replaying a capture like the reference reader (tickgate.wire.pcap.mold_packets):
#: any destination, IPv4 checksum 0 accepted (anonymised captures), see docs/gateware.md.
CAPTURE_REGISTERS = {"match_ip": 0, "match_port": 0, "zero_checksum_ok": 1}


def _capture_view(frames: Sequence[bytes]):
    """(frame, last-byte offset, type) of every message the reference path delivers from ``frames``, in
    order: parse_udp_frame + moldudp64 + ``Receiver(start_sequence=None, max_pending=0)`` with sequence 0
    unsequenced, as :class:`tickgate.feed.source.FeedSource` (the chip's documented policy too). Used to map
    chip ``seq`` numbers to input beats for latency; a mismatch only disables the latency report."""
    from ..wire import moldudp64, net

    rx = moldudp64.Receiver(start_sequence=None, max_pending=0)
    fidx, ends, types = [], [], []
    for fi, f in enumerate(frames):
        try:
            meta, payload = net.parse_udp_frame(f, zero_checksum_ok=True)
            packet = moldudp64.Packet.decode(payload)
        except (net.NetFormatError, moldudp64.MoldFormatError):
            continue
        offsets, off = [], meta.payload_offset + 20
        for m in packet.messages:
            off += 2 + len(m)
            offsets.append(off - 1)
        if packet.sequence == 0:
            picked = range(len(packet.messages))
        else:
            picked = [seq - packet.sequence for seq, _m in rx.feed(packet)]
        for k in picked:
            fidx.append(fi)
            ends.append(offsets[k])
            types.append(packet.messages[k][0] if packet.messages[k] else 0)
    return np.asarray(fidx, np.int64), np.asarray(ends, np.int64), np.asarray(types, np.uint8)


def frames_for_feed(path, *, lenient: bool = False, messages: list[bytes] | None = None) -> FeedFrames:
    """Frames for a feed file: a capture's Ethernet frames as they are (replayed with
    :data:`CAPTURE_REGISTERS`), or an ITCH BinaryFILE (plain or gzip) packed into MoldUDP64 over
    Ethernet/IPv4/UDP. ``messages`` (the model's view of the feed, for the symbol directory) is read when
    not given."""
    from ..feed.source import PCAP, FeedSource, detect_format
    from ..wire import pcap

    fmt, _gz = detect_format(path)
    if messages is None:
        messages = list(FeedSource(path, lenient=lenient))
    if fmt != PCAP:
        return frames_from_messages(messages)
    frames = [rec.data for rec in pcap.read_records(path) if rec.linktype == pcap.LINKTYPE_ETHERNET]
    fidx, ends, types = _capture_view(frames)
    return FeedFrames(frames, dict(CAPTURE_REGISTERS), fidx, ends, types, messages, "pcap")


def frames_to_beats(frames: Sequence[bytes], idle: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(beats, first beat index of each frame). ``idle[i]`` idle cycles precede frame ``i``."""
    n = len(frames)
    lens = np.fromiter((len(f) for f in frames), np.int64, n)
    if n and lens.min() <= 0:
        raise ValueError("empty frame")
    nbeats = (lens + 7) // 8
    first = np.zeros(n, np.int64)
    if n:
        first[1:] = np.cumsum(nbeats)[:-1]
    total = int(nbeats.sum())
    buf = b"".join(f + b"\0" * (-len(f) % 8) for f in frames)
    beats = np.zeros(total, BEAT_DTYPE)
    beats["data"] = np.frombuffer(buf, "<u8")
    beats["keep"] = 0xFF
    if n:
        lastb = first + nbeats - 1
        rem = lens - (nbeats - 1) * 8
        beats["keep"][lastb] = ((1 << rem) - 1).astype(np.uint8)
        beats["last"][lastb] = 1
        if idle is not None:
            beats["idle"][first] = np.minimum(np.asarray(idle, np.int64), 0xFFFF)
    return beats, first


# --------------------------------------------------------------------------------------------- build

def book_sizing(**overrides) -> dict:
    """MarketBook parameters for a replay: the chip's own sizing (the book's defaults), plus ``overrides``
    (only parameters the book takes are kept). Not raised to fit the feed's locates: a locate the chip
    cannot track is counted (``book.out_of_range``) and reported, as on the board. (Large ``symbols``
    are impractical here anyway: converting symbols=1024 takes ~36 s, 16384 several minutes.)"""
    from ..fpga.order_book import MarketBook

    accepted = set(inspect.signature(MarketBook.__init__).parameters)
    return {k: v for k, v in overrides.items() if k in accepted}


#: Book parameters a replay may set (``--book``): MarketBook's sizing, as in BOOK_DEFAULTS.
BOOK_KEYS = ("capacity", "ways", "symbols", "depth", "locates", "lookup_depth")


def parse_book(text: str | None) -> dict:
    """``--book capacity=65536,ways=8,...`` -> {name: int}, checked by constructing the book (bad names,
    values or combinations raise ValueError). ``lookup_depth`` sizes the top's lookup port too."""
    from ..fpga.order_book import MarketBook

    out: dict[str, int] = {}
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq:
            raise ValueError(f"--book: {item!r} is not NAME=VALUE")
        if key not in BOOK_KEYS:
            raise ValueError(f"--book: unknown parameter {key!r} (choose from {', '.join(BOOK_KEYS)})")
        if key in out:
            raise ValueError(f"--book: {key} given twice")
        try:
            out[key] = int(value.strip(), 0)
        except ValueError:
            raise ValueError(f"--book: {key}={value.strip()!r} is not an integer") from None
    try:
        MarketBook(**out)._MustUse__silence = True      # built only to check the arguments, never elaborated
    except TypeError as e:
        raise ValueError(f"--book: {e}") from None
    return out


def _width(shape) -> int:
    from amaranth.hdl import Shape
    return Shape.cast(shape).width


def _cxx(name: str) -> str:
    """The C++ member Verilator makes of a port name (it escapes a double underscore as ``___05F``)."""
    return name.replace("__", "___05F")


_NOT_REGISTERS = ("s_axis_", "m_axis_", "lookup__", "gap_clear")


def _registers(top) -> list[str]:
    """Register inputs of the top (the UDP filter's settings), in a fixed order."""
    return [n for n, m in top.signature.members.items()
            if m.is_port and m.flow.name == "In" and not n.startswith(_NOT_REGISTERS)]


def _config_header(top) -> str:
    members = top.signature.members
    status = [(n, _width(m.shape)) for n, m in members.items()
              if m.is_port and m.flow.name == "Out" and (n.startswith("counters__") or n.startswith("status__"))]
    lines = [f'#include "V{TOPLEVEL}.h"', f"#define TOP_CLASS V{TOPLEVEL}",
             f"#define TDATA_BITS {_width(members['m_axis_tdata'].shape)}",
             f"#define HAS_APPLIED {int('applied' in members)}",
             f"#define HAS_APPLIED_SEQ {int('applied_seq' in members)}",
             f"#define LOOKUP_VALID {_cxx('lookup__valid')}",
             f"#define LOOKUP_LOCATE {_cxx('lookup__locate')}",
             f"#define LOOKUP_RESULT {_cxx('lookup__result')}",
             f"#define LOOKUP_RESULT_VALID {_cxx('lookup__result_valid')}",
             f"#define LOOKUP_BITS {_width(members['lookup__result'].shape)}",
             "#define FOREACH_REG(X) \\"]
    lines += [f"    X({i}, {_cxx(n)}) \\" for i, n in enumerate(_registers(top))]
    lines += ["",
             "#define FOREACH_STATUS(X) \\"]
    lines += [f"    X({_cxx(n)}, {w}) \\" for n, w in status]
    lines.append("")
    return "\n".join(lines) + "\n"


def _lookup_depth(top) -> int:
    """Levels per side the top's lookup port answers (its signature, which the book's must match)."""
    return top.pipeline.signature.members["lookup"].signature.depth


def _silence(top) -> None:
    p = top.pipeline
    for c in (top, top.axi, p, p.udp, p.mold, p.split, p.decode, p.book):
        c._MustUse__silence = True


@dataclass
class Built:
    exe: Path
    status: list[tuple[str, int]]
    tdata_bits: int
    has_applied: bool
    registers: list[str]
    register_inits: dict
    warmup: int
    build_seconds: float | None
    lookup_bits: int = 0
    lookup_depth: int = 0


def build(book: dict | None = None) -> Built:
    """Convert, verilate and compile the replay model for ``book`` sizing (cached by content hash)."""
    from ..fpga.market_data import MarketDataTop

    top = MarketDataTop(book=book or {})
    members = top.signature.members
    config = _config_header(top)
    harness = HARNESS.read_text()
    status = [(n, _width(m.shape)) for n, m in members.items()
              if m.is_port and m.flow.name == "Out" and (n.startswith("counters__") or n.startswith("status__"))]
    tool = "verilator %d.%d" % runner.verilator_version()
    # Keyed on the gateware's Python sources (converting to Verilog takes seconds; hashing them does not).
    import amaranth
    gateware = Path(__file__).resolve().parent.parent / "fpga"
    sources = "".join(p.read_text() for p in sorted(gateware.glob("*.py")))
    key = hashlib.sha256("\n".join([tool, amaranth.__version__, REPLAY_MAKEFLAGS, str(runner.VERILATOR_ARGS),
                                    repr(sorted((book or {}).items())), sources, config,
                                    harness]).encode()).hexdigest()[:16]
    bdir = REPLAY_ROOT / f"{TOPLEVEL}-{key}"
    exe = bdir / "obj" / "replay"
    book_obj = top.book
    warmup = int(getattr(book_obj, "clear_cycles", 0)) + 16
    built = Built(exe, status, _width(members["m_axis_tdata"].shape), "applied" in members, _registers(top),
                  {n: members[n].init or 0 for n in _registers(top)}, warmup, None,
                  _width(members["lookup__result"].shape), _lookup_depth(top))
    env = runner._env()
    env["MAKEFLAGS"] = (env.get("MAKEFLAGS", "") + " " + REPLAY_MAKEFLAGS).strip()
    with runner._locked(REPLAY_ROOT / f".{bdir.name}.lock"):
        if (bdir / "build.ok").exists() and exe.exists():
            _silence(top)                       # not elaborated: the cached model is reused
            return built
        bdir.mkdir(parents=True, exist_ok=True)
        (bdir / f"{TOPLEVEL}.v").write_text(runner.convert(top, TOPLEVEL))
        (bdir / "replay_config.h").write_text(config)
        (bdir / "replay_harness.cpp").write_text(harness)
        cmd = ["verilator", "--cc", "--exe", "--build", "-j", str(max(1, os.cpu_count() or 1)),
               *runner.VERILATOR_ARGS, "--top-module", TOPLEVEL, "-Mdir", str(bdir / "obj"), "-o", "replay",
               "-CFLAGS", f"-O2 -I{bdir}", str(bdir / f"{TOPLEVEL}.v"), str(bdir / "replay_harness.cpp")]
        t0 = time.monotonic()
        proc = subprocess.run(cmd, cwd=bdir, env=env, capture_output=True, text=True)
        (bdir / "build.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0 or not exe.exists():
            raise runner.SimulatorMissing(f"verilator build of the replay model failed ({bdir}/build.log):\n"
                                          f"{(proc.stdout + proc.stderr)[-4000:]}")
        built.build_seconds = time.monotonic() - t0
        (bdir / "build.ok").write_text(f"{built.build_seconds:.1f}\n")
        log.warning("built the replay model in %.1f s (%s)", built.build_seconds, bdir)
    return built


# --------------------------------------------------------------------------------------------- run

ROW_FIELDS = ("seq", "locate", "bid_px", "bid_sz", "ask_px", "ask_sz", "stale", "degraded", "out_of_window")
ROW_DTYPE = np.dtype([("cycle", "<u8")] + [(n, "<u8") for n in ROW_FIELDS])


def _tob_offsets() -> dict[str, tuple[int, int]]:
    from amaranth.lib import data
    from ..fpga.book_records import BookFlags, TopOfBook

    out = {}
    for name, f in data.Layout.cast(TopOfBook):
        if name == "flags":
            for fname, ff in data.Layout.cast(BookFlags):
                out[fname] = (f.offset + ff.offset, _width(ff.shape))
        else:
            out[name] = (f.offset, _width(f.shape))
    return out


def _extract(words: np.ndarray, offset: int, width: int) -> np.ndarray:
    w = words.astype(np.uint64)
    i, sh = divmod(offset, 32)
    v = w[:, i] >> np.uint64(sh)
    if sh + width > 32 and i + 1 < w.shape[1]:
        v |= w[:, i + 1] << np.uint64(32 - sh)
    return v & np.uint64((1 << width) - 1)


#: Message types the book applies to a locate's levels: the ones a --depth row can follow.
BOOK_TYPES = b"AFECXDU"
NO_LOOKUP = 0xFFFFFFFF


def lookup_locates(messages: Sequence[bytes]) -> np.ndarray:
    """u32 per message (chip seq order): the header's stock locate of a book message (the locate whose
    book the chip reads for it), :data:`NO_LOOKUP` for any other message."""
    n = len(messages)
    if not n:
        return np.zeros(0, np.uint32)
    head = np.frombuffer(b"".join(bytes(m[:3]).ljust(3, b"\0") for m in messages), np.uint8).reshape(n, 3)
    loc = (head[:, 1].astype(np.uint32) << 8) | head[:, 2]
    book = np.isin(head[:, 0], np.frombuffer(BOOK_TYPES, np.uint8))
    return np.where(book, loc, np.uint32(NO_LOOKUP)).astype("<u4")


def lookup_dtype(depth: int) -> np.dtype:
    return np.dtype([("issue", "<u8"), ("cycle", "<u8"), ("seq", "<u8"), ("locate", "<u8"),
                     ("bids", "<u8", (depth, 2)), ("asks", "<u8", (depth, 2)),
                     ("bid_overflow", "u1"), ("ask_overflow", "u1"), ("out_of_range", "u1"), ("no_slot", "u1"),
                     ("degraded", "u1"), ("out_of_window", "u1")])


def _parse_lookups(raw: np.ndarray, depth: int) -> np.ndarray:
    """lookup.bin records -> :func:`lookup_dtype` rows (``locate`` is filled in by the caller)."""
    from amaranth.lib import data
    from ..fpga.book_records import BookFlags
    from ..fpga.order_book import Level, book_state

    out = np.zeros(len(raw), lookup_dtype(depth))
    u64 = lambda lo, hi: raw[:, lo].astype(np.uint64) | (raw[:, hi].astype(np.uint64) << np.uint64(32))  # noqa: E731
    out["issue"], out["cycle"], out["seq"] = u64(0, 1), u64(2, 3), u64(4, 5)
    words = raw[:, 6:]
    layout = book_state(depth)
    lv = data.Layout.cast(Level)
    for side in ("bids", "asks"):
        base = layout[side].offset
        for j in range(depth):
            for k, name in enumerate(("px", "sz")):
                out[side][:, j, k] = _extract(words, base + 64 * j + lv[name].offset, 32)
    for name in ("bid_overflow", "ask_overflow", "out_of_range", "no_slot"):
        out[name] = _extract(words, layout[name].offset, 1)
    flags = data.Layout.cast(BookFlags)
    for name in ("degraded", "out_of_window"):
        out[name] = _extract(words, layout["flags"].offset + flags[name].offset, 1)
    return out


@dataclass
class RtlParams:
    """How to run the replay: book sizing (None: the chip's defaults), idle/backpressure probabilities and
    seed, lookups for --depth."""
    book: dict | None = None
    idle: float = 0.0                 # probability of an extra idle cycle before each input beat
    backpressure: float = 0.0         # probability, per cycle, that m_axis_tready is low
    seed: int = 1
    frame_gap: int = 0                # idle cycles before every frame
    registers: dict | None = None     # register inputs (e.g. {"match_ip": 0}); override the feed's
    max_cycles: int = 0               # 0: no limit
    lookup: bool = False              # look up every book message's locate as it is applied (--depth)
    lookup_delay: int = 0             # cycles from the applied strobe to the lookup (0 is exact; tests)


@dataclass
class RtlResult:
    rows: np.ndarray                  # ROW_DTYPE
    counters: dict[str, int]
    cycles: int
    seconds: float                    # harness wall time (the simulation loop only)
    beats: int
    frames: int
    messages: int                     # messages the splitter emitted (chip seq of the last one)
    beat_cycles: np.ndarray
    applied: np.ndarray               # (cycle, seq) pairs; empty without an applied strobe
    latency: dict[str, tuple[int, int, int]] = field(default_factory=dict)   # type -> (min, max, count)
    latency_lanes: dict[int, tuple[int, int]] = field(default_factory=dict)  # frame lane of last byte -> (min, max)
    lookups: np.ndarray | None = None  # lookup_dtype(depth) rows, with RtlParams.lookup
    timed_out: bool = False
    sizing: dict = field(default_factory=dict)
    build_seconds: float | None = None
    wall_seconds: float = 0.0         # everything: beats, build check, run, parse

    @property
    def messages_per_second(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0

    @property
    def cycles_per_second(self) -> float:
        return self.cycles / self.seconds if self.seconds > 0 else 0.0

    def flags(self) -> dict[str, int]:
        """What the chip flagged that makes its rows differ from the reference book's."""
        return chip_flag_counts(self)


#: Book counters that mean some symbol's rows may differ from the reference book's.
DIFFERING_COUNTERS = ("table_full", "no_slot", "out_of_range", "locate_mismatch")


def chip_flag_counts(res: "RtlResult") -> dict[str, int]:
    """What the chip flagged (non-zero entries only). ``depth overflow`` (the ``out_of_window`` counter:
    levels/orders beyond the book's top K) leaves the BBO exact unless rows are flagged ``out_of_window``."""
    c = res.counters
    out = {f"{k}": c.get(f"book.{k}", 0) for k in DIFFERING_COUNTERS}
    out["depth overflow (out_of_window counter)"] = c.get("book.out_of_window", 0)
    if len(res.rows):
        out["rows flagged degraded"] = int(res.rows["degraded"].sum())
        out["rows flagged out_of_window (BBO unknown)"] = int(res.rows["out_of_window"].sum())
    return {k: v for k, v in out.items() if v}


def rows_may_differ(res: "RtlResult", depth: int | None = None) -> bool:
    """True when the chip's flags say some rows may differ from the model's (with ``depth``: its
    ``--depth`` rows, judged from the lookups too)."""
    f = chip_flag_counts(res)
    if depth is not None and depth_flag_counts(res, depth):
        return True
    return any(k in f for k in DIFFERING_COUNTERS) or any(k.startswith("rows flagged") for k in f)


class RtlReplay:
    """Runs frames through the verilated chip (see the module docstring)."""

    def __init__(self, params: RtlParams | None = None):
        self.params = params or RtlParams()

    def run(self, feed: FeedFrames | Sequence[bytes], *, workdir: str | os.PathLike | None = None) -> RtlResult:
        t_start = time.perf_counter()
        if not isinstance(feed, FeedFrames):
            feed = FeedFrames(list(feed))
        p = self.params
        sizing = book_sizing(**(p.book or {}))
        built = build(sizing)
        idle = [p.frame_gap] * len(feed.frames) if p.frame_gap else None
        beats, first = frames_to_beats(feed.frames, idle)
        with tempfile.TemporaryDirectory(prefix="rtl-replay-", dir=workdir) as tmp:
            tmp = Path(tmp)
            beats.tofile(tmp / "beats.bin")
            regs = dict(built.register_inits)      # every register at its reset value, as a CSR bank would
            regs.update(feed.registers)
            regs.update(p.registers or {})
            unknown = sorted(set(regs) - set(built.registers))
            if unknown:
                raise ValueError(f"the chip has no register {', '.join(unknown)} (it has {built.registers})")
            (tmp / "regs.txt").write_text("".join(f"{built.registers.index(k)} {int(v)}\n" for k, v in regs.items()))
            lookup_arg, locs = "-", None
            if p.lookup:
                if feed.messages is None:
                    raise ValueError("lookups need the feed's messages (FeedFrames.messages)")
                locs = lookup_locates(feed.messages)
                locs.tofile(tmp / "lookups.bin")
                lookup_arg = str(tmp / "lookups.bin")
            if p.lookup_delay < 0:
                raise ValueError(f"lookup_delay must be >= 0, not {p.lookup_delay}")
            cmd = [str(built.exe), str(tmp / "beats.bin"), str(tmp), str(built.warmup),
                   str(int(round(p.idle * 1e6))), str(int(round(p.backpressure * 1e6))), str(p.seed),
                   str(tmp / "regs.txt"), str(p.max_cycles), lookup_arg, str(p.lookup_delay)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"replay harness failed ({proc.returncode}): {proc.stderr[-2000:]}")
            run_info = dict(line.split(None, 1) for line in (tmp / "run.txt").read_text().splitlines())
            beat_cycles = np.fromfile(tmp / "beats.bin", "<u8")
            words = 2 + math.ceil(built.tdata_bits / 32)
            raw = np.fromfile(tmp / "tob.bin", "<u4").reshape(-1, words)
            applied = np.fromfile(tmp / "applied.bin", "<u8").reshape(-1, 2)
            lk_raw = np.fromfile(tmp / "lookup.bin", "<u4").reshape(-1, 6 + math.ceil(built.lookup_bits / 32))
            status_words = np.fromfile(tmp / "status.bin", "<u4")

        rows = np.zeros(len(raw), ROW_DTYPE)
        rows["cycle"] = raw[:, 0].astype(np.uint64) | (raw[:, 1].astype(np.uint64) << np.uint64(32))
        for name, (off, width) in _tob_offsets().items():
            rows[name] = _extract(raw[:, 2:], off, width)
        counters = self._counters(built.status, status_words)
        res = RtlResult(rows=rows, counters=counters, cycles=int(run_info["cycles"]),
                        seconds=float(run_info["seconds"]), beats=len(beats), frames=len(feed.frames),
                        messages=counters.get("decode.total", 0), beat_cycles=beat_cycles, applied=applied,
                        timed_out=run_info.get("timed_out", "0").strip() == "1", sizing=dict(sizing),
                        build_seconds=built.build_seconds)
        if p.lookup:
            from ..fpga.order_book import MarketBook

            lk = res.lookups = _parse_lookups(lk_raw, built.lookup_depth)
            lk["locate"] = locs[lk["seq"].astype(np.int64) - 1]
            late = lk["cycle"] - lk["issue"] != MarketBook.LOOKUP_LATENCY
            if late.any():
                raise RuntimeError(f"{int(late.sum())} lookup answers not LOOKUP_LATENCY "
                                   f"({MarketBook.LOOKUP_LATENCY}) cycles after their request")
            seqs = applied[:, 1].astype(np.int64)
            seqs = seqs[(seqs >= 1) & (seqs <= len(locs))]
            want = seqs[locs[seqs - 1] != NO_LOOKUP]
            if not np.array_equal(lk["seq"].astype(np.int64), want):
                raise RuntimeError(f"lookup answers for {len(lk)} messages, {len(want)} book messages applied")
        if len(beat_cycles) != len(beats):
            raise RuntimeError(f"the chip accepted {len(beat_cycles)} of {len(beats)} input beats "
                               f"({'timed out' if res.timed_out else 'stalled'})")
        self._latency(res, feed, first)
        res.wall_seconds = time.perf_counter() - t_start
        return res

    @staticmethod
    def _counters(status: list[tuple[str, int]], words: np.ndarray) -> dict[str, int]:
        from ..fpga.itch_decode import TYPE_CODES

        out: dict[str, int] = {}
        pos = 0
        for name, width in status:
            n = math.ceil(width / 32) if width > 64 else (2 if width > 32 else 1)
            value = 0
            for i in range(n):
                value |= int(words[pos + i]) << (32 * i)
            pos += n
            key = name.replace("counters__", "").replace("__", ".")
            if name == "counters__decode__counts":
                total = 0
                for i, code in enumerate(TYPE_CODES):
                    v = (value >> (32 * i)) & 0xFFFFFFFF
                    out[f"decode.{code}"] = v
                    total += v
                out["decode.total"] = total + out.get("decode.unknown", 0) + out.get("decode.malformed", 0)
                continue
            out[key] = value
        if "decode.unknown" in out and "decode.A" in out:     # unknown/malformed may come after counts
            from ..fpga.itch_decode import TYPE_CODES as T
            out["decode.total"] = sum(out[f"decode.{c}"] for c in T) + out["decode.unknown"] + out["decode.malformed"]
        return out

    @staticmethod
    def _latency(res: RtlResult, feed: FeedFrames, first: np.ndarray) -> None:
        """Per message type (min, max, count) of (output cycle - accept cycle of its last byte's beat)."""
        if feed.msg_frame is None or not len(feed.msg_frame):
            return
        n = len(feed.msg_frame)
        if res.messages != n:
            log.info("latency not measured: the chip emitted %d messages, the mirror expects %d", res.messages, n)
            return
        beat_idx = first[feed.msg_frame] + feed.msg_end // 8
        accept = res.beat_cycles[beat_idx].astype(np.int64)
        out_cycle = np.full(n + 1, -1, np.int64)
        if len(res.applied):
            seqs = res.applied[:, 1].astype(np.int64)
            ok = (seqs >= 1) & (seqs <= n)
            out_cycle[seqs[ok]] = res.applied[ok, 0].astype(np.int64)
        if len(res.rows):
            seqs = res.rows["seq"].astype(np.int64)
            ok = (seqs >= 1) & (seqs <= n)
            out_cycle[seqs[ok]] = res.rows["cycle"][ok].astype(np.int64)
        lat = out_cycle[1:] - accept
        have = out_cycle[1:] >= 0
        types = feed.msg_type if feed.msg_type is not None and len(feed.msg_type) == n else None
        if types is not None:
            for t in np.unique(types[have]):
                sel = have & (types == t)
                res.latency[chr(int(t))] = (int(lat[sel].min()), int(lat[sel].max()), int(sel.sum()))
        lanes = feed.msg_end % 8
        for lane in range(8):
            sel = have & (lanes == lane)
            if sel.any():
                res.latency_lanes[lane] = (int(lat[sel].min()), int(lat[sel].max()))


# --------------------------------------------------------------------------------------------- CSV

class Directory:
    """Symbol names over time, as the reference book learns them (R sets the name; H and Y set it only
    while none is known), so that ``--symbols NAME`` selects exactly the rows the model engine selects."""

    def __init__(self, messages: Iterable[bytes]):
        self._events: dict[int, list[tuple[int, str, bool]]] = {}
        for seq, m in enumerate(messages, 1):
            t = m[:1]
            if t == b"R" and len(m) >= 19:
                name, is_r = m[11:19], True
            elif t in (b"H", b"Y") and len(m) >= 19:
                name, is_r = m[11:19], False
            else:
                continue
            loc = (m[1] << 8) | m[2]
            self._events.setdefault(loc, []).append((seq, name.decode("latin-1").rstrip(), is_r))

    def name_at(self, locate: int, seq: int) -> str:
        """The name the model knows for ``locate`` after applying messages 1..seq."""
        ev = self._events.get(locate)
        if not ev:
            return ""
        k = bisect.bisect_right([e[0] for e in ev], seq)
        name = ""
        for _s, n, is_r in ev[:k]:
            if is_r or not name:
                name = n
        return name

    def names(self) -> set[str]:
        return {self.name_at(loc, 1 << 62) for loc in self._events}


def model_rows(rows: np.ndarray) -> np.ndarray:
    """The chip's rows that are rows of the CSV contract: the book also emits a row when only a symbol's
    ``degraded``/``out_of_window`` flag changes (and an all-zero flagged row for a locate refused a slot);
    the contract has a row only when the best bid or ask changes, so a row whose BBO equals the locate's
    previous one (initially all zero) is dropped."""
    if not len(rows):
        return rows
    keep = np.ones(len(rows), bool)
    last: dict[int, tuple] = {}
    bbo = np.stack([rows[n] for n in ("bid_px", "bid_sz", "ask_px", "ask_sz")], axis=1).tolist()
    for i, (loc, v) in enumerate(zip(rows["locate"].tolist(), bbo)):
        v = tuple(v)
        if last.get(loc, (0, 0, 0, 0)) == v:
            keep[i] = False
        else:
            last[loc] = v
    return rows[keep]


def csv_lines(rows: np.ndarray, select=None, directory: Directory | None = None) -> Iterable[str]:
    """CSV lines (via :func:`tickgate.model.replay.format_row`) for the chip's rows (:func:`model_rows`),
    filtered like the model's ``--symbols``."""
    from ..model.replay import format_row

    rows = model_rows(rows)
    seqs = rows["seq"].tolist()
    locs = rows["locate"].tolist()
    vals = np.stack([rows[n] for n in ("bid_px", "bid_sz", "ask_px", "ask_sz")], axis=1).tolist() if len(rows) else []
    use = select if select is not None and not select.all else None
    for s, loc, v in zip(seqs, locs, vals):
        if use is not None and not (loc in use.locates or (use.names and directory is not None
                                                           and directory.name_at(loc, s) in use.names)):
            continue
        yield format_row(s, loc, v)


# --------------------------------------------------------------------------------------------- --depth N

def check_depth(depth: int, lookup_depth: int) -> None:
    """--depth N needs N <= the lookup port's levels per side."""
    if not isinstance(depth, int) or depth < 1:
        raise ValueError(f"--depth must be a positive integer, not {depth!r}")
    if depth > lookup_depth:
        raise ValueError(f"--depth {depth}: the chip's lookup port answers the top {lookup_depth} levels per "
                         f"side (lookup_depth={lookup_depth}); use --depth {lookup_depth} or less, "
                         f"--book lookup_depth={depth} (at most the book's depth), or --engine model")


def depth_snapshots(lookups: np.ndarray, depth: int) -> np.ndarray:
    """(n, 4 * depth) int64: each lookup's top ``depth`` levels in CSV column order (bid px, bid sz, ask px,
    ask sz per level, best first; empty levels 0, 0)."""
    n = len(lookups)
    out = np.zeros((n, depth, 4), np.int64)
    out[:, :, 0:2] = lookups["bids"][:, :depth, :]
    out[:, :, 2:4] = lookups["asks"][:, :depth, :]
    return out.reshape(n, 4 * depth)


def depth_incomplete(lookups: np.ndarray, depth: int) -> np.ndarray:
    """Per lookup: a side has orders beyond its tracked levels and fewer than ``depth`` tracked levels,
    so its top ``depth`` may miss a level the model shows."""
    short_b = (lookups["bids"][:, :depth, 1] == 0).any(axis=1)
    short_a = (lookups["asks"][:, :depth, 1] == 0).any(axis=1)
    return (short_b & (lookups["bid_overflow"] != 0)) | (short_a & (lookups["ask_overflow"] != 0))


def depth_flag_counts(res: "RtlResult", depth: int) -> dict[str, int]:
    """What the lookups flagged that can make --depth rows differ from the model's (non-zero only)."""
    lk = res.lookups
    if lk is None or not len(lk):
        return {}
    out = {
        f"lookups with top {depth} incomplete (depth overflow)": int(depth_incomplete(lk, depth).sum()),
        "lookups of a locate refused a slot": int((lk["no_slot"] != 0).sum()),
        "lookups flagged degraded": int((lk["degraded"] != 0).sum()),
        "lookups flagged out_of_window": int((lk["out_of_window"] != 0).sum()),
    }
    return {k: v for k, v in out.items() if v}


def depth_lines(res: "RtlResult", depth: int, select=None, directory: Directory | None = None) -> Iterable[str]:
    """The model's ``--depth N`` CSV lines (via format_row) from the chip's lookups (``RtlParams(lookup=
    True)``): after every book message, its locate's top N levels; a row when they differ from the
    last row of that locate (initially all empty), among the selected symbols."""
    from ..model.replay import format_row

    lk = res.lookups
    if lk is None:
        raise ValueError("no lookups recorded: run with RtlParams(lookup=True)")
    check_depth(depth, lk["bids"].shape[1])
    snaps = depth_snapshots(lk, depth).tolist()
    use = select if select is not None and not select.all else None
    last: dict[int, list] = {}
    empty = [0] * (4 * depth)
    for s, loc, snap in zip(lk["seq"].tolist(), lk["locate"].tolist(), snaps):
        if use is not None and not (loc in use.locates or (use.names and directory is not None
                                                           and directory.name_at(loc, s) in use.names)):
            continue
        if snap != last.get(loc, empty):
            last[loc] = snap
            yield format_row(s, loc, snap)
