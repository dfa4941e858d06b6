// Precompiled header shared by every target that links LibTorch (see kiln_use_torch_pch in
// KilnHelpers.cmake). Parsing torch/torch.h dominates build time on 2 cores; compiling it once
// and reusing it cuts each translation unit from ~19 s to a few seconds.
#pragma once

#include <torch/script.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>
