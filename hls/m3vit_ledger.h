// m3vit_ledger.h — trip-count instrumentation of the kernels' loops for the cycle ledger.
//
// Every labelled loop carries one macro as the first statement of its body, right under its pragmas:
//
//     MAC_IT:
//         for (int it = 0; it < it_n; it++) {
//     #pragma HLS PIPELINE II = 1
//             M3VIT_LEDGER_PIPELINE(MAC_IT, it == 0, 1, 10);  // label, first iteration, II, pipeline depth
//
//     MAC_T:
//         for (int t = 0; t < nt; t++) {
//             M3VIT_LEDGER_LOOP(MAC_T, t == 0, 36);  // label, first iteration, cycles of one iteration
//                                                    // outside the instrumented loops it contains
//
// II and depth are the schedule the code declares (the PIPELINE pragma's II) and an estimate of the
// pipeline depth; `body` estimates a non-pipelined iteration's own cycles (loop control, straight-line code,
// unrolled loops). M3VIT_LEDGER_LAYER / M3VIT_LEDGER_STEP name the top-level step the following loops
// belong to (the step names of m3vit.codegen.perf), M3VIT_LEDGER_PROCESS the process (a stage function).
//
// Synthesis and ordinary builds: every macro compiles to nothing. C simulation with -DM3VIT_LEDGER
// (m3vit.sim.csim defines it): m3vit_csim_ledger.h (testbench side, never synthesised) records the
// executed trip count of every loop entry; m3vit.codegen.perf.ledger turns them into cycles.
#ifndef M3VIT_LEDGER_H
#define M3VIT_LEDGER_H

#if defined(M3VIT_LEDGER) && !defined(__SYNTHESIS__)
#include "m3vit_csim_ledger.h"
#else
#define M3VIT_LEDGER_PIPELINE(label, first, ii, depth) ((void)0)
#define M3VIT_LEDGER_LOOP(label, first, body) ((void)0)
#define M3VIT_LEDGER_LAYER(layer) ((void)0)
#define M3VIT_LEDGER_STEP(kind, index) ((void)0)
#define M3VIT_LEDGER_PROCESS(name) ((void)0)
#endif

#endif  // M3VIT_LEDGER_H
