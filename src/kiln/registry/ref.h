#pragma once

// References to registered models: NAME@VERSION, NAME@ALIAS, or a bundle directory path, and the
// rules for names and aliases. No database access here.

#include <cstdint>
#include <filesystem>
#include <string>

#include "kiln/core/expected.h"

namespace kiln::registry {

namespace fs = std::filesystem;

/// Longest model name or alias accepted.
inline constexpr size_t kMaxNameLength = 128;

/// A model name: 1-128 characters from [A-Za-z0-9._-], starting with a letter or digit (so no path
/// separators, no "..", no '@'). InvalidArgument names `what` ("model name", "alias") and the rule.
Status validate_name(const std::string& name, const std::string& what = "model name");

/// An alias follows the name rules and is not all digits (NAME@3 always means version 3).
Status validate_alias(const std::string& alias);

/// A parsed reference: NAME@VERSION, NAME@ALIAS, or a bundle directory path (anything containing
/// '/' or naming an existing directory). A plain value; thread-compatible.
///
///   KILN_ASSIGN_OR_RETURN(ModelRef r, parse_model_ref("fmnist@production"));
///   // r.kind == ModelRef::Kind::kAlias, r.name == "fmnist", r.alias == "production"
struct ModelRef {
  enum class Kind { kPath, kVersion, kAlias };
  Kind kind = Kind::kPath;
  std::string name;     ///< kVersion / kAlias
  int64_t version = 0;  ///< kVersion (>= 1)
  std::string alias;    ///< kAlias
  fs::path path;        ///< kPath

  bool is_path() const { return kind == Kind::kPath; }
  /// "name@3", "name@production" or the path.
  std::string to_string() const;
};

/// Parses a reference. InvalidArgument explains the accepted forms for anything else (an empty
/// string, a bare name that is not a directory, a bad name/alias, version 0).
Expected<ModelRef> parse_model_ref(const std::string& text);

}  // namespace kiln::registry
