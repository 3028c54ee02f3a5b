// m3vit_dataflow.h — streams and DATAFLOW regions, written once for Vitis HLS and for C simulation.
//
// Synthesis (and any build without M3VIT_CSIM_FIFO): hls::stream from <hls_stream.h>, a region is a plain
// block under `#pragma HLS DATAFLOW`, a process is a plain function call.
//
// C simulation with -DM3VIT_CSIM_FIFO (m3vit.sim.csim and the project Makefile define it): hls::stream is
// the bounded, blocking FIFO of m3vit_csim_dataflow.h (a testbench-side header, never synthesised) and the
// processes of a region run concurrently, one std::thread each. A region that stops making progress fails
// with m3vit::csim::DataflowError naming the full/empty streams; so do leftover data in a stream the region
// read from and a read of an empty stream outside a running region.
//
// Usage (declare streams and everything the processes use before the region):
//
//     void pipeline(const int* in, int* out, int n) {
//         hls::stream<int> s1("s1");
//         M3VIT_STREAM_DEPTH(s1, 4);               // #pragma HLS STREAM variable = s1 depth = 4
//         M3VIT_DATAFLOW_REGION("pipeline") {      // #pragma HLS DATAFLOW
//             M3VIT_PROCESS(produce, in, s1, n);   // produce(in, s1, n)
//             M3VIT_PROCESS(consume, s1, out, n);  // consume(s1, out, n)
//         }
//     }
//
// A stream's depth is its M3VIT_STREAM_DEPTH, else its template depth (hls::stream<T, N>), else 2 (the
// depth Vitis gives an undeclared channel). Outside a region (testbench code) writes never block.
#ifndef M3VIT_DATAFLOW_H
#define M3VIT_DATAFLOW_H

#if defined(M3VIT_CSIM_FIFO) && !defined(__SYNTHESIS__)
#include "m3vit_csim_dataflow.h"
#else
#include <hls_stream.h>

#define M3VIT_PRAGMA_(text) _Pragma(#text)
// M3VIT_STREAM_DEPTH(var, n): the FIFO depth of stream `var` (the STREAM pragma; C-sim uses the same n).
#define M3VIT_STREAM_DEPTH(var, n) M3VIT_PRAGMA_(HLS STREAM variable = var depth = n)
// M3VIT_DATAFLOW_REGION(name) { ... }: the block that follows is the DATAFLOW region of the function.
#define M3VIT_DATAFLOW_REGION(name) M3VIT_PRAGMA_(HLS DATAFLOW)
// M3VIT_PROCESS(fn, args...): one process of the region, fn(args...).
#define M3VIT_PROCESS(fn, ...) fn(__VA_ARGS__)
#endif

#endif  // M3VIT_DATAFLOW_H
