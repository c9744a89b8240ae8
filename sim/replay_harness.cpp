// Bulk replay harness for the verilated MarketDataTop (tickgate.sim.rtl_replay builds and runs it).
//
// No Python in the per-cycle loop: the input beats come from a file, the outputs go to files.
// Two evals a cycle in the main loop: the falling edge with the cycle's inputs, then the rising edge
// (a separate falling-edge eval cost ~11% more instructions: every eval re-runs the input-driven logic).
//
//   replay BEATS OUTDIR WARMUP IDLE_PPM BACKPRESSURE_PPM SEED REGS MAX_CYCLES LOOKUPS LOOKUP_DELAY
//
// BEATS: packed records {u64 tdata (lane 0 = bits 0..7), u8 tkeep, u8 tlast, u16 idle}, little endian;
//   `idle` cycles with tvalid low precede the beat. IDLE_PPM adds, before each beat, one random idle
//   cycle at a time with that probability (per million; repeated while the draw says idle).
//   BACKPRESSURE_PPM: per cycle, m_axis_tready is low with that probability.
//   REGS: a text file of "index value" lines setting register inputs (FOREACH_REG order) before reset.
//   LOOKUPS: "-" (no lookups) or a file of u32 per chip seq (seq 1 first): the locate to look up when that
//   message's `applied` strobe comes (0xFFFFFFFF: none). The lookup is issued LOOKUP_DELAY cycles after the
//   strobe (0: in the strobe's cycle), at most one a cycle, in order.
// Outputs in OUTDIR:
//   beats.bin    u64 per input beat: the cycle it was accepted
//   tob.bin      per m_axis transfer: u64 cycle, then TDATA_WORDS u32 words of m_axis_tdata
//   applied.bin  per applied strobe (when the top has one): u64 cycle, u64 applied_seq
//   lookup.bin   per lookup answer: u64 issue cycle, u64 answer cycle, u64 seq, then LOOKUP_WORDS u32
//                words of lookup.result
//   status.bin   u32 words of every status/counter port at the end, in FOREACH_STATUS order
//   run.txt      "cycles N\nseconds S\n"
// The generated replay_config.h names the top class and lists its status ports.

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "verilated.h"
#include "replay_config.h"

namespace {

#pragma pack(push, 1)
struct Beat {
    uint64_t data;
    uint8_t keep;
    uint8_t last;
    uint16_t idle;
};
#pragma pack(pop)
static_assert(sizeof(Beat) == 12, "beat record is 12 bytes");

struct Rng {  // xorshift64*: reproducible idle/backpressure patterns
    uint64_t s;
    explicit Rng(uint64_t seed) : s(seed ? seed : 0x9E3779B97F4A7C15ull) {}
    uint32_t next_ppm() {
        s ^= s >> 12; s ^= s << 25; s ^= s >> 27;
        return (uint32_t)(((s * 0x2545F4914F6CDD1Dull) >> 32) % 1000000u);
    }
};

template <typename T>
void put(std::vector<uint32_t>& out, const T& v, int width) {
    uint64_t x = (uint64_t)v;
    out.push_back((uint32_t)x);
    if (width > 32) out.push_back((uint32_t)(x >> 32));
}

template <std::size_t N>
void put(std::vector<uint32_t>& out, const VlWide<N>& v, int) {
    for (std::size_t i = 0; i < N; ++i) out.push_back(v[i]);
}

template <typename T>
bool write_all(const std::string& path, const std::vector<T>& v) {
    FILE* f = std::fopen(path.c_str(), "wb");
    if (!f) return false;
    bool ok = v.empty() || std::fwrite(v.data(), sizeof(T), v.size(), f) == v.size();
    return std::fclose(f) == 0 && ok;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 11) {
        std::fprintf(stderr, "usage: %s BEATS OUTDIR WARMUP IDLE_PPM BACKPRESSURE_PPM SEED REGS MAX_CYCLES "
                     "LOOKUPS LOOKUP_DELAY\n", argv[0]);
        return 2;
    }
    const std::string beats_path = argv[1], outdir = argv[2];
    const uint64_t warmup = std::strtoull(argv[3], nullptr, 10);
    const uint32_t idle_ppm = (uint32_t)std::strtoul(argv[4], nullptr, 10);
    const uint32_t bp_ppm = (uint32_t)std::strtoul(argv[5], nullptr, 10);
    const uint64_t seed = std::strtoull(argv[6], nullptr, 10);
    const std::string regs_path = argv[7];
    const uint64_t max_cycles = std::strtoull(argv[8], nullptr, 10);
    const std::string lookups_path = argv[9];
    const uint64_t lookup_delay = std::strtoull(argv[10], nullptr, 10);

    std::vector<Beat> beats;
    {
        FILE* f = std::fopen(beats_path.c_str(), "rb");
        if (!f) { std::perror(beats_path.c_str()); return 2; }
        std::fseek(f, 0, SEEK_END);
        long size = std::ftell(f);
        std::fseek(f, 0, SEEK_SET);
        if (size < 0 || size % (long)sizeof(Beat)) { std::fprintf(stderr, "bad beats file size\n"); return 2; }
        beats.resize((std::size_t)size / sizeof(Beat));
        if (!beats.empty() && std::fread(beats.data(), sizeof(Beat), beats.size(), f) != beats.size()) {
            std::fprintf(stderr, "short read\n");
            return 2;
        }
        std::fclose(f);
    }

    std::vector<uint32_t> lookup_locs;  // [seq - 1]
    if (lookups_path != "-") {
        FILE* f = std::fopen(lookups_path.c_str(), "rb");
        if (!f) { std::perror(lookups_path.c_str()); return 2; }
        std::fseek(f, 0, SEEK_END);
        long size = std::ftell(f);
        std::fseek(f, 0, SEEK_SET);
        if (size < 0 || size % 4) { std::fprintf(stderr, "bad lookups file size\n"); return 2; }
        lookup_locs.resize((std::size_t)size / 4);
        if (!lookup_locs.empty() &&
            std::fread(lookup_locs.data(), 4, lookup_locs.size(), f) != lookup_locs.size()) {
            std::fprintf(stderr, "short read\n");
            return 2;
        }
        std::fclose(f);
    }

    auto ctx = std::make_unique<VerilatedContext>();
    ctx->randReset(0);
    auto top = std::make_unique<TOP_CLASS>(ctx.get());

    std::vector<uint64_t> beat_cycles;
    beat_cycles.reserve(beats.size());
    std::vector<uint32_t> tob;
    std::vector<uint64_t> applied;
    std::vector<uint32_t> lookups;
    struct Pending { uint64_t due, seq; uint32_t locate; };
    std::deque<Pending> to_issue;                 // lookups waiting for their cycle
    std::deque<std::pair<uint64_t, uint64_t>> in_flight;   // (issue cycle, seq), answered in order
    Rng idle_rng(seed * 2 + 1), bp_rng(seed * 2 + 2);

    uint64_t cycle = 0;
    auto tick = [&]() {
        top->clk = 1;
        top->eval();
        top->clk = 0;
        top->eval();
        ++cycle;
    };

    top->clk = 0;
    top->rst = 1;
    top->s_axis_tvalid = 0;
    top->m_axis_tready = 1;
    {
        FILE* f = std::fopen(regs_path.c_str(), "r");
        if (!f) { std::perror(regs_path.c_str()); return 2; }
        unsigned long long index, value;
        while (std::fscanf(f, "%llu %llu", &index, &value) == 2) {
            switch (index) {
#define TG_REG(i, name) case i: top->name = value; break;
                FOREACH_REG(TG_REG)
#undef TG_REG
                default: std::fprintf(stderr, "unknown register %llu\n", index); return 2;
            }
        }
        std::fclose(f);
    }
    top->gap_clear = 0;
    top->LOOKUP_VALID = 0;
    top->eval();
    for (int i = 0; i < 4; ++i) tick();
    top->rst = 0;
    top->eval();
    for (uint64_t i = 0; i < warmup; ++i) tick();
    cycle = 0;  // cycle 0: the first cycle a beat may be offered

    const auto t0 = std::chrono::steady_clock::now();
    std::size_t next = 0;       // next beat to offer
    uint64_t idle_left = beats.empty() ? 0 : beats[0].idle;
    bool offering = false;
    uint64_t quiet = 0;
    const uint64_t QUIET_END = 256;
    bool timed_out = false;

    while (true) {
        // Inputs for this cycle.
        if (!offering && next < beats.size()) {
            if (idle_left) {
                --idle_left;
            } else if (idle_ppm && idle_rng.next_ppm() < idle_ppm) {
                // one random idle cycle
            } else {
                offering = true;
                const Beat& b = beats[next];
                top->s_axis_tdata = b.data;
                top->s_axis_tkeep = b.keep;
                top->s_axis_tlast = b.last;
            }
        }
        top->s_axis_tvalid = offering;
        top->m_axis_tready = !(bp_ppm && bp_rng.next_ppm() < bp_ppm);
        top->LOOKUP_VALID = 0;
        top->clk = 0;  // the falling edge and this cycle's inputs in one eval (no logic on the falling edge)
        top->eval();

        // Handshakes at this rising edge.
        if (offering && top->s_axis_tready) {
            beat_cycles.push_back(cycle);
            offering = false;
            ++next;
            if (next < beats.size()) idle_left = beats[next].idle;
        }
        bool active = top->m_axis_tvalid;
        if (top->m_axis_tvalid && top->m_axis_tready) {
            tob.push_back((uint32_t)cycle);
            tob.push_back((uint32_t)(cycle >> 32));
            put(tob, top->m_axis_tdata, TDATA_BITS);
        }
#if HAS_APPLIED
        if (top->applied) {
            active = true;
            applied.push_back(cycle);
#if HAS_APPLIED_SEQ
            applied.push_back((uint64_t)top->applied_seq);
#else
            applied.push_back(0);
#endif
#if HAS_APPLIED_SEQ
            const uint64_t seq = (uint64_t)top->applied_seq;
            if (seq >= 1 && seq <= lookup_locs.size() && lookup_locs[seq - 1] != 0xFFFFFFFFu)
                to_issue.push_back({cycle + lookup_delay, seq, lookup_locs[seq - 1]});
#endif
        }
#endif
        if (top->LOOKUP_RESULT_VALID) {
            active = true;
            if (in_flight.empty()) {
                std::fprintf(stderr, "lookup answer at cycle %llu with no lookup in flight\n",
                             (unsigned long long)cycle);
                return 3;
            }
            lookups.push_back((uint32_t)in_flight.front().first);
            lookups.push_back((uint32_t)(in_flight.front().first >> 32));
            lookups.push_back((uint32_t)cycle);
            lookups.push_back((uint32_t)(cycle >> 32));
            lookups.push_back((uint32_t)in_flight.front().second);
            lookups.push_back((uint32_t)(in_flight.front().second >> 32));
            put(lookups, top->LOOKUP_RESULT, LOOKUP_BITS);
            in_flight.pop_front();
        }
        if (!to_issue.empty() && to_issue.front().due <= cycle) {
            // inputs of this cycle, sampled at the coming edge (its eval settles them first)
            top->LOOKUP_VALID = 1;
            top->LOOKUP_LOCATE = to_issue.front().locate;
            in_flight.emplace_back(cycle, to_issue.front().seq);
            to_issue.pop_front();
        }
        if (!to_issue.empty() || !in_flight.empty()) active = true;
        top->clk = 1;  // the rising edge
        top->eval();
        ++cycle;

        if (next >= beats.size()) {
            quiet = active ? 0 : quiet + 1;
            if (quiet >= QUIET_END) break;
        }
        if (max_cycles && cycle >= max_cycles) { timed_out = true; break; }
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    std::vector<uint32_t> status;
#define TG_PUT(name, width) put(status, top->name, width);
    FOREACH_STATUS(TG_PUT)
#undef TG_PUT

    bool ok = write_all(outdir + "/beats.bin", beat_cycles) && write_all(outdir + "/tob.bin", tob) &&
              write_all(outdir + "/applied.bin", applied) && write_all(outdir + "/lookup.bin", lookups) &&
              write_all(outdir + "/status.bin", status);
    FILE* f = std::fopen((outdir + "/run.txt").c_str(), "w");
    if (!f) return 2;
    std::fprintf(f, "cycles %llu\nseconds %.6f\ntimed_out %d\nbeats_accepted %llu\n",
                 (unsigned long long)cycle, seconds, timed_out ? 1 : 0, (unsigned long long)beat_cycles.size());
    std::fclose(f);
    top->final();
    return ok ? 0 : 2;
}
