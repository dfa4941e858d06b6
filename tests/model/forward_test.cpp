// Running a module in smaller forwards: the outputs of the whole batch, in order, and a chunk
// size chosen only where it keeps them.
#include "kiln/model/forward.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "kiln/model/export.h"
#include "model/export_helpers.h"

namespace kiln::model {
namespace {

TEST(ForwardInChunks, TupleOutputsConcatenateRowForRow) {
  torch::jit::Module m("m");
  m.define(R"(
def forward(self, x):
    return (x * 2.0 + 1.0, x.sum(1, keepdim=True))
)");
  const torch::Tensor x = torch::randn({23, 4});
  auto whole = forward_in_chunks(m, x);
  auto chunked = forward_in_chunks(m, x, 5);
  ASSERT_TRUE(whole.ok() && chunked.ok());
  ASSERT_EQ(chunked->size(), 2u);
  for (size_t i = 0; i < 2; ++i) EXPECT_TRUE(torch::equal((*whole)[i], (*chunked)[i])) << i;
  // A result that is not tensors is named.
  torch::jit::Module odd("odd");
  odd.define(R"(
def forward(self, x):
    return x.size(0)
)");
  auto r = forward_in_chunks(odd, x, 5);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("not tensors"), std::string::npos) << r.status().message();
}

TEST(ForwardChunking, ChosenOnlyWhereItKeepsTheOutputs) {
  auto net = model::testing::build_net(model::testing::kPeerCnn, {1, 28, 28}, 10);
  ASSERT_TRUE(net);
  auto saved = model::export_torchscript(*net);
  ASSERT_TRUE(saved.ok()) << saved.status();
  saved->eval();
  // Under 16 rows there is nothing to choose.
  EXPECT_EQ(choose_forward_chunking(*saved, torch::rand({8, 1, 28, 28})).rows_per_forward, 0);
  // Whatever the timing picks, it is whole batches or a power-of-two share of at least 8 rows,
  // and the served outputs equal the whole batch's.
  const torch::Tensor x = torch::rand({32, 1, 28, 28});
  const ForwardChunking c = choose_forward_chunking(*saved, x);
  EXPECT_GT(c.whole_samples_per_s, 0);
  EXPECT_TRUE(c.rows_per_forward == 0 || c.rows_per_forward == 16 || c.rows_per_forward == 8)
      << c.rows_per_forward;
  auto got = forward_in_chunks(*saved, x, c.rows_per_forward);
  ASSERT_TRUE(got.ok());
  EXPECT_TRUE(torch::allclose((*got)[0], (*forward_in_chunks(*saved, x))[0], 1e-4, 1e-5));
  // A module that fails has no chunking (the warm-up reports the failure).
  torch::jit::Module failing("f");
  failing.define(R"(
def forward(self, x):
    return x.view(-1, 7)
)");
  EXPECT_EQ(choose_forward_chunking(failing, torch::rand({32, 5})).rows_per_forward, 0);
}

}  // namespace
}  // namespace kiln::model
