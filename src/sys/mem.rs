//! Memory mapped for the kernel to share: the page-aligned rings of provided buffers
//! (the probe's trial ring and the uring backend's receive buffers).

use std::io;

/// `memfd_create(2)`: an anonymous file, close-on-exec.
pub fn memfd(name: &std::ffi::CStr) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: `name` is NUL-terminated and outlives the call.
    let fd = unsafe { crate::syscall!(memfd_create(name.as_ptr(), libc::MFD_CLOEXEC)) }?;
    // SAFETY: memfd_create returned a new descriptor that nothing else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Anonymous, zeroed, page-aligned memory, unmapped on drop. A provided-buffer ring must
/// be page-aligned (IORING_REGISTER_PBUF_RING rejects other addresses with EINVAL).
pub struct AnonPages {
    ptr: *mut libc::c_void,
    len: usize,
}

impl AnonPages {
    /// Maps `len` bytes (rounded up to whole pages by the kernel), each page faulted in
    /// on first touch.
    pub fn new(len: usize) -> io::Result<AnonPages> {
        Self::map(len, 0)
    }

    /// Maps `len` bytes with every page present from the start (`MAP_POPULATE`): for
    /// memory that will all be touched anyway, so its cost shows at start-up rather
    /// than growing under the first traffic (and no first touch faults).
    pub fn populated(len: usize) -> io::Result<AnonPages> {
        Self::map(len, libc::MAP_POPULATE)
    }

    fn map(len: usize, flags: libc::c_int) -> io::Result<AnonPages> {
        // SAFETY: an anonymous private mapping at an address of the kernel's choosing
        // aliases no existing Rust object.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | flags,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(AnonPages { ptr, len })
    }

    /// The start address, as io_uring's registration structs want it (and as raw
    /// memory for the caller to address).
    pub fn addr(&self) -> u64 {
        self.ptr as u64
    }
}

impl Drop for AnonPages {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned and nothing else unmaps it.
        // Callers unregister any kernel use (a buffer ring) before dropping.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}
