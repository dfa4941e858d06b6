#include "kiln/registry/ref.h"

#include <cctype>

namespace kiln::registry {

Status validate_name(const std::string& name, const std::string& what) {
  if (name.empty()) return Status::InvalidArgument(what + " must not be empty");
  if (name.size() > kMaxNameLength)
    return Status::InvalidArgument(what + " '" + name.substr(0, 32) + "...' is longer than " +
                                   std::to_string(kMaxNameLength) + " characters");
  if (!std::isalnum(static_cast<unsigned char>(name[0])))
    return Status::InvalidArgument(what + " '" + name + "' must start with a letter or digit");
  for (char c : name) {
    const auto u = static_cast<unsigned char>(c);
    if (!(std::isalnum(u) || c == '.' || c == '_' || c == '-'))
      return Status::InvalidArgument(what + " '" + name +
                                     "' may only hold letters, digits, '.', '_' and '-' (no path "
                                     "separators, '@' or spaces)");
  }
  if (name.find("..") != std::string::npos)
    return Status::InvalidArgument(what + " '" + name + "' must not contain '..'");
  return Status::Ok();
}

Status validate_alias(const std::string& alias) {
  KILN_RETURN_IF_ERROR(validate_name(alias, "alias"));
  bool digits = true;
  for (char c : alias) digits = digits && std::isdigit(static_cast<unsigned char>(c));
  if (digits)
    return Status::InvalidArgument("alias '" + alias + "' is all digits; NAME@" + alias +
                                   " means a version number");
  return Status::Ok();
}

std::string ModelRef::to_string() const {
  switch (kind) {
    case Kind::kVersion:
      return name + "@" + std::to_string(version);
    case Kind::kAlias:
      return name + "@" + alias;
    case Kind::kPath:
      break;
  }
  return path.string();
}

Expected<ModelRef> parse_model_ref(const std::string& text) {
  const std::string forms = "give NAME@VERSION, NAME@ALIAS or a bundle directory";
  if (text.empty()) return Status::InvalidArgument("empty model reference: " + forms);
  std::error_code ec;
  ModelRef ref;
  if (text.find('/') != std::string::npos || fs::is_directory(text, ec)) {
    ref.kind = ModelRef::Kind::kPath;
    ref.path = text;
    return ref;
  }
  const size_t at = text.find('@');
  if (at == std::string::npos)
    return Status::InvalidArgument("'" + text + "' is not a model reference: " + forms + " (e.g. " +
                                   text + "@1, " + text + "@production)");
  ref.name = text.substr(0, at);
  const std::string rest = text.substr(at + 1);
  KILN_RETURN_IF_ERROR(validate_name(ref.name).with_context("reference '" + text + "'"));
  if (rest.empty())
    return Status::InvalidArgument("reference '" + text + "': nothing after '@': " + forms);
  bool digits = true;
  for (char c : rest) digits = digits && std::isdigit(static_cast<unsigned char>(c));
  if (digits) {
    if (rest.size() > 18 || std::stoll(rest) < 1)
      return Status::InvalidArgument("reference '" + text + "': versions count from 1");
    ref.kind = ModelRef::Kind::kVersion;
    ref.version = std::stoll(rest);
    return ref;
  }
  KILN_RETURN_IF_ERROR(validate_alias(rest).with_context("reference '" + text + "'"));
  ref.kind = ModelRef::Kind::kAlias;
  ref.alias = rest;
  return ref;
}

}  // namespace kiln::registry
