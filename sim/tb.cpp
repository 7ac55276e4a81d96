// Verilator testbench of the hwprune sparse MAC array: no Python in the loop.
//
//   Vsim IMAGES.bin OUT.bin MAX_CYCLES
//
// IMAGES.bin (little-endian): "HWPI", u32 version (1), u32 memory count; per memory, in the
// order of the top level's host_mem numbers: u32 words, u32 bytes per word, the words (LSB
// first); then u32 output words and u32 bytes per output word.
//
// The bench releases reset, writes every word through the host write port (one per cycle),
// pulses start, clocks until done, counting its own ticks, then reads the output memory through
// the host read port and writes the words to OUT.bin.  stdout: "cycles <design counter> ticks
// <bench count> seconds <run time>".  Exit 2: usage or image error, 3: no done within
// MAX_CYCLES, 4: cannot write OUT.bin.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "Vhwprune_top.h"
#include "verilated.h"

namespace {

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

struct Reader {
    std::vector<uint8_t> buf;
    std::size_t pos = 0;
    bool ok = true;
    uint32_t u32() {
        if (pos + 4 > buf.size()) { ok = false; return 0; }
        uint32_t v;
        std::memcpy(&v, &buf[pos], 4);
        pos += 4;
        return v;
    }
    const uint8_t* bytes(std::size_t n) {
        if (pos + n > buf.size()) { ok = false; return nullptr; }
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

}  // namespace

int main(int argc, char** argv) {
    auto ctx = std::make_unique<VerilatedContext>();
    ctx->commandArgs(argc, argv);
    if (argc != 4) {
        std::fprintf(stderr, "usage: %s IMAGES.bin OUT.bin MAX_CYCLES\n", argv[0]);
        return 2;
    }
    const unsigned long long max_cycles = std::strtoull(argv[3], nullptr, 10);
    Reader img;
    if (!read_file(argv[1], img.buf) || img.buf.size() < 12 || std::memcmp(img.buf.data(), "HWPI", 4)) {
        std::fprintf(stderr, "%s: not an hwprune image file\n", argv[1]);
        return 2;
    }
    img.pos = 4;
    if (img.u32() != 1) {
        std::fprintf(stderr, "%s: unknown image version\n", argv[1]);
        return 2;
    }

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
    top->host_we = 0;
    top->rst = 1;
    top->eval();
    tick();
    tick();
    top->rst = 0;
    tick();  // the design sees reset through a one-register synchronizer

    const uint32_t memories = img.u32();
    for (uint32_t m = 0; m < memories && img.ok; ++m) {
        const uint32_t words = img.u32(), nbytes = img.u32();
        top->host_mem = m;
        top->host_we = 1;
        for (uint32_t a = 0; a < words; ++a) {
            const uint8_t* p = img.bytes(nbytes);
            if (!p) break;
            top->host_waddr = a;
            set_bytes(top->host_wdata, p, nbytes);
            tick();
        }
        top->host_we = 0;
    }
    const uint32_t out_words = img.u32(), out_bytes = img.u32();
    if (!img.ok) {
        std::fprintf(stderr, "%s: truncated image file\n", argv[1]);
        return 2;
    }

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

    std::vector<uint8_t> out(static_cast<std::size_t>(out_words) * out_bytes);
    for (uint32_t a = 0; a < out_words; ++a) {
        top->host_addr = a;
        tick();
        get_bytes(top->host_data, &out[static_cast<std::size_t>(a) * out_bytes], out_bytes);
    }
    FILE* f = std::fopen(argv[2], "wb");
    if (!f || std::fwrite(out.data(), 1, out.size(), f) != out.size()) {
        std::perror(argv[2]);
        return 4;
    }
    std::fclose(f);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("cycles %llu ticks %llu seconds %.9f\n", cycles, n, secs);
    top->final();
    return 0;
}
