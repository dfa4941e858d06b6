#include "kiln/data/npy.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>

#include "kiln/data/images.h"
#include "support/test_support.h"

namespace kiln::data {
namespace {

namespace fs = std::filesystem;
using kiln::testing::TempDir;

std::vector<torch::Tensor> sample_tensors() {
  torch::manual_seed(7);
  return {
      torch::randint(0, 256, {3, 4}, torch::kUInt8),
      torch::randint(-1000000, 1000000, {5}, torch::kInt32),
      torch::tensor({int64_t{1} << 40, int64_t{-3}, int64_t{0}}, torch::kInt64),
      torch::randn({2, 3, 4}, torch::kFloat32),
      torch::randn({7, 1}, torch::kFloat64),
      torch::tensor({true, false, true, true}),
      torch::tensor(3.5),                     // 0-d
      torch::empty({0, 3}, torch::kFloat32),  // empty
  };
}

TEST(NpyRoundTrip, AllDtypes) {
  TempDir dir;
  int i = 0;
  for (const auto& t : sample_tensors()) {
    const auto path = dir / ("t" + std::to_string(i++) + ".npy");
    ASSERT_TRUE(write_npy(path, t).ok());
    auto back = read_npy(path);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->scalar_type(), t.scalar_type());
    EXPECT_EQ(back->sizes(), t.sizes());
    EXPECT_TRUE(torch::equal(*back, t)) << path;
  }
}

TEST(NpyRoundTrip, RealImagesAndNonContiguousInput) {
  auto set = read_idx_images(kiln::testing::fashion_mnist_dir() / "t10k-images-idx3-ubyte.gz",
                             kiln::testing::fashion_mnist_dir() / "t10k-labels-idx1-ubyte.gz", 64);
  ASSERT_TRUE(set.ok()) << set.status();
  auto bytes = encode_npy(set->images);
  ASSERT_TRUE(bytes.ok());
  EXPECT_EQ(bytes->size() % 64, 0u);  // 64×784 bytes of data after a 64-aligned header
  auto back = decode_npy(*bytes, "mem");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(torch::equal(*back, set->images));
  // A transposed view is written in C order of its logical shape.
  auto view = set->images.select(1, 0).transpose(1, 2);
  auto tb = encode_npy(view);
  ASSERT_TRUE(tb.ok());
  auto tback = decode_npy(*tb, "mem");
  ASSERT_TRUE(tback.ok()) << tback.status();
  EXPECT_TRUE(torch::equal(*tback, view));
}

TEST(NpyFormat, HeaderBytesMatchNumpy) {
  // np.save(f, np.zeros((3,), np.float32)) in numpy >= 1.23 writes exactly this header.
  auto bytes = encode_npy(torch::zeros({3}, torch::kFloat32));
  ASSERT_TRUE(bytes.ok());
  std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }";
  dict += std::string(20, ' ');  // room for the first axis to grow to 21 digits
  dict += std::string(64 - (10 + dict.size() + 1) % 64, ' ') + "\n";
  std::string expected = std::string("\x93NUMPY\x01\x00", 8);
  expected.push_back(static_cast<char>(dict.size()));
  expected.push_back(0);
  expected += dict + std::string(12, '\0');
  EXPECT_EQ(*bytes, expected);
  EXPECT_EQ((bytes->size() - 12) % 64, 0u);
}

TEST(NpyFormat, Deterministic) {
  auto t = torch::randn({16, 16});
  auto a = encode_npy(t);
  auto b = encode_npy(t.clone());
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, *b);
}

TEST(NpyFormat, ReadsVersion2BigEndianAndFortranOrder) {
  // Version 2.0 header (4-byte length), big-endian int32, Fortran order, shape (2, 3).
  std::string dict = "{'descr': '>i4', 'fortran_order': True, 'shape': (2, 3), }";
  dict += std::string(64 - (12 + dict.size() + 1) % 64, ' ') + "\n";
  std::string bytes = std::string("\x93NUMPY\x02\x00", 8);
  for (int i = 0; i < 4; ++i) bytes.push_back(static_cast<char>((dict.size() >> (8 * i)) & 0xff));
  bytes += dict;
  // Logical [[0, 1, 2], [3, 4, 5]] stored column by column: 0 3 1 4 2 5, big-endian.
  for (int v : {0, 3, 1, 4, 2, 5}) bytes += std::string({0, 0, 0, static_cast<char>(v)});
  auto t = decode_npy(bytes, "v2.npy");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_TRUE(torch::equal(*t, torch::arange(6, torch::kInt32).reshape({2, 3})));
}

TEST(NpyErrors, BadInputIsNamed) {
  auto good = encode_npy(torch::arange(10, torch::kInt64));
  ASSERT_TRUE(good.ok());

  auto t = decode_npy("", "e.npy");
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("e.npy: empty file"), std::string::npos) << t.status();

  t = decode_npy("PK\x03\x04 not npy", "z.npy");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(t.status().message().find("not a .npy file"), std::string::npos);

  t = decode_npy(good->substr(0, good->size() - 8), "short.npy");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(t.status().message().find("short.npy: header says shape (10,) of '<i8' = 80 bytes of "
                                      "data, found 72"),
            std::string::npos)
      << t.status();

  t = decode_npy(good->substr(0, 30), "hdr.npy");
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("truncated .npy header"), std::string::npos) << t.status();

  std::string bad_dtype = *good;
  bad_dtype.replace(bad_dtype.find("<i8"), 3, "<c8");
  t = decode_npy(bad_dtype, "c.npy");
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("unsupported .npy dtype '<c8'"), std::string::npos)
      << t.status();

  std::string bad_dict = *good;
  bad_dict.replace(bad_dict.find("'shape'"), 7, "'shapf'");
  t = decode_npy(bad_dict, "d.npy");
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("malformed .npy header"), std::string::npos) << t.status();

  TempDir dir;
  auto missing = read_npy(dir / "missing.npy");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);

  auto unsupported = encode_npy(torch::zeros({2}, torch::kComplexFloat));
  ASSERT_FALSE(unsupported.ok());
  EXPECT_EQ(unsupported.status().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(encode_npy(torch::Tensor()).ok());
}

// ---------------------------------------------------------------------------------------------
// Cross-check with the real numpy, when python3-numpy is installed.

/// The first Python with numpy: the system one (Debian's python3-numpy), else PATH's python3.
/// Empty when none has it.
const std::string& numpy_python() {
  static const std::string python = [] {
    for (const char* candidate : {"/usr/bin/python3", "python3"}) {
      const std::string cmd = std::string(candidate) + " -c 'import numpy' >/dev/null 2>&1";
      if (std::system(cmd.c_str()) == 0) return std::string(candidate);
    }
    return std::string();
  }();
  return python;
}

bool have_numpy() { return !numpy_python().empty(); }

/// Runs a Python script (saved in `dir`) with numpy_python(); returns its exit status.
int run_python(const std::string& script, const fs::path& dir) {
  const auto py = dir / "check.py";
  kiln::testing::write_text(py, script);
  return std::system((numpy_python() + " " + py.string() + " 2>&1").c_str());
}

TEST(NpyNumpy, NumpyLoadsOurFiles) {
  if (!have_numpy()) GTEST_SKIP() << "python3-numpy is not installed";
  TempDir dir;
  auto tensors = sample_tensors();
  std::string script =
      "import numpy as np, sys, warnings\nwarnings.simplefilter('ignore')\nd = "
      "sys.argv[0].rsplit('/', 1)[0]\n";
  const char* dtypes[] = {"uint8",   "int32", "int64",   "float32",
                          "float64", "bool",  "float32", "float32"};
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto npy = dir / ("k" + std::to_string(i) + ".npy");
    ASSERT_TRUE(write_npy(npy, tensors[i]).ok());
    // Write the expected values as text next to it so Python can compare.
    auto flat = tensors[i].to(torch::kFloat64).reshape({-1}).contiguous();
    std::ofstream txt(dir / ("k" + std::to_string(i) + ".txt"));
    txt.precision(17);
    for (int64_t j = 0; j < flat.numel(); ++j) txt << flat[j].item<double>() << "\n";
    txt.close();
    std::string shape = "(";
    for (int64_t s : tensors[i].sizes()) shape += std::to_string(s) + ",";
    shape += ")";
    script += "a = np.load(d + '/k" + std::to_string(i) + ".npy')\n";
    script += "assert a.dtype == np.dtype('" + std::string(dtypes[i]) + "'), a.dtype\n";
    script += "assert a.shape == " + shape + ", a.shape\n";
    script += "e = np.loadtxt(d + '/k" + std::to_string(i) + ".txt', ndmin=1)\n";
    script += "assert np.array_equal(a.astype(np.float64).reshape(-1), e.reshape(-1)), (a, e)\n";
  }
  EXPECT_EQ(run_python(script, dir.path()), 0);
}

TEST(NpyNumpy, WeReadNumpySave) {
  if (!have_numpy()) GTEST_SKIP() << "python3-numpy is not installed";
  TempDir dir;
  const std::string script = R"(import numpy as np, sys
d = sys.argv[0].rsplit('/', 1)[0]
np.save(d + '/u8.npy', np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
np.save(d + '/i32.npy', np.array([-5, 7, 2**31 - 1], dtype=np.int32))
np.save(d + '/i64.npy', np.array([[2**40], [-1]], dtype=np.int64))
np.save(d + '/f32.npy', np.array([0.5, -1e30, np.inf], dtype=np.float32))
np.save(d + '/f64.npy', np.linspace(0, 1, 11))
np.save(d + '/b.npy', np.array([True, False, True]))
np.save(d + '/fortran.npy', np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3)))
np.save(d + '/same.npy', np.arange(12, dtype=np.float32).reshape(3, 4))
)";
  ASSERT_EQ(run_python(script, dir.path()), 0);
  auto load = [&](const char* name) {
    auto t = read_npy(dir / name);
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? *t : torch::Tensor();
  };
  EXPECT_TRUE(torch::equal(load("u8.npy"), torch::arange(24, torch::kUInt8).reshape({2, 3, 4})));
  EXPECT_TRUE(torch::equal(load("i32.npy"), torch::tensor({-5, 7, 2147483647}, torch::kInt32)));
  EXPECT_TRUE(torch::equal(load("i64.npy"),
                           torch::tensor({int64_t{1} << 40, int64_t{-1}}).reshape({2, 1})));
  EXPECT_TRUE(torch::equal(load("f32.npy"),
                           torch::tensor({0.5f, -1e30f, std::numeric_limits<float>::infinity()})));
  EXPECT_TRUE(torch::allclose(load("f64.npy"), torch::linspace(0, 1, 11, torch::kFloat64)));
  EXPECT_TRUE(torch::equal(load("b.npy"), torch::tensor({true, false, true})));
  EXPECT_TRUE(torch::equal(load("fortran.npy"), torch::arange(6, torch::kFloat64).reshape({2, 3})));
  // Byte-identical to np.save for the same array.
  std::ifstream in(dir / "same.npy", std::ios::binary);
  std::string theirs((std::istreambuf_iterator<char>(in)), {});
  auto ours = encode_npy(torch::arange(12, torch::kFloat32).reshape({3, 4}));
  ASSERT_TRUE(ours.ok());
  EXPECT_EQ(*ours, theirs);
}

}  // namespace
}  // namespace kiln::data
