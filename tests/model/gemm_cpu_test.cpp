// The CPU training path's float32 products (model/src/gemm_cpu.h) against float64 products, and
// the linear layer that trains on them against ATen's; and that this build loads what
// cmake/Dependencies.cmake and model/CMakeLists.txt chose (a wrong RPATH or a lost definition
// would silently fall back to the slower libraries).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "gemm_cpu.h"
#include "trm/common/process_env.h"
#include "trm/model/layers.h"

namespace trm::model {
namespace {

double RelErr(const at::Tensor& got, const at::Tensor& want) {
  return (got.to(torch::kFloat64) - want).abs().max().item<double>() /
         std::max(want.abs().max().item<double>(), 1e-30);
}

TEST(CpuGemmTest, EveryTransposeAndBetaMatchFloat64) {
  torch::manual_seed(3);
  const int64_t M = 37, K = 53, N = 29;  // no dimension a multiple of a vector or tile
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      at::Tensor a = ta ? torch::randn({K, M}).t() : torch::randn({M, K});
      at::Tensor b = tb ? torch::randn({N, K}).t() : torch::randn({K, N});
      at::Tensor c0 = torch::randn({M, N});
      at::Tensor want = torch::mm(a.to(torch::kFloat64), b.to(torch::kFloat64));
      at::Tensor c = torch::full({M, N}, std::nanf(""));  // beta 0 must not read c
      CpuGemm(a, b, c);
      EXPECT_LT(RelErr(c, want), 1e-5) << ta << tb;
      at::Tensor acc = c0.clone();
      CpuGemm(a, b, acc, 1.0f);
      EXPECT_LT(RelErr(acc, want + c0.to(torch::kFloat64)), 1e-5) << ta << tb;
    }
  }
  // A view that is neither (a column slice) is copied first.
  at::Tensor wide = torch::randn({M, 2 * K});
  at::Tensor a = wide.narrow(1, 3, K), b = torch::randn({K, N}), c = torch::empty({M, N});
  CpuGemm(a.t().t(), b, c);
  EXPECT_LT(RelErr(c, torch::mm(a.to(torch::kFloat64), b.to(torch::kFloat64))), 1e-5);
  EXPECT_THROW(CpuGemm(a, b, torch::empty({M, N + 1})), std::exception);
}

// In training mode the linear layer runs CpuGemm, forward and backward; in evaluation ATen's
// products: both agree, and the gradients are autograd's of x W^T.
TEST(CpuGemmTest, TrainingLinearMatchesAtensLinear) {
  torch::manual_seed(4);
  CastedLinear lin(48, 80, /*bias=*/false);
  at::Tensor x = torch::randn({3, 17, 48}, torch::requires_grad());
  lin->train();
  at::Tensor y = lin(x);
  at::Tensor g = torch::randn_like(y);
  y.backward(g);
  const at::Tensor dx = x.grad().clone(), dw = lin->weight.grad().clone();
  x.mutable_grad().zero_();
  lin->weight.mutable_grad().zero_();
  lin->eval();
  at::Tensor y_ref = lin(x);
  y_ref.backward(g);
  EXPECT_LT(RelErr(y, y_ref.to(torch::kFloat64)), 1e-6);
  EXPECT_LT(RelErr(dx, x.grad().to(torch::kFloat64)), 1e-6);
  EXPECT_LT(RelErr(dw, lin->weight.grad().to(torch::kFloat64)), 1e-6);
  EXPECT_GT(y.abs().sum().item<double>(), 0.0);
}

TEST(CpuGemmTest, TheBuildsLibrariesAreTheOnesLoaded) {
#if TRM_EXPECT_ONEDNN_GEMM
  EXPECT_TRUE(CpuGemmIsOneDnn());
#else
  EXPECT_FALSE(CpuGemmIsOneDnn());
#endif
  torch::mm(torch::ones({2, 2}), torch::ones({2, 2}));  // OpenBLAS is loaded with LibTorch
  const BlasRuntime blas = LoadedBlas();
#if TRM_EXPECT_OPENBLAS_OPENMP
  EXPECT_EQ(blas.threading, "openmp") << blas.library;
  EXPECT_NE(blas.library.find("openblas-openmp"), std::string::npos) << blas.library;
  EXPECT_NE(SameBlasPrefix().find("LD_LIBRARY_PATH="), std::string::npos);
#else
  if (!blas.threading.empty()) EXPECT_NE(blas.threading, "openmp");
#endif
}

}  // namespace
}  // namespace trm::model
