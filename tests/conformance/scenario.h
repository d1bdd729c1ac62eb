// Declares one scenario: SCENARIO(name, base_port, "what it checks") followed by the
// definitions of App_name() and Peer_name(). Base ports are 24000-24990, one block of ten per
// scenario, unique across all files (run.sh checks).
#pragma once

#include "tests/conformance/harness.h"

#define SCENARIO(name, port, what)                                                        \
  void App_##name();                                                                      \
  void Peer_##name();                                                                     \
  const ::xsock::conform::Register register_##name(#name, port, what, &App_##name, \
                                                   &Peer_##name)
