#pragma once
// Ctrl-C and SIGTERM as requests, not deaths: the handlers only set a flag, and commands stop at
// a safe point (between tokens, between written tensors) so that they flush what they printed,
// write their statistics, remove partial files and exit 130. A second signal ends the process
// at once (the default action), for a command stuck where nothing checks the flag.
#include "common/error.hpp"

namespace pmoe {

/// Installs the SIGINT/SIGTERM handlers (once per process; main() does it for every command).
void install_interrupt_handlers();

/// Whether SIGINT or SIGTERM arrived since install_interrupt_handlers() (or clear_interrupt()).
bool interrupted();
/// The signal that arrived (SIGINT or SIGTERM), 0 if none.
int interrupt_signal();
/// Forget an interruption that was handled (chat: Ctrl-C stopped an answer, the chat goes on);
/// the next signal is a request again, not the end.
void clear_interrupt();

/// Thrown at a safe point after an interruption; commands exit 130 on it.
class Interrupted : public Error {
 public:
  Interrupted() : Error("interrupted") {}
};

inline void throw_if_interrupted() {
  if (interrupted()) throw Interrupted();
}

}  // namespace pmoe
