// m3vit_csim_dataflow.h — C simulation only (never synthesised; the generator copies it into tb/):
// bounded, blocking hls::stream FIFOs and concurrent DATAFLOW regions. Selected by m3vit_dataflow.h when
// M3VIT_CSIM_FIFO is defined; replaces <hls_stream.h>, whose C-sim streams are unbounded queues.
//
// * hls::stream<T, D>: a FIFO of depth M3VIT_STREAM_DEPTH(var, n), else D, else 2. Inside a running region
//   write() blocks while full and read() while empty; outside one (testbench code) writes never block and
//   reading an empty stream throws.
// * M3VIT_DATAFLOW_REGION(name) { M3VIT_PROCESS(fn, args...); ... }: the processes are collected, then run
//   concurrently, one std::thread each; the region returns when all have returned.
// * Deadlock: when every unfinished process waits on a stream that nobody can fill or drain, the region
//   fails at once; when no stream transfer happens for M3VIT_DATAFLOW_TIMEOUT_S seconds (default 60; a
//   process spinning on empty()/full()), it fails too. Either way m3vit::csim::DataflowError names every
//   waiting process with its stream (name, fill/depth). Leftover data in a stream the region read from is
//   an error at the region's end. Everything runs under one mutex: C simulation favours clarity over speed.
// * hls::stream_of_blocks<B, D> (the classes of m3vit_blocks.h over BlockChannel below): exactly D heap
//   blocks; a write_lock waits while every block is written-but-unread or locked, a read_lock while none is
//   written. It takes part in the deadlock report ("stream_of_blocks 'slots' (1 written, 1 locked/2)") and
//   the leftover check (written blocks nobody read) like a stream; outside a region a lock that would wait
//   throws. m3vit_blocks.h needs src/ on the include path (the C-sim builds have -Isrc -Itb).
#ifndef M3VIT_CSIM_DATAFLOW_H
#define M3VIT_CSIM_DATAFLOW_H

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#ifdef M3VIT_LEDGER
#include "m3vit_csim_ledger.h"
#endif

namespace m3vit {
namespace csim {

// The error every dataflow check throws (C-sim entry points turn it into a failed call).
struct DataflowError : std::runtime_error {
    explicit DataflowError(const std::string& what) : std::runtime_error(what) {}
};

class Region;

namespace detail {

// Thrown inside the processes of an aborted region to unwind them; never leaves Region::run.
struct Abort {};

inline std::mutex& mutex() {
    static std::mutex m;
    return m;
}

inline std::condition_variable& cond() {
    static std::condition_variable c;
    return c;
}

// The region and process index of the calling thread (null outside a running region's processes).
struct ThreadSlot {
    Region* region;
    int index;
};

inline ThreadSlot& slot() {
    static thread_local ThreadSlot s = {nullptr, -1};
    return s;
}

inline double timeout_s() {
    const char* env = std::getenv("M3VIT_DATAFLOW_TIMEOUT_S");
    const double v = env ? std::atof(env) : 0.0;
    return v > 0 ? v : 60.0;
}

// The type-independent face of a stream, for the region's deadlock report and checks.
class StreamBase {
   public:
    virtual ~StreamBase() {}
    virtual size_t fill_locked() const = 0;
    // Whether a write would wait (a stream: fill == depth; a stream of blocks: no free block).
    virtual bool full_locked() const { return fill_locked() >= size_t(depth_); }
    // "stream 'name' (fill/depth)", for the deadlock report.
    virtual std::string describe_locked() const {
        return "stream '" + name_ + "' (" + std::to_string(fill_locked()) + "/" + std::to_string(depth_) + ")";
    }
    // What fill_locked() counts, for the leftover report.
    virtual const char* unit() const { return "item(s)"; }
    int depth() const { return depth_; }
    const std::string& name() const { return name_; }
    void set_depth_(int n, const char* var) {
        if (n < 1) throw DataflowError("stream '" + std::string(var) + "': depth must be >= 1, got " + std::to_string(n));
        depth_ = n;
        if (name_.empty()) name_ = var;
    }

   protected:
    StreamBase(const char* name, int depth) : name_(name ? name : ""), depth_(depth > 0 ? depth : 2) {}
    std::string label() const { return name_.empty() ? std::string("<unnamed stream>") : "'" + name_ + "'"; }
    std::string name_;
    int depth_;

   public:
    Region* reader_region_ = nullptr;  // the last region that read this stream (its leftover check)
};

}  // namespace detail

// One DATAFLOW region: M3VIT_DATAFLOW_REGION collects the processes, run() executes them concurrently.
class Region {
   public:
    explicit Region(const char* name) : name_(name) {}
    Region(const Region&) = delete;
    Region& operator=(const Region&) = delete;

    bool collecting() const { return !ran_; }
    void add(const char* process, std::function<void()> fn) { procs_.push_back(std::make_pair(process, std::move(fn))); }

    // Run every collected process in its own thread; throws DataflowError on deadlock, timeout, leftover
    // data or an error inside a process.
    void run() {
        ran_ = true;
        const int n = int(procs_.size());
        if (n == 0) return;
        state_.assign(n, Waiter());
        alive_ = n;
#ifdef M3VIT_LEDGER
        const ::m3vit::ledger::Context ctx = ::m3vit::ledger::context();
        ::m3vit::ledger::region_executed(ctx, name_);
#endif
        std::vector<std::thread> threads;
        threads.reserve(n);
        for (int i = 0; i < n; i++) {
            threads.emplace_back([this, i
#ifdef M3VIT_LEDGER
                                  , ctx
#endif
            ]() {
                detail::slot() = detail::ThreadSlot{this, i};
                std::string err;
                try {
#ifdef M3VIT_LEDGER
                    ::m3vit::ledger::ProcessScope scope(ctx, name_, procs_[i].first);
#endif
                    procs_[i].second();
                } catch (const detail::Abort&) {
                } catch (const std::exception& e) {
                    err = std::string(procs_[i].first) + ": " + e.what();
                } catch (...) {
                    err = std::string(procs_[i].first) + ": unknown exception";
                }
                detail::slot() = detail::ThreadSlot{nullptr, -1};
                std::lock_guard<std::mutex> lk(detail::mutex());
                state_[i].done = true;
                alive_--;
                if (!err.empty() && error_.empty()) abort_locked(err);
                if (!aborted_ && alive_ > 0 && deadlocked_locked()) abort_locked(deadlock_report_locked("deadlocked"));
                detail::cond().notify_all();
            });
        }
        {
            std::unique_lock<std::mutex> lk(detail::mutex());
            const double timeout = detail::timeout_s();
            typedef std::chrono::steady_clock clock;
            clock::time_point last = clock::now(), aborted_at = clock::time_point::max();
            uint64_t seen = progress_;
            while (alive_ > 0) {
                detail::cond().wait_for(lk, std::chrono::milliseconds(50));
                const clock::time_point now = clock::now();
                if (progress_ != seen) {
                    seen = progress_;
                    last = now;
                }
                if (!aborted_ && std::chrono::duration<double>(now - last).count() > timeout) {
                    abort_locked(deadlock_report_locked("made no progress for " + std::to_string(int(timeout)) +
                                                        " s (M3VIT_DATAFLOW_TIMEOUT_S)"));
                }
                if (aborted_ && aborted_at == clock::time_point::max()) aborted_at = now;
                if (aborted_ && std::chrono::duration<double>(now - aborted_at).count() > 5.0) {
                    // a process that neither returns nor touches a stream cannot be stopped from outside
                    std::fprintf(stderr, "m3vit C simulation: %s; a process does not stop, exiting\n", error_.c_str());
                    std::fflush(stderr);
                    std::_Exit(3);
                }
            }
        }
        for (auto& t : threads) t.join();
        if (aborted_) throw DataflowError(error_);
        std::ostringstream left;
        for (const detail::StreamBase* s : read_) {
            const size_t fill = s->fill_locked();
            if (fill) left << (left.tellp() > 0 ? ", " : "") << "'" << s->name() << "' (" << fill << " " << s->unit() << ")";
        }
        if (left.tellp() > 0)
            throw DataflowError("dataflow region '" + std::string(name_) + "' ended with data left in " + left.str());
    }

    // --- called by streams, under detail::mutex() --------------------------------------------------------
    void note_read_locked(detail::StreamBase* s) {
        if (s->reader_region_ != this) {
            s->reader_region_ = this;
            read_.push_back(s);
        }
    }

    void progress_locked() { progress_++; }

    // Wait until stream s can be written (writing) or read; throws detail::Abort if the region fails.
    void wait_locked(std::unique_lock<std::mutex>& lk, int i, detail::StreamBase* s, bool writing) {
        Waiter& w = state_[i];
        w.stream = s;
        w.writing = writing;
        w.blocked = true;
        if (!aborted_ && deadlocked_locked()) {
            abort_locked(deadlock_report_locked("deadlocked"));
            detail::cond().notify_all();
        }
        while (!aborted_ && !ready_locked(w)) detail::cond().wait(lk);
        w.blocked = false;
        if (aborted_) throw detail::Abort();
    }

    // Polling (empty(), full(), read_nb, write_nb) inside an aborted region unwinds the process.
    void check_locked() const {
        if (aborted_) throw detail::Abort();
    }

   private:
    struct Waiter {
        detail::StreamBase* stream = nullptr;
        bool writing = false, blocked = false, done = false;
    };

    static bool ready_locked(const Waiter& w) {
        return w.writing ? !w.stream->full_locked() : w.stream->fill_locked() > 0;
    }

    // Deadlock: every unfinished process waits, and no wait can be satisfied.
    bool deadlocked_locked() const {
        for (const Waiter& w : state_)
            if (!w.done && (!w.blocked || ready_locked(w))) return false;
        return true;
    }

    std::string deadlock_report_locked(const std::string& what) const {
        std::ostringstream os;
        os << "dataflow region '" << name_ << "' " << what << ":";
        bool any = false;
        for (size_t i = 0; i < state_.size(); i++) {
            const Waiter& w = state_[i];
            if (w.done || !w.blocked) continue;
            os << (any ? ";" : "") << " process " << procs_[i].first << " waits "
               << (w.writing ? "writing full " : "reading empty ") << w.stream->describe_locked();
            any = true;
        }
        for (size_t i = 0; i < state_.size(); i++)
            if (!state_[i].done && !state_[i].blocked) os << (any ? ";" : "") << " process " << procs_[i].first << " running", any = true;
        if (!any) os << " no process waits";
        return os.str();
    }

    void abort_locked(const std::string& why) {
        if (!aborted_) {
            aborted_ = true;
            error_ = why;
        }
    }

    const char* name_;
    bool ran_ = false;
    std::vector<std::pair<const char*, std::function<void()> > > procs_;
    std::vector<Waiter> state_;
    std::vector<detail::StreamBase*> read_;
    int alive_ = 0;
    bool aborted_ = false;
    std::string error_;
    uint64_t progress_ = 0;
};

}  // namespace csim
}  // namespace m3vit

namespace hls {

// hls::stream<T, D>: the C-simulation FIFO (see the file comment). Not copyable, like Vitis' stream.
// stream<T, D> derives from stream<T> (as in Vitis), so a function taking hls::stream<T>& accepts it.
template <class T, int D = 0>
class stream;

template <class T>
class stream<T, 0> : public ::m3vit::csim::detail::StreamBase {
   public:
    stream() : StreamBase(nullptr, 0) {}
    explicit stream(const char* name) : StreamBase(name, 0) {}
    stream(const stream&) = delete;
    stream& operator=(const stream&) = delete;

    void write(const T& v) {
        using namespace ::m3vit::csim;
        std::unique_lock<std::mutex> lk(detail::mutex());
        const detail::ThreadSlot s = detail::slot();
        if (s.region) {
            while (full_locked()) s.region->wait_locked(lk, s.index, this, true);
            s.region->progress_locked();
        }
        q_.push_back(v);
        detail::cond().notify_all();
    }

    T read() {
        using namespace ::m3vit::csim;
        std::unique_lock<std::mutex> lk(detail::mutex());
        const detail::ThreadSlot s = detail::slot();
        if (s.region) {
            s.region->note_read_locked(this);
            while (q_.empty()) s.region->wait_locked(lk, s.index, this, false);
            s.region->progress_locked();
        } else if (q_.empty()) {
            throw DataflowError("read from empty stream " + label() + " outside a running dataflow region");
        }
        T v = q_.front();
        q_.pop_front();
        detail::cond().notify_all();
        return v;
    }

    void read(T& v) { v = read(); }
    void operator>>(T& v) { v = read(); }
    void operator<<(const T& v) { write(v); }

    bool read_nb(T& v) {
        if (empty()) return false;
        v = read();
        return true;
    }

    bool write_nb(const T& v) {
        if (full()) return false;
        write(v);
        return true;
    }

    bool empty() const { return size() == 0; }
    bool full() const {
        std::lock_guard<std::mutex> lk(::m3vit::csim::detail::mutex());
        poll_locked();
        return full_locked();
    }
    size_t size() const {
        std::lock_guard<std::mutex> lk(::m3vit::csim::detail::mutex());
        poll_locked();
        return q_.size();
    }

    size_t fill_locked() const override { return q_.size(); }

   protected:
    stream(const char* name, int depth) : StreamBase(name, depth) {}

   private:
    void poll_locked() const {
        const ::m3vit::csim::detail::ThreadSlot s = ::m3vit::csim::detail::slot();
        if (s.region) s.region->check_locked();
    }
    std::deque<T> q_;
};

template <class T, int D>
class stream : public stream<T, 0> {
   public:
    stream() : stream<T, 0>(nullptr, D) {}
    explicit stream(const char* name) : stream<T, 0>(name, D) {}
};

}  // namespace hls

// hls::stream_of_blocks / write_lock / read_lock: the classes of m3vit_blocks.h over the bounded channel below
namespace m3vit {
namespace csim {
namespace detail {
template <class B>
class BlockChannel;
}  // namespace detail
}  // namespace csim
}  // namespace m3vit
#define M3VIT_BLOCKS_CHANNEL ::m3vit::csim::detail::BlockChannel
#include "m3vit_blocks.h"

namespace m3vit {
namespace csim {
namespace detail {

// The bounded channel of hls::stream_of_blocks<B, D> (m3vit_blocks.h builds the hls:: classes on it):
// exactly D heap blocks. Inside a running region a write_lock waits while every block is written-but-unread
// or locked, a read_lock while none is written; outside one (testbench code) either throws instead of
// waiting. fill_locked() counts written-but-unread blocks: the deadlock report and the leftover check of the
// region treat them like the items of a stream.
template <class B>
class BlockChannel : public StreamBase {
   public:
    BlockChannel(const char* name, int depth) : StreamBase(name, depth) {
        if (depth < 1) throw DataflowError(label() + ": depth must be >= 1, got " + std::to_string(depth));
    }
    BlockChannel(const BlockChannel&) = delete;
    BlockChannel& operator=(const BlockChannel&) = delete;

    void set_name_(const char* name) {
        std::lock_guard<std::mutex> lk(mutex());
        name_ = name;
    }

    size_t fill_locked() const override { return pool_.written(); }
    bool full_locked() const override { return pool_.written() + pool_.held() >= size_t(depth_); }
    std::string describe_locked() const override {
        return "stream_of_blocks '" + name_ + "' (" + std::to_string(pool_.written()) + " written, " +
               std::to_string(pool_.held()) + " locked/" + std::to_string(depth_) + ")";
    }
    const char* unit() const override { return "block(s)"; }

    B& write_acquire() {
        std::unique_lock<std::mutex> lk(mutex());
        if (pool_.writing()) throw DataflowError(label() + ": write_lock while another write_lock on it is held");
        const ThreadSlot s = slot();
        if (s.region) {
            while (full_locked()) s.region->wait_locked(lk, s.index, this, true);
            s.region->progress_locked();
        } else if (full_locked()) {
            throw DataflowError("write_lock on full " + label() + " outside a running dataflow region");
        }
        B& b = pool_.take_for_write();
        cond().notify_all();
        return b;
    }

    void write_release() {
        std::lock_guard<std::mutex> lk(mutex());
        pool_.finish_write();
        const ThreadSlot s = slot();
        if (s.region) s.region->progress_locked();
        cond().notify_all();
    }

    B& read_acquire() {
        std::unique_lock<std::mutex> lk(mutex());
        if (pool_.reading()) throw DataflowError(label() + ": read_lock while another read_lock on it is held");
        const ThreadSlot s = slot();
        if (s.region) {
            s.region->note_read_locked(this);
            while (!pool_.written()) s.region->wait_locked(lk, s.index, this, false);
            s.region->progress_locked();
        } else if (!pool_.written()) {
            throw DataflowError("read_lock on empty " + label() + " outside a running dataflow region");
        }
        B& b = pool_.take_for_read();
        cond().notify_all();
        return b;
    }

    void read_release() {
        std::lock_guard<std::mutex> lk(mutex());
        pool_.finish_read();
        const ThreadSlot s = slot();
        if (s.region) s.region->progress_locked();
        cond().notify_all();
    }

    bool empty() const {
        std::lock_guard<std::mutex> lk(mutex());
        poll_locked();
        return !pool_.written();
    }
    bool full() const {
        std::lock_guard<std::mutex> lk(mutex());
        poll_locked();
        return full_locked();
    }
    // blocks allocated so far (at most the depth)
    size_t allocated() const {
        std::lock_guard<std::mutex> lk(mutex());
        return pool_.allocated();
    }

   private:
    std::string label() const {
        return name_.empty() ? std::string("<unnamed stream_of_blocks>") : "stream_of_blocks '" + name_ + "'";
    }
    void poll_locked() const {
        const ThreadSlot s = slot();
        if (s.region) s.region->check_locked();
    }
    ::m3vit::blocks::Pool<B> pool_;
};

}  // namespace detail
}  // namespace csim
}  // namespace m3vit


// The region and process macros of m3vit_dataflow.h, C-simulation versions.
#define M3VIT_STREAM_DEPTH(var, n) (var).set_depth_((n), #var)
#define M3VIT_DATAFLOW_REGION(name) \
    for (::m3vit::csim::Region m3vit_region_(name); m3vit_region_.collecting(); m3vit_region_.run())
#define M3VIT_PROCESS(fn, ...) m3vit_region_.add(#fn, [&]() { fn(__VA_ARGS__); })

#endif  // M3VIT_CSIM_DATAFLOW_H
