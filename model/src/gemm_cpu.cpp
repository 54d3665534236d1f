#include "gemm_cpu.h"

#include <ATen/record_function.h>
#include <torch/torch.h>

#include <string>

#include "trm/common/error.h"

#if TRM_HAVE_DNNL
#include <dnnl.h>
#endif

namespace trm::model {
namespace {

// A matrix as BLAS sees it: a row-major buffer with leading dimension ld, read transposed or not.
struct Operand {
  at::Tensor t;  // keeps a contiguous copy alive where one was needed
  char trans;
  int64_t ld;
};

Operand AsOperand(const at::Tensor& x) {
  const int64_t rows = x.size(0), cols = x.size(1);
  if (x.stride(1) == 1 && x.stride(0) >= std::max<int64_t>(cols, 1)) return {x, 'N', x.stride(0)};
  if (x.stride(0) == 1 && x.stride(1) >= std::max<int64_t>(rows, 1)) return {x, 'T', x.stride(1)};
  at::Tensor c = x.contiguous();
  return {c, 'N', std::max<int64_t>(cols, 1)};
}

}  // namespace

bool CpuGemmIsOneDnn() { return TRM_HAVE_DNNL != 0; }

void CpuGemm(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c, float beta) {
  const int64_t M = a.size(0), K = a.size(1), N = b.size(1);
  if (b.size(0) != K || c.size(0) != M || c.size(1) != N || !c.is_contiguous()) {
    Internal("CpuGemm: shapes [" + std::to_string(M) + ", " + std::to_string(K) + "] x [" +
             std::to_string(b.size(0)) + ", " + std::to_string(N) + "] into a contiguous [" +
             std::to_string(c.size(0)) + ", " + std::to_string(c.size(1)) + "] expected");
  }
#if TRM_HAVE_DNNL
  // Named for profiles (and trm-bench's FLOP count, from the recorded shapes of a and b); ATen's
  // mm below records itself.
  RECORD_FUNCTION(kCpuGemmName, std::vector<c10::IValue>({a, b}));
  if (M > 0 && N > 0) {
    const Operand A = AsOperand(a), B = AsOperand(b);
    if (K == 0) {
      if (beta == 0.0f) c.zero_();
      else c.mul_(beta);
      return;
    }
    const dnnl_status_t s = dnnl_sgemm(A.trans, B.trans, M, N, K, 1.0f, A.t.data_ptr<float>(), A.ld,
                                       B.t.data_ptr<float>(), B.ld, beta, c.data_ptr<float>(), std::max<int64_t>(N, 1));
    if (s != dnnl_success) Internal("dnnl_sgemm failed with status " + std::to_string(static_cast<int>(s)));
  }
#else
  at::Tensor out = c;
  if (beta == 0.0f) at::mm_out(out, a, b);
  else out.addmm_(a, b, beta, 1.0);
#endif
}

}  // namespace trm::model
