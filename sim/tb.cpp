// Verilator testbench of the hwprune sparse MAC array: a DMA engine, no Python in the loop.
//
//   Vsim PROGRAM.bin OUT.bin MAX_CYCLES
//
// PROGRAM.bin (little-endian, written by hwprune.sim.dma.program_bytes):
//   "HWPI", u32 version (2), u32 flags (bit 0: double-buffered), u32 memory count, u32 bytes
//   per word of each memory (in the order of the top level's host_mem numbers), u32 bytes per
//   output word, u32 passes; then per pass: u32 desc_base, u32 out_base; per memory: u32 words,
//   u32 base, u64 cycles, the words (LSB first); u32 output words, u32 base, u64 cycles.
//
// The bench releases reset, then runs the timeline of hwprune.schedule (PASSES.md) tick by tick
// on one in-order DMA channel:
//   single-buffered  L_0, [wait done_0] S_0, L_1, [wait done_1] S_1, ...
//   double-buffered  L_0, L_1, [wait done_0] S_0, L_2, [wait done_1] S_1, L_3, ..., S_{P-1}
// A load L_p writes every memory of pass p in host_mem order: `words` words through the host
// write port, one per cycle, in `cycles` ticks (the rest idle: DRAM bandwidth).  A store S_p
// reads its output words through the host read port (one per cycle) in `cycles` ticks.
// Compute p starts (start pulsed, desc_base/out_base given) at the first tick where L_p has
// ended and compute p-1 is done.  Ticks count from the first DMA tick to the end of the last
// store.  stdout: "ticks T seconds S", then per pass "pass START CYCLES TICKS" (start tick, the
// design's cycle counter at done, the ticks the bench counted from start to done).  OUT.bin:
// every pass's output words, in pass order.  Exit 2: usage or program error, 3: no done or no
// end within MAX_CYCLES ticks, 4: cannot write OUT.bin.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "Vhwprune_top.h"
#include "Vhwprune_top___024root.h"
#include "verilated.h"

// One eval per clock cycle.  The design is clocked on rising edges only, so the eval after the
// falling edge has nothing to compute, yet it costs Verilator's whole eval overhead (~6 % of a
// cycle).  Instead the clock stays high and, after each rising-edge eval, the trigger's record of
// the clock's previous value is set low, so the next eval sees a rising edge again.  That record
// is a Verilator internal: a Verilator without it gets the usual two evals per cycle.
template <typename Root, typename = void>
struct HasClockTrigger : std::false_type {};
template <typename Root>
struct HasClockTrigger<Root, std::void_t<decltype(std::declval<Root&>().__Vtrigprevexpr___TOP__clk__0)>>
    : std::true_type {};

template <typename Top>
inline void clock_cycle(Top& top) {
    using Root = std::remove_pointer_t<decltype(top.rootp)>;
    top.clk = 1;
    top.eval();
    if constexpr (HasClockTrigger<Root>::value) {
        top.rootp->__Vtrigprevexpr___TOP__clk__0 = 0;
    } else {
        top.clk = 0;
        top.eval();
    }
}

namespace {

constexpr uint32_t kVersion = 2;
constexpr uint32_t kDoubleBuffered = 1;

// a port from / to little-endian bytes, whatever type Verilator gave it
template <typename T>
void set_bytes(T& port, const uint8_t* p, std::size_t n) {
    T v = 0;
    std::memcpy(&v, p, n < sizeof(T) ? n : sizeof(T));
    port = v;
}

template <std::size_t N>
void set_bytes(VlWide<N>& port, const uint8_t* p, std::size_t n) {
    std::memset(port.data(), 0, 4 * N);
    std::memcpy(port.data(), p, n < 4 * N ? n : 4 * N);
}

template <typename T>
void get_bytes(const T& port, uint8_t* p, std::size_t n) {
    T v = port;
    std::memset(p, 0, n);
    std::memcpy(p, &v, n < sizeof(T) ? n : sizeof(T));
}

template <std::size_t N>
void get_bytes(const VlWide<N>& port, uint8_t* p, std::size_t n) {
    std::memset(p, 0, n);
    std::memcpy(p, port.data(), n < 4 * N ? n : 4 * N);
}

template <typename T>
constexpr std::size_t port_bytes(const T&) { return sizeof(T); }

template <std::size_t N>
constexpr std::size_t port_bytes(const VlWide<N>&) { return 4 * N; }

struct Reader {
    std::vector<uint8_t> buf;
    std::size_t pos = 0;
    bool ok = true;
    template <typename U>
    U get() {
        if (pos + sizeof(U) > buf.size()) { ok = false; return 0; }
        U v;
        std::memcpy(&v, &buf[pos], sizeof(U));
        pos += sizeof(U);
        return v;
    }
    const uint8_t* bytes(std::size_t n) {
        if (n > buf.size() - pos) { ok = false; return nullptr; }
        const uint8_t* p = &buf[pos];
        pos += n;
        return p;
    }
};

bool read_file(const char* path, std::vector<uint8_t>& out) {
    FILE* f = std::fopen(path, "rb");
    if (!f) return false;
    std::fseek(f, 0, SEEK_END);
    long size = std::ftell(f);
    std::fseek(f, 0, SEEK_SET);
    out.resize(size > 0 ? size : 0);
    bool ok = std::fread(out.data(), 1, out.size(), f) == out.size();
    std::fclose(f);
    return ok;
}

// One DMA transfer: `words` words at `base` of memory `mem` (-1: the outputs, read), taking
// `cycles` ticks.  Load transfers carry their words; a store writes into the output buffer.
struct Transfer {
    int pass;
    int mem;
    uint32_t words;
    uint32_t base;
    uint64_t cycles;
    const uint8_t* data;
    std::size_t out_offset;
};

struct Pass {
    uint32_t desc_base, out_base;
    std::vector<Transfer> loads;
    Transfer store;
};

struct Program {
    bool double_buffered = false;
    std::vector<uint32_t> word_bytes;
    uint32_t out_bytes = 0;
    std::vector<Pass> passes;
    std::size_t out_total = 0;
};

// Parse and validate PROGRAM.bin; an empty string when it is well-formed.
std::string parse_program(Reader& r, std::size_t wdata_bytes, std::size_t rdata_bytes, Program& prog) {
    if (r.buf.size() < 8 || std::memcmp(r.buf.data(), "HWPI", 4)) return "not an hwprune program file";
    r.pos = 4;
    const uint32_t version = r.get<uint32_t>();
    if (version != kVersion) return "program version " + std::to_string(version) + ", this bench reads " + std::to_string(kVersion);
    const uint32_t flags = r.get<uint32_t>();
    if (flags & ~kDoubleBuffered) return "unknown flags " + std::to_string(flags);
    prog.double_buffered = flags & kDoubleBuffered;
    const uint32_t memories = r.get<uint32_t>();
    if (!r.ok || memories == 0 || memories > 16) return "bad memory count";
    for (uint32_t m = 0; m < memories; ++m) {
        prog.word_bytes.push_back(r.get<uint32_t>());
        if (prog.word_bytes.back() == 0 || prog.word_bytes.back() > wdata_bytes) return "memory " + std::to_string(m) + ": bad word size";
    }
    prog.out_bytes = r.get<uint32_t>();
    if (prog.out_bytes == 0 || prog.out_bytes > rdata_bytes) return "bad output word size";
    const uint32_t passes = r.get<uint32_t>();
    if (!r.ok || passes == 0) return "no passes";
    for (uint32_t p = 0; p < passes && r.ok; ++p) {
        Pass ps;
        ps.desc_base = r.get<uint32_t>();
        ps.out_base = r.get<uint32_t>();
        for (uint32_t m = 0; m < memories && r.ok; ++m) {
            Transfer t{static_cast<int>(p), static_cast<int>(m), r.get<uint32_t>(), r.get<uint32_t>(), r.get<uint64_t>(), nullptr, 0};
            if (t.cycles < t.words) return "pass " + std::to_string(p) + ": a load takes fewer cycles than words";
            t.data = r.bytes(static_cast<std::size_t>(t.words) * prog.word_bytes[m]);
            ps.loads.push_back(t);
        }
        ps.store = Transfer{static_cast<int>(p), -1, r.get<uint32_t>(), r.get<uint32_t>(), r.get<uint64_t>(), nullptr, prog.out_total};
        if (ps.store.words == 0 || ps.store.cycles < ps.store.words) return "pass " + std::to_string(p) + ": bad store";
        prog.out_total += static_cast<std::size_t>(ps.store.words) * prog.out_bytes;
        prog.passes.push_back(std::move(ps));
    }
    if (!r.ok) return "truncated program file";
    if (r.pos != r.buf.size()) return "trailing bytes after the last pass";
    return "";
}

// The DMA channel's transfers in program order (the timeline of PASSES.md).
std::vector<const Transfer*> dma_order(const Program& prog) {
    std::vector<const Transfer*> order;
    const std::size_t n = prog.passes.size();
    auto load = [&](std::size_t p) { for (const auto& t : prog.passes[p].loads) order.push_back(&t); };
    if (!prog.double_buffered) {
        for (std::size_t p = 0; p < n; ++p) { load(p); order.push_back(&prog.passes[p].store); }
        return order;
    }
    load(0);
    for (std::size_t p = 0; p < n; ++p) {
        if (p + 1 < n) load(p + 1);
        order.push_back(&prog.passes[p].store);
    }
    return order;
}

struct PassResult {
    unsigned long long start = 0, cycles = 0, ticks = 0;
};

}  // namespace

int main(int argc, char** argv) {
    auto ctx = std::make_unique<VerilatedContext>();
    ctx->commandArgs(argc, argv);
    if (argc != 4) {
        std::fprintf(stderr, "usage: %s PROGRAM.bin OUT.bin MAX_CYCLES\n", argv[0]);
        return 2;
    }
    const unsigned long long max_cycles = std::strtoull(argv[3], nullptr, 10);
    auto top = std::make_unique<Vhwprune_top>(ctx.get());
    Reader img;
    Program prog;
    if (!read_file(argv[1], img.buf)) {
        std::fprintf(stderr, "%s: cannot read\n", argv[1]);
        return 2;
    }
    const std::string err = parse_program(img, port_bytes(top->host_wdata), port_bytes(top->host_data), prog);
    if (!err.empty()) {
        std::fprintf(stderr, "%s: %s\n", argv[1], err.c_str());
        return 2;
    }

    auto tick = [&]() { clock_cycle(*top); };
    const auto t0 = std::chrono::steady_clock::now();
    top->clk = 0;
    top->start = 0;
    top->host_addr = 0;
    top->host_we = 0;
    top->rst = 1;
    top->eval();
    tick();
    tick();
    top->rst = 0;
    tick();  // the design sees reset through a one-register synchronizer

    const std::size_t passes = prog.passes.size();
    const std::vector<const Transfer*> order = dma_order(prog);
    std::vector<uint8_t> out(prog.out_total);
    std::vector<PassResult> res(passes);
    std::vector<uint64_t> loads_left(passes);  // load transfers of each pass not yet finished
    for (std::size_t p = 0; p < passes; ++p) loads_left[p] = prog.passes[p].loads.size();
    std::size_t next = 0, computed = 0;  // next pass to start, passes done
    bool running = false;
    std::size_t dma = 0;                 // current transfer in `order`
    uint64_t k = 0;                      // ticks spent in it
    unsigned long long t = 0;

    // finish transfers that take no tick (a memory the pass reuses)
    auto settle = [&]() {
        while (dma < order.size() && order[dma]->cycles == 0) {
            if (order[dma]->mem >= 0) --loads_left[order[dma]->pass];
            ++dma;
        }
    };
    settle();
    while (dma < order.size()) {
        if (t >= max_cycles) {
            std::fprintf(stderr, "no end after %llu cycles (pass %zu of %zu computing)\n", t, next, passes);
            return 3;
        }
        const Transfer& x = *order[dma];
        const bool store = x.mem < 0;
        // compute: start pass `next` once its words are in and the array is free
        if (!running && next < passes && loads_left[next] == 0) {
            top->desc_base = prog.passes[next].desc_base;
            top->out_base = prog.passes[next].out_base;
            top->start = 1;
            running = true;
            res[next].start = t;
        }
        // a store waits for its pass's done; meanwhile only the array works
        const bool waiting = store && computed <= static_cast<std::size_t>(x.pass);
        if (waiting && running && !top->start) {
            unsigned long long n = res[next].ticks;
            while (!top->done && t < max_cycles) { tick(); ++t; ++n; }
            res[next].ticks = n;
        } else {
            if (!waiting && k < x.words) {
                if (store) {
                    top->host_addr = x.base + static_cast<uint32_t>(k);
                } else {
                    top->host_we = 1;
                    top->host_mem = x.mem;
                    top->host_waddr = x.base + static_cast<uint32_t>(k);
                    set_bytes(top->host_wdata, x.data + k * prog.word_bytes[x.mem], prog.word_bytes[x.mem]);
                }
            }
            tick();
            ++t;
            top->start = 0;
            top->host_we = 0;
            if (running) ++res[next].ticks;
            if (!waiting) {
                if (store && k < x.words)
                    get_bytes(top->host_data, &out[x.out_offset + k * prog.out_bytes], prog.out_bytes);
                if (++k == x.cycles) {
                    if (!store) --loads_left[x.pass];
                    ++dma;
                    k = 0;
                    settle();
                }
            }
        }
        if (running && top->done) {
            res[next].cycles = top->cycles;
            running = false;
            ++next;
            ++computed;
        }
    }

    FILE* f = std::fopen(argv[2], "wb");
    if (!f || std::fwrite(out.data(), 1, out.size(), f) != out.size()) {
        std::perror(argv[2]);
        return 4;
    }
    std::fclose(f);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("ticks %llu seconds %.9f\n", t, secs);
    for (const auto& r : res) std::printf("pass %llu %llu %llu\n", r.start, r.cycles, r.ticks);
    top->final();
    return 0;
}
