// m3vit_csim_api.cpp — C entry points for running the generated accelerator as a shared library
// (m3vit.sim.csim loads it with ctypes). Host-side C simulation glue, not part of the IP.
//
// Buffers cross the boundary as little-endian bytes in exactly the layouts of weight_layout.json; they
// are converted to AXI words here, so the kernels run unchanged. The weight buffer is kept between calls
// (set once) and so is the scratch buffer (read it back after a run for the layer taps).
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "m3vit_ledger.h"
#include "m3vit_top.h"

#define M3VIT_API extern "C" __attribute__((visibility("default")))

extern uint32_t m3vit_debug_expert_loads[m3vit::cfg::DEPTH][m3vit::cfg::EXPERTS];
extern uint32_t m3vit_debug_events[1 << 16];
extern uint32_t m3vit_debug_n_events;

namespace {

using m3vit::cfg::word_t;
const int WORD_BYTES = m3vit::cfg::AXI_BITS / 8;
std::vector<word_t> g_weights, g_scratch;
std::string g_error;  // why the last m3vit_csim_run returned -3

void to_words(const uint8_t* bytes, uint64_t nbytes, std::vector<word_t>& words) {
    const uint64_t n = nbytes / WORD_BYTES;
    words.resize(n);
    for (uint64_t i = 0; i < n; i++) m3vit::word_from_bytes(words[i], bytes + i * WORD_BYTES);
}

void to_bytes(const std::vector<word_t>& words, uint8_t* bytes) {
    for (size_t i = 0; i < words.size(); i++) m3vit::word_to_bytes(words[i], bytes + i * WORD_BYTES);
}

void ensure_scratch() {
    if (g_scratch.size() != m3vit::cfg::SCRATCH_WORDS) {
        g_scratch.resize(m3vit::cfg::SCRATCH_WORDS);
        for (auto& w : g_scratch) m3vit::word_clear(w);
    }
}

}  // namespace

// Version of this interface; m3vit.sim.csim refuses a library with another.
M3VIT_API int m3vit_csim_abi(void) { return 2; }

// "<design name>:<config hash>".
M3VIT_API const char* m3vit_csim_design(void) { return M3VIT_DESIGN_NAME ":" M3VIT_CONFIG_HASH; }

// Sizes in bytes: 0 weights, 1 scratch, 2 input stride per image, 3 token stride per image; 4 depth,
// 5 experts, 6 AXI word bytes, 7 whether native integer types were compiled in, 8 MAX_IMAGES, 9 tasks.
M3VIT_API uint64_t m3vit_csim_size(int what) {
    using namespace m3vit::cfg;
    switch (what) {
        case 0: return WEIGHT_WORDS * WORD_BYTES;
        case 1: return SCRATCH_WORDS * WORD_BYTES;
        case 2: return IMAGE_WORDS * WORD_BYTES;
        case 3: return TOKEN_WORDS * WORD_BYTES;
        case 4: return DEPTH;
        case 5: return EXPERTS;
        case 6: return WORD_BYTES;
#ifdef M3VIT_AP_TYPES
        case 7: return 0;
#else
        case 7: return 1;
#endif
        case 8: return MAX_IMAGES;
        case 9: return TASKS;
        default: return 0;
    }
}

// Load the packed weight buffer: a whole number of AXI words, at most m3vit_csim_size(0) bytes (a
// task-specialised image holds only its kept experts, so it is shorter). Returns 0 or -1.
M3VIT_API int m3vit_csim_set_weights(const uint8_t* bytes, uint64_t nbytes) {
    if (nbytes == 0 || nbytes % WORD_BYTES || nbytes > m3vit::cfg::WEIGHT_WORDS * WORD_BYTES) return -1;
    to_words(bytes, nbytes, g_weights);
    return 0;
}

// One call of the top function on the caller's buffers, like the IP on DDR: `input` (in_bytes) and `output`
// (out_bytes, read first and written back whole, so bytes the kernel does not write keep their values) are
// multiples of the AXI word. A call the kernel accepts needs num_images strides of size(2) (first_layer = 0)
// or size(3) input bytes and num_images × size(3) output bytes; a num_images above MAX_IMAGES is passed to
// the kernel with buffers of any size, for its guard to refuse. *status receives the kernel's status
// register. Returns 0, or -1 (no weights) / -2 (buffer sizes) / -3 (the kernel failed in C simulation,
// e.g. a dataflow deadlock: m3vit_csim_error() says why).
M3VIT_API int m3vit_csim_run(unsigned num_images, unsigned task, unsigned first_layer, unsigned last_layer,
                             const uint8_t* input, uint64_t in_bytes, uint8_t* output, uint64_t out_bytes,
                             unsigned* status) {
    using namespace m3vit::cfg;
    if (g_weights.empty()) return -1;
    const uint64_t in_stride = (first_layer == 0 ? IMAGE_WORDS : TOKEN_WORDS) * WORD_BYTES;
    const uint64_t n = num_images > unsigned(MAX_IMAGES) ? 0 : num_images;  // what an accepted call may touch
    if (in_bytes % WORD_BYTES || out_bytes % WORD_BYTES) return -2;
    if (in_bytes < n * in_stride || out_bytes < n * TOKEN_WORDS * WORD_BYTES) return -2;
    ensure_scratch();
    std::vector<word_t> in, out;
    to_words(input, in_bytes, in);
    to_words(output, out_bytes, out);
    if (in.empty()) in.resize(1);
    if (out.empty()) out.resize(1);
    g_error.clear();
    unsigned kernel_status = ~0u;
    try {
        m3vit_top(num_images, task, first_layer, last_layer, g_weights.data(), g_scratch.data(), in.data(),
                  out.data(), kernel_status);
    } catch (const std::exception& e) {
        g_error = e.what();
        return -3;
    }
    *status = kernel_status;
    if (out_bytes) {
        out.resize(out_bytes / WORD_BYTES);
        to_bytes(out, output);
    }
    return 0;
}

// Copy the scratch buffer (size(1) bytes) out, e.g. to read the layer taps after a run.
M3VIT_API void m3vit_csim_read_scratch(uint8_t* bytes) {
    ensure_scratch();
    to_bytes(g_scratch, bytes);
}

// Overwrite the scratch buffer (size(1) bytes), e.g. to run against a host-owned copy of it.
M3VIT_API void m3vit_csim_write_scratch(const uint8_t* bytes) {
    to_words(bytes, m3vit::cfg::SCRATCH_WORDS * WORD_BYTES, g_scratch);
}

// Expert weight fetches since the last reset, [DEPTH][EXPERTS] uint32; reset = 1 clears them after copying.
M3VIT_API void m3vit_csim_expert_loads(uint32_t* dst, int reset) {
    std::memcpy(dst, m3vit_debug_expert_loads, sizeof(m3vit_debug_expert_loads));
    if (reset) std::memset(m3vit_debug_expert_loads, 0, sizeof(m3vit_debug_expert_loads));
}

// The expert fetch/compute events since the last reset (block << 16 | compute << 15 | buffer << 14 |
// expert), at most `max` of them; returns how many were recorded. reset = 1 clears them.
M3VIT_API uint32_t m3vit_csim_expert_events(uint32_t* dst, uint32_t max, int reset) {
    const uint32_t n = m3vit_debug_n_events < max ? m3vit_debug_n_events : max;
    std::memcpy(dst, m3vit_debug_events, n * sizeof(uint32_t));
    if (reset) m3vit_debug_n_events = 0;
    return n;
}

// Why the last run failed (empty after a successful one).
M3VIT_API const char* m3vit_csim_error(void) { return g_error.c_str(); }

// The cycle ledger's records since the last reset (text lines, see tb/m3vit_csim_ledger.h), copied into dst
// (NUL-terminated, at most max bytes); returns the bytes it needs (without the NUL), 0 without a ledger build.
// reset = 1 clears the records after copying.
M3VIT_API uint64_t m3vit_csim_ledger(char* dst, uint64_t max, int reset) {
#ifdef M3VIT_LEDGER
    const std::string text = m3vit::ledger::dump();
    if (dst && max) {
        const uint64_t n = text.size() < max - 1 ? text.size() : max - 1;
        std::memcpy(dst, text.data(), n);
        dst[n] = 0;
    }
    if (reset) m3vit::ledger::reset();
    return text.size();
#else
    if (dst && max) dst[0] = 0;
    (void)reset;
    return 0;
#endif
}
