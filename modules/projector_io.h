// Projector weights to and from LLaVA's and Hugging Face's checkpoints, so that
// a projector trained with LLaVA can be loaded here and ours used there.
//
// Name maps (i = our Linear's index in its nn.Sequential: 0, 2, 4, ...):
//   ours                    LLaVA                                  Hugging Face
//   mlp.{i}.* (MLPConnector) [model.]mm_projector.{i}.*             [model.]multi_modal_projector.linear_{i/2+1}.*
//   {i}.*   (mlp{N}x_gelu)   [model.]mm_projector.{i}.*             [model.]multi_modal_projector.linear_{i/2+1}.*
//   proj.*  (linear)         [model.]mm_projector.*                 (Hugging Face has no linear projector)
// LLaVA-1.5 7B: model.mm_projector.0.weight [4096, 1024], .0.bias [4096],
// .2.weight [4096, 4096], .2.bias [4096]. Hugging Face's LlavaMultiModalProjector
// has exactly linear_1 and linear_2; deeper projectors use linear_3, ... by
// the same rule (our extension).
#pragma once

#include <map>
#include <string>

#include "modules/module.h"

namespace vlmc::nn {

enum class ProjectorNaming {
  llava,         // model.mm_projector.* (what LLaVA's stage-1 mm_projector.bin holds)
  hugging_face,  // multi_modal_projector.linear_*
};

// Loads the projector tensors among `tensors` (others, such as the language
// model's or the vision tower's, are ignored) into `projector` (an
// MLPConnector, an mlp{N}x_gelu projector or a LinearProjection). The naming
// is detected from the keys; a file holding both namings, no projector tensor,
// a missing or extra projector key, or a shape mismatch is a vlmc::Error
// naming the keys and shapes, and then nothing is changed. F32/F16/BF16/F64
// are converted to the parameters' dtype.
void load_projector(Module& projector, const std::map<std::string, Tensor>& tensors);
// The same from a safetensors file.
void load_projector(Module& projector, const std::string& path);

// Our projector's parameters under the given naming (detached, as stored).
std::map<std::string, Tensor> export_projector(const Module& projector, ProjectorNaming naming);
// The same, written to a safetensors file (metadata format = "pt", as
// Hugging Face's files carry).
void save_projector(const Module& projector, const std::string& path, ProjectorNaming naming);

}  // namespace vlmc::nn
