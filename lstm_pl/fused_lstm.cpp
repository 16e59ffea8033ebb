// The recurrence of the hand-written LSTM layers (lstm_pl/cells.py, LSTMRecurrence) with each
// time step's element-wise work fused into one loop: the same equations and memory layout as
// the eager path, one matrix product and one pass over the (B, H) state per step.
//
//   a = x_proj[t] + h U^T                                   (small_gemm, below)
//   i = σ(a_i + p_i ⊙ c),  f = σ(a_f + p_f ⊙ c),  g = tanh(a_g)
//   c' = f ⊙ c + i ⊙ g      (without a forget gate: c' = c + i ⊙ g)
//   o = σ(a_o + p_o ⊙ c'),  h' = o ⊙ tanh(c')
//
// Built on first use by lstm_pl/fused.py (torch.utils.cpp_extension.load); where it cannot be
// built the eager path runs instead.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

namespace {

// σ(x) = 1 / (1 + e^-x), with e^-x kept finite: under -ffast-math GCC divides by a reciprocal estimate
// and a Newton step, which turns 1 / inf into NaN where a gate saturates (x below -88 in float32).
// Capped at e^80 (e^700 in float64), σ is at most 2e-35 there instead of 0.
template <typename T> inline T sigmoid(T x) {
  constexpr T cap = std::is_same_v<T, float> ? T(80) : T(700);
  return T(1) / (T(1) + std::exp(std::min(-x, cap)));
}

// Rows of the batch per thread chunk: small states stay on one thread.
inline int64_t grain(int64_t hidden) { return std::max<int64_t>(1, 16384 / hidden); }

// ForgetGate and Peep are template parameters so that every branch goes at compile time and each
// loop below vectorises.
template <typename T, bool ForgetGate, bool Peep>
void forward_step(T* act, const T* c_prev, T* c_next, T* tanh_c, T* h_next, const T* peep,
                  int64_t batch, int64_t hidden) {
  constexpr int64_t gates = ForgetGate ? 4 : 3;
  at::parallel_for(0, batch, grain(hidden), [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      T* __restrict__ a_i = act + b * gates * hidden;
      T* __restrict__ a_f = a_i + hidden;  // unused without a forget gate
      T* __restrict__ a_g = a_i + (gates - 2) * hidden;
      T* __restrict__ a_o = a_i + (gates - 1) * hidden;
      const T* __restrict__ c = c_prev + b * hidden;
      T* __restrict__ cn = c_next + b * hidden;
      T* __restrict__ tc = tanh_c + b * hidden;
      T* __restrict__ hn = h_next + b * hidden;
      // Separate simple loops, each vectorised by the compiler (exp and tanh from libmvec).
      if constexpr (Peep) {
        for (int64_t j = 0; j < hidden; ++j) a_i[j] += peep[j] * c[j];
        if constexpr (ForgetGate)
          for (int64_t j = 0; j < hidden; ++j) a_f[j] += peep[hidden + j] * c[j];
      }
      for (int64_t j = 0; j < hidden; ++j) a_i[j] = sigmoid(a_i[j]);
      for (int64_t j = 0; j < hidden; ++j) a_g[j] = std::tanh(a_g[j]);
      if constexpr (ForgetGate) {
        for (int64_t j = 0; j < hidden; ++j) {
          a_f[j] = sigmoid(a_f[j]);
          cn[j] = a_f[j] * c[j] + a_i[j] * a_g[j];
        }
      } else {
        for (int64_t j = 0; j < hidden; ++j) cn[j] = c[j] + a_i[j] * a_g[j];
      }
      if constexpr (Peep)
        for (int64_t j = 0; j < hidden; ++j) a_o[j] += peep[2 * hidden + j] * cn[j];
      for (int64_t j = 0; j < hidden; ++j) {
        a_o[j] = sigmoid(a_o[j]);
        tc[j] = std::tanh(cn[j]);
        hn[j] = a_o[j] * tc[j];
      }
    }
  });
}

// One step back: from δh (grad_h) and δc (grad_c, updated in place to δc₋) to the gate
// pre-activation gradients δa (grad_a).
//   δa_o = δh ⊙ tanh(c) ⊙ o(1-o)
//   δc  += δh ⊙ o ⊙ (1 - tanh²c) + δa_o ⊙ p_o
//   δa_i = δc ⊙ g ⊙ i(1-i),  δa_f = δc ⊙ c₋ ⊙ f(1-f),  δa_g = δc ⊙ i ⊙ (1-g²)
//   δc₋  = δc ⊙ f + δa_i ⊙ p_i + δa_f ⊙ p_f             (without a forget gate: δc + δa_i ⊙ p_i)
//   δp_i += δa_i ⊙ c₋,  δp_f += δa_f ⊙ c₋,  δp_o += δa_o ⊙ c  (into grad_peep, (B, 3, H): each row of
//   the batch is one thread's, so the sums need no lock; summed over the batch at the end)
template <typename T, bool ForgetGate, bool Peep>
void backward_step(const T* act, const T* c_prev, const T* c_next, const T* tanh_c, const T* grad_h, T* grad_c,
                   T* grad_a, const T* peep, T* grad_peep, int64_t batch, int64_t hidden) {
  constexpr int64_t gates = ForgetGate ? 4 : 3;
  const T zero(0);
  at::parallel_for(0, batch, grain(hidden), [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const int64_t row = b * gates * hidden;
      const T* __restrict__ i = act + row;
      const T* __restrict__ f = i + hidden;
      const T* __restrict__ g = i + (gates - 2) * hidden;
      const T* __restrict__ o = i + (gates - 1) * hidden;
      T* __restrict__ d_i = grad_a + row;
      T* __restrict__ d_f = d_i + hidden;
      T* __restrict__ d_g = d_i + (gates - 2) * hidden;
      T* __restrict__ d_o = d_i + (gates - 1) * hidden;
      const T* __restrict__ c = c_prev + b * hidden;
      const T* __restrict__ tc = tanh_c + b * hidden;
      const T* __restrict__ dh = grad_h + b * hidden;
      T* __restrict__ dc = grad_c + b * hidden;
      const T* p_i = peep;
      const T* p_f = peep + hidden;
      const T* p_o = peep + 2 * hidden;
      for (int64_t j = 0; j < hidden; ++j) {
        const T dob = dh[j] * tc[j] * o[j] * (T(1) - o[j]);
        T dcj = dc[j] + dh[j] * o[j] * (T(1) - tc[j] * tc[j]) + (Peep ? dob * p_o[j] : zero);
        const T dib = dcj * g[j] * i[j] * (T(1) - i[j]);
        d_o[j] = dob;
        d_i[j] = dib;
        d_g[j] = dcj * i[j] * (T(1) - g[j] * g[j]);
        if constexpr (ForgetGate) {
          const T dfb = dcj * c[j] * f[j] * (T(1) - f[j]);
          d_f[j] = dfb;
          dc[j] = dcj * f[j] + (Peep ? dib * p_i[j] + dfb * p_f[j] : zero);
        } else {
          dc[j] = dcj + (Peep ? dib * p_i[j] : zero);
        }
      }
      if constexpr (Peep) {
        T* __restrict__ gp = grad_peep + b * 3 * hidden;
        const T* __restrict__ cn = c_next + b * hidden;
        for (int64_t j = 0; j < hidden; ++j) gp[j] += d_i[j] * c[j];
        if constexpr (ForgetGate)
          for (int64_t j = 0; j < hidden; ++j) gp[hidden + j] += d_f[j] * c[j];
        for (int64_t j = 0; j < hidden; ++j) gp[2 * hidden + j] += d_o[j] * cn[j];
      }
    }
  });
}

// The per-step products C = C0 + A B of the recurrence, A (M, K) a few rows of the batch (B, H),
// B (K, N) the recurrent weights, are too small for the BLAS: MKL takes 11 µs for (10, 100)·(100, 400)
// on this project's AMD machines, where the register-blocked loop below takes 4.4 µs (float32;
// `python -m benchmarks.products` for these and the other shapes). B's rows are read in whole vectors:
// in place where they are, else packed once per call into rows padded with zeros (rows_of); each
// block of MR rows by NV vectors keeps its sums in registers over a chunk of K (small_gemm):
//     C[r, n] = C0[r, n] + Σ_k A[r, k] B[k, n]       (k in order, as a dot product would)
#if defined(__AVX512F__)
constexpr int kVectorBytes = 64, kRowBlock = 6, kVectorBlock = 4;  // 24 sums + 4 loads of 32 registers
#elif defined(__AVX__)
constexpr int kVectorBytes = 32, kRowBlock = 4, kVectorBlock = 2;  // 8 sums + 2 loads of 16 registers
#else
constexpr int kVectorBytes = 16, kRowBlock = 4, kVectorBlock = 2;
#endif

template <typename T> constexpr int64_t lanes() { return kVectorBytes / sizeof(T); }

// The right-hand operand B (K, N) as the loop reads it: whole vectors of each row, `stride` apart.
// `keep` owns a packed copy where one was made.
template <typename T> struct Rows {
  const T* data;
  int64_t k_size, n_size, stride;
  torch::Tensor keep;
};

// B (K, N), element (k, n) at src[k * stride_k + n * stride_n]. Read in place where its rows are
// whole contiguous vectors; otherwise packed into rows padded with zeros to whole vectors (the sums
// of the columns past N are then zero and never stored).
template <typename T>
Rows<T> rows_of(const torch::Tensor& like, const T* src, int64_t k_size, int64_t n_size, int64_t stride_k,
                int64_t stride_n) {
  if (stride_n == 1 && n_size % lanes<T>() == 0) return {src, k_size, n_size, stride_k, {}};
  const int64_t width = (n_size + lanes<T>() - 1) / lanes<T>() * lanes<T>();
  auto packed = torch::zeros({k_size, width}, like.options());
  T* dst = packed.data_ptr<T>();
  for (int64_t k = 0; k < k_size; ++k)
    for (int64_t n = 0; n < n_size; ++n) dst[k * width + n] = src[k * stride_k + n * stride_n];
  return {dst, k_size, n_size, width, packed};
}

// One block: MR rows of A (element (r, k) at a[r * a_row + k * a_col]) by NV vectors of B's rows
// (stride ldb), the last vector holding `tail` valid lanes. C0 may be null (then C = A B).
template <typename T, int MR, int NV>
void gemm_block(int64_t k_size, const T* a, int64_t a_row, int64_t a_col, const T* b, int64_t ldb, const T* c0,
                int64_t ldc0, T* c, int64_t ldc, int64_t tail) {
  typedef T Vec __attribute__((vector_size(kVectorBytes)));
  constexpr int64_t W = lanes<T>();
  Vec sum[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) {
      sum[r][v] = Vec{};
      if (c0) std::memcpy(&sum[r][v], c0 + r * ldc0 + v * W, (v == NV - 1 ? tail : W) * sizeof(T));
    }
  for (int64_t k = 0; k < k_size; ++k) {
    Vec row[NV];
    for (int v = 0; v < NV; ++v) std::memcpy(&row[v], b + k * ldb + v * W, sizeof(Vec));
    for (int r = 0; r < MR; ++r) {
      const T x = a[r * a_row + k * a_col];
      for (int v = 0; v < NV; ++v) sum[r][v] += x * row[v];
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) std::memcpy(c + r * ldc + v * W, &sum[r][v], (v == NV - 1 ? tail : W) * sizeof(T));
}

// gemm_block with the block's shape (rows 1..kRowBlock, vectors 1..kVectorBlock) chosen at run time.
template <typename T, int MR = kRowBlock, int NV = kVectorBlock>
void gemm_block_of(int rows, int vectors, int64_t k_size, const T* a, int64_t a_row, int64_t a_col, const T* b,
                   int64_t ldb, const T* c0, int64_t ldc0, T* c, int64_t ldc, int64_t tail) {
  if constexpr (MR > 1) {
    if (rows < MR)
      return gemm_block_of<T, MR - 1, NV>(rows, vectors, k_size, a, a_row, a_col, b, ldb, c0, ldc0, c, ldc, tail);
  }
  if constexpr (NV > 1) {
    if (vectors < NV)
      return gemm_block_of<T, MR, NV - 1>(rows, vectors, k_size, a, a_row, a_col, b, ldb, c0, ldc0, c, ldc, tail);
  }
  gemm_block<T, MR, NV>(k_size, a, a_row, a_col, b, ldb, c0, ldc0, c, ldc, tail);
}

// C (M, N) = C0 + A (M, K) B, A's element (r, k) at a[r * a_row + k * a_col]; C0 null for C = A B,
// ldc0 0 to add one row (a bias) to every row. Rows of C are split between threads in chunks of 64
// (a batch of 10 stays on one thread). K is walked in chunks of kDepthBlock rows of B, so that a
// column block of them (32 KB) stays in cache over all the rows of C: a weight gradient sums over
// K = T·B (64,000 for the adding problem at batch 256), whose whole column block would otherwise
// come from memory again for every block of rows. Each chunk continues the sums in C, so every sum
// still runs over k in order.
constexpr int64_t kDepthBlock = 128;

template <typename T>
void small_gemm(int64_t m_size, const T* a, int64_t a_row, int64_t a_col, const Rows<T>& b, const T* c0,
                int64_t ldc0, T* c, int64_t ldc) {
  const int64_t W = lanes<T>(), vectors = (b.n_size + W - 1) / W;
  if (m_size == 0 || vectors == 0) return;
  const int64_t tail = b.n_size - (vectors - 1) * W;
  if (b.k_size == 0) {  // C = C0
    for (int64_t r = 0; r < m_size; ++r)
      for (int64_t n = 0; n < b.n_size; ++n) c[r * ldc + n] = c0 ? c0[r * ldc0 + n] : T(0);
    return;
  }
  at::parallel_for(0, m_size, 64, [&](int64_t begin, int64_t end) {
    for (int64_t k0 = 0; k0 < b.k_size; k0 += kDepthBlock) {
      const int64_t depth = std::min<int64_t>(kDepthBlock, b.k_size - k0);
      for (int64_t v0 = 0; v0 < vectors; v0 += kVectorBlock) {  // a column block of B stays in cache over the rows
        const int nv = static_cast<int>(std::min<int64_t>(kVectorBlock, vectors - v0));
        const int64_t block_tail = v0 + nv == vectors ? tail : W;
        for (int64_t r0 = begin; r0 < end; r0 += kRowBlock) {
          const int mr = static_cast<int>(std::min<int64_t>(kRowBlock, end - r0));
          T* out = c + r0 * ldc + v0 * W;
          const T* start = k0 > 0 ? out : c0 ? c0 + r0 * ldc0 + v0 * W : nullptr;  // later chunks continue C
          gemm_block_of<T>(mr, nv, depth, a + r0 * a_row + k0 * a_col, a_row, a_col, b.data + k0 * b.stride + v0 * W,
                           b.stride, start, k0 > 0 ? ldc : ldc0, out, ldc, block_tail);
        }
      }
    }
  });
}

// Calls fn with the two flags as compile-time constants (std::bool_constant).
template <typename Fn> void dispatch(bool forget_gate, bool peep, Fn&& fn) {
  using yes = std::true_type;
  using no = std::false_type;
  if (forget_gate) {
    peep ? fn(yes{}, yes{}) : fn(yes{}, no{});
  } else {
    peep ? fn(no{}, yes{}) : fn(no{}, no{});
  }
}

}  // namespace

// x_proj (T, B, G·H), h0, c0 (B, H), weight_hh (G·H, H), peephole (3, H) or an empty tensor.
// Returns acts (T, B, G·H; the activated gates), h (T+1, B, H), c (T+1, B, H), tanh_c (T, B, H).
std::vector<torch::Tensor> forward(torch::Tensor x_proj, torch::Tensor h0, torch::Tensor c0,
                                   torch::Tensor weight_hh, torch::Tensor peephole) {
  x_proj = x_proj.contiguous();
  weight_hh = weight_hh.contiguous();
  const int64_t steps = x_proj.size(0), batch = x_proj.size(1), hidden = h0.size(1);
  const int64_t gates = x_proj.size(2) / hidden, state = batch * hidden;
  auto acts = torch::empty_like(x_proj);
  auto h = x_proj.new_empty({steps + 1, batch, hidden});
  auto c = x_proj.new_empty({steps + 1, batch, hidden});
  auto tanh_c = x_proj.new_empty({steps, batch, hidden});
  h[0].copy_(h0);
  c[0].copy_(c0);
  auto peep = peephole.numel() ? peephole.contiguous() : peephole;
  AT_DISPATCH_FLOATING_TYPES(x_proj.scalar_type(), "lstm_pl_fused_forward", [&] {
    const scalar_t* p = peephole.numel() ? peep.data_ptr<scalar_t>() : nullptr;
    // Uᵀ (H, G·H), packed: weight_hh's element (n, k) is Uᵀ's (k, n).
    const auto u_t = rows_of<scalar_t>(x_proj, weight_hh.data_ptr<scalar_t>(), hidden, gates * hidden, 1, hidden);
    const scalar_t* xp = x_proj.data_ptr<scalar_t>();
    scalar_t* act = acts.data_ptr<scalar_t>();
    scalar_t *hp = h.data_ptr<scalar_t>(), *cp = c.data_ptr<scalar_t>(), *tcp = tanh_c.data_ptr<scalar_t>();
    for (int64_t t = 0; t < steps; ++t) {
      small_gemm<scalar_t>(batch, hp + t * state, hidden, 1, u_t, xp + t * gates * state, gates * hidden,
                           act + t * gates * state, gates * hidden);
      dispatch(gates == 4, p != nullptr, [&](auto forget_gate, auto peep) {
        forward_step<scalar_t, forget_gate, peep>(act + t * gates * state, cp + t * state, cp + (t + 1) * state,
                                                  tcp + t * state, hp + (t + 1) * state, p, batch, hidden);
      });
    }
  });
  return {acts, h, c, tanh_c};
}

// The same layer where nothing will be differentiated (evaluation), from its input x (B, T, F)
// (batch first, as the layer takes it) with weight_ih (G·H, F) and bias (G·H): each step's input
// projection is made in the step's own gate buffer, a = b + x_t Wᵀ + h Uᵀ, in the order of linear() and
// forward() (so the outputs are theirs bit for bit), instead of all T steps of it at once, and the
// gates and the cell state live in per-step buffers reused every step (cache-resident). Only the hidden
// states are kept. Returns h (T, B, H) and the final cell state c (B, H).
std::vector<torch::Tensor> forward_inference(torch::Tensor x, torch::Tensor weight_ih, torch::Tensor bias,
                                             torch::Tensor h0, torch::Tensor c0, torch::Tensor weight_hh,
                                             torch::Tensor peephole) {
  x = x.contiguous();
  weight_ih = weight_ih.contiguous();
  bias = bias.contiguous();
  weight_hh = weight_hh.contiguous();
  const int64_t batch = x.size(0), steps = x.size(1), inputs = x.size(2), hidden = h0.size(-1);
  const int64_t gates = weight_hh.size(0) / hidden, state = batch * hidden;
  TORCH_CHECK(weight_ih.size(0) == gates * hidden && weight_ih.size(1) == inputs && bias.numel() == gates * hidden,
              "forward_inference: shapes do not match");
  auto act = x.new_empty({batch, gates * hidden});
  auto h = x.new_empty({steps, batch, hidden});
  // The state copied into buffers of the step's own shape and dtype, as forward does (copy_ broadcasts,
  // converts, and refuses what does not fit).
  auto h_prev = x.new_empty({batch, hidden}), c = x.new_empty({batch, hidden});
  h_prev.copy_(h0);
  c.copy_(c0);
  auto c_next = torch::empty_like(c), tanh_c = torch::empty_like(c);
  auto peep = peephole.numel() ? peephole.contiguous() : peephole;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lstm_pl_fused_forward_inference", [&] {
    const scalar_t* p = peephole.numel() ? peep.data_ptr<scalar_t>() : nullptr;
    const auto w_t = rows_of<scalar_t>(x, weight_ih.data_ptr<scalar_t>(), inputs, gates * hidden, 1, inputs);
    const auto u_t = rows_of<scalar_t>(x, weight_hh.data_ptr<scalar_t>(), hidden, gates * hidden, 1, hidden);
    const scalar_t *xs = x.data_ptr<scalar_t>(), *b = bias.data_ptr<scalar_t>();
    scalar_t *hp = h.data_ptr<scalar_t>(), *a = act.data_ptr<scalar_t>();
    for (int64_t t = 0; t < steps; ++t) {
      small_gemm<scalar_t>(batch, xs + t * inputs, steps * inputs, 1, w_t, b, 0, a, gates * hidden);
      small_gemm<scalar_t>(batch, t == 0 ? h_prev.data_ptr<scalar_t>() : hp + (t - 1) * state, hidden, 1, u_t, a,
                           gates * hidden, a, gates * hidden);
      dispatch(gates == 4, p != nullptr, [&](auto forget_gate, auto peep) {
        forward_step<scalar_t, forget_gate, peep>(a, c.data_ptr<scalar_t>(), c_next.data_ptr<scalar_t>(),
                                                  tanh_c.data_ptr<scalar_t>(), hp + t * state, p, batch, hidden);
      });
      std::swap(c, c_next);
    }
  });
  return {h, c};
}

// grad_hs (T, B, H) or empty, grad_c_last (B, H) or empty, and what forward returned.
// Returns δa (T, B, G·H), δh0, δc0 (B, H) and δp (3, H) (empty without peepholes); the other weight
// gradients are single products outside.
std::vector<torch::Tensor> backward(torch::Tensor grad_hs, torch::Tensor grad_c_last, torch::Tensor acts,
                                    torch::Tensor c, torch::Tensor tanh_c, torch::Tensor weight_hh,
                                    torch::Tensor peephole) {
  const int64_t steps = tanh_c.size(0), batch = tanh_c.size(1), hidden = tanh_c.size(2);
  const int64_t gates = acts.size(2) / hidden, state = batch * hidden;
  auto grad_a = torch::empty_like(acts);
  const bool has_grad_hs = grad_hs.numel() > 0;
  if (has_grad_hs) grad_hs = grad_hs.contiguous();
  weight_hh = weight_hh.contiguous();
  // δh for the step being walked and the one before it, swapped each step (no allocation in the loop).
  auto grad_h = has_grad_hs ? grad_hs[steps - 1].clone(at::MemoryFormat::Contiguous) : torch::zeros_like(c[0]);
  auto grad_h_next = torch::empty_like(grad_h);
  auto grad_c = grad_c_last.numel() ? grad_c_last.clone(at::MemoryFormat::Contiguous) : torch::zeros_like(c[0]);
  auto peep = peephole.numel() ? peephole.contiguous() : peephole;
  auto grad_peep = peephole.numel() ? torch::zeros({batch, 3, hidden}, acts.options()) : acts.new_empty(0);
  AT_DISPATCH_FLOATING_TYPES(acts.scalar_type(), "lstm_pl_fused_backward", [&] {
    const scalar_t* p = peephole.numel() ? peep.data_ptr<scalar_t>() : nullptr;
    const auto u = rows_of<scalar_t>(acts, weight_hh.data_ptr<scalar_t>(), gates * hidden, hidden, hidden, 1);  // U
    const scalar_t* ghs = has_grad_hs ? grad_hs.data_ptr<scalar_t>() : nullptr;
    const scalar_t *act = acts.data_ptr<scalar_t>(), *cp = c.data_ptr<scalar_t>(), *tcp = tanh_c.data_ptr<scalar_t>();
    scalar_t* da = grad_a.data_ptr<scalar_t>();
    for (int64_t t = steps - 1; t >= 0; --t) {
      dispatch(gates == 4, p != nullptr, [&](auto forget_gate, auto peep) {
        backward_step<scalar_t, forget_gate, peep>(
            act + t * gates * state, cp + t * state, cp + (t + 1) * state, tcp + t * state, grad_h.data_ptr<scalar_t>(),
            grad_c.data_ptr<scalar_t>(), da + t * gates * state, p, p ? grad_peep.data_ptr<scalar_t>() : nullptr,
            batch, hidden);
      });
      // δh₋ = δa U, plus what the layer above sends to h₋
      small_gemm<scalar_t>(batch, da + t * gates * state, gates * hidden, 1, u,
                           t > 0 && ghs ? ghs + (t - 1) * state : nullptr, hidden, grad_h_next.data_ptr<scalar_t>(),
                           hidden);
      std::swap(grad_h, grad_h_next);
    }
  });
  if (peephole.numel()) grad_peep = grad_peep.sum(0);
  return {grad_a, grad_h, grad_c, grad_peep};
}

// The products around the recurrence, on the same loop (MKL's are slow at these skinny shapes too:
// 0.8 ms for the (2,500, 2)·(2, 400) input projection of a batch of 10 sequences of 250 steps).

// x (M, K) Wᵀ + b for weight (N, K) and bias (N) or an empty tensor: the input projection of every
// step at once.
torch::Tensor linear(torch::Tensor x, torch::Tensor weight, torch::Tensor bias) {
  x = x.contiguous();
  weight = weight.contiguous();
  bias = bias.contiguous();
  const int64_t m_size = x.size(0), k_size = x.size(1), n_size = weight.size(0);
  TORCH_CHECK(weight.size(1) == k_size && (bias.numel() == 0 || bias.numel() == n_size),
              "linear: shapes do not match");
  auto out = x.new_empty({m_size, n_size});
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lstm_pl_fused_linear", [&] {
    const auto w_t = rows_of<scalar_t>(x, weight.data_ptr<scalar_t>(), k_size, n_size, 1, k_size);
    small_gemm<scalar_t>(m_size, x.data_ptr<scalar_t>(), k_size, 1, w_t,
                         bias.numel() ? bias.data_ptr<scalar_t>() : nullptr, 0, out.data_ptr<scalar_t>(), n_size);
  });
  return out;
}

// a (M, K) b (K, N): δx = δa W of the input projection.
torch::Tensor matmul(torch::Tensor a, torch::Tensor b) {
  a = a.contiguous();
  b = b.contiguous();
  const int64_t m_size = a.size(0), k_size = a.size(1), n_size = b.size(1);
  TORCH_CHECK(b.size(0) == k_size, "matmul: shapes do not match");
  auto out = a.new_empty({m_size, n_size});
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "lstm_pl_fused_matmul", [&] {
    const auto rows = rows_of<scalar_t>(a, b.data_ptr<scalar_t>(), k_size, n_size, n_size, 1);
    small_gemm<scalar_t>(m_size, a.data_ptr<scalar_t>(), k_size, 1, rows, nullptr, 0, out.data_ptr<scalar_t>(), n_size);
  });
  return out;
}

// aᵀ b (N, F) for a (R, N), b (R, F): a weight gradient Σ_r a_rᵀ b_r over every step and row of the
// batch (dU = Σ δa_tᵀ h_{t-1}, dW = Σ δa_tᵀ x_t). Computed as (bᵀ a)ᵀ, so that the long operand a is
// read in place as B's rows and only the small result is transposed.
torch::Tensor matmul_tn(torch::Tensor a, torch::Tensor b) {
  a = a.contiguous();
  b = b.contiguous();
  const int64_t r_size = a.size(0), n_size = a.size(1), f_size = b.size(1);
  TORCH_CHECK(b.size(0) == r_size, "matmul_tn: shapes do not match");
  auto out_t = a.new_empty({f_size, n_size});
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "lstm_pl_fused_matmul_tn", [&] {
    const auto rows = rows_of<scalar_t>(a, a.data_ptr<scalar_t>(), r_size, n_size, n_size, 1);
    small_gemm<scalar_t>(f_size, b.data_ptr<scalar_t>(), 1, f_size, rows, nullptr, 0, out_t.data_ptr<scalar_t>(),
                         n_size);
  });
  return out_t.t().contiguous();
}

// The plain RNN layer (nn.RNN's tanh cell) on the same loop:  h' = tanh(x_proj[t] + h Uᵀ).
namespace {
template <typename T> void tanh_in_place(T* __restrict__ v, int64_t n) {
  for (int64_t j = 0; j < n; ++j) v[j] = std::tanh(v[j]);
}
}  // namespace

// x_proj (T, B, H), h0 (B, H), weight_hh (H, H). Returns h (T+1, B, H), h[0] = h0.
torch::Tensor rnn_forward(torch::Tensor x_proj, torch::Tensor h0, torch::Tensor weight_hh) {
  x_proj = x_proj.contiguous();
  weight_hh = weight_hh.contiguous();
  const int64_t steps = x_proj.size(0), batch = x_proj.size(1), hidden = x_proj.size(2), state = batch * hidden;
  auto h = x_proj.new_empty({steps + 1, batch, hidden});
  h[0].copy_(h0);
  AT_DISPATCH_FLOATING_TYPES(x_proj.scalar_type(), "lstm_pl_rnn_forward", [&] {
    const auto u_t = rows_of<scalar_t>(x_proj, weight_hh.data_ptr<scalar_t>(), hidden, hidden, 1, hidden);
    const scalar_t* xp = x_proj.data_ptr<scalar_t>();
    scalar_t* hp = h.data_ptr<scalar_t>();
    for (int64_t t = 0; t < steps; ++t) {
      scalar_t* next = hp + (t + 1) * state;
      small_gemm<scalar_t>(batch, hp + t * state, hidden, 1, u_t, xp + t * state, hidden, next, hidden);
      tanh_in_place(next, state);
    }
  });
  return h;
}

// Evaluation from the layer's input x (B, T, F), as forward_inference: a = b + x_t Wᵀ + h Uᵀ per step,
// in the order of linear() and rnn_forward(). Returns h (T, B, H).
torch::Tensor rnn_forward_inference(torch::Tensor x, torch::Tensor weight_ih, torch::Tensor bias, torch::Tensor h0,
                                    torch::Tensor weight_hh) {
  x = x.contiguous();
  weight_ih = weight_ih.contiguous();
  bias = bias.contiguous();
  weight_hh = weight_hh.contiguous();
  const int64_t batch = x.size(0), steps = x.size(1), inputs = x.size(2), hidden = weight_hh.size(0);
  const int64_t state = batch * hidden;
  TORCH_CHECK(weight_ih.size(0) == hidden && weight_ih.size(1) == inputs && bias.numel() == hidden,
              "rnn_forward_inference: shapes do not match");
  auto h = x.new_empty({steps, batch, hidden});
  auto h_prev = x.new_empty({batch, hidden});
  h_prev.copy_(h0);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lstm_pl_rnn_forward_inference", [&] {
    const auto w_t = rows_of<scalar_t>(x, weight_ih.data_ptr<scalar_t>(), inputs, hidden, 1, inputs);
    const auto u_t = rows_of<scalar_t>(x, weight_hh.data_ptr<scalar_t>(), hidden, hidden, 1, hidden);
    const scalar_t *xs = x.data_ptr<scalar_t>(), *b = bias.data_ptr<scalar_t>();
    scalar_t* hp = h.data_ptr<scalar_t>();
    for (int64_t t = 0; t < steps; ++t) {
      scalar_t* a = hp + t * state;
      small_gemm<scalar_t>(batch, xs + t * inputs, steps * inputs, 1, w_t, b, 0, a, hidden);
      small_gemm<scalar_t>(batch, t == 0 ? h_prev.data_ptr<scalar_t>() : hp + (t - 1) * state, hidden, 1, u_t, a,
                           hidden, a, hidden);
      tanh_in_place(a, state);
    }
  });
  return h;
}

// grad_hs (T, B, H) or empty, h (T+1, B, H) from rnn_forward. Returns δa (T, B, H) and δh0 (B, H):
//   δa_t = δh_t ⊙ (1 - h_{t+1}²),   δh_{t-1} = grad_hs[t-1] + δa_t U
std::vector<torch::Tensor> rnn_backward(torch::Tensor grad_hs, torch::Tensor h, torch::Tensor weight_hh) {
  const int64_t steps = h.size(0) - 1, batch = h.size(1), hidden = h.size(2), state = batch * hidden;
  const bool has_grad_hs = grad_hs.numel() > 0;
  if (has_grad_hs) grad_hs = grad_hs.contiguous();
  h = h.contiguous();
  weight_hh = weight_hh.contiguous();
  auto grad_a = h.new_empty({steps, batch, hidden});
  auto grad_h = has_grad_hs ? grad_hs[steps - 1].clone(at::MemoryFormat::Contiguous) : torch::zeros_like(h[0]);
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "lstm_pl_rnn_backward", [&] {
    const auto u = rows_of<scalar_t>(h, weight_hh.data_ptr<scalar_t>(), hidden, hidden, hidden, 1);
    const scalar_t* hp = h.data_ptr<scalar_t>();
    const scalar_t* ghs = has_grad_hs ? grad_hs.data_ptr<scalar_t>() : nullptr;
    scalar_t *da = grad_a.data_ptr<scalar_t>(), *dh = grad_h.data_ptr<scalar_t>();
    for (int64_t t = steps - 1; t >= 0; --t) {
      scalar_t* __restrict__ d = da + t * state;
      const scalar_t* __restrict__ out = hp + (t + 1) * state;
      for (int64_t j = 0; j < state; ++j) d[j] = dh[j] * (scalar_t(1) - out[j] * out[j]);
      small_gemm<scalar_t>(batch, d, hidden, 1, u, t > 0 && ghs ? ghs + (t - 1) * state : nullptr, hidden, dh, hidden);
    }
  });
  return {grad_a, grad_h};
}

// TF1's Adam (lstm_pl/optim.py, TFAdam; training_ops.ApplyAdam) on every parameter of one device and
// dtype in one call, where the _foreach path makes ~20 dispatches (95 µs of a 0.66 ms sine step; this
// loop, vectorised, 18 µs: python -m benchmarks.adam):
//     lr_t = lr · √(1 - β₂ᵗ) / (1 - β₁ᵗ)       (the powers float32 variables, cast to the dtype)
//     m += (g - m)(1 - β₁);   v += (g² - v)(1 - β₂);   θ -= (m · lr_t) / (√v + ε)
//     β₁ᵗ *= β₁, β₂ᵗ *= β₂                      (in float32)
// Each operation rounded in this order, as TF1's kernel rounds them: no fast-math here (no contraction
// into fused multiply-adds, no reciprocals, no reassociation), so the bits are TF1's (tests/test_optim.py;
// ATen's _foreach operations differ from them in the last bit in a few elements).
// found_inf (a tensor, may be empty): 1 leaves everything as it was. The constants are the group's
// (each a 0-dim tensor: lr, eps, 1 - β₁, 1 - β₂ in the dtype; β₁, β₂ in float32).
#pragma GCC push_options
#pragma GCC optimize("O3", "no-fast-math", "no-reciprocal-math", "fp-contract=off", "no-math-errno")
template <typename T>
__attribute__((noinline)) void tf_adam_elements(T* __restrict__ theta, const T* __restrict__ g, T* __restrict__ m,
                                                T* __restrict__ v, int64_t n, T lr_t, T eps,
                                                T one_minus_beta1, T one_minus_beta2) {
  for (int64_t i = 0; i < n; ++i) {
    T step = g[i] - m[i];
    step = step * one_minus_beta1;
    const T mi = m[i] + step;
    m[i] = mi;
    T square = g[i] * g[i];
    square = square - v[i];
    square = square * one_minus_beta2;
    const T vi = v[i] + square;
    v[i] = vi;
    T update = mi * lr_t;
    T root;
    if constexpr (std::is_same_v<T, float>) root = __builtin_sqrtf(vi);  // the instruction, inlined (IEEE)
    else root = __builtin_sqrt(vi);
    root = root + eps;
    update = update / root;
    theta[i] = theta[i] - update;
  }
}

template <typename T>
__attribute__((noinline)) T tf_adam_rate(T lr, float beta1_power, float beta2_power) {
  T root = std::sqrt(T(1) - static_cast<T>(beta2_power));
  return (lr * root) / (T(1) - static_cast<T>(beta1_power));
}

template <typename T>
void tf_adam_of(std::vector<torch::Tensor>& params, const std::vector<torch::Tensor>& grads,
                std::vector<torch::Tensor>& m, std::vector<torch::Tensor>& v, std::vector<torch::Tensor>& beta1_power,
                std::vector<torch::Tensor>& beta2_power, T lr, T eps, T one_minus_beta1, T one_minus_beta2, float beta1,
                float beta2) {
  for (size_t k = 0; k < params.size(); ++k) {
    float* p1 = beta1_power[k].data_ptr<float>();
    float* p2 = beta2_power[k].data_ptr<float>();
    const auto g = grads[k].contiguous();
    tf_adam_elements<T>(params[k].data_ptr<T>(), g.data_ptr<T>(), m[k].data_ptr<T>(), v[k].data_ptr<T>(),
                        params[k].numel(), tf_adam_rate<T>(lr, *p1, *p2), eps, one_minus_beta1, one_minus_beta2);
    *p1 = *p1 * beta1;
    *p2 = *p2 * beta2;
  }
}
#pragma GCC pop_options

void tf_adam(std::vector<torch::Tensor> params, std::vector<torch::Tensor> grads, std::vector<torch::Tensor> m,
             std::vector<torch::Tensor> v, std::vector<torch::Tensor> beta1_power, std::vector<torch::Tensor> beta2_power,
             torch::Tensor lr, torch::Tensor eps, torch::Tensor one_minus_beta1, torch::Tensor one_minus_beta2,
             torch::Tensor beta1, torch::Tensor beta2, torch::Tensor found_inf) {
  TORCH_CHECK(!params.empty() && grads.size() == params.size() && m.size() == params.size() && v.size() == params.size() &&
              beta1_power.size() == params.size() && beta2_power.size() == params.size(), "tf_adam: lists of unequal lengths");
  const auto dtype = params[0].scalar_type();
  for (size_t k = 0; k < params.size(); ++k) {
    for (const auto* t : {&params[k], &grads[k], &m[k], &v[k]}) {
      TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == dtype && t->numel() == params[k].numel(),
                  "tf_adam: every tensor on the CPU, of the parameters' dtype and size");
    }
    TORCH_CHECK(params[k].is_contiguous() && m[k].is_contiguous() && v[k].is_contiguous(), "tf_adam: contiguous state");
    TORCH_CHECK(beta1_power[k].scalar_type() == at::kFloat && beta2_power[k].scalar_type() == at::kFloat &&
                beta1_power[k].numel() == 1 && beta2_power[k].numel() == 1, "tf_adam: float32 powers");
  }
  if (found_inf.numel() && found_inf.item<double>() != 0) return;
  const float b1 = beta1.item<float>(), b2 = beta2.item<float>();
  AT_DISPATCH_FLOATING_TYPES(dtype, "tf_adam", [&] {
    tf_adam_of<scalar_t>(params, grads, m, v, beta1_power, beta2_power, lr.item<scalar_t>(), eps.item<scalar_t>(),
                         one_minus_beta1.item<scalar_t>(), one_minus_beta2.item<scalar_t>(), b1, b2);
  });
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "fused LSTM recurrence, forward");
  m.def("forward_inference", &forward_inference, "fused LSTM recurrence, forward only (no backward pass)");
  m.def("backward", &backward, "fused LSTM recurrence, backward");
  m.def("rnn_forward", &rnn_forward, "plain RNN recurrence, forward");
  m.def("rnn_forward_inference", &rnn_forward_inference, "plain RNN layer, forward only (no backward pass)");
  m.def("rnn_backward", &rnn_backward, "plain RNN recurrence, backward");
  m.def("linear", &linear, "x W^T + b on the recurrence's matrix loop");
  m.def("matmul", &matmul, "a b on the recurrence's matrix loop");
  m.def("matmul_tn", &matmul_tn, "a^T b on the recurrence's matrix loop (weight gradients)");
  m.def("tf_adam", &tf_adam, "TF1's Adam update on a list of CPU parameters (lstm_pl.optim.TFAdam)");
}
