//! Resolving request paths beneath the served root. (Stub: being written.)

use crate::proto::{DirEntry, Opened};
use std::io;
use std::path::Path;

/// The served directory, held open by descriptor: every lookup is relative to it.
#[derive(Debug)]
pub struct Root {
    _p: (),
}

impl Root {
    /// Opens `path` as the root.
    pub fn open(_path: &Path) -> io::Result<Root> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
    /// Opens the regular file or directory at `rel` beneath the root.
    pub fn open_beneath(&self, _rel: &str) -> io::Result<Opened> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
    /// Lists the directory at `rel` beneath the root.
    pub fn read_dir(&self, _rel: &str) -> io::Result<Vec<DirEntry>> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
}
