// One pass of Keras 2's legacy SGD over many tensors, as an XLA FFI handler.
//
// The arithmetic is TensorFlow's `ResourceApplyKerasMomentum` kernel, each
// product rounded (built with -ffp-contract=off, so no fused multiply-add):
//
//   u = -(lr * g);  v = m * v + u;  w += v        (Nesterov: w += m * v + u)
//
// Arguments: lr[k], m[k], then the gradients, then the velocities (modes that
// keep one), then the parameters (modes that write them), one tensor each per
// leaf. Results: the velocities, then the parameters or the Nesterov update.
// Velocities and parameters are updated in place: Python aliases each of those
// results to its argument. With k > 1 (under `vmap`), each leaf is k equal
// blocks, block j using lr[j] and m[j].

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

enum Mode : int64_t {
  kVelocity = 0,           // v
  kNesterovUpdate = 1,     // v, and the Nesterov update into a new tensor
  kApply = 2,              // v and w
  kApplyNesterov = 3,      // v and w, Nesterov
  kApplyNoVelocity = 4,    // w only
};

struct Block {
  const void* g;
  void* v;
  void* out;  // the parameters, or the Nesterov update
  int64_t lo, hi;
  int64_t scalar;  // index into lr and m
};

template <typename T>
void Run(const Block& b, const T* lrs, const T* ms, int64_t mode) {
  const T* __restrict__ g = static_cast<const T*>(b.g);
  T* __restrict__ v = static_cast<T*>(b.v);
  T* __restrict__ w = static_cast<T*>(b.out);
  const T lr = lrs[b.scalar];
  const T m = ms[b.scalar];
  const int64_t lo = b.lo, hi = b.hi;
  switch (mode) {
    case kVelocity:
      for (int64_t i = lo; i < hi; ++i) {
        T u = -(lr * g[i]);
        v[i] = m * v[i] + u;
      }
      break;
    case kNesterovUpdate:
      for (int64_t i = lo; i < hi; ++i) {
        T u = -(lr * g[i]);
        T nv = m * v[i] + u;
        v[i] = nv;
        w[i] = m * nv + u;
      }
      break;
    case kApply:
      for (int64_t i = lo; i < hi; ++i) {
        T u = -(lr * g[i]);
        T nv = m * v[i] + u;
        v[i] = nv;
        w[i] = w[i] + nv;
      }
      break;
    case kApplyNesterov:
      for (int64_t i = lo; i < hi; ++i) {
        T u = -(lr * g[i]);
        T nv = m * v[i] + u;
        v[i] = nv;
        w[i] = w[i] + (m * nv + u);
      }
      break;
    case kApplyNoVelocity:
      for (int64_t i = lo; i < hi; ++i) w[i] = w[i] + (-(lr * g[i]));
      break;
  }
}

// Blocks are shared with the pool's threads through a shared_ptr, so a task
// that starts after the caller has finished all blocks finds nothing to do
// and touches no freed memory; the caller waits for blocks, not for tasks.
template <typename T>
struct Work {
  std::vector<Block> blocks;
  const T* lrs;
  const T* ms;
  int64_t mode;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};

  void Drain() {
    const int64_t n = static_cast<int64_t>(blocks.size());
    for (int64_t k; (k = next.fetch_add(1, std::memory_order_relaxed)) < n;) {
      Run<T>(blocks[k], lrs, ms, mode);
      done.fetch_add(1, std::memory_order_acq_rel);
    }
  }
};

constexpr int64_t kBlock = int64_t{1} << 16;    // elements per task
constexpr int64_t kParallel = int64_t{1} << 18; // fewer elements: one thread

ffi::Error Fail(const char* what) {
  return ffi::Error(ffi::ErrorCode::kInvalidArgument, what);
}

template <typename T>
ffi::Error Step(ffi::ThreadPool pool, ffi::RemainingArgs args,
                ffi::RemainingRets rets, int64_t mode) {
  auto lr = args.get<ffi::AnyBuffer>(0);
  auto m = args.get<ffi::AnyBuffer>(1);
  if (!lr.has_value() || !m.has_value()) return Fail("missing lr or m");
  const int64_t k = static_cast<int64_t>(lr->element_count());
  if (k < 1 || static_cast<int64_t>(m->element_count()) != k)
    return Fail("lr and m must have the same, positive, number of elements");
  const bool velocity = mode != kApplyNoVelocity;
  const bool params = mode >= kApply;
  const int64_t per_leaf = 1 + velocity + params;
  const int64_t leaves = (static_cast<int64_t>(args.size()) - 2) / per_leaf;
  const int64_t outs = velocity + (mode != kVelocity);
  if (2 + leaves * per_leaf != static_cast<int64_t>(args.size()) ||
      leaves * outs != static_cast<int64_t>(rets.size()))
    return Fail("unexpected number of arguments or results");

  auto work = std::make_shared<Work<T>>();
  work->lrs = static_cast<const T*>(lr->untyped_data());
  work->ms = static_cast<const T*>(m->untyped_data());
  work->mode = mode;
  int64_t total = 0;
  for (int64_t i = 0; i < leaves; ++i) {
    auto g = args.get<ffi::AnyBuffer>(2 + i);
    if (!g.has_value()) return Fail("bad gradient");
    if (g->element_type() != lr->element_type()) return Fail("mixed dtypes");
    const int64_t n = static_cast<int64_t>(g->element_count());
    if (n % k != 0) return Fail("a leaf does not split into k blocks");
    void* v = nullptr;
    void* out = nullptr;
    if (velocity) {
      auto vr = rets.get<ffi::AnyBuffer>(i);
      if (!vr.has_value()) return Fail("bad velocity");
      v = (*vr)->untyped_data();
    }
    if (mode != kVelocity) {
      auto o = rets.get<ffi::AnyBuffer>((velocity ? leaves : 0) + i);
      if (!o.has_value()) return Fail("bad output");
      out = (*o)->untyped_data();
    }
    const int64_t per = n / k;
    for (int64_t j = 0; j < k; ++j)
      for (int64_t lo = j * per; lo < (j + 1) * per; lo += kBlock)
        work->blocks.push_back(
            {g->untyped_data(), v, out, lo, std::min((j + 1) * per, lo + kBlock), j});
    total += n;
  }
  int64_t threads = 0;
  if (total >= kParallel)
    threads = std::min<int64_t>(pool.num_threads(),
                                static_cast<int64_t>(work->blocks.size()) - 1);
  for (int64_t t = 0; t < threads; ++t) pool.Schedule([work] { work->Drain(); });
  work->Drain();
  const int64_t n = static_cast<int64_t>(work->blocks.size());
  while (work->done.load(std::memory_order_acquire) < n) std::this_thread::yield();
  return ffi::Error::Success();
}

ffi::Error Dispatch(ffi::ThreadPool pool, ffi::RemainingArgs args,
                    ffi::RemainingRets rets, int64_t mode) {
  if (mode < kVelocity || mode > kApplyNoVelocity) return Fail("unknown mode");
  auto lr = args.get<ffi::AnyBuffer>(0);
  if (!lr.has_value()) return Fail("no arguments");
  switch (lr->element_type()) {
    case ffi::DataType::F32:
      return Step<float>(pool, args, rets, mode);
    case ffi::DataType::F64:
      return Step<double>(pool, args, rets, mode);
    default:
      return Fail("only float32 and float64 are supported");
  }
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(OptaxKerasSgdStep, Dispatch,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .RemainingArgs()
                                  .RemainingRets()
                                  .Attr<int64_t>("mode"));
