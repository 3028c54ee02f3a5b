// Interim C-simulation model of hls::stream_of_blocks (replaced by the dataflow headers' model).
#ifndef M3VIT_SOB_INTERIM_H
#define M3VIT_SOB_INTERIM_H
#if !defined(__SYNTHESIS__) && !defined(M3VIT_HAVE_STREAM_OF_BLOCKS)
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <functional>
#include <type_traits>
namespace hls {
template <class B, int D = 2>
class stream_of_blocks {
   public:
    typedef typename std::remove_extent<B>::type elem;
    std::mutex mu;
    std::condition_variable cv;
    std::deque<std::unique_ptr<B> > full;
    int locked_w = 0;
    B* acquire_write() {
        std::unique_lock<std::mutex> lk(mu);
        (void)lk;
        return reinterpret_cast<B*>(new B);
    }
    void commit(B* b) {
        std::lock_guard<std::mutex> lk(mu);
        full.emplace_back(b);
        cv.notify_all();
    }
    std::unique_ptr<B> take() {
        std::unique_lock<std::mutex> lk(mu);
        cv.wait(lk, [&] { return !full.empty(); });
        std::unique_ptr<B> b = std::move(full.front());
        full.pop_front();
        return b;
    }
};
template <class B>
class write_lock {
   public:
    template <int D>
    explicit write_lock(stream_of_blocks<B, D>& s) : b_(s.acquire_write()) {
        commit_ = [&s](B* b) { s.commit(b); };
    }
    ~write_lock() { commit_(b_); }
    operator B&() { return *b_; }
    typename std::remove_extent<B>::type& operator[](int i) { return (*b_)[i]; }

   private:
    B* b_;
    std::function<void(B*)> commit_;
};
template <class B>
class read_lock {
   public:
    template <int D>
    explicit read_lock(stream_of_blocks<B, D>& s) : b_(s.take()) {}
    operator B&() { return *b_; }
    operator const B&() const { return *b_; }
    typename std::remove_extent<B>::type& operator[](int i) { return (*b_)[i]; }

   private:
    std::unique_ptr<B> b_;
};
}  // namespace hls
#endif
#endif
