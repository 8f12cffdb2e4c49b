// Reductions: sum and mean (all elements or a list of dims), max / argmax over
// one dim or all elements, and sum_to (the backward of broadcasting).
//
// Every reduction is brought to the kernels' [outer, r, inner] form over a
// contiguous tensor. A run of adjacent reduced dims is one kernel pass; several
// runs (sum over {0, 2}, BatchNorm's {0, 2, 3}) are reduced one after another,
// innermost first, each pass reading the previous one's (smaller) output. That
// reads x once, where permuting the reduced dims to the end would first copy it.
#include <algorithm>

#include "core/autograd.h"
#include "core/dispatch.h"
#include "core/ops.h"
#include "kernels/reduce.h"

namespace vlmc {
namespace {

struct Reduction {
  std::vector<bool> reduced;  // per dim of x
  Shape kept_shape;           // the output with keepdim = true (1 where reduced)
  Shape out_shape;            // the output as requested
  int64_t count = 1;          // elements reduced into each output
};

// dims empty = all dims (as torch.sum(x, dim=[])).
Reduction plan_reduction(const char* op, const Tensor& x, const std::vector<int64_t>& dims,
                         bool keepdim) {
  const int64_t nd = x.dim();
  Reduction p;
  p.reduced.assign(static_cast<size_t>(nd), dims.empty());
  for (int64_t d : dims) {
    const int64_t w = wrap_dim(d, nd, op);
    if (nd == 0) continue;  // a scalar's dim 0 / -1: nothing to reduce
    VLMC_CHECK(!p.reduced[static_cast<size_t>(w)], op, ": dim ", w, " appears twice in the dims of ",
               describe(x));
    p.reduced[static_cast<size_t>(w)] = true;
  }
  for (int64_t d = 0; d < nd; ++d) {
    const int64_t size = x.shape()[static_cast<size_t>(d)];
    if (p.reduced[static_cast<size_t>(d)]) {
      p.count *= size;
      p.kept_shape.push_back(1);
    } else {
      p.kept_shape.push_back(size);
      p.out_shape.push_back(size);
    }
  }
  if (keepdim) p.out_shape = p.kept_shape;
  return p;
}

// [outer, r, inner] sizes of shape with dims [first, last] as the middle.
struct Split3 {
  int64_t outer = 1, r = 1, inner = 1;
};
Split3 split3(const Shape& shape, int64_t first, int64_t last) {
  Split3 s;
  for (int64_t d = 0; d < static_cast<int64_t>(shape.size()); ++d) {
    const int64_t size = shape[static_cast<size_t>(d)];
    if (d < first) s.outer *= size;
    else if (d <= last) s.r *= size;
    else s.inner *= size;
  }
  return s;
}

// One kernel pass: sums dims [first, last] of the contiguous src, times scale;
// the result keeps those dims with size 1.
Tensor sum_pass(const char* op, const Tensor& src, int64_t first, int64_t last, double scale) {
  const Split3 s = split3(src.shape(), first, last);
  Shape shape = src.shape();
  for (int64_t d = first; d <= last; ++d) shape[static_cast<size_t>(d)] = 1;
  Tensor out = Tensor::empty(shape, src.dtype(), src.device());
  dispatch_float(op, src.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if (out.device().is_cuda()) {
      VLMC_CUDA_DISPATCH({
        // The partials of a split r, from the caching allocator (most shapes need none).
        const size_t bytes = kernels::cuda::sum_workspace_bytes(s.outer, s.r, s.inner, sizeof(T));
        const Tensor ws =
            bytes ? Tensor::empty({static_cast<int64_t>(bytes)}, DType::u8, out.device()) : Tensor();
        kernels::cuda::sum<T>(out.data<T>(), src.data<T>(), s.outer, s.r, s.inner, scale,
                              bytes ? ws.data_ptr() : nullptr, stream_of(out));
      });
    } else {
      kernels::cpu::sum<T>(out.data<T>(), src.data<T>(), s.outer, s.r, s.inner, scale);
    }
  });
  return out;
}

// sum or mean (scale 1/count) with the backward that spreads g over the reduced dims.
Tensor sum_like(const char* op, const Tensor& x, const std::vector<int64_t>& dims, bool keepdim,
                bool is_mean) {
  VLMC_CHECK(x.defined(), op, ": input is undefined");
  check_float(op, "input", x);
  const Reduction p = plan_reduction(op, x, dims, keepdim);
  const double scale = is_mean ? 1.0 / static_cast<double>(p.count) : 1.0;

  // Runs of adjacent reduced dims, innermost first.
  std::vector<std::pair<int64_t, int64_t>> runs;
  for (int64_t d = x.dim() - 1; d >= 0; --d) {
    if (!p.reduced[static_cast<size_t>(d)]) continue;
    int64_t first = d;
    while (first > 0 && p.reduced[static_cast<size_t>(first - 1)]) --first;
    runs.emplace_back(first, d);
    d = first;
  }
  Tensor cur = x.detach().contiguous();
  if (runs.empty()) {
    cur = sum_pass(op, cur.reshape({cur.numel(), 1}), 1, 1, scale);  // nothing reduced: a copy
  } else {
    for (size_t i = 0; i < runs.size(); ++i)
      cur = sum_pass(op, cur, runs[i].first, runs[i].second, i + 1 == runs.size() ? scale : 1.0);
  }
  Tensor out = cur.view(p.out_shape);
  record(out, op, {x},
         [kept = p.kept_shape, shape = x.shape(), scale, is_mean](const Tensor& g, const GradMask&) {
           const Tensor scaled = is_mean ? mul(g, scale) : g;  // scale the small tensor
           return std::vector<Tensor>{scaled.reshape(kept).expand(shape).contiguous()};
         });
  return out;
}

struct MaxOut {
  Tensor values, indices;
};

// Max over the middle of src viewed as [outer, r, inner], shaped as out_shape.
MaxOut run_max(const char* op, const Tensor& src, const Split3& s, const Shape& out_shape) {
  MaxOut m{Tensor::empty(out_shape, src.dtype(), src.device()),
           Tensor::empty(out_shape, DType::i64, src.device())};
  dispatch_float(op, src.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if (src.device().is_cuda()) {
      VLMC_CUDA_DISPATCH({
        const size_t bytes = kernels::cuda::max_workspace_bytes(s.outer, s.r, s.inner, sizeof(T));
        const Tensor ws =
            bytes ? Tensor::empty({static_cast<int64_t>(bytes)}, DType::u8, src.device()) : Tensor();
        kernels::cuda::max<T>(m.values.data<T>(), m.indices.data<int64_t>(), src.data<T>(), s.outer, s.r,
                              s.inner, bytes ? ws.data_ptr() : nullptr, stream_of(src));
      });
    } else {
      kernels::cpu::max<T>(m.values.data<T>(), m.indices.data<int64_t>(), src.data<T>(), s.outer,
                           s.r, s.inner);
    }
  });
  return m;
}

// Routes g to the selected index of each reduced row; zero elsewhere.
Tensor scatter_grad(const Tensor& g_in, const Tensor& indices, const Shape& x_shape, int64_t outer,
                    int64_t r, int64_t inner) {
  const Tensor g = g_in.contiguous();
  Tensor gx = Tensor::empty(x_shape, g.dtype(), g.device());
  dispatch_float("max", g.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if (g.device().is_cuda()) {
      VLMC_CUDA_DISPATCH(kernels::cuda::scatter_reduced<T>(gx.data<T>(), g.data<T>(),
                                                           indices.data<int64_t>(), outer, r, inner,
                                                           stream_of(g)));
    } else {
      kernels::cpu::scatter_reduced<T>(gx.data<T>(), g.data<T>(), indices.data<int64_t>(), outer, r,
                                       inner);
    }
  });
  return gx;
}

// Max over one dim (dims = {d}) or over all elements (dims empty): the
// reduced dims are adjacent either way, so contiguous x is [outer, r, inner].
MaxResult max_over(const char* op, const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  VLMC_CHECK(x.defined(), op, ": input is undefined");
  check_float(op, "input", x);
  const Reduction p = plan_reduction(op, x, dims, keepdim);
  const int64_t nd = x.dim();
  const Split3 s = nd == 0     ? Split3{}
                   : dims.empty() ? split3(x.shape(), 0, nd - 1)
                                  : split3(x.shape(), dims[0], dims[0]);
  VLMC_CHECK(s.r > 0, op, ": cannot take the maximum over a zero-size dim of ", describe(x));
  MaxOut m = run_max(op, x.detach().contiguous(), s, p.out_shape);
  // Indices count along x's own dims, so the scatter lands in x's contiguous layout.
  record(m.values, op, {x},
         [indices = m.indices, shape = x.shape(), s](const Tensor& g, const GradMask&) {
           return std::vector<Tensor>{scatter_grad(g, indices, shape, s.outer, s.r, s.inner)};
         });
  return {m.values, m.indices};
}

}  // namespace

Tensor sum(const Tensor& x) { return sum_like("sum", x, {}, false, false); }
Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  return sum_like("sum", x, dims, keepdim, false);
}
Tensor mean(const Tensor& x) { return sum_like("mean", x, {}, false, true); }
Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  return sum_like("mean", x, dims, keepdim, true);
}

MaxResult max(const Tensor& x, int64_t dim, bool keepdim) {
  VLMC_CHECK(x.defined(), "max: input is undefined");
  return max_over("max", x, {wrap_dim(dim, x.dim(), "max")}, keepdim);
}

Tensor max(const Tensor& x) {
  VLMC_CHECK(x.defined(), "max: input is undefined");
  VLMC_CHECK(x.numel() > 0, "max: cannot take the maximum of an empty tensor ", describe(x));
  return max_over("max", x, {}, false).values;
}

Tensor argmax(const Tensor& x, int64_t dim, bool keepdim) {
  VLMC_CHECK(x.defined(), "argmax: input is undefined");
  NoGradGuard no_grad;  // indices have no gradient
  return max_over("argmax", x, {wrap_dim(dim, x.dim(), "argmax")}, keepdim).indices;
}

Tensor sum_to(const Tensor& x, const Shape& shape) {
  VLMC_CHECK(x.defined(), "sum_to: input is undefined");
  if (x.shape() == shape) return x;
  const Shape& xs = x.shape();
  const auto cannot = [&] {
    return str("sum_to: cannot sum ", shape_str(xs), " to ", shape_str(shape));
  };
  VLMC_CHECK(shape.size() <= xs.size(), cannot());
  const size_t lead = xs.size() - shape.size();
  std::vector<int64_t> dims;
  for (size_t i = 0; i < xs.size(); ++i) {
    if (i < lead) {
      dims.push_back(static_cast<int64_t>(i));
      continue;
    }
    const int64_t want = shape[i - lead];
    VLMC_CHECK(want == xs[i] || want == 1, cannot());
    if (want == 1 && xs[i] != 1) dims.push_back(static_cast<int64_t>(i));
  }
  // dims is not empty (equal shapes returned above), so sum() does not read it as "all dims".
  return sum(x, dims, true).reshape(shape);
}

}  // namespace vlmc
