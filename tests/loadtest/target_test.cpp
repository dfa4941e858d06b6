#include "kiln/loadtest/target.h"

#include <gtest/gtest.h>

#include <fstream>

#include "support/test_support.h"

namespace kiln::loadtest {
namespace {

using testing::TempDir;
using testing::write_text;

TEST(LoadtestTarget, AcceptsLoopbackOnly) {
  for (const char* ok : {"http://127.0.0.1:8000/v2/health/ready", "http://localhost:9/x",
                         "http://127.1.2.3", "http://[::1]:8080/v2"}) {
    auto t = parse_target(ok, false);
    EXPECT_TRUE(t.ok()) << ok << ": " << t.status().to_string();
  }
  auto t = parse_target("http://127.0.0.1:8000/v2/models/m/infer?x=1", false);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->port, 8000);
  EXPECT_EQ(t->path, "/v2/models/m/infer?x=1");
  EXPECT_EQ(parse_target("http://localhost", false)->path, "/");

  auto remote = parse_target("http://10.0.0.1:8000/", false);
  ASSERT_FALSE(remote.ok());
  EXPECT_NE(remote.status().message().find("--allow-remote"), std::string::npos);
  EXPECT_FALSE(parse_target("http://example.com/", false).ok());
  EXPECT_TRUE(parse_target("http://10.0.0.1:8000/", true).ok());
  for (const char* bad : {"https://127.0.0.1/", "127.0.0.1:80", "http://:80/",
                          "http://127.0.0.1:0/", "http://127.0.0.1:70000/", "http://[::1/"})
    EXPECT_FALSE(parse_target(bad, true).ok()) << bad;
}

TEST(LoadtestTarget, BuildsKeepAliveRequests) {
  auto t = parse_target("http://127.0.0.1:8000/", false);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(build_request(*t, "/v2/health/ready", ""),
            "GET /v2/health/ready HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: "
            "kiln-loadtest\r\n\r\n");
  const std::string post = build_request(*t, "/infer", "{}");
  EXPECT_EQ(post.rfind("POST /infer HTTP/1.1\r\n", 0), 0u);
  EXPECT_NE(post.find("Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"),
            std::string::npos);
  // An Authorization header leaves a JSON body JSON; only a binary OIP header makes it binary.
  const std::string authed = build_request(*t, "/v2/routes/r", "{}", {"Authorization: Bearer k"});
  EXPECT_NE(authed.find("Authorization: Bearer k\r\nContent-Type: application/json\r\n"),
            std::string::npos);
  const std::string binary =
      build_request(*t, "/infer", "{}", {"Inference-Header-Content-Length: 2"});
  EXPECT_NE(binary.find("Content-Type: application/octet-stream\r\n"), std::string::npos);
}

TEST(LoadtestTarget, ReadsJsonAndBinaryBodies) {
  TempDir dir;
  write_text(dir / "a.json", "  {\"inputs\": [{\"name\": \"x}\", \"data\": [1]}]}\n");
  auto json = read_body_file(dir / "a.json", -1);
  ASSERT_TRUE(json.ok()) << json.status().to_string();
  EXPECT_EQ(json->header_length, -1);
  EXPECT_TRUE(json->headers().empty());

  const std::string header =
      "{\"inputs\":[{\"name\":\"input\",\"shape\":[1,2],\"datatype\":\"FP32\","
      "\"parameters\":{\"binary_data_size\":8}}]}";
  std::string bin = header + std::string("\0\0\x80?\0\0\0@", 8);
  {
    std::ofstream f(dir / "b.bin", std::ios::binary);
    f << bin;
  }
  auto b = read_body_file(dir / "b.bin", -1);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->header_length, static_cast<int64_t>(header.size()));
  ASSERT_EQ(b->headers().size(), 1u);
  EXPECT_EQ(b->headers()[0], "Inference-Header-Content-Length: " + std::to_string(header.size()));
  EXPECT_EQ(read_body_file(dir / "b.bin", 10)->header_length, 10);
  EXPECT_FALSE(read_body_file(dir / "b.bin", 100000).ok());

  write_text(dir / "bad.txt", "hello");
  EXPECT_FALSE(read_body_file(dir / "bad.txt", -1).ok());
  write_text(dir / "open.json", "{\"a\": [1, 2");
  EXPECT_FALSE(read_body_file(dir / "open.json", -1).ok());
  auto missing = read_body_file(dir / "missing.json", -1);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("missing.json"), std::string::npos);
}

TEST(LoadtestTarget, BodiesFromMetadataAndCsv) {
  auto input = parse_model_metadata(
      "bc", R"({"name":"bc","inputs":[{"name":"input","datatype":"FP32","shape":[-1,3]}]})");
  ASSERT_TRUE(input.ok()) << input.status().to_string();
  EXPECT_EQ(input->features(), 3);
  EXPECT_EQ(
      zeros_body(*input),
      R"({"inputs":[{"name":"input","shape":[1,3],"datatype":"FP32","data":[0.0,0.0,0.0]}]})");
  EXPECT_FALSE(parse_model_metadata("bc", "{}").ok());
  EXPECT_FALSE(parse_model_metadata("bc", "not json").ok());

  TempDir dir;
  write_text(dir / "d.csv", "a,label,b,c\n1,x,2,3\n4,y,5,6.5\n");
  auto bodies = csv_bodies(dir / "d.csv", {"label"}, *input);
  ASSERT_TRUE(bodies.ok()) << bodies.status().to_string();
  ASSERT_EQ(bodies->size(), 2u);
  EXPECT_NE((*bodies)[1].find("\"data\":[4.0,5.0,6.5]"), std::string::npos) << (*bodies)[1];
  auto wrong = csv_bodies(dir / "d.csv", {}, *input);  // the label is not a number
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.status().message().find("4 columns"), std::string::npos)
      << wrong.status().message();
  EXPECT_FALSE(csv_bodies(dir / "d.csv", {"nope"}, *input).ok());
  write_text(dir / "e.csv", "a,label,b,c\n1,x,oops,3\n");
  auto nan = csv_bodies(dir / "e.csv", {"label"}, *input);
  ASSERT_FALSE(nan.ok());
  EXPECT_NE(nan.status().message().find("e.csv:2"), std::string::npos);
}

TEST(LoadtestTarget, AModelThatListsItsColumnsTakesThemByNameAndItsTextAsBytes) {
  auto input = parse_model_metadata("bc", R"({"name": "bc",
      "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 3]}],
      "parameters": {"features": [{"name": "a", "type": "numeric"}, {"name": "c"},
                                  {"name": "site", "type": "categorical",
                                   "categories": ["north", "south"]}]}})");
  ASSERT_TRUE(input.ok()) << input.status().to_string();
  EXPECT_EQ(input->columns, (std::vector<std::string>{"a", "c", "site"}));
  TempDir dir;
  // Another column order, a label and an extra column: taken by name, in the model's order.
  write_text(dir / "d.csv", "site,label,c,extra,a\nnorth,x,3,9,1\nsouth,y,,9,4.5\n");
  auto bodies = csv_bodies(dir / "d.csv", {"label"}, *input);
  ASSERT_TRUE(bodies.ok()) << bodies.status().to_string();
  ASSERT_EQ(bodies->size(), 2u);
  EXPECT_NE((*bodies)[0].find(R"("datatype":"BYTES","data":["1","3","north"])"), std::string::npos)
      << (*bodies)[0];
  EXPECT_NE((*bodies)[1].find(R"("data":["4.5","","south"])"), std::string::npos) << (*bodies)[1];
  write_text(dir / "e.csv", "a,c\n1,2\n");
  auto missing = csv_bodies(dir / "e.csv", {}, *input);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("no column 'site'"), std::string::npos)
      << missing.status().message();
  // RFC 4180: a quoted cell keeps its comma and quotes; CRLF line ends.
  write_text(dir / "q.csv", "a,c,site\r\n1,2,\"Paris, \"\"Rive Gauche\"\"\"\r\n");
  auto quoted = csv_bodies(dir / "q.csv", {}, *input);
  ASSERT_TRUE(quoted.ok()) << quoted.status().to_string();
  EXPECT_NE((*quoted)[0].find(R"("data":["1","2","Paris, \"Rive Gauche\""])"), std::string::npos)
      << (*quoted)[0];
  write_text(dir / "r.csv", "a,c,site\n1,2,north\n1,2\n");
  auto ragged = csv_bodies(dir / "r.csv", {}, *input);
  ASSERT_FALSE(ragged.ok());
  EXPECT_NE(ragged.status().message().find("r.csv:3: 2 values, expected 3"), std::string::npos)
      << ragged.status().message();
  write_text(dir / "f.csv", "a,c,site\n1,two,north\n");
  auto bad = csv_bodies(dir / "f.csv", {}, *input);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("f.csv:2: column 'c': 'two' is not a number"),
            std::string::npos)
      << bad.status().message();
}

}  // namespace
}  // namespace kiln::loadtest
