// SIGINT / SIGTERM during training: the handler only records the signal; the trainer polls it
// between optimizer steps, saves a checkpoint and returns, so the run exits cleanly and resumes
// exactly (--save_on_interrupt, default True). A second signal while saving ends the process at
// once (checkpoints are written atomically, so the previous one stays intact).
#pragma once

namespace sft {

void install_interrupt_handlers();  // SIGINT and SIGTERM
int interrupt_signal();             // the first signal received, 0 if none
const char* signal_name(int sig);   // "SIGINT", "SIGTERM", ...

}  // namespace sft
