#include "kiln/data/images.h"

#include <gtest/gtest.h>
#include <torch/torch.h>
#include <zlib.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <iostream>
#include <stdexcept>

#include "support/test_support.h"

namespace kiln::data {
namespace {

namespace fs = std::filesystem;
using kiln::testing::TempDir;

fs::path fm(const std::string& name) { return kiln::testing::fashion_mnist_dir() / name; }

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + p.string());
}

/// Decompresses a .gz file with zlib directly (independent of the reader's code path).
std::string gunzip(const fs::path& p) {
  gzFile f = gzopen(p.c_str(), "rb");
  if (f == nullptr) throw std::runtime_error("cannot open " + p.string());
  std::string out;
  char buf[1 << 16];
  int n;
  while ((n = gzread(f, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  gzclose(f);
  return out;
}

void write_gzip(const fs::path& p, const std::string& bytes) {
  gzFile f = gzopen(p.c_str(), "wb");
  gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
  gzclose(f);
}

std::string be32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
          static_cast<char>(v)};
}

std::string idx_header(uint8_t type, const std::vector<uint32_t>& dims) {
  std::string h = {0, 0, static_cast<char>(type), static_cast<char>(dims.size())};
  for (uint32_t d : dims) h += be32(d);
  return h;
}

void expect_error(const Status& s, StatusCode code, const std::vector<std::string>& parts) {
  EXPECT_EQ(s.code(), code) << s;
  EXPECT_EQ(exit_code_for(s), 2) << s;
  for (const auto& p : parts) EXPECT_NE(s.message().find(p), std::string::npos) << s;
}

// ---------------------------------------------------------------------------------------------
// IDX on the real Fashion-MNIST files

TEST(IdxRead, FashionMnistSubset) {
  auto x = read_idx(fm("train-images-idx3-ubyte.gz"), 100);
  ASSERT_TRUE(x.ok()) << x.status();
  EXPECT_EQ(x->sizes(), (std::vector<int64_t>{100, 28, 28}));
  EXPECT_EQ(x->scalar_type(), torch::kUInt8);
  // Pixel sums of images 0 and 99, from Python's gzip module.
  EXPECT_EQ(x->select(0, 0).sum().item<int64_t>(), 76247);
  EXPECT_EQ(x->select(0, 99).sum().item<int64_t>(), 73088);

  auto y = read_idx(fm("train-labels-idx1-ubyte.gz"), 10);
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_EQ(y->sizes(), (std::vector<int64_t>{10}));
  std::vector<int64_t> first(10);
  auto y64 = y->to(torch::kInt64);
  std::memcpy(first.data(), y64.data_ptr<int64_t>(), 10 * sizeof(int64_t));
  EXPECT_EQ(first, (std::vector<int64_t>{9, 0, 0, 3, 0, 2, 7, 2, 5, 5}));
}

TEST(IdxRead, ImagePairSubset) {
  auto set = read_idx_images(fm("t10k-images-idx3-ubyte.gz"), fm("t10k-labels-idx1-ubyte.gz"), 50);
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->size(), 50);
  EXPECT_EQ(set->images.sizes(), (std::vector<int64_t>{50, 1, 28, 28}));
  EXPECT_EQ(set->labels.scalar_type(), torch::kInt64);
  EXPECT_EQ(set->labels[0].item<int64_t>(), 9);
  EXPECT_EQ(set->labels[1].item<int64_t>(), 2);
  EXPECT_EQ(set->images[0].sum().item<int64_t>(), 33456);
  EXPECT_NE(set->source.find("t10k-images"), std::string::npos);
  // max_items larger than the file: everything.
  auto all = read_idx(fm("t10k-labels-idx1-ubyte.gz"), 1000000);
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->size(0), 10000);
}

TEST(IdxRead, RawAndGzipGiveTheSameTensor) {
  TempDir dir;
  const auto raw = dir / "t10k-labels-idx1-ubyte";
  write_bytes(raw, gunzip(fm("t10k-labels-idx1-ubyte.gz")));
  auto a = read_idx(raw);
  auto b = read_idx(fm("t10k-labels-idx1-ubyte.gz"));
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_TRUE(torch::equal(*a, *b));
  // Raw files with max_items too.
  auto c = read_idx(raw, 7);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(torch::equal(*c, b->narrow(0, 0, 7)));
}

TEST(IdxRead, MaxItemsStopsBeforeTheDamage) {
  // A copy truncated at 60% still yields its first items: max_items decompresses only what it
  // needs, so it never reaches the truncation.
  TempDir dir;
  std::string gz = read_bytes(fm("t10k-images-idx3-ubyte.gz"));
  const auto cut = dir / "cut.gz";
  write_bytes(cut, gz.substr(0, gz.size() * 6 / 10));
  auto head = read_idx(cut, 1000);
  ASSERT_TRUE(head.ok()) << head.status();
  auto ref = read_idx(fm("t10k-images-idx3-ubyte.gz"), 1000);
  ASSERT_TRUE(ref.ok()) << ref.status();
  EXPECT_TRUE(torch::equal(*head, *ref));
  auto full = read_idx(cut);
  ASSERT_FALSE(full.ok());
  expect_error(full.status(), StatusCode::kDataLoss, {"cut.gz", "truncated gzip"});
}

TEST(IdxRead, ElementTypesAreBigEndianDecoded) {
  TempDir dir;
  {
    std::string f = idx_header(0x0C, {2, 2}) + be32(1) + be32(static_cast<uint32_t>(-2)) +
                    be32(70000) + be32(0x7fffffff);
    write_bytes(dir / "i32.idx", f);
    auto t = read_idx(dir / "i32.idx");
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(t->scalar_type(), torch::kInt32);
    EXPECT_TRUE(
        torch::equal(*t, torch::tensor({1, -2, 70000, 0x7fffffff}, torch::kInt32).reshape({2, 2})));
  }
  {
    float v[3] = {1.5f, -0.25f, 1e30f};
    std::string f = idx_header(0x0D, {3});
    for (float x : v) {
      uint32_t u;
      std::memcpy(&u, &x, 4);
      f += be32(u);
    }
    write_gzip(dir / "f32.idx.gz", f);
    auto t = read_idx(dir / "f32.idx.gz");
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(t->scalar_type(), torch::kFloat32);
    EXPECT_TRUE(torch::equal(*t, torch::tensor({1.5f, -0.25f, 1e30f})));
  }
  {
    double x = -3.75;
    uint64_t u;
    std::memcpy(&u, &x, 8);
    std::string f = idx_header(0x0E, {1}) + be32(static_cast<uint32_t>(u >> 32)) +
                    be32(static_cast<uint32_t>(u));
    write_bytes(dir / "f64.idx", f);
    auto t = read_idx(dir / "f64.idx");
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(t->scalar_type(), torch::kFloat64);
    EXPECT_EQ(t->item<double>(), -3.75);
  }
  {
    std::string f = idx_header(0x0B, {2}) + std::string("\x01\x02\xff\xfe", 4);
    write_bytes(dir / "i16.idx", f);
    auto t = read_idx(dir / "i16.idx");
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(t->scalar_type(), torch::kInt16);
    EXPECT_EQ(t->select(0, 0).item<int64_t>(), 0x0102);
    EXPECT_EQ(t->select(0, 1).item<int64_t>(), -2);
  }
  {
    std::string f = idx_header(0x09, {2}) + std::string("\x7f\x80", 2);
    write_bytes(dir / "i8.idx", f);
    auto t = read_idx(dir / "i8.idx");
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(t->scalar_type(), torch::kInt8);
    EXPECT_EQ(t->select(0, 1).item<int64_t>(), -128);
  }
}

// The slow one: the whole of Fashion-MNIST, 6000/1000 per class.
// ---------------------------------------------------------------------------------------------
// IDX bad input

TEST(IdxErrors, TruncatedGzip) {
  TempDir dir;
  std::string gz = read_bytes(fm("t10k-labels-idx1-ubyte.gz"));
  write_bytes(dir / "labels.gz", gz.substr(0, gz.size() / 2));
  auto t = read_idx(dir / "labels.gz");
  ASSERT_FALSE(t.ok());
  expect_error(t.status(), StatusCode::kDataLoss, {"labels.gz", "truncated gzip"});
  // Cut inside the 8-byte CRC/size trailer: all data is there but the stream is incomplete.
  write_bytes(dir / "trailer.gz", gz.substr(0, gz.size() - 3));
  t = read_idx(dir / "trailer.gz");
  ASSERT_FALSE(t.ok());
  expect_error(t.status(), StatusCode::kDataLoss, {"trailer.gz"});
}

TEST(IdxErrors, CorruptGzip) {
  TempDir dir;
  std::string gz = read_bytes(fm("t10k-labels-idx1-ubyte.gz"));
  // Flip bytes in the middle of the deflate data.
  for (size_t i = gz.size() / 2; i < gz.size() / 2 + 16; ++i) gz[i] = static_cast<char>(~gz[i]);
  write_bytes(dir / "flipped.gz", gz);
  auto t = read_idx(dir / "flipped.gz");
  ASSERT_FALSE(t.ok());
  expect_error(t.status(), StatusCode::kDataLoss, {"flipped.gz", "gzip"});

  // A bad CRC in the trailer alone.
  gz = read_bytes(fm("t10k-labels-idx1-ubyte.gz"));
  gz[gz.size() - 8] = static_cast<char>(gz[gz.size() - 8] ^ 0x55);
  write_bytes(dir / "crc.gz", gz);
  t = read_idx(dir / "crc.gz");
  ASSERT_FALSE(t.ok());
  expect_error(t.status(), StatusCode::kDataLoss, {"crc.gz", "corrupt gzip"});
}

TEST(IdxErrors, WrongMagic) {
  TempDir dir;
  std::string raw = gunzip(fm("t10k-labels-idx1-ubyte.gz"));
  raw[0] = 0x12;
  write_bytes(dir / "magic", raw);
  auto t = read_idx(dir / "magic");
  ASSERT_FALSE(t.ok());
  expect_error(t.status(), StatusCode::kInvalidArgument,
               {"magic", "not an IDX file", "12 00 08 01"});

  raw = gunzip(fm("t10k-labels-idx1-ubyte.gz"));
  raw[2] = 0x07;  // unknown element type
  write_gzip(dir / "type.gz", raw);
  t = read_idx(dir / "type.gz");
  ASSERT_FALSE(t.ok());
  expect_error(t.status(), StatusCode::kInvalidArgument, {"type.gz", "unknown element type 0x07"});

  // A CSV is not an IDX file either.
  t = read_idx(kiln::testing::shared_datasets_dir() / "diabetes.csv");
  ASSERT_FALSE(t.ok());
  expect_error(t.status(), StatusCode::kInvalidArgument, {"diabetes.csv", "not an IDX file"});
}

TEST(IdxErrors, HeaderDimsVersusDataSize) {
  TempDir dir;
  // Raw labels cut short: the header still says 10000.
  std::string raw = gunzip(fm("t10k-labels-idx1-ubyte.gz"));
  write_bytes(dir / "short", raw.substr(0, 8 + 1200));
  auto t = read_idx(dir / "short");
  ASSERT_FALSE(t.ok());
  expect_error(t.status(), StatusCode::kDataLoss,
               {"short", "[10000]", "need 10000 bytes of data after the header, found 1200"});

  // The same, gzip-compressed (a valid stream that simply holds too little).
  write_gzip(dir / "short.gz", raw.substr(0, 8 + 1200));
  t = read_idx(dir / "short.gz");
  ASSERT_FALSE(t.ok());
  expect_error(t.status(), StatusCode::kDataLoss, {"short.gz", "found 1200"});

  // Too much data.
  write_bytes(dir / "long", raw + "extra");
  t = read_idx(dir / "long");
  ASSERT_FALSE(t.ok());
  expect_error(t.status(), StatusCode::kDataLoss, {"long", "5 unexpected trailing bytes"});

  // A tiny gzip file whose header claims 2^31 images: refused without allocating 1.6 TB.
  write_gzip(dir / "huge.gz", idx_header(0x08, {0x80000000u, 28, 28}) + std::string(784, '\0'));
  t = read_idx(dir / "huge.gz");
  ASSERT_FALSE(t.ok());
  expect_error(t.status(), StatusCode::kDataLoss, {"huge.gz", "corrupt header"});

  // Truncated inside the header itself.
  write_bytes(dir / "hdr", idx_header(0x08, {10, 28, 28}).substr(0, 9));
  t = read_idx(dir / "hdr");
  ASSERT_FALSE(t.ok());
  expect_error(t.status(), StatusCode::kDataLoss, {"hdr", "truncated IDX header"});
}

TEST(IdxErrors, ImageLabelPairProblems) {
  auto mismatch =
      read_idx_images(fm("train-images-idx3-ubyte.gz"), fm("t10k-labels-idx1-ubyte.gz"), 10);
  ASSERT_FALSE(mismatch.ok());
  expect_error(
      mismatch.status(), StatusCode::kInvalidArgument,
      {"train-images-idx3-ubyte.gz", "60000 images", "t10k-labels-idx1-ubyte.gz", "10000 labels"});

  auto swapped =
      read_idx_images(fm("t10k-labels-idx1-ubyte.gz"), fm("t10k-images-idx3-ubyte.gz"), 10);
  ASSERT_FALSE(swapped.ok());
  expect_error(swapped.status(), StatusCode::kInvalidArgument,
               {"t10k-labels-idx1-ubyte.gz", "expected N×H×W"});
}

TEST(IdxErrors, EmptyMissingDirectory) {
  TempDir dir;
  write_bytes(dir / "empty.gz", "");
  auto t = read_idx(dir / "empty.gz");
  ASSERT_FALSE(t.ok());
  expect_error(t.status(), StatusCode::kInvalidArgument, {"empty.gz", "empty file"});

  write_gzip(dir / "empty-stream.gz", "");
  t = read_idx(dir / "empty-stream.gz");
  ASSERT_FALSE(t.ok());
  expect_error(t.status(), StatusCode::kInvalidArgument, {"empty-stream.gz", "empty"});

  t = read_idx(dir / "missing.gz");
  ASSERT_FALSE(t.ok());
  expect_error(t.status(), StatusCode::kNotFound, {"missing.gz"});

  t = read_idx(dir.path());
  ASSERT_FALSE(t.ok());
  expect_error(t.status(), StatusCode::kInvalidArgument, {"is a directory"});

  auto pair = read_idx_images(fm("t10k-images-idx3-ubyte.gz"), dir / "nolabels.gz");
  ASSERT_FALSE(pair.ok());
  expect_error(pair.status(), StatusCode::kNotFound, {"nolabels.gz"});
}

// ---------------------------------------------------------------------------------------------
// CIFAR-10 binary batches, built from real Fashion-MNIST images

/// Pads 28×28 to 32×32 and makes three distinct planes so that planar RGB order is checked:
/// R = x, G = 255 - x, B = x / 2. Returns N×3×32×32 uint8.
torch::Tensor to_cifar_images(const torch::Tensor& images) {
  auto x = torch::constant_pad_nd(images.squeeze(1), {2, 2, 2, 2}, 0);
  auto r = x;
  auto g = 255 - x;
  auto b = torch::floor_divide(x, 2);
  return torch::stack({r, g, b}, 1).to(torch::kUInt8).contiguous();
}

std::string cifar_records(const torch::Tensor& images, const torch::Tensor& labels) {
  std::string out;
  const int64_t n = images.size(0);
  out.reserve(static_cast<size_t>(n * 3073));
  const auto* px = images.data_ptr<uint8_t>();
  for (int64_t i = 0; i < n; ++i) {
    out.push_back(static_cast<char>(labels[i].item<int64_t>()));
    out.append(reinterpret_cast<const char*>(px + i * 3072), 3072);
  }
  return out;
}

struct CifarFixture {
  ImageSet source;
  torch::Tensor images;  // expected N×3×32×32
  fs::path batch1, batch2;
};

CifarFixture make_cifar(const TempDir& dir) {
  auto set = read_idx_images(fm("t10k-images-idx3-ubyte.gz"), fm("t10k-labels-idx1-ubyte.gz"), 500);
  if (!set.ok()) throw std::runtime_error(set.status().to_string());
  CifarFixture f;
  f.source = *set;
  f.images = to_cifar_images(set->images);
  f.batch1 = dir / "data_batch_1.bin";
  f.batch2 = dir / "data_batch_2.bin";
  write_bytes(f.batch1, cifar_records(f.images.narrow(0, 0, 300), set->labels.narrow(0, 0, 300)));
  write_bytes(f.batch2,
              cifar_records(f.images.narrow(0, 300, 200), set->labels.narrow(0, 300, 200)));
  return f;
}

TEST(CifarRead, RoundTripFromFashionMnist) {
  TempDir dir;
  auto f = make_cifar(dir);
  auto got = read_cifar10({f.batch1, f.batch2});
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->size(), 500);
  EXPECT_EQ(got->images.sizes(), (std::vector<int64_t>{500, 3, 32, 32}));
  EXPECT_EQ(got->images.scalar_type(), torch::kUInt8);
  EXPECT_EQ(got->labels.scalar_type(), torch::kInt64);
  EXPECT_TRUE(torch::equal(got->images, f.images));
  EXPECT_TRUE(torch::equal(got->labels, f.source.labels));
  // The planes really are planar: the 28×28 centre of plane 0 is the original image.
  EXPECT_TRUE(torch::equal(got->images.select(1, 0).narrow(1, 2, 28).narrow(2, 2, 28),
                           f.source.images.squeeze(1)));
  EXPECT_NE(got->source.find("data_batch_1.bin"), std::string::npos);
  EXPECT_NE(got->source.find("data_batch_2.bin"), std::string::npos);
}

TEST(CifarRead, MaxItemsSpansBatches) {
  TempDir dir;
  auto f = make_cifar(dir);
  auto got = read_cifar10({f.batch1, f.batch2}, 350);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->size(), 350);
  EXPECT_TRUE(torch::equal(got->images, f.images.narrow(0, 0, 350)));
  auto few = read_cifar10({f.batch1, f.batch2}, 10);
  ASSERT_TRUE(few.ok()) << few.status();
  EXPECT_EQ(few->size(), 10);
  EXPECT_EQ(few->source.find("data_batch_2"), std::string::npos);  // never opened
}

TEST(CifarErrors, TruncatedRecordIsNamed) {
  TempDir dir;
  auto f = make_cifar(dir);
  std::string bytes = read_bytes(f.batch1);
  write_bytes(dir / "cut.bin", bytes.substr(0, 3073 * 299 + 1000));
  auto got = read_cifar10({f.batch2, dir / "cut.bin"});
  ASSERT_FALSE(got.ok());
  expect_error(got.status(), StatusCode::kDataLoss,
               {"cut.bin", "919827 bytes is not a whole number of 3073-byte records",
                "record 300 is truncated"});
  write_bytes(dir / "long.bin", bytes + "x");
  got = read_cifar10({dir / "long.bin"});
  ASSERT_FALSE(got.ok());
  expect_error(got.status(), StatusCode::kDataLoss, {"long.bin", "record 301 is truncated"});
}

TEST(CifarErrors, LabelOutOfRange) {
  TempDir dir;
  auto f = make_cifar(dir);
  std::string bytes = read_bytes(f.batch2);
  bytes[3073 * 41] = 12;
  write_bytes(dir / "bad_label.bin", bytes);
  auto got = read_cifar10({dir / "bad_label.bin"});
  ASSERT_FALSE(got.ok());
  expect_error(got.status(), StatusCode::kInvalidArgument,
               {"bad_label.bin", "record 42", "label 12"});
}

TEST(CifarErrors, EmptyMissingDirectory) {
  TempDir dir;
  write_bytes(dir / "empty.bin", "");
  auto got = read_cifar10({dir / "empty.bin"});
  ASSERT_FALSE(got.ok());
  expect_error(got.status(), StatusCode::kInvalidArgument, {"empty.bin", "empty file"});
  got = read_cifar10({dir / "missing.bin"});
  ASSERT_FALSE(got.ok());
  expect_error(got.status(), StatusCode::kNotFound, {"missing.bin"});
  got = read_cifar10({dir.path()});
  ASSERT_FALSE(got.ok());
  expect_error(got.status(), StatusCode::kInvalidArgument, {"is a directory"});
  got = read_cifar10({});
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), StatusCode::kInvalidArgument);
}

TEST(CifarClasses, NameTables) {
  ASSERT_EQ(cifar10_classes().size(), 10u);
  EXPECT_EQ(cifar10_classes()[0], "airplane");
  EXPECT_EQ(cifar10_classes()[9], "truck");
  ASSERT_EQ(fashion_mnist_classes().size(), 10u);
  EXPECT_EQ(fashion_mnist_classes()[0], "T-shirt/top");
  EXPECT_EQ(fashion_mnist_classes()[9], "Ankle boot");
}

}  // namespace
}  // namespace kiln::data
