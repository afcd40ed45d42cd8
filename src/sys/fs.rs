//! File-system system calls: openat2, the O_NOFOLLOW walk's openat/readlinkat, fstat,
//! directory reading. (Stub: being written.)
