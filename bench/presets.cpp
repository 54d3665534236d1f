#include "presets.h"

#include "trm/common/error.h"

namespace trm::bench {

model::ArchConfig PresetConfig(const std::string& name) {
  model::ArchConfig c;
  if (name == "tiny") {
    c.hidden_size = 128, c.num_heads = 4, c.H_cycles = 2, c.L_cycles = 2, c.L_layers = 2, c.halt_max_steps = 4;
    c.seq_len = 64, c.batch_size = 16, c.vocab_size = 512;
  } else if (name == "language") {
    c.hidden_size = 256, c.num_heads = 4, c.H_cycles = 2, c.L_cycles = 3, c.L_layers = 2, c.halt_max_steps = 8;
    c.seq_len = 128, c.batch_size = 8, c.vocab_size = 50266;
  } else if (name == "chat") {
    c.hidden_size = 384, c.num_heads = 12, c.H_cycles = 1, c.L_cycles = 1, c.L_layers = 4, c.halt_max_steps = 1;
    c.seq_len = 256, c.batch_size = 4, c.vocab_size = 50266;
  } else {
    InvalidArgument("--preset: expected tiny, language or chat, got '" + name + "'");
  }
  c.expansion = 4;
  c.pos_encodings = model::PosEncoding::kRope;
  c.causal = true;
  c.halt_exploration_prob = 0.1;
  c.forward_dtype = model::ForwardDtype::kFloat32;
  return c;
}

}  // namespace trm::bench
