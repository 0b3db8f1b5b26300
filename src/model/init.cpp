// Deterministic HF-style initialisation: each tensor draws from its own stream seeded by
// (seed, tensor index), so results do not depend on thread count; tensors are filled in parallel
// (a 1B model has ~1e9 normal draws) and each is stored into backend memory as it is done.
#include "model/init.h"

#include <exception>
#include <random>

#include "backend/host_access.h"

namespace sft {

void init_weights(LlamaModel& model, uint64_t seed) {
  const float std_dev = float(model.config().initializer_range);
  const auto& table = model.param_table();
  ParamStore& ps = model.store();
  for (int u = 0; u < ps.num_units(); ++u) ps.acquire(u);
  std::exception_ptr error;
#pragma omp parallel for schedule(dynamic, 1)
  for (size_t i = 0; i < table.size(); ++i) {
    try {
      const ParamRef& p = table[i];
      HostTensor host(model.backend(), p.view, false);  // the weights themselves on the CPU
      float* x = host.f32();
      const int64_t n = p.view.numel();
      const bool is_norm = p.hf_name.find("norm") != std::string::npos;
      const bool is_bias = p.hf_name.ends_with(".bias");
      if (is_norm || is_bias) {
        for (int64_t j = 0; j < n; ++j) x[j] = is_norm ? 1.0f : 0.0f;
      } else {
        std::mt19937_64 rng(seed * 1000003u + i);
        std::normal_distribution<float> dist(0.0f, std_dev);
        for (int64_t j = 0; j < n; ++j) x[j] = dist(rng);
      }
#pragma omp critical(init_weights_store)
      host.store();
    } catch (...) {
#pragma omp critical(init_weights_error)
      if (!error) error = std::current_exception();
    }
  }
  for (int u = 0; u < ps.num_units(); ++u) {
    ps.written(u);
    ps.release(u);
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace sft
