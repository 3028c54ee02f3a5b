// blocks_tb.cpp — a loader → compute pair over hls::stream_of_blocks (tests/test_stream_of_blocks.py).
//
// Built like dataflow_tb.cpp: with -DM3VIT_CSIM_FIFO -DM3VIT_LEDGER (the bounded model, one thread per
// process, the ledger) and without (the sequential, unbounded model; processes called in order).
//
// usage: blocks_tb MODE DEPTH N, DEPTH 1, 2 or 3, MODE one of
//   pair      the loader writes N blocks, compute reads N: prints "out <checksum per block>", the event log
//             "events <ev>..." (W+j/W-j: write lock of block j acquired/about to be released, R+j/R-j the
//             same for reads) and "allocated <heap blocks>"
//   overlap   as pair, but compute holds block j until the loader says (on stream 'ack') that block j+1 is
//             written: needs two blocks at once, so DEPTH 1 deadlocks
//   starve    compute reads N + 1 blocks, the loader writes N
//   leftover  the loader writes N + 1 blocks, compute reads N
//   nested    the loader takes a second write_lock while holding one
//   outside   a read_lock on an empty stream of blocks outside any region
// Exit status: 0 ok, 3 an error (message on stdout as "error: ...").
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <string>
#include <vector>

#include "m3vit_dataflow.h"
#include "m3vit_ledger.h"

const int ROWS = 256, COLS = 300;  // 300 KiB of int: a block the size of a weight slot
typedef int block_t[ROWS][COLS];

// The value the loader puts at [r][c] of block j (tests/test_stream_of_blocks.py computes the same).
inline uint32_t pattern(int j, int r, int c) {
    return (uint32_t(j) * 2654435761u) ^ (uint32_t(r * COLS + c) * 40503u + uint32_t(j));
}

std::mutex log_mutex;
std::vector<std::string> events;

void note(const char* what, int j) {
    std::lock_guard<std::mutex> lk(log_mutex);
    events.push_back(what + std::to_string(j));
}

void fill(block_t& b, int j) {
FILL_R:
    for (int r = 0; r < ROWS; r++) {
        M3VIT_LEDGER_LOOP(FILL_R, r == 0, 2);
    FILL_C:
        for (int c = 0; c < COLS; c++) {
#pragma HLS PIPELINE II = 1
            M3VIT_LEDGER_PIPELINE(FILL_C, c == 0, 1, 3);
            b[r][c] = int(pattern(j, r, c));
        }
    }
}

// Σ (r·COLS + c + 1)·block[r][c] (as uint32) mod 2^64: position-weighted, so order and placement matter.
uint64_t checksum(const block_t& b) {
    uint64_t s = 0;
SUM_R:
    for (int r = 0; r < ROWS; r++) {
        M3VIT_LEDGER_LOOP(SUM_R, r == 0, 2);
    SUM_C:
        for (int c = 0; c < COLS; c++) {
#pragma HLS PIPELINE II = 1
            M3VIT_LEDGER_PIPELINE(SUM_C, c == 0, 1, 4);
            s += uint64_t(r * COLS + c + 1) * uint32_t(b[r][c]);
        }
    }
    return s;
}

void loader(hls::stream_of_blocks<block_t>& slots, hls::stream<int>& ack, int n, bool handshake) {
LOAD:
    for (int j = 0; j < n; j++) {
        M3VIT_LEDGER_LOOP(LOAD, j == 0, 1);
        {
            hls::write_lock<block_t> slot(slots);
            note("W+", j);
            fill(slot, j);
            note("W-", j);
        }
        if (handshake && j >= 1) ack.write(j);
    }
}

void compute(hls::stream_of_blocks<block_t>& slots, hls::stream<int>& ack, uint64_t* out, int n, bool handshake) {
COMPUTE:
    for (int j = 0; j < n; j++) {
        M3VIT_LEDGER_LOOP(COMPUTE, j == 0, 1);
        hls::read_lock<block_t> slot(slots);
        note("R+", j);
        if (handshake && j + 1 < n) ack.read();  // block j+1 is written while this one is held
        out[j] = checksum(slot);
        note("R-", j);
    }
}

void nested_loader(hls::stream_of_blocks<block_t>& slots) {
    hls::write_lock<block_t> a(slots);
    hls::write_lock<block_t> b(slots);
}

void idle(hls::stream_of_blocks<block_t>&) {}

template <int D>
size_t kernel(int produced, int consumed, uint64_t* out, bool handshake) {
    hls::stream_of_blocks<block_t, D> slots;
    M3VIT_BLOCKS_NAME(slots);
    hls::stream<int> ack("ack");
    M3VIT_DATAFLOW_REGION("load_compute") {
        M3VIT_PROCESS(loader, slots, ack, produced, handshake);
        M3VIT_PROCESS(compute, slots, ack, out, consumed, handshake);
    }
    return slots.allocated();
}

template <int D>
int run(const char* mode, int n) {
    std::vector<uint64_t> out(n + 1, 0);
    size_t allocated = 0;
    M3VIT_LEDGER_LAYER(1);
    M3VIT_LEDGER_STEP("moe", -1);
    if (!std::strcmp(mode, "pair") || !std::strcmp(mode, "overlap")) {
        allocated = kernel<D>(n, n, out.data(), !std::strcmp(mode, "overlap"));
    } else if (!std::strcmp(mode, "starve")) {
        kernel<D>(n, n + 1, out.data(), false);
    } else if (!std::strcmp(mode, "leftover")) {
        kernel<D>(n + 1, n, out.data(), false);
    } else if (!std::strcmp(mode, "nested")) {
        hls::stream_of_blocks<block_t, D> slots;
        M3VIT_BLOCKS_NAME(slots);
        M3VIT_DATAFLOW_REGION("nested") {
            M3VIT_PROCESS(nested_loader, slots);
            M3VIT_PROCESS(idle, slots);
        }
    } else if (!std::strcmp(mode, "outside")) {
        hls::stream_of_blocks<block_t, D> slots;
        M3VIT_BLOCKS_NAME(slots);
        hls::read_lock<block_t> b(slots);
    } else {
        std::printf("unknown mode %s\n", mode);
        return 2;
    }
    std::printf("out");
    for (int j = 0; j < n; j++) std::printf(" %llu", (unsigned long long)out[j]);
    std::printf("\nevents");
    for (const std::string& e : events) std::printf(" %s", e.c_str());
    std::printf("\nallocated %zu\n", allocated);
#ifdef M3VIT_LEDGER
    std::printf("%s", m3vit::ledger::dump().c_str());
#endif
    return 0;
}

int main(int argc, char** argv) {
    if (argc != 4) return 2;
    const int depth = std::atoi(argv[2]), n = std::atoi(argv[3]);
    try {
        if (depth == 1) return run<1>(argv[1], n);
        if (depth == 2) return run<2>(argv[1], n);
        if (depth == 3) return run<3>(argv[1], n);
        std::printf("depth %d: 1, 2 or 3\n", depth);
        return 2;
    } catch (const std::exception& e) {
        std::printf("error: %s\n", e.what());
        return 3;
    }
}
