#pragma once

namespace kiln {

/// A TCP port on 127.0.0.1 that nothing listens on now: the kernel's pick for port 0, released at
/// once (another process may take it before the caller binds it; callers that can, bind port 0
/// themselves). `fallback` when the socket calls fail. Thread-safe.
int free_loopback_port(int fallback = 0);

}  // namespace kiln
