#include "kiln/core/yaml.h"

#include <yaml-cpp/yaml.h>

#include <limits>

#include "kiln/core/files.h"

namespace kiln {
namespace {

Json scalar_to_json(const YAML::Node& node) {
  const std::string& s = node.Scalar();
  if (node.Tag() == "!") return s;  // quoted: always a string
  if (s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL") return nullptr;
  if (s == "true" || s == "True" || s == "TRUE") return true;
  if (s == "false" || s == "False" || s == "FALSE") return false;
  // Integers, then floats; anything else is a string.
  {
    size_t pos = 0;
    try {
      long long v = std::stoll(s, &pos, 10);
      if (pos == s.size()) return static_cast<int64_t>(v);
    } catch (const std::exception&) {
    }
  }
  {
    size_t pos = 0;
    try {
      double v = std::stod(s, &pos);
      if (pos == s.size()) return v;
    } catch (const std::exception&) {
    }
  }
  if (s == ".inf" || s == ".Inf") return std::numeric_limits<double>::infinity();
  if (s == "-.inf" || s == "-.Inf") return -std::numeric_limits<double>::infinity();
  if (s == ".nan" || s == ".NaN") return std::numeric_limits<double>::quiet_NaN();
  return s;
}

Json node_to_json(const YAML::Node& node, const std::string& path,
                  std::map<std::string, int>* lines) {
  if (lines && !path.empty() && node.Mark().line >= 0 && !lines->count(path))
    (*lines)[path] = node.Mark().line + 1;
  switch (node.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      return nullptr;
    case YAML::NodeType::Scalar:
      return scalar_to_json(node);
    case YAML::NodeType::Sequence: {
      Json arr = Json::array();
      size_t i = 0;
      for (const auto& item : node)
        arr.push_back(node_to_json(item, path + "[" + std::to_string(i++) + "]", lines));
      return arr;
    }
    case YAML::NodeType::Map: {
      Json obj = Json::object();
      for (const auto& kv : node) {
        std::string key = kv.first.as<std::string>();
        std::string sub = path.empty() ? key : path + "." + key;
        if (lines && kv.first.Mark().line >= 0) (*lines)[sub] = kv.first.Mark().line + 1;
        obj[key] = node_to_json(kv.second, sub, lines);
      }
      return obj;
    }
  }
  return nullptr;
}

}  // namespace

Expected<Json> yaml_to_json(const std::string& text, std::map<std::string, int>* lines) {
  try {
    YAML::Node root = YAML::Load(text);
    return node_to_json(root, "", lines);
  } catch (const YAML::Exception& e) {
    return Status::InvalidArgument("line " + std::to_string(e.mark.line + 1) +
                                   ": invalid YAML: " + e.msg);
  }
}

Expected<Json> read_yaml_file(const std::filesystem::path& path,
                              std::map<std::string, int>* lines) {
  KILN_ASSIGN_OR_RETURN(std::string text, read_file(path));
  Expected<Json> j = yaml_to_json(text, lines);
  if (!j.ok()) return Status::InvalidArgument(path.string() + " " + j.status().message());
  return j;
}

}  // namespace kiln
