// dataflow_tb.cpp — a small hand-written DATAFLOW kernel and its C-simulation driver (tests/test_dataflow.py).
//
// Built twice: with -DM3VIT_CSIM_FIFO -DM3VIT_LEDGER (bounded FIFOs, one thread per process, the ledger)
// and without (hls4ml's unbounded hls::stream, the processes called in sequence, as Vitis C simulation does).
//
// usage: dataflow_tb MODE N, MODE one of
//   ok         split → join with stream b as deep as join needs (N - 1): prints "out <values>"
//   shallow    the same kernel with b two items too shallow: deadlock
//   leftover   the consumer reads one item less than the producer writes
//   starve     the consumer reads one item more than the producer writes (inside the region)
//   after      reads a stream again after its region ended
//   spin       a consumer polling empty() on a stream nobody writes (only the timeout can stop it)
//   template   a stream with a template depth (hls::stream<int, 2>) too shallow for the kernel
// Exit status: 0 ok, 3 DataflowError (message on stdout as "error: ...").
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <vector>

#include "m3vit_dataflow.h"
#include "m3vit_ledger.h"

// split: a[i] = in[i], b[i] = 3·in[i], interleaved (a before b for every i).
void split(const int* in, hls::stream<int>& a, hls::stream<int>& b, int n) {
SPLIT:
    for (int i = 0; i < n; i++) {
#pragma HLS PIPELINE II = 1
        M3VIT_LEDGER_PIPELINE(SPLIT, i == 0, 1, 3);
        a.write(in[i]);
        b.write(3 * in[i]);
    }
}

// join: reads all of a first (their sum), then out[i] = b[i] + sum; so b must hold N - 1 items.
void join(hls::stream<int>& a, hls::stream<int>& b, int* out, int n) {
    int sum = 0;
JOIN_SUM:
    for (int i = 0; i < n; i++) {
#pragma HLS PIPELINE II = 1
        M3VIT_LEDGER_PIPELINE(JOIN_SUM, i == 0, 1, 2);
        sum += a.read();
    }
JOIN_OUT:
    for (int i = 0; i < n; i++) {
#pragma HLS PIPELINE II = 1
        M3VIT_LEDGER_PIPELINE(JOIN_OUT, i == 0, 1, 4);
        out[i] = b.read() + sum;
    }
}

// the region; B_DEPTH is the FIFO depth of b (the STREAM pragma in synthesis)
template <int B_DEPTH>
void kernel(const int* in, int* out, int n) {
    hls::stream<int> a("a"), b("b");
    M3VIT_STREAM_DEPTH(a, 2);
    M3VIT_STREAM_DEPTH(b, B_DEPTH);
    M3VIT_DATAFLOW_REGION("split_join") {
        M3VIT_PROCESS(split, in, a, b, n);
        M3VIT_PROCESS(join, a, b, out, n);
    }
}

void produce(hls::stream<int>& s, int n) {
    for (int i = 0; i < n; i++) s.write(i);
}

void consume(hls::stream<int>& s, int* out, int n) {
    for (int i = 0; i < n; i++) out[i] = s.read();
}

void spin(hls::stream<int>& s, int* out) {
    while (s.empty()) {
    }
    out[0] = s.read();
}

void idle(hls::stream<int>&) {}

// a producer → consumer region whose counts may disagree
void mismatch(int* out, int produced, int consumed) {
    hls::stream<int> s("s");
    M3VIT_STREAM_DEPTH(s, 64);
    M3VIT_DATAFLOW_REGION("mismatch") {
        M3VIT_PROCESS(produce, s, produced);
        M3VIT_PROCESS(consume, s, out, consumed);
    }
}

#ifdef M3VIT_CSIM_FIFO
// the same split → join with the depth of b from its type
void kernel_template_depth(const int* in, int* out, int n) {
    hls::stream<int> a("a");
    hls::stream<int, 2> b("b");
    M3VIT_STREAM_DEPTH(a, 2);
    M3VIT_DATAFLOW_REGION("split_join_template") {
        M3VIT_PROCESS(split, in, a, b, n);
        M3VIT_PROCESS(join, a, b, out, n);
    }
}
#endif

int run(const char* mode, int n) {
    std::vector<int> in(n), out(n + 1, 0);
    for (int i = 0; i < n; i++) in[i] = 7 * i - 5;
    if (!std::strcmp(mode, "ok") || !std::strcmp(mode, "shallow")) {
        M3VIT_LEDGER_LAYER(1);
        M3VIT_LEDGER_STEP("attn", -1);
        if (!std::strcmp(mode, "ok"))
            kernel<15>(in.data(), out.data(), n);  // the tests use N = 16
        else
            kernel<13>(in.data(), out.data(), n);
        std::printf("out");
        for (int i = 0; i < n; i++) std::printf(" %d", out[i]);
        std::printf("\n");
#ifdef M3VIT_LEDGER
        std::printf("%s", m3vit::ledger::dump().c_str());
#endif
    } else if (!std::strcmp(mode, "leftover")) {
        mismatch(out.data(), n, n - 1);
    } else if (!std::strcmp(mode, "starve")) {
        mismatch(out.data(), n - 1, n);
    } else if (!std::strcmp(mode, "after")) {
        hls::stream<int> s("s");
        M3VIT_STREAM_DEPTH(s, 64);
        M3VIT_DATAFLOW_REGION("exact") {
            M3VIT_PROCESS(produce, s, n);
            M3VIT_PROCESS(consume, s, out.data(), n);
        }
        std::printf("region ok\n");
        out[0] = s.read();
    } else if (!std::strcmp(mode, "spin")) {
        hls::stream<int> s("never_written");
        M3VIT_DATAFLOW_REGION("spin") {
            M3VIT_PROCESS(idle, s);
            M3VIT_PROCESS(spin, s, out.data());
        }
    } else if (!std::strcmp(mode, "template")) {
#ifdef M3VIT_CSIM_FIFO
        kernel_template_depth(in.data(), out.data(), n);
#endif
    } else {
        std::printf("unknown mode %s\n", mode);
        return 2;
    }
    return 0;
}

int main(int argc, char** argv) {
    if (argc != 3) return 2;
    try {
        return run(argv[1], std::atoi(argv[2]));
    } catch (const std::exception& e) {
        std::printf("error: %s\n", e.what());
        return 3;
    }
}
