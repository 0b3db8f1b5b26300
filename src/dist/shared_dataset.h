// A data file loaded by the ranks of a job together: each rank tokenizes a contiguous part of
// about 1/N of the file's JSON bytes (data/dataset_parts.h), the parts are exchanged over the
// ranks' host collectives, and every rank returns exactly the Dataset one process builds (same
// tokens, labels, order, issues, counts). No rank tokenizes the whole file.
#pragma once
#include <string>

#include "data/dataset.h"
#include "dist/comm.h"

namespace sft {

// load_dataset across comm's ranks (one process: load_dataset itself). An error in any rank's
// part (a bad sample under --strict_data, an unreadable file) is thrown on every rank with the
// text of the lowest failing rank: the parts are in file order, so it names the sample one
// process names. Every rank calls it with the same arguments.
Dataset load_dataset_across_ranks(Comm& comm, const std::string& path, const Tokenizer& tok, const DataOptions& opt);

}  // namespace sft
