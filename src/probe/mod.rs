//! Kernel and io_uring capability detection. (Stub: being written.)
