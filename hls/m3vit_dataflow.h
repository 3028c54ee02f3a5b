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
//
// Streams of blocks (Vitis' hls::stream_of_blocks, UG1399): a producer process hands whole arrays ("blocks",
// e.g. an expert's weights) to a consumer process through DEPTH buffers; with the default depth 2 the
// producer fills block j+1 while the consumer reads block j (ping-pong). Written exactly as for Vitis:
//
//     typedef wgt_t slot_t[ROWS][COLS];                       // the block type is an array type
//     void loader(const word_t* w, hls::stream_of_blocks<slot_t>& slots, int n) {
//         for (int e = 0; e < n; e++) {
//             hls::write_lock<slot_t> slot(slots);            // waits for a free block
//             load_weights(w, e, slot);                       // a lock converts to slot_t&
//         }                                                   // end of scope: the block is written
//     }
//     void compute(hls::stream_of_blocks<slot_t>& slots, ..., int n) {
//         for (int e = 0; e < n; e++) {
//             hls::read_lock<slot_t> slot(slots);             // waits for the oldest written block
//             ... slot[r][c] ...
//         }                                                   // end of scope: the block is free again
//     }
//     hls::stream_of_blocks<slot_t, 2> slots;                // in the DATAFLOW function, before the region
//     M3VIT_BLOCKS_NAME(slots);                               // its name in C-sim errors (nothing in synthesis)
//
// Vitis (__VITIS_HLS__, or __SYNTHESIS__ outside the lint) gets Vitis' own <hls_streamofblocks.h>; every other
// build gets m3vit_blocks.h: a sequential, unbounded model without M3VIT_CSIM_FIFO (the producer may write all
// its blocks before the consumer runs; reading with nothing written throws), and with M3VIT_CSIM_FIFO the
// bounded model of m3vit_csim_dataflow.h (exactly DEPTH blocks, locks wait; deadlocks and leftover blocks are
// region errors naming the stream). The libclang lint (M3VIT_HLS_LINT) parses the model's declarations.
#ifndef M3VIT_DATAFLOW_H
#define M3VIT_DATAFLOW_H

#if defined(M3VIT_CSIM_FIFO) && !defined(__SYNTHESIS__)
#include "m3vit_csim_dataflow.h"
#else
#include <hls_stream.h>
#if defined(__VITIS_HLS__) || (defined(__SYNTHESIS__) && !defined(M3VIT_HLS_LINT))
#include <hls_streamofblocks.h>
#define M3VIT_BLOCKS_NAME(var) ((void)0)
#else
#include "m3vit_blocks.h"
#endif

#define M3VIT_PRAGMA_(text) _Pragma(#text)
// M3VIT_STREAM_DEPTH(var, n): the FIFO depth of stream `var` (the STREAM pragma; C-sim uses the same n).
#define M3VIT_STREAM_DEPTH(var, n) M3VIT_PRAGMA_(HLS STREAM variable = var depth = n)
// M3VIT_DATAFLOW_REGION(name) { ... }: the block that follows is the DATAFLOW region of the function.
#define M3VIT_DATAFLOW_REGION(name) M3VIT_PRAGMA_(HLS DATAFLOW)
// M3VIT_PROCESS(fn, args...): one process of the region, fn(args...).
#define M3VIT_PROCESS(fn, ...) fn(__VA_ARGS__)
#endif

#endif  // M3VIT_DATAFLOW_H
