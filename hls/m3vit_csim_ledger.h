// m3vit_csim_ledger.h — C simulation only (never synthesised; the generator copies it into tb/): the
// recorder behind the macros of m3vit_ledger.h. Selected when M3VIT_LEDGER is defined.
//
// For every (step, region, process, loop site) it keeps the number of loop entries, of iterations and the
// histogram of trip counts per entry; m3vit::ledger::dump() writes them as text lines that
// m3vit.codegen.perf.ledger parses:
//     site <id> <label> <ii> <depth> <body>          (ii 0: not pipelined)
//     region <step> <region> <executions>
//     proc <step> <region> <process>
//     loop <site id> <entries> <iterations> <trips>:<entries>,...
// fields separated by tabs. Processes of a DATAFLOW region (m3vit_csim_dataflow.h) record from their own
// threads; the hot path (one loop iteration) touches only thread-local state.
#ifndef M3VIT_CSIM_LEDGER_H
#define M3VIT_CSIM_LEDGER_H

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace m3vit {
namespace ledger {

struct Site;

// One loop site within one process: the entries that started there, their iterations and the trip count of
// each finished entry.
struct LoopRec {
    uint64_t entries = 0, iters = 0;
    std::vector<std::pair<uint64_t, uint64_t> > hist;  // (trip count, entries), few distinct values

    void add_trip(uint64_t trips) {
        iters += trips;
        for (auto& h : hist)
            if (h.first == trips) {
                h.second++;
                return;
            }
        hist.push_back(std::make_pair(trips, uint64_t(1)));
    }
};

struct Proc {
    std::deque<LoopRec> loops;  // by site id (a deque: growing it keeps references to records valid)
};

typedef std::tuple<std::string, std::string, std::string> ProcKey;  // step, region, process

const int MAX_SITES = 4096;

struct State {
    std::mutex mu;
    std::vector<const Site*> sites;
    std::map<ProcKey, std::unique_ptr<Proc> > procs;
    std::map<std::pair<std::string, std::string>, uint64_t> regions;  // (step, region) → executions
};

inline State& state() {
    static State s;
    return s;
}

struct Site {
    const char* label;
    int ii, depth, body, id;
    Site(const char* l, int i, int d, int b) : label(l), ii(i), depth(d), body(b) {
        std::lock_guard<std::mutex> lk(state().mu);
        id = int(state().sites.size());
        if (id >= MAX_SITES) {
            std::fprintf(stderr, "m3vit ledger: more than %d loop sites\n", MAX_SITES);
            std::abort();
        }
        state().sites.push_back(this);
    }
};

// The calling thread's context: step name, region, process.
struct Where {
    std::string layer = "io", kind, region;
    int index = -1;
    std::string process = "-";
    std::string step() const {
        if (kind.empty()) return layer;
        return layer + "." + kind + (index >= 0 ? std::to_string(index) : std::string());
    }
};

inline Where& where() {
    static thread_local Where w;
    return w;
}

// The running entry of every site on this thread: its iterations so far and the record it started in.
struct Counters {
    uint64_t trips[MAX_SITES];
    LoopRec* rec[MAX_SITES];
};

struct Hot {
    Proc* proc;         // the record of where(), null when where() changed
    Counters* counters; // owned by the thread
};

// initial-exec: one iteration reads it without a __tls_get_addr call (16 bytes of the static TLS reserve)
inline Hot& hot() {
    static thread_local Hot h __attribute__((tls_model("initial-exec"))) = {nullptr, nullptr};
    return h;
}

inline Proc* refresh() {
    State& s = state();
    const Where& w = where();
    std::lock_guard<std::mutex> lk(s.mu);
    std::unique_ptr<Proc>& p = s.procs[ProcKey(w.step(), w.region, w.process)];
    if (!p) p.reset(new Proc());
    hot().proc = p.get();
    return p.get();
}

inline void invalidate() { hot().proc = nullptr; }

// Finish the running entries of this thread (their trip counts go to the records they started in).
inline void flush_open() {
    Counters* c = hot().counters;
    if (!c) return;
    for (int i = 0; i < MAX_SITES; i++)
        if (c->rec[i]) {
            c->rec[i]->add_trip(c->trips[i]);
            c->rec[i] = nullptr;
            c->trips[i] = 0;
        }
}

// The first iteration of an entry of `site` (out of line: the loop's other iterations only count).
__attribute__((noinline)) inline Counters* begin_entry(const Site& site) {
    Hot& h = hot();
    if (!h.counters) h.counters = new Counters();  // value-initialised: zeros
    Proc* p = h.proc ? h.proc : refresh();
    Counters& c = *h.counters;
    const int id = site.id;
    if (c.rec[id]) c.rec[id]->add_trip(c.trips[id]);
    if (p->loops.size() <= size_t(id)) p->loops.resize(id + 1);
    c.rec[id] = &p->loops[id];
    c.rec[id]->entries++;
    c.trips[id] = 0;
    return h.counters;
}

// One iteration of the loop at `site`; `first` marks the first iteration of an entry. An entry's iterations
// count in the record (step, process) it started in.
inline void tick(const Site& site, bool first) {
    Counters* c = hot().counters;
    if (first || !c || !c->rec[site.id]) c = begin_entry(site);
    c->trips[site.id]++;
}

inline void set_layer(int layer) {
    Where& w = where();
    w.layer = layer < 0 ? std::string("io") : layer == 0 ? std::string("embed") : "block" + std::to_string(layer - 1);
    w.kind.clear();
    w.index = -1;
    invalidate();
}

inline void set_step(const char* kind, int index) {
    Where& w = where();
    w.kind = kind;
    w.index = index;
    invalidate();
}

// The step a region's processes inherit from the thread that runs the region.
struct Context {
    std::string layer, kind;
    int index;
};

inline Context context() {
    const Where& w = where();
    return Context{w.layer, w.kind, w.index};
}

inline void region_executed(const Context& c, const char* region) {
    Where tmp;
    tmp.layer = c.layer;
    tmp.kind = c.kind;
    tmp.index = c.index;
    std::lock_guard<std::mutex> lk(state().mu);
    state().regions[std::make_pair(tmp.step(), std::string(region))]++;
}

// RAII: loops run inside the scope are recorded under process `name` (and region, for dataflow threads).
class ProcessScope {
   public:
    explicit ProcessScope(const char* name) : saved_(where()) {
        where().process = name;
        invalidate();
    }
    ProcessScope(const Context& c, const char* region, const char* name) : saved_(where()), thread_(true) {
        Where& w = where();
        w.layer = c.layer;
        w.kind = c.kind;
        w.index = c.index;
        w.region = region;
        w.process = name;
        invalidate();
    }
    ~ProcessScope() {
        if (thread_) {  // a DATAFLOW process's thread ends here: finish its entries, free its state
            flush_open();
            delete hot().counters;
            hot().counters = nullptr;
        }
        // a step set inside the process stays in force for what follows (the kernels switch steps there)
        Where& w = where();
        w.region = saved_.region;
        w.process = saved_.process;
        invalidate();
    }
    ProcessScope(const ProcessScope&) = delete;
    ProcessScope& operator=(const ProcessScope&) = delete;

   private:
    Where saved_;
    bool thread_ = false;
};

// Forget every record (the sites stay registered); the next loop iteration starts a fresh ledger.
// Call it between runs, with no DATAFLOW region running.
inline void reset() {
    flush_open();
    State& s = state();
    std::lock_guard<std::mutex> lk(s.mu);
    s.procs.clear();
    s.regions.clear();
    hot().proc = nullptr;
    Where& w = where();
    w = Where();
}

// The ledger as text (see the file comment). Finishes this thread's running loop entries: call it after a run.
inline std::string dump() {
    flush_open();
    State& s = state();
    std::lock_guard<std::mutex> lk(s.mu);
    std::ostringstream os;
    for (const Site* site : s.sites)
        os << "site\t" << site->id << "\t" << site->label << "\t" << site->ii << "\t" << site->depth << "\t"
           << site->body << "\n";
    for (const auto& r : s.regions)
        os << "region\t" << r.first.first << "\t" << r.first.second << "\t" << r.second << "\n";
    for (auto& kv : s.procs) {
        os << "proc\t" << std::get<0>(kv.first) << "\t" << std::get<1>(kv.first) << "\t" << std::get<2>(kv.first)
           << "\n";
        for (size_t i = 0; i < kv.second->loops.size(); i++) {
            const LoopRec& r = kv.second->loops[i];
            if (!r.entries && !r.iters) continue;
            os << "loop\t" << i << "\t" << r.entries << "\t" << r.iters << "\t";
            for (size_t k = 0; k < r.hist.size(); k++)
                os << (k ? "," : "") << r.hist[k].first << ":" << r.hist[k].second;
            os << "\n";
        }
    }
    return os.str();
}

}  // namespace ledger
}  // namespace m3vit

#define M3VIT_LEDGER_PIPELINE(label, first, ii, depth)                          \
    do {                                                                        \
        static const ::m3vit::ledger::Site m3vit_site_(#label, (ii), (depth), 0); \
        ::m3vit::ledger::tick(m3vit_site_, (first));                            \
    } while (0)
#define M3VIT_LEDGER_LOOP(label, first, body)                                 \
    do {                                                                      \
        static const ::m3vit::ledger::Site m3vit_site_(#label, 0, 0, (body)); \
        ::m3vit::ledger::tick(m3vit_site_, (first));                          \
    } while (0)
#define M3VIT_LEDGER_LAYER(layer) ::m3vit::ledger::set_layer(int(layer))
#define M3VIT_LEDGER_STEP(kind, index) ::m3vit::ledger::set_step((kind), int(index))
#define M3VIT_LEDGER_PROCESS(name) ::m3vit::ledger::ProcessScope m3vit_ledger_process_(name)

#endif  // M3VIT_CSIM_LEDGER_H
