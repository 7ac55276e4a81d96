// Verilator testbench of the hwprune sparse MAC array: no Python in the loop.
//
//   Vsim +mem_weights=w.hex +mem_stream=s.hex +mem_acts=a.hex +mem_desc=d.hex \
//        OUT_WORDS OUT_FILE MAX_CYCLES
//
// The memories load their images through $readmemh (plusargs).  The bench pulses start, clocks
// until done, then reads OUT_WORDS words of the output memory through the host port and writes
// them as $readmemh hex to OUT_FILE.  stdout: "cycles <n> seconds <run time>".
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "Vhwprune_top.h"
#include "verilated.h"

namespace {

int g_width = 0;  // bits of one output word (set from the port)

void emit(FILE* f, uint64_t v, int bits) {
    int digits = (bits + 3) / 4;
    std::fprintf(f, "%0*llx\n", digits, static_cast<unsigned long long>(v));
}

template <std::size_t N>
void emit(FILE* f, const VlWide<N>& v, int bits) {
    int digits = (bits + 3) / 4;
    std::string s(digits, '0');
    for (int d = 0; d < digits; ++d) {
        int bit = 4 * d;
        unsigned nib = (v[bit / 32] >> (bit % 32)) & 0xF;
        s[digits - 1 - d] = "0123456789abcdef"[nib];
    }
    std::fprintf(f, "%s\n", s.c_str());
}

}  // namespace

int main(int argc, char** argv) {
    auto ctx = std::make_unique<VerilatedContext>();
    ctx->commandArgs(argc, argv);
    std::vector<std::string> pos;
    for (int i = 1; i < argc; ++i)
        if (argv[i][0] != '+') pos.emplace_back(argv[i]);
    if (pos.size() != 4) {
        std::fprintf(stderr, "usage: %s +mem_<name>=FILE... OUT_WORDS OUT_FILE MAX_CYCLES OUT_BITS\n", argv[0]);
        return 2;
    }
    const long out_words = std::atol(pos[0].c_str());
    const std::string out_file = pos[1];
    const unsigned long long max_cycles = std::strtoull(pos[2].c_str(), nullptr, 10);
    g_width = std::atoi(pos[3].c_str());

    auto top = std::make_unique<Vhwprune_top>(ctx.get());
    auto tick = [&]() {
        top->clk = 1;
        top->eval();
        top->clk = 0;
        top->eval();
    };
    const auto t0 = std::chrono::steady_clock::now();
    top->clk = 0;
    top->start = 0;
    top->host_addr = 0;
    top->rst = 1;
    top->eval();
    tick();
    tick();
    top->rst = 0;
    tick();  // the design sees reset through a one-register synchronizer

    top->start = 1;  // cycle 0
    tick();
    top->start = 0;
    unsigned long long n = 1;
    while (!top->done) {
        if (n >= max_cycles) {
            std::fprintf(stderr, "no done after %llu cycles\n", n);
            return 3;
        }
        tick();
        ++n;
    }
    const unsigned long long cycles = top->cycles;

    FILE* f = std::fopen(out_file.c_str(), "w");
    if (!f) {
        std::perror(out_file.c_str());
        return 4;
    }
    for (long a = 0; a < out_words; ++a) {
        top->host_addr = a;
        tick();
        emit(f, top->host_data, g_width);
    }
    std::fclose(f);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("cycles %llu ticks %llu seconds %.9f\n", cycles, n, secs);
    top->final();
    return 0;
}
