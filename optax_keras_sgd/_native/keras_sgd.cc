// One pass of Keras 2's legacy SGD over many tensors, as an XLA FFI handler.
//
// The arithmetic is TensorFlow's `ResourceApplyKerasMomentum` kernel, each
// product rounded (built with -ffp-contract=off, so no fused multiply-add):
//
//   u = -(lr * g);  v = m * v + u;  w += v        (Nesterov: w += m * v + u)
//
// after Keras's clips, if the `clip` attribute asks for them: `clipvalue`
// (g = max(min(g, cv), -cv)), then `clipnorm`, TensorFlow's `clip_by_norm`:
// g = (g * cn) / max(||g||, cn), a product then a quotient; or, in its place,
// `global_clipnorm`'s product by the scale the caller computed over all
// tensors (passed as cn). The per-tensor norm is a first pass over the
// gradient; its sum of squares is added in an order fixed by the data alone
// (SumOfSquares), so it is the same on any machine and thread count, but not
// TensorFlow's or XLA's order.
//
// Arguments: lr[k], m[k], cv[k], cn[k], then the gradients, then the
// velocities (modes that keep one), then the parameters (modes that write
// them), one tensor each per leaf. Results: the velocities, then the
// parameters or the Nesterov update. Velocities and parameters are updated in
// place: Python aliases each of those results to its argument. With k > 1
// (under `vmap`), each leaf is k equal tensors, tensor j using the scalars'
// element j.
//
// OptaxKerasSgdSplit copies consecutive pieces of one buffer into its results
// (the facade's small velocities, kept in one buffer between steps): one task
// where XLA makes each slice a task of its own.
//
// Row-sparse gradients (`IndexedSlices`) have three handlers of their own,
// each a sequential pass over the slices in their order, as TensorFlow's:
//   OptaxKerasSgdSumDuplicates  sums the values of duplicate indices
//       (`unsorted_segment_sum` over the unique rows, in ascending order);
//   OptaxKerasSgdSparseStep     `ResourceSparseApplyKerasMomentum` on those
//       rows only (the same modes, the velocity and parameters in place; an
//       update's rows are written over the values);
//   OptaxKerasSgdScatterAdd     adds rows of values into a table in place.
// Rows known to be unique (summed first, or the `unique` attribute) are split
// between the pool's threads; others are taken in order on one thread.
// A negative index counts from the end of the table, as in JAX's indexing;
// rows outside the table read zeros and are never written.

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
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

// What the kernel does to a gradient before the step (the `clip` attribute's
// bits), as Keras 2 does: `clipvalue`, then `clipnorm` on each tensor or
// the global norm's scale.
enum Clip : int64_t {
  kClipValue = 1,  // g = max(min(g, cv), -cv), NaN kept
  kClipNorm = 2,   // g = (g * cn) / max(||g||, cn), TensorFlow's clip_by_norm
  kClipScale = 4,  // g = g * cn, cn holding clip_by_global_norm's scale
};

struct Block {
  const void* g;
  void* v;
  void* out;  // the parameters, or the Nesterov update
  int64_t lo, hi;
  int64_t scalar;   // index into lr, m, cv and cn
  int64_t segment;  // the tensor (leaf and block of k) whose norm clips it
};

// XLA's min and max: the first operand when it is NaN or they compare equal.
template <typename T>
inline T Min(T a, T b) { return (a != a || a <= b) ? a : b; }
template <typename T>
inline T Max(T a, T b) { return (a != a || a >= b) ? a : b; }

template <typename T, int64_t kClip>
inline T ClipValue(T x, T cv) {
  return (kClip & kClipValue) ? Max(Min(x, cv), -cv) : x;
}

// The gradient as the step sees it: clipped by value, then scaled by
// `cn / denominator` as TensorFlow does, a product then a quotient, or by
// the global norm's scale `cn` (one product).
template <typename T, int64_t kClip>
inline T Clipped(T x, T cv, T cn, T denominator) {
  x = ClipValue<T, kClip>(x, cv);
  if (kClip & kClipNorm) return (x * cn) / denominator;
  return (kClip & kClipScale) ? x * cn : x;
}

// The sum of the squares of a block's (value-clipped) gradient, in an order
// fixed by the data alone: element i of the block goes to running sum i % 16,
// and the 16 sums are then added pairwise (8 apart, 4, 2, 1). Each square is
// rounded before it is added, as in TensorFlow's `reduce_sum(g * g)`.
template <typename T, int64_t kClip>
T SumOfSquares(const Block& b, const T* cvs) {
  constexpr int64_t kLanes = 16;
  const T* __restrict__ g = static_cast<const T*>(b.g);
  const T cv = cvs[b.scalar];
  T acc[kLanes] = {};
  int64_t i = b.lo;
  for (; i + kLanes <= b.hi; i += kLanes)
    for (int64_t l = 0; l < kLanes; ++l) {
      const T x = ClipValue<T, kClip>(g[i + l], cv);
      acc[l] += x * x;
    }
  for (int64_t l = 0; i < b.hi; ++i, ++l) {
    const T x = ClipValue<T, kClip>(g[i], cv);
    acc[l] += x * x;
  }
  for (int64_t w = kLanes / 2; w >= 1; w /= 2)
    for (int64_t l = 0; l < w; ++l) acc[l] += acc[l + w];
  return acc[0];
}

template <typename T, int64_t kClip>
void Run(const Block& b, const T* lrs, const T* ms, const T* cvs, const T* cns,
         const T* denominators, int64_t mode) {
  const T* __restrict__ g = static_cast<const T*>(b.g);
  T* __restrict__ v = static_cast<T*>(b.v);
  T* __restrict__ w = static_cast<T*>(b.out);
  const T lr = lrs[b.scalar];
  const T m = ms[b.scalar];
  const T cv = cvs[b.scalar];
  const T cn = cns[b.scalar];
  const T d = (kClip & kClipNorm) ? denominators[b.segment] : T(1);
  const int64_t lo = b.lo, hi = b.hi;
  switch (mode) {
    case kVelocity:
      for (int64_t i = lo; i < hi; ++i) {
        T u = -(lr * Clipped<T, kClip>(g[i], cv, cn, d));
        v[i] = m * v[i] + u;
      }
      break;
    case kNesterovUpdate:
      for (int64_t i = lo; i < hi; ++i) {
        T u = -(lr * Clipped<T, kClip>(g[i], cv, cn, d));
        T nv = m * v[i] + u;
        v[i] = nv;
        w[i] = m * nv + u;
      }
      break;
    case kApply:
      for (int64_t i = lo; i < hi; ++i) {
        T u = -(lr * Clipped<T, kClip>(g[i], cv, cn, d));
        T nv = m * v[i] + u;
        v[i] = nv;
        w[i] = w[i] + nv;
      }
      break;
    case kApplyNesterov:
      for (int64_t i = lo; i < hi; ++i) {
        T u = -(lr * Clipped<T, kClip>(g[i], cv, cn, d));
        T nv = m * v[i] + u;
        v[i] = nv;
        w[i] = w[i] + (m * nv + u);
      }
      break;
    case kApplyNoVelocity:
      for (int64_t i = lo; i < hi; ++i)
        w[i] = w[i] + (-(lr * Clipped<T, kClip>(g[i], cv, cn, d)));
      break;
  }
}

// Runs task(0), ..., task(count - 1) on the calling thread and, if
// `parallel`, on the pool's threads too, and returns when all have run. The
// counters live in shared state, so a pool task that starts after the caller
// has returned finds nothing left and touches nothing of the caller's: the
// caller waits for the tasks' items, not for the tasks.
template <typename F>
void ParallelFor(ffi::ThreadPool& pool, int64_t count, bool parallel, F task) {
  struct State {
    F task;
    int64_t count;
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
    State(F t, int64_t c) : task(std::move(t)), count(c) {}
    void Drain() {
      for (int64_t k; (k = next.fetch_add(1, std::memory_order_relaxed)) < count;) {
        task(k);
        done.fetch_add(1, std::memory_order_acq_rel);
      }
    }
  };
  auto state = std::make_shared<State>(std::move(task), count);
  const int64_t helpers =
      parallel ? std::min<int64_t>(pool.num_threads(), count - 1) : 0;
  for (int64_t t = 0; t < helpers; ++t) pool.Schedule([state] { state->Drain(); });
  state->Drain();
  while (state->done.load(std::memory_order_acquire) < count) std::this_thread::yield();
}

constexpr int64_t kBlock = int64_t{1} << 16;    // elements per task
constexpr int64_t kParallel = int64_t{1} << 18; // fewer elements: one thread

ffi::Error Fail(const char* what) {
  return ffi::Error(ffi::ErrorCode::kInvalidArgument, what);
}

// The step over all blocks; with kClipNorm, first each tensor's norm (its
// blocks' sums in parallel, then added in order) and TensorFlow's divisor.
// Tensor t is leaf t / k, block t % k (under vmap, k > 1).
template <typename T, int64_t kClip>
void RunAll(ffi::ThreadPool& pool, const std::vector<Block>& blocks, int64_t tensors,
            int64_t k, bool parallel, const T* lrs, const T* ms, const T* cvs,
            const T* cns, int64_t mode) {
  const int64_t count = static_cast<int64_t>(blocks.size());
  std::vector<T> denominators;
  if (kClip & kClipNorm) {
    std::vector<T> partial(count);
    ParallelFor(pool, count, parallel, [&](int64_t b) {
      partial[b] = SumOfSquares<T, kClip>(blocks[b], cvs);
    });
    std::vector<T> l2sum(tensors, T(0));
    for (int64_t b = 0; b < count; ++b) l2sum[blocks[b].segment] += partial[b];
    denominators.resize(tensors);
    for (int64_t t = 0; t < tensors; ++t) {  // tf.clip_by_norm
      const T s = l2sum[t];
      const T norm = s > T(0) ? std::sqrt(s) : s;
      denominators[t] = Max(norm, cns[t % k]);
    }
  }
  ParallelFor(pool, count, parallel, [&](int64_t b) {
    Run<T, kClip>(blocks[b], lrs, ms, cvs, cns, denominators.data(), mode);
  });
}

template <typename T>
ffi::Error Step(ffi::ThreadPool pool, ffi::RemainingArgs args,
                ffi::RemainingRets rets, int64_t mode, int64_t clip) {
  constexpr int64_t kScalars = 4;  // lr, m, cv, cn
  std::array<const T*, kScalars> scalars{};
  int64_t k = 0;
  for (int64_t a = 0; a < kScalars; ++a) {
    auto x = args.get<ffi::AnyBuffer>(a);
    if (!x.has_value()) return Fail("missing lr, m, cv or cn");
    const int64_t n = static_cast<int64_t>(x->element_count());
    if (a == 0) k = n;
    if (n != k || k < 1)
      return Fail("lr, m, cv and cn must have the same, positive, number of elements");
    if (x->element_type() != args.get<ffi::AnyBuffer>(0)->element_type())
      return Fail("mixed dtypes");
    scalars[a] = static_cast<const T*>(x->untyped_data());
  }
  const bool velocity = mode != kApplyNoVelocity;
  const bool params = mode >= kApply;
  const int64_t per_leaf = 1 + velocity + params;
  const int64_t leaves = (static_cast<int64_t>(args.size()) - kScalars) / per_leaf;
  const int64_t outs = velocity + (mode != kVelocity);
  if (kScalars + leaves * per_leaf != static_cast<int64_t>(args.size()) ||
      leaves * outs != static_cast<int64_t>(rets.size()))
    return Fail("unexpected number of arguments or results");

  std::vector<Block> blocks;
  int64_t total = 0;
  for (int64_t i = 0; i < leaves; ++i) {
    auto g = args.get<ffi::AnyBuffer>(kScalars + i);
    if (!g.has_value()) return Fail("bad gradient");
    if (g->element_type() != args.get<ffi::AnyBuffer>(0)->element_type())
      return Fail("mixed dtypes");
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
        blocks.push_back({g->untyped_data(), v, out, lo,
                          std::min((j + 1) * per, lo + kBlock), j, i * k + j});
    total += n;
  }
  const bool parallel = total >= kParallel;
  const auto [lrs, ms, cvs, cns] = scalars;
  switch (clip) {
    case 0:
      RunAll<T, 0>(pool, blocks, leaves * k, k, parallel, lrs, ms, cvs, cns, mode);
      break;
    case kClipValue:
      RunAll<T, kClipValue>(pool, blocks, leaves * k, k, parallel, lrs, ms, cvs, cns, mode);
      break;
    case kClipNorm:
      RunAll<T, kClipNorm>(pool, blocks, leaves * k, k, parallel, lrs, ms, cvs, cns, mode);
      break;
    case kClipScale:
      RunAll<T, kClipScale>(pool, blocks, leaves * k, k, parallel, lrs, ms, cvs, cns, mode);
      break;
    case kClipValue | kClipScale:
      RunAll<T, kClipValue | kClipScale>(pool, blocks, leaves * k, k, parallel, lrs, ms,
                                         cvs, cns, mode);
      break;
    default:
      RunAll<T, kClipValue | kClipNorm>(pool, blocks, leaves * k, k, parallel, lrs, ms,
                                        cvs, cns, mode);
  }
  return ffi::Error::Success();
}

ffi::Error Dispatch(ffi::ThreadPool pool, ffi::RemainingArgs args,
                    ffi::RemainingRets rets, int64_t mode, int64_t clip) {
  if (mode < kVelocity || mode > kApplyNoVelocity) return Fail("unknown mode");
  if (clip < 0 || clip > (kClipValue | kClipScale)) return Fail("unknown clip");
  auto lr = args.get<ffi::AnyBuffer>(0);
  if (!lr.has_value()) return Fail("no arguments");
  switch (lr->element_type()) {
    case ffi::DataType::F32:
      return Step<float>(pool, args, rets, mode, clip);
    case ffi::DataType::F64:
      return Step<double>(pool, args, rets, mode, clip);
    default:
      return Fail("only float32 and float64 are supported");
  }
}

// ---------------------------------------------------------------------------
// Row-sparse gradients.

// The row `index` names in a table of `rows` rows, or -1 outside it.
int64_t Row(int32_t index, int64_t rows) {
  const int64_t r = index < 0 ? index + rows : index;
  return r >= 0 && r < rows ? r : -1;
}

// Asks for the rows `ahead` slices on to be brought into the cache: the
// rows of a large table are far apart, so each would otherwise wait on
// memory (and on the page tables) in turn.
template <typename T>
void Prefetch(T* table, const int32_t* indices, int64_t i, int64_t n, int64_t d,
              int64_t rows) {
  constexpr int64_t kAhead = 8;
  if (table == nullptr || i + kAhead >= n) return;
  const int64_t r = Row(indices[i + kAhead], rows);
  if (r < 0) return;
  const char* p = reinterpret_cast<const char*>(table + r * d);
  for (int64_t b = 0; b < d * static_cast<int64_t>(sizeof(T)); b += 64)
    __builtin_prefetch(p + b, 1);
}

// The number of elements per slice: `values` is [n, d...], `n` slices.
bool RowSize(const ffi::AnyBuffer& values, int64_t n, int64_t* d) {
  const int64_t count = static_cast<int64_t>(values.element_count());
  if (n == 0) {
    *d = 0;
    return count == 0;
  }
  *d = count / n;
  return *d * n == count;
}

// Stable sort of the slice positions by index (least-significant-digit radix
// sort, 11 bits a pass over the bits in use): ties keep the slices' order.
void SortPositions(const int32_t* indices, int64_t n, std::vector<uint32_t>* key,
                   std::vector<uint32_t>* pos) {
  std::vector<uint32_t> k2(n), p2(n);
  key->resize(n);
  pos->resize(n);
  uint32_t top = 0;
  for (int64_t i = 0; i < n; ++i) {
    (*key)[i] = static_cast<uint32_t>(indices[i]);
    (*pos)[i] = static_cast<uint32_t>(i);
    top |= (*key)[i];
  }
  constexpr int kBits = 11;
  for (int shift = 0; shift < 32 && (top >> shift) != 0; shift += kBits) {
    std::array<uint32_t, (1 << kBits) + 1> start{};
    for (int64_t i = 0; i < n; ++i)
      ++start[(((*key)[i] >> shift) & ((1 << kBits) - 1)) + 1];
    for (size_t b = 1; b < start.size(); ++b) start[b] += start[b - 1];
    for (int64_t i = 0; i < n; ++i) {
      const uint32_t to = start[((*key)[i] >> shift) & ((1 << kBits) - 1)]++;
      k2[to] = (*key)[i];
      p2[to] = (*pos)[i];
    }
    key->swap(k2);
    pos->swap(p2);
  }
}

template <typename T>
void SumRows(const T* values, const int32_t* indices, int64_t n, int64_t d,
             int32_t pad, T* summed, int32_t* unique) {
  std::vector<uint32_t> key, pos;
  SortPositions(indices, n, &key, &pos);
  int64_t slot = -1;
  for (int64_t s = 0; s < n; ++s) {
    const T* __restrict__ x = values + static_cast<int64_t>(pos[s]) * d;
    if (s == 0 || key[s] != key[s - 1]) {  // a new row: 0 + x, as a sum from zero
      unique[++slot] = static_cast<int32_t>(key[s]);
      T* __restrict__ out = summed + slot * d;
      for (int64_t j = 0; j < d; ++j) out[j] = T(0) + x[j];
    } else {
      T* __restrict__ out = summed + slot * d;
      for (int64_t j = 0; j < d; ++j) out[j] = out[j] + x[j];
    }
  }
  std::fill(summed + (slot + 1) * d, summed + n * d, T(0));
  for (int64_t s = slot + 1; s < n; ++s) unique[s] = pad;
}

ffi::Error SumDuplicates(ffi::AnyBuffer values, ffi::Buffer<ffi::S32> indices,
                         ffi::Result<ffi::AnyBuffer> summed,
                         ffi::Result<ffi::Buffer<ffi::S32>> unique, int64_t rows) {
  const int64_t n = static_cast<int64_t>(indices.element_count());
  int64_t d;
  if (!RowSize(values, n, &d)) return Fail("values do not split into rows");
  if (summed->element_type() != values.element_type())
    return Fail("summed values must have the values' dtype");
  const int32_t pad = static_cast<int32_t>(rows);
  switch (values.element_type()) {
    case ffi::DataType::F32:
      SumRows<float>(static_cast<const float*>(values.untyped_data()),
                     indices.typed_data(), n, d, pad,
                     static_cast<float*>(summed->untyped_data()), unique->typed_data());
      return ffi::Error::Success();
    case ffi::DataType::F64:
      SumRows<double>(static_cast<const double*>(values.untyped_data()),
                      indices.typed_data(), n, d, pad,
                      static_cast<double*>(summed->untyped_data()), unique->typed_data());
      return ffi::Error::Success();
    default:
      return Fail("only float32 and float64 are supported");
  }
}

// One row of the step; `Mode` a template argument so that each mode's loop
// is a plain vector loop.
// `out` may be `g` itself (the update written over the values), so neither
// is `__restrict__`: each element is read before it is written.
template <typename T, int64_t Mode>
__attribute__((noinline)) void SparseRow(T lr, T m, const T* g, T* __restrict__ v,
                                         T* __restrict__ w, T* out, int64_t d) {
  // Not inlined: inlined into the handler, GCC left this loop scalar (3 to 4
  // times slower on rows of 64 floats).
  for (int64_t j = 0; j < d; ++j) {
    const T u = -(lr * g[j]);
    if (Mode == kApplyNoVelocity) {
      w[j] = w[j] + u;
      continue;
    }
    const T nv = m * v[j] + u;
    v[j] = nv;
    if (Mode == kVelocity) out[j] = nv;
    if (Mode == kNesterovUpdate) out[j] = m * nv + u;
    if (Mode == kApply) w[j] = w[j] + nv;
    if (Mode == kApplyNesterov) w[j] = w[j] + (m * nv + u);
  }
}

// Slices per task when the rows are split between threads, and the fewest
// elements worth splitting: a row of a large table is a wait on memory, and
// one thread keeps only so many waits in flight.
constexpr int64_t kRowsPerTask = 256;
constexpr int64_t kParallelRows = int64_t{1} << 14;

// Slices [lo, hi) of the step.
template <typename T, int64_t Mode>
void SparseRows(T lr, T m, const T* g, const int32_t* indices, int64_t lo, int64_t hi,
                int64_t d, int64_t rows, T* v, T* w, T* out) {
  std::vector<T> zeros;  // the velocity a row outside the table reads
  for (int64_t i = lo; i < hi; ++i) {
    Prefetch(v, indices, i, hi, d, rows);
    Prefetch(w, indices, i, hi, d, rows);
    const int64_t r = Row(indices[i], rows);
    const T* gi = g + i * d;
    T* oi = out != nullptr ? out + i * d : nullptr;
    if (r >= 0) {
      SparseRow<T, Mode>(lr, m, gi, v != nullptr ? v + r * d : nullptr,
                         w != nullptr ? w + r * d : nullptr, oi, d);
    } else if (oi != nullptr) {  // padding: its update row, nothing written back
      zeros.assign(d, T(0));
      SparseRow<T, Mode>(lr, m, gi, zeros.data(), nullptr, oi, d);
    }
  }
}

// Runs rows(lo, hi) over the n slices: split between the pool's threads when
// `unique` (no two indices are equal, so no two slices share a row of the
// table and their order does not matter) and there are enough of them, else
// in order on the calling thread. A negative index may name the row of
// another index, so with one the slices are taken in order too.
template <typename F>
void ForRows(ffi::ThreadPool& pool, const int32_t* indices, int64_t n, int64_t d,
             bool unique, F rows) {
  if (!unique || n * d < kParallelRows ||
      std::any_of(indices, indices + n, [](int32_t i) { return i < 0; })) {
    rows(int64_t{0}, n);
    return;
  }
  const int64_t tasks = (n + kRowsPerTask - 1) / kRowsPerTask;
  ParallelFor(pool, tasks, true, [&](int64_t t) {
    rows(t * kRowsPerTask, std::min(n, (t + 1) * kRowsPerTask));
  });
}

// Arguments: lr[1], m[1], values [n, d...], indices [n], then the velocity
// (modes that keep one) and the parameter (modes that write it), each a
// [rows, d...] table. Results: the velocity, then the parameter or the
// update's rows [n, d...].
template <typename T>
ffi::Error SparseTyped(ffi::ThreadPool& pool, ffi::RemainingArgs args,
                       ffi::RemainingRets rets, int64_t mode) {
  auto lr = args.get<ffi::AnyBuffer>(0);
  auto m = args.get<ffi::AnyBuffer>(1);
  auto values = args.get<ffi::AnyBuffer>(2);
  auto indices = args.get<ffi::Buffer<ffi::S32>>(3);
  if (!lr.has_value() || !m.has_value() || !values.has_value() || !indices.has_value())
    return Fail("missing lr, m, values or indices");
  const bool velocity = mode != kApplyNoVelocity;
  const bool params = mode >= kApply;
  const bool rows_out = mode == kVelocity || mode == kNesterovUpdate;
  const int64_t outs = velocity + params + rows_out;
  if (static_cast<int64_t>(args.size()) != 4 + velocity + params ||
      static_cast<int64_t>(rets.size()) != outs)
    return Fail("unexpected number of arguments or results");
  const int64_t n = static_cast<int64_t>(indices->element_count());
  int64_t d;
  if (!RowSize(*values, n, &d)) return Fail("values do not split into rows");
  if (n == 0) return ffi::Error::Success();
  T* v = nullptr;
  T* w = nullptr;
  T* out = nullptr;
  int64_t table = 0;
  for (int64_t k = 0; k < outs; ++k) {
    auto r = rets.get<ffi::AnyBuffer>(k);
    if (!r.has_value() || (*r)->element_type() != values->element_type())
      return Fail("bad result");
    T* data = static_cast<T*>((*r)->untyped_data());
    if (rows_out && k == outs - 1) {
      out = data;
      continue;
    }
    const auto dims = (*r)->dimensions();
    if (dims.size() == 0) return Fail("a table must have at least one dimension");
    const int64_t count = static_cast<int64_t>((*r)->element_count());
    table = dims[0];
    if (table * d != count) return Fail("table rows differ from values");
    (velocity && k == 0 ? v : w) = data;
  }
  const T lr_ = *static_cast<const T*>(lr->untyped_data());
  const T m_ = *static_cast<const T*>(m->untyped_data());
  const T* g = static_cast<const T*>(values->untyped_data());
  const int32_t* idx = indices->typed_data();
  // Every mode but kApplyNoVelocity has unique rows (summed first).
  const bool unique = mode != kApplyNoVelocity;
  ForRows(pool, idx, n, d, unique, [&](int64_t lo, int64_t hi) {
    switch (mode) {
      case kVelocity:
        SparseRows<T, kVelocity>(lr_, m_, g, idx, lo, hi, d, table, v, w, out);
        break;
      case kNesterovUpdate:
        SparseRows<T, kNesterovUpdate>(lr_, m_, g, idx, lo, hi, d, table, v, w, out);
        break;
      case kApply:
        SparseRows<T, kApply>(lr_, m_, g, idx, lo, hi, d, table, v, w, out);
        break;
      case kApplyNesterov:
        SparseRows<T, kApplyNesterov>(lr_, m_, g, idx, lo, hi, d, table, v, w, out);
        break;
      case kApplyNoVelocity:
        SparseRows<T, kApplyNoVelocity>(lr_, m_, g, idx, lo, hi, d, table, v, w, out);
        break;
    }
  });
  return ffi::Error::Success();
}

ffi::Error SparseStep(ffi::ThreadPool pool, ffi::RemainingArgs args,
                      ffi::RemainingRets rets, int64_t mode) {
  if (mode < kVelocity || mode > kApplyNoVelocity) return Fail("unknown mode");
  auto values = args.get<ffi::AnyBuffer>(2);
  if (!values.has_value()) return Fail("no values");
  switch (values->element_type()) {
    case ffi::DataType::F32:
      return SparseTyped<float>(pool, args, rets, mode);
    case ffi::DataType::F64:
      return SparseTyped<double>(pool, args, rets, mode);
    default:
      return Fail("only float32 and float64 are supported");
  }
}

template <typename T>
void AddRows(const T* x, const int32_t* indices, int64_t lo, int64_t hi, int64_t d,
             int64_t rows, T* w) {
  for (int64_t i = lo; i < hi; ++i) {
    Prefetch(w, indices, i, hi, d, rows);
    const int64_t r = Row(indices[i], rows);
    if (r < 0) continue;
    T* __restrict__ wr = w + r * d;
    const T* __restrict__ xi = x + i * d;
    for (int64_t j = 0; j < d; ++j) wr[j] = wr[j] + xi[j];
  }
}

ffi::Error ScatterAdd(ffi::ThreadPool pool, ffi::AnyBuffer values,
                      ffi::Buffer<ffi::S32> indices, ffi::AnyBuffer table,
                      ffi::Result<ffi::AnyBuffer> out, bool unique) {
  const int64_t n = static_cast<int64_t>(indices.element_count());
  int64_t d;
  if (!RowSize(values, n, &d)) return Fail("values do not split into rows");
  if (n == 0) return ffi::Error::Success();
  const auto dims = out->dimensions();
  if (dims.size() == 0) return Fail("a table must have at least one dimension");
  const int64_t rows = dims[0];
  if (rows * d != static_cast<int64_t>(out->element_count()))
    return Fail("table rows differ from values");
  if (values.element_type() != out->element_type() ||
      table.element_type() != out->element_type())
    return Fail("values and table must have one dtype");
  const void* x = values.untyped_data();
  void* w = out->untyped_data();
  switch (values.element_type()) {
    case ffi::DataType::F32:
      ForRows(pool, indices.typed_data(), n, d, unique, [&](int64_t lo, int64_t hi) {
        AddRows<float>(static_cast<const float*>(x), indices.typed_data(), lo, hi, d,
                       rows, static_cast<float*>(w));
      });
      return ffi::Error::Success();
    case ffi::DataType::F64:
      ForRows(pool, indices.typed_data(), n, d, unique, [&](int64_t lo, int64_t hi) {
        AddRows<double>(static_cast<const double*>(x), indices.typed_data(), lo, hi, d,
                        rows, static_cast<double*>(w));
      });
      return ffi::Error::Success();
    default:
      return Fail("only float32 and float64 are supported");
  }
}

// ---------------------------------------------------------------------------
// Splitting a buffer.

// The results, in order, are the bytes of `packed` from byte `start` on.
ffi::Error Split(ffi::AnyBuffer packed, ffi::RemainingRets rets, int64_t start) {
  const char* from = static_cast<const char*>(packed.untyped_data());
  const int64_t end = static_cast<int64_t>(packed.size_bytes());
  int64_t at = start;
  for (size_t r = 0; r < rets.size(); ++r) {
    auto out = rets.get<ffi::AnyBuffer>(r);
    if (!out.has_value()) return Fail("bad result");
    const int64_t n = static_cast<int64_t>((*out)->size_bytes());
    if (at < 0 || at + n > end) return Fail("the pieces run past the buffer");
    std::memcpy((*out)->untyped_data(), from + at, n);
    at += n;
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(OptaxKerasSgdStep, Dispatch,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .RemainingArgs()
                                  .RemainingRets()
                                  .Attr<int64_t>("mode")
                                  .Attr<int64_t>("clip"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(OptaxKerasSgdSumDuplicates, SumDuplicates,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::Buffer<ffi::S32>>()
                                  .Attr<int64_t>("rows"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(OptaxKerasSgdSparseStep, SparseStep,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .RemainingArgs()
                                  .RemainingRets()
                                  .Attr<int64_t>("mode"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(OptaxKerasSgdScatterAdd, ScatterAdd,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<bool>("unique"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(OptaxKerasSgdSplit, Split,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .RemainingRets()
                                  .Attr<int64_t>("start"));
