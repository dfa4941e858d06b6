#include "kiln/serve/protocol.h"

#include <gtest/gtest.h>

#include <charconv>
#include <cstring>
#include <random>

namespace kiln::serve {
namespace {

Expected<InferRequest> parse(const std::string& body) {
  return parse_infer_request(body, body.size());
}

void expect_error(const std::string& body, const std::string& part) {
  auto r = parse(body);
  ASSERT_FALSE(r.ok()) << body;
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find(part), std::string::npos) << r.status().message();
}

TEST(Protocol, ParsesTheSpecExampleShape) {
  auto r = parse(R"({"id" : "42", "inputs" : [ { "name" : "input0", "shape" : [ 2, 2 ],
      "datatype" : "UINT32", "data" : [ [1, 2], [3, 4] ] } ],
      "outputs" : [ { "name" : "output0" } ], "extra": {"a": [1, null, "x"]}})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->id, "42");
  EXPECT_TRUE(r->has_id);
  ASSERT_EQ(r->inputs.size(), 1u);
  EXPECT_EQ(r->inputs[0].name, "input0");
  EXPECT_EQ(r->inputs[0].shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(r->inputs[0].data, (std::vector<float>{1, 2, 3, 4}));
  ASSERT_EQ(r->outputs.size(), 1u);
  EXPECT_EQ(r->outputs[0].name, "output0");
}

TEST(Protocol, DatatypeMayFollowDataAndFloatsRoundTrip) {
  auto r = parse(
      R"({"inputs":[{"data":[0.8444,-1e-3,3.5e2,0],"name":"x","shape":[1,4],"datatype":"FP64"}]})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->inputs[0].data, (std::vector<float>{0.8444f, -1e-3f, 350.f, 0.f}));
  EXPECT_FALSE(r->has_id);
}

/// The request body for one FP32 input holding `numbers` (JSON text, comma-separated).
std::string fp32_body(const std::string& numbers, int count) {
  return R"({"inputs":[{"name":"x","shape":[1,)" + std::to_string(count) +
         R"(],"datatype":"FP32","data":[)" + numbers + "]}]}";
}

TEST(Protocol, NumbersConvertExactlyAsFromChars) {
  // Short decimals (the fast path), long ones, exponents, integers, negative zero: each must
  // give the float of the correctly rounded double, as std::from_chars does.
  std::vector<std::string> texts = {"0",
                                    "-0",
                                    "1",
                                    "0.8444",
                                    "-1e-3",
                                    "3.5e2",
                                    "1E+2",
                                    "123456789",
                                    "0.1",
                                    "2.5e-22",
                                    "1e22",
                                    "9007199254740993",
                                    "0.30000000000000004",
                                    "1234567890123456789",
                                    "1e-30",
                                    "-7.0e0",
                                    "5e-324",
                                    "12345678.87654321",
                                    "0.000000001",
                                    "99999999",
                                    "100000000.5",
                                    "0.12345678",
                                    "1.2345678901234567",
                                    "00000012",
                                    "-0.00001234"};
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> uni(-1000, 1000);
  for (int i = 0; i < 2000; ++i) {
    char buf[64];
    const int precision = 1 + i % 17;
    const double v = i % 3 ? uni(rng) : uni(rng) * 1e-6;
    const int n = std::snprintf(buf, sizeof(buf), i % 2 ? "%.*g" : "%.*f", precision, v);
    texts.emplace_back(buf, static_cast<size_t>(n));
  }
  // Separators as clients write them: the tight loop takes "," and ", ", the general path the
  // rest.
  const char* separators[] = {",", ", ", " ,", ",\n  ", " , "};
  std::string joined;
  std::vector<float> want;
  for (size_t i = 0; i < texts.size(); ++i) {
    const std::string& t = texts[i];
    double d = 0;
    auto r = std::from_chars(t.data(), t.data() + t.size(), d);
    ASSERT_EQ(r.ptr, t.data() + t.size()) << t;
    want.push_back(static_cast<float>(d));
    if (i > 0) joined += separators[(i * 7) % 5];
    joined += t;
  }
  auto r = parse(fp32_body(joined, static_cast<int>(texts.size())));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->inputs[0].data.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(std::memcmp(&r->inputs[0].data[i], &want[i], sizeof(float)), 0)
        << texts[i] << ": " << r->inputs[0].data[i] << " vs " << want[i];
  }
}

TEST(Protocol, BadNumbersNaNAndInfinityAreRefused) {
  expect_error(fp32_body("1,NaN", 2), "inputs[0].data[1]: NaN and Infinity are not JSON numbers");
  expect_error(fp32_body("Infinity", 1), "inputs[0].data[0]: NaN and Infinity");
  expect_error(fp32_body("-inf", 1), "inputs[0].data[0]: NaN and Infinity");
  expect_error(fp32_body("1e39", 1), "inputs[0].data[0]: number out of range for float32");
  expect_error(fp32_body("-3.5e38", 1), "inputs[0].data[0]: number out of range for float32");
  expect_error(fp32_body("1e400", 1), "inputs[0].data[0]: number out of range");
  expect_error(fp32_body("1,-", 2), "inputs[0].data[1]: expected a number");
  expect_error(fp32_body("1,+2", 2), "inputs[0].data[1]: expected a number");
  expect_error(fp32_body("0x10", 1), "inputs[0].data: expected ',' or ']'");
  expect_error(fp32_body("1.5.2", 1), "inputs[0].data: expected ',' or ']'");
  expect_error(fp32_body("1e5e", 1), "inputs[0].data: expected ',' or ']'");
  expect_error(fp32_body("1 2", 1), "inputs[0].data: expected ',' or ']'");
  // Float32's largest value is fine; the count is checked by the server against the shape.
  auto r = parse(fp32_body("3.4028234e38,1e-45", 3));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->inputs[0].data.size(), 2u);
}

TEST(Protocol, BoolAndIntegerChecks) {
  auto b =
      parse(R"({"inputs":[{"name":"x","shape":[3],"datatype":"BOOL","data":[true,false,1]}]})");
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->inputs[0].data, (std::vector<float>{1, 0, 1}));
  expect_error(R"({"inputs":[{"name":"x","shape":[1],"datatype":"BOOL","data":[2]}]})",
               "inputs[0].data[0]");
  expect_error(R"({"inputs":[{"name":"x","shape":[2],"datatype":"INT32","data":[1,2.5]}]})",
               "inputs[0].data[1]: not an integer");
  expect_error(R"({"inputs":[{"name":"x","shape":[2],"datatype":"UINT8","data":[1,256]}]})",
               "inputs[0].data[1]: out of range for UINT8");
  expect_error(R"({"inputs":[{"name":"x","shape":[1],"datatype":"INT8","data":[true]}]})",
               "a boolean in a INT8 tensor");
  expect_error(R"({"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":["a"]}]})",
               "inputs[0].data[0]: a string");
  // BYTES: strings, kept in order (a table's columns as text; the server converts them).
  auto t = parse(
      R"({"inputs":[{"name":"x","shape":[1,3],"datatype":"BYTES","data":[["1.5","north",""]]}]})");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->inputs[0].text, (std::vector<std::string>{"1.5", "north", ""}));
  EXPECT_EQ(t->inputs[0].data.size(), 3u);
  expect_error(R"({"inputs":[{"name":"x","shape":[2],"datatype":"BYTES","data":["a",2]}]})",
               "inputs[0].data[1]: a number in a BYTES tensor");
  expect_error(R"({"inputs":[{"name":"x","shape":[1],"datatype":"BYTES","data":[true]}]})",
               "inputs[0].data[0]: a boolean in a BYTES tensor");
  expect_error(R"({"inputs":[{"name":"x","shape":[1],"datatype":"FP8","data":[1]}]})",
               "unknown datatype \"FP8\"");
}

TEST(Protocol, MalformedRequestsNameThePart) {
  expect_error("", "request: expected a JSON object");
  expect_error("{\"inputs\": [", "inputs");
  expect_error(R"({"id": 5, "inputs": []})", "id: must be a string");
  expect_error(R"({"inputs": []})", "inputs: is empty");
  expect_error(R"({"outputs": []})", "inputs: missing");
  expect_error(R"({"inputs":[{"shape":[1],"datatype":"FP32","data":[1]}]})",
               "inputs[0].name: missing");
  expect_error(R"({"inputs":[{"name":"x","datatype":"FP32","data":[1]}]})",
               "inputs[0].shape: missing");
  expect_error(R"({"inputs":[{"name":"x","shape":[-1],"datatype":"FP32","data":[1]}]})",
               "inputs[0].shape[0]");
  expect_error(R"({"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1,]}]})",
               "inputs[0].data[1]: expected a number");
  expect_error(R"({"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}]} x)",
               "unexpected text");
  expect_error(R"({"inputs":[{"name":"x","shape":[1],"datatype":"FP32"}]})",
               "inputs[0].data: missing");
}

TEST(Protocol, BinaryTensorExtension) {
  const std::string header =
      R"({"inputs":[{"name":"a","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}},)"
      R"({"name":"b","shape":[2],"datatype":"FP16","parameters":{"binary_data_size":4}}],)"
      R"("outputs":[{"name":"o","parameters":{"binary_data":true}}]})";
  std::string body = header;
  const float f[2] = {1.5f, -2.f};
  body.append(reinterpret_cast<const char*>(f), 8);
  const uint16_t h[2] = {0x3c00, 0xc000};  // 1.0, -2.0
  body.append(reinterpret_cast<const char*>(h), 4);
  auto r = parse_infer_request(body, header.size());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->inputs[0].data, (std::vector<float>{1.5f, -2.f}));
  EXPECT_EQ(r->inputs[1].data, (std::vector<float>{1.f, -2.f}));
  EXPECT_TRUE(r->outputs[0].binary);
  auto short_body = parse_infer_request(body.substr(0, body.size() - 1), header.size());
  ASSERT_FALSE(short_body.ok());
  EXPECT_NE(short_body.status().message().find("inputs[1].parameters.binary_data_size"),
            std::string::npos);
  auto too_long = parse_infer_request(body, body.size() + 1);
  EXPECT_FALSE(too_long.ok());
}

TEST(Protocol, BinaryBytesElementsAreLengthPrefixed) {
  const std::string header =
      R"({"inputs":[{"name":"x","shape":[1,3],"datatype":"BYTES","parameters":{"binary_data_size":20}}]})";
  std::string body = header;
  for (const std::string e : {"1.5", "north", ""}) {
    const uint32_t length = static_cast<uint32_t>(e.size());
    body.append(reinterpret_cast<const char*>(&length), 4);
    body += e;
  }
  ASSERT_EQ(body.size() - header.size(), 20u);
  auto r = parse_infer_request(body, header.size());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->inputs[0].text, (std::vector<std::string>{"1.5", "north", ""}));
  EXPECT_EQ(r->inputs[0].data.size(), 3u);
  // A length that runs past the tensor's bytes is named.
  std::string bad = body;
  const uint32_t huge = 1000;
  bad.replace(header.size(), 4, reinterpret_cast<const char*>(&huge), 4);
  auto cut = parse_infer_request(bad, header.size());
  ASSERT_FALSE(cut.ok());
  EXPECT_NE(cut.status().message().find("inputs[0]: binary BYTES element 0 claims 1000 bytes"),
            std::string::npos)
      << cut.status();
}

TEST(Protocol, JsonWriters) {
  std::string s;
  append_json_string(&s, "a\"b\\\n");
  EXPECT_EQ(s, "\"a\\\"b\\\\\\n\"");
  s.clear();
  append_json_float(&s, 0.1f);
  EXPECT_EQ(s, "0.1");
}

}  // namespace
}  // namespace kiln::serve
