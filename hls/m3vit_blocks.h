// m3vit_blocks.h — hls::stream_of_blocks, hls::write_lock and hls::read_lock for every build without Vitis HLS
// (g++ C simulation over hls4ml's headers, the libclang lint). Included by m3vit_dataflow.h, never by
// kernels directly; Vitis builds (__VITIS_HLS__, or __SYNTHESIS__ outside the lint) use Vitis' own
// <hls_streamofblocks.h> instead, so this file is never synthesised and never meets Vitis' definitions.
//
// The API is Vitis' (UG1399, "Specifying Arrays as Stream-of-Blocks"): the block type is an array type,
//     typedef int block_t[N][M];
//     hls::stream_of_blocks<block_t, 2> s;          // 2 blocks (the default); pass it as stream_of_blocks<block_t>&
//     { hls::write_lock<block_t> b(s); b[i][j] = v; }  // acquires a free block; released (written) at scope end
//     { hls::read_lock<block_t> b(s); v = b[i][j]; }   // acquires the oldest written block; freed at scope end
//     s.empty(), s.full()                              // whether a read_lock / write_lock would wait
// A lock converts to `block_t&`, so it can be indexed or passed to a function taking the array.
// M3VIT_BLOCKS_NAME(s) names the stream in C-simulation error messages (nothing in synthesis; Vitis'
// constructor takes no portable name).
//
// Which model implements it is M3VIT_BLOCKS_CHANNEL, a class template over the block type:
// * default — the sequential model below (processes run one after another, as in Vitis' C simulation): an
//   unbounded queue; a write_lock takes a freed block or allocates one on the heap, so a producer may write
//   all its blocks before the consumer runs. A read_lock with no written block throws
//   m3vit::blocks::BlocksError naming the stream.
// * M3VIT_CSIM_FIFO — m3vit_csim_dataflow.h defines it as its bounded channel: exactly DEPTH blocks, locks
//   that wait inside a running DATAFLOW region, deadlock and leftover reports (see that file).
// Both models reject a second lock of the same kind on one stream while the first is held (Vitis forbids
// nested acquires) and keep every block on the heap (blocks are large: a weight slot is hundreds of KiB).
#ifndef M3VIT_BLOCKS_H
#define M3VIT_BLOCKS_H

#include <cstddef>
#include <deque>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace m3vit {
namespace blocks {

// The error of the sequential model (a read with nothing to read, a nested lock).
struct BlocksError : std::runtime_error {
    explicit BlocksError(const std::string& what) : std::runtime_error(what) {}
};

// One heap block (value-initialised: zeros when new; a reused block keeps its old contents, as in hardware).
template <class B>
struct Box {
    B data;
};

// The block bookkeeping both models share: a pool of heap blocks, the written ones in FIFO order, the free
// ones, and the block each lock holds. Not thread-safe; the bounded model calls it under its mutex.
template <class B>
class Pool {
   public:
    size_t written() const { return written_.size(); }
    size_t held() const { return size_t(writing_) + size_t(reading_); }
    size_t allocated() const { return store_.size(); }
    bool writing() const { return writing_; }
    bool reading() const { return reading_; }

    B& take_for_write() {
        size_t slot;
        if (!free_.empty()) {
            slot = free_.back();
            free_.pop_back();
        } else {
            slot = store_.size();
            store_.emplace_back(new Box<B>());
        }
        writing_ = true;
        write_slot_ = slot;
        return store_[slot]->data;
    }
    void finish_write() {
        written_.push_back(write_slot_);
        writing_ = false;
    }
    B& take_for_read() {
        read_slot_ = written_.front();
        written_.pop_front();
        reading_ = true;
        return store_[read_slot_]->data;
    }
    void finish_read() {
        free_.push_back(read_slot_);
        reading_ = false;
    }

   private:
    std::vector<std::unique_ptr<Box<B> > > store_;
    std::deque<size_t> written_;
    std::vector<size_t> free_;
    size_t write_slot_ = 0, read_slot_ = 0;
    bool writing_ = false, reading_ = false;
};

// The sequential, unbounded model (see the file comment).
template <class B>
class SequentialChannel {
   public:
    SequentialChannel(const char* name, int depth) : name_(name ? name : ""), depth_(depth) {
        if (depth < 1) throw BlocksError(label() + ": depth must be >= 1, got " + std::to_string(depth));
    }
    SequentialChannel(const SequentialChannel&) = delete;
    SequentialChannel& operator=(const SequentialChannel&) = delete;

    void set_name_(const char* name) { name_ = name; }
    const std::string& name() const { return name_; }
    int depth() const { return depth_; }
    size_t written() const { return pool_.written(); }
    size_t allocated() const { return pool_.allocated(); }  // heap blocks so far (grows with the backlog)

    B& write_acquire() {
        if (pool_.writing()) throw BlocksError(label() + ": write_lock while another write_lock on it is held");
        return pool_.take_for_write();
    }
    void write_release() { pool_.finish_write(); }
    B& read_acquire() {
        if (pool_.reading()) throw BlocksError(label() + ": read_lock while another read_lock on it is held");
        if (!pool_.written())
            throw BlocksError("read_lock on empty " + label() +
                              ": no written block (sequential C simulation runs the processes one after another: "
                              "the producer must have written every block the consumer reads)");
        return pool_.take_for_read();
    }
    void read_release() { pool_.finish_read(); }
    bool empty() const { return !pool_.written(); }
    bool full() const { return false; }  // unbounded: a write_lock never waits

   private:
    std::string label() const {
        return name_.empty() ? std::string("<unnamed stream_of_blocks>") : "stream_of_blocks '" + name_ + "'";
    }
    std::string name_;
    int depth_;
    Pool<B> pool_;
};

}  // namespace blocks
}  // namespace m3vit

#ifndef M3VIT_BLOCKS_CHANNEL
#define M3VIT_BLOCKS_CHANNEL ::m3vit::blocks::SequentialChannel
#endif

namespace hls {

// stream_of_blocks<B, D> derives from stream_of_blocks<B> (= <B, 2>) and the locks take the latter, as in
// Vitis: a process parameter `hls::stream_of_blocks<block_t>&` accepts any depth.
template <class B, int D = 2>
class stream_of_blocks;

template <class B>
class stream_of_blocks<B, 2> : public M3VIT_BLOCKS_CHANNEL<B> {
   public:
    explicit stream_of_blocks(int depth = 2, const char* name = nullptr) : M3VIT_BLOCKS_CHANNEL<B>(name, depth) {}
};

template <class B, int D>
class stream_of_blocks : public stream_of_blocks<B, 2> {
   public:
    stream_of_blocks() : stream_of_blocks<B, 2>(D) {}
};

// write_lock<B>: a free block of the stream for the lifetime of the object; written (visible to the reader)
// when it goes out of scope.
template <class B>
class write_lock {
   public:
    write_lock(stream_of_blocks<B>& s) : s_(s), buf_(s.write_acquire()) {}
    ~write_lock() { s_.write_release(); }
    write_lock(const write_lock&) = delete;
    write_lock& operator=(const write_lock&) = delete;
    operator B&() { return buf_; }

   private:
    stream_of_blocks<B>& s_;
    B& buf_;
};

// read_lock<B>: the oldest written block for the lifetime of the object; freed for the writer at scope end.
template <class B>
class read_lock {
   public:
    read_lock(stream_of_blocks<B>& s) : s_(s), buf_(s.read_acquire()) {}
    ~read_lock() { s_.read_release(); }
    read_lock(const read_lock&) = delete;
    read_lock& operator=(const read_lock&) = delete;
    operator B&() { return buf_; }

   private:
    stream_of_blocks<B>& s_;
    B& buf_;
};

}  // namespace hls

#ifndef M3VIT_BLOCKS_NAME
// M3VIT_BLOCKS_NAME(var): name stream_of_blocks `var` for C-simulation messages (nothing in synthesis).
#define M3VIT_BLOCKS_NAME(var) (var).set_name_(#var)
#endif

#endif  // M3VIT_BLOCKS_H
