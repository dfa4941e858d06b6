#pragma once

#include <string>

#include "kiln/pipeline/pipeline_file.h"

namespace kiln::pipeline {

/// The stage graph as text, one line per stage in topological order:
///   "train      train    <- prepare". Thread-safe.
std::string dag_text(const PipelineFile& file);

/// The stage graph as a standalone SVG: one column per layer (longest path from a source), a box
/// per stage labelled with its name and kind, an arrow per need (dashed for a gate). Thread-safe.
std::string dag_svg(const PipelineFile& file);

}  // namespace kiln::pipeline
