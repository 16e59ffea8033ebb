// The recurrence of the hand-written LSTM layers (lstm_pl/cells.py, LSTMRecurrence) with each
// time step's element-wise work fused into one loop: the same equations and memory layout as
// the eager path, one matrix product and one pass over the (B, H) state per step.
//
//   a = x_proj[t] + h U^T                                   (at::addmm_out)
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
#include <type_traits>

namespace {

template <typename T> inline T sigmoid(T x) { return T(1) / (T(1) + std::exp(-x)); }

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
  const int64_t steps = x_proj.size(0), batch = x_proj.size(1), hidden = h0.size(1);
  const int64_t gates = x_proj.size(2) / hidden, state = batch * hidden;
  auto acts = torch::empty_like(x_proj);
  auto h = x_proj.new_empty({steps + 1, batch, hidden});
  auto c = x_proj.new_empty({steps + 1, batch, hidden});
  auto tanh_c = x_proj.new_empty({steps, batch, hidden});
  h[0].copy_(h0);
  c[0].copy_(c0);
  auto w_hh_t = weight_hh.t().contiguous();  // (H, G·H): the faster operand layout for the small products
  auto peep = peephole.numel() ? peephole.contiguous() : peephole;
  // Tensor views only where the matrix product needs them; the element-wise loop walks raw pointers.
  auto a_t = acts.unbind(0), x_t = x_proj.unbind(0), h_t = h.unbind(0);
  AT_DISPATCH_FLOATING_TYPES(x_proj.scalar_type(), "lstm_pl_fused_forward", [&] {
    const scalar_t* p = peephole.numel() ? peep.data_ptr<scalar_t>() : nullptr;
    scalar_t* act = acts.data_ptr<scalar_t>();
    scalar_t *hp = h.data_ptr<scalar_t>(), *cp = c.data_ptr<scalar_t>(), *tcp = tanh_c.data_ptr<scalar_t>();
    for (int64_t t = 0; t < steps; ++t) {
      at::addmm_out(a_t[t], x_t[t], h_t[t], w_hh_t);
      dispatch(gates == 4, p != nullptr, [&](auto forget_gate, auto peep) {
        forward_step<scalar_t, forget_gate, peep>(act + t * gates * state, cp + t * state, cp + (t + 1) * state,
                                                  tcp + t * state, hp + (t + 1) * state, p, batch, hidden);
      });
    }
  });
  return {acts, h, c, tanh_c};
}

// The same recurrence where nothing will be differentiated (evaluation): the gates and the cell
// state live in per-step buffers reused every step (cache-resident, where forward keeps all T steps
// of them for the backward pass), and only the hidden states are kept.
// Returns h (T, B, H) and the final cell state c (B, H).
std::vector<torch::Tensor> forward_inference(torch::Tensor x_proj, torch::Tensor h0, torch::Tensor c0,
                                             torch::Tensor weight_hh, torch::Tensor peephole) {
  const int64_t steps = x_proj.size(0), batch = x_proj.size(1), hidden = h0.size(1);
  const int64_t gates = x_proj.size(2) / hidden;
  auto act = x_proj.new_empty({batch, gates * hidden});
  auto h = x_proj.new_empty({steps, batch, hidden});
  // The state copied into buffers of the step's own shape and dtype, as forward does (copy_ broadcasts,
  // converts, and refuses what does not fit).
  auto h_prev = x_proj.new_empty({batch, hidden}), c = x_proj.new_empty({batch, hidden});
  h_prev.copy_(h0);
  c.copy_(c0);
  auto c_next = torch::empty_like(c), tanh_c = torch::empty_like(c);
  auto w_hh_t = weight_hh.t().contiguous();
  auto peep = peephole.numel() ? peephole.contiguous() : peephole;
  auto x_t = x_proj.unbind(0), h_t = h.unbind(0);
  AT_DISPATCH_FLOATING_TYPES(x_proj.scalar_type(), "lstm_pl_fused_forward_inference", [&] {
    const scalar_t* p = peephole.numel() ? peep.data_ptr<scalar_t>() : nullptr;
    for (int64_t t = 0; t < steps; ++t) {
      at::addmm_out(act, x_t[t], t == 0 ? h_prev : h_t[t - 1], w_hh_t);
      dispatch(gates == 4, p != nullptr, [&](auto forget_gate, auto peep) {
        forward_step<scalar_t, forget_gate, peep>(act.data_ptr<scalar_t>(), c.data_ptr<scalar_t>(),
                                                  c_next.data_ptr<scalar_t>(), tanh_c.data_ptr<scalar_t>(),
                                                  h_t[t].data_ptr<scalar_t>(), p, batch, hidden);
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
  // δh for the step being walked and the one before it, swapped each step (no allocation in the loop).
  auto grad_h = has_grad_hs ? grad_hs[steps - 1].clone(at::MemoryFormat::Contiguous) : torch::zeros_like(c[0]);
  auto grad_h_next = torch::empty_like(grad_h);
  auto grad_c = grad_c_last.numel() ? grad_c_last.clone(at::MemoryFormat::Contiguous) : torch::zeros_like(c[0]);
  auto peep = peephole.numel() ? peephole.contiguous() : peephole;
  auto grad_peep = peephole.numel() ? torch::zeros({batch, 3, hidden}, acts.options()) : acts.new_empty(0);
  auto d_t = grad_a.unbind(0);
  std::vector<torch::Tensor> grad_hs_t;
  if (has_grad_hs) grad_hs_t = grad_hs.unbind(0);
  AT_DISPATCH_FLOATING_TYPES(acts.scalar_type(), "lstm_pl_fused_backward", [&] {
    const scalar_t* p = peephole.numel() ? peep.data_ptr<scalar_t>() : nullptr;
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
      if (t > 0 && has_grad_hs) {
        at::addmm_out(grad_h_next, grad_hs_t[t - 1], d_t[t], weight_hh);
      } else {
        at::mm_out(grad_h_next, d_t[t], weight_hh);
      }
      std::swap(grad_h, grad_h_next);
    }
  });
  if (peephole.numel()) grad_peep = grad_peep.sum(0);
  return {grad_a, grad_h, grad_c, grad_peep};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "fused LSTM recurrence, forward");
  m.def("forward_inference", &forward_inference, "fused LSTM recurrence, forward only (no backward pass)");
  m.def("backward", &backward, "fused LSTM recurrence, backward");
}
